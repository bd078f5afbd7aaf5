#!/usr/bin/env python3
"""Run a benchmark several times and print the median (and range) of its figures.

    python bench/repeat.py -n 5 -- bench/load.py --mode rate --rate 1000
    python bench/repeat.py -n 5 --save runs.jsonl -- bench/idle.py

The benchmark is run with the same interpreter plus ``--json``; every numeric
field of its output (nested fields flattened as ``a.b``) is summarised. The
machine is noisy: quote medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any


def flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(obj, list) and all(isinstance(v, int | float) for v in obj):
        for i, value in enumerate(obj):
            out[f"{prefix}{i}"] = float(value)
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = float(obj)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5, help="runs")
    parser.add_argument("--save", help="append each run's JSON to this file")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT ARGS...")
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the benchmark script and its arguments after --")
    runs: list[dict[str, float]] = []
    for i in range(args.n):
        proc = subprocess.run(
            [sys.executable, *command, "--json"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            print(f"run {i + 1}: failed ({proc.returncode})\n{proc.stderr[-2000:]}")
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if args.save:
            with open(args.save, "a") as f:
                f.write(json.dumps(result) + "\n")
        runs.append(flatten(result))
        print(f"run {i + 1}/{args.n} done", file=sys.stderr)
    if not runs:
        return 1
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    width = max(len(k) for k in keys)
    print(f"{'figure':<{width}}  {'median':>12}  {'min':>12}  {'max':>12}   ({len(runs)} runs)")
    for key in keys:
        values = [r[key] for r in runs]
        print(
            f"{key:<{width}}  {statistics.median(values):>12.6g}  "
            f"{min(values):>12.6g}  {max(values):>12.6g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
