#!/usr/bin/env python3
"""Run the node under tracemalloc, for attributing its memory (diagnosis only).

    python bench/tracenode.py -m chinwag.cli run --data DIR ...

Used by ``bench/idle.py --tracemalloc OUT``. Each SIGUSR1 takes a snapshot;
from the second one on, the difference to the first is written to the file
named by ``CHINWAG_TRACE_OUT`` (grouped by file and by line, plus the
biggest tracebacks), then ``OUT.done`` is created. tracemalloc itself costs
memory and CPU: never quote RSS or throughput from a traced node.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import tracemalloc
from types import FrameType

FRAMES = 8
_first: list[tracemalloc.Snapshot] = []


def _filtered(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    return snapshot.filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        )
    )


def _on_signal(signum: int, frame: FrameType | None) -> None:
    snapshot = _filtered(tracemalloc.take_snapshot())
    if not _first:
        _first.append(snapshot)
        return
    out = os.environ.get("CHINWAG_TRACE_OUT", "tracemalloc.txt")
    with open(out, "w") as f:
        for key, top in (("filename", 30), ("lineno", 50)):
            stats = snapshot.compare_to(_first[0], key)
            total = sum(s.size_diff for s in stats)
            f.write(f"== by {key}: total {total / 1024:.1f} KiB\n")
            for stat in stats[:top]:
                f.write(f"{stat.size_diff / 1024:10.1f} KiB {stat.count_diff:+8d}  {stat}\n")
        f.write("\n== biggest tracebacks\n")
        for stat in snapshot.compare_to(_first[0], "traceback")[:25]:
            f.write(f"\n{stat.size_diff / 1024:.1f} KiB in {stat.count_diff:+d} blocks\n")
            f.write("\n".join(stat.traceback.format(limit=FRAMES)) + "\n")
    with open(out + ".done", "w"):
        pass


def main() -> None:
    if sys.argv[1:2] != ["-m"] or len(sys.argv) < 3:
        sys.exit("usage: tracenode.py -m MODULE ARGS...")
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, _on_signal)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
