#!/usr/bin/env python3
"""Run a benchmark several times and print the median (and range) of its figures.

    python bench/repeat.py -n 5 -- bench/load.py --mode rate --rate 1000
    python bench/repeat.py -n 5 --save runs.jsonl -- bench/idle.py
    python bench/repeat.py --load runs.jsonl --quiet 0.15

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
    parser.add_argument(
        "--quiet",
        type=float,
        metavar="CORES",
        help="also summarise only the runs whose other_load_cores (CPU used by other "
        "processes during the run, bench/load.py) was at most CORES",
    )
    parser.add_argument("--load", help="summarise the runs saved in this file; run nothing")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT ARGS...")
    args = parser.parse_args()
    runs: list[dict[str, float]] = []
    if args.load:
        with open(args.load) as f:
            runs = [flatten(json.loads(line)) for line in f if line.strip()]
    else:
        command = [c for c in args.command if c != "--"]
        if not command:
            parser.error("give the benchmark script and its arguments after --")
        runs = run_all(command, args.n, args.save)
    if not runs:
        return 1
    summarise(runs, "all runs")
    if args.quiet is not None:
        quiet = [r for r in runs if r.get("other_load_cores", 0.0) <= args.quiet]
        print()
        if quiet:
            summarise(quiet, f"runs with other processes <= {args.quiet:g} cores")
        else:
            print(f"no run with other processes <= {args.quiet:g} cores")
    return 0


def run_all(command: list[str], n: int, save: str | None) -> list[dict[str, float]]:
    runs: list[dict[str, float]] = []
    for i in range(n):
        proc = subprocess.run(
            [sys.executable, *command, "--json"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            print(f"run {i + 1}: failed ({proc.returncode})\n{proc.stderr[-2000:]}")
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if save:
            with open(save, "a") as f:
                f.write(json.dumps(result) + "\n")
        runs.append(flatten(result))
        print(f"run {i + 1}/{n} done", file=sys.stderr)
    return runs


def summarise(runs: list[dict[str, float]], title: str) -> None:
    keys = [k for k in runs[0] if all(k in r for r in runs) and not k.startswith("config.")]
    width = max(len(k) for k in keys)
    print(f"{title} ({len(runs)}):")
    print(f"{'figure':<{width}}  {'median':>12}  {'min':>12}  {'max':>12}")
    for key in keys:
        values = [r[key] for r in runs]
        print(
            f"{key:<{width}}  {statistics.median(values):>12.6g}  "
            f"{min(values):>12.6g}  {max(values):>12.6g}"
        )


if __name__ == "__main__":
    sys.exit(main())
