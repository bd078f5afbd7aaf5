#!/usr/bin/env python3
"""Summarise a py-spy ``--format raw`` file (collapsed stacks) as text tables.

    python bench/spystats.py /tmp/spy.txt [--top 25] [--thread MainThread]
        [--match node/] [--file-level]

Prints, per thread, the share of samples; then the top frames by *self*
samples (the leaf) and by *inclusive* samples (anywhere on the stack, counted
once per sample). ``--match`` restricts the inclusive table to frames whose
text contains the string (e.g. ``node/`` or ``sessions.py``).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_LINE = re.compile(r"^(.*) (\d+)$")
_LINENO = re.compile(r":\d+\)$")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", help="only stacks whose thread frame contains this")
    parser.add_argument("--match", help="inclusive table: only frames containing this")
    parser.add_argument("--file-level", action="store_true", help="drop line numbers")
    args = parser.parse_args()

    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(args.path) as f:
        for line in f:
            m = _LINE.match(line.rstrip("\n"))
            if not m:
                continue
            frames = m.group(1).split(";")
            count = int(m.group(2))
            thread = frames[0] if frames[0].startswith("thread") else "(all)"
            if args.thread and args.thread not in thread:
                continue
            threads[thread] += count
            total += count
            if args.file_level:
                frames = [_LINENO.sub(")", fr) for fr in frames]
            leaf[frames[-1]] += count
            for fr in set(frames):
                inclusive[fr] += count
    if not total:
        print("no samples")
        return
    print(f"{total} samples")
    for thread, n in threads.most_common():
        print(f"{100 * n / total:6.1f}%  {thread}")
    print("\nself (leaf) samples:")
    for fr, n in leaf.most_common(args.top):
        print(f"{100 * n / total:6.1f}%  {fr}")
    print("\ninclusive samples:")
    shown = 0
    for fr, n in inclusive.most_common():
        if args.match and args.match not in fr:
            continue
        if fr.startswith("thread"):
            continue
        print(f"{100 * n / total:6.1f}%  {fr}")
        shown += 1
        if shown >= args.top:
            break


if __name__ == "__main__":
    main()
