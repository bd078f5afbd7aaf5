#!/usr/bin/env python3
"""The history index's cost on the writer's path, without a node (issue 15).

Replays what the store's writer does for local 1:1 messages — two queue
appends per message, the index primed with the signed text, an entry
staged for each queue (``stage``), the batch's entries written before its
commit (``write_staged``, with the writer's copy of the ``conv`` rows),
``merge_log`` once ``--merge-at`` rows wait, one commit per ``--batch``
messages — on a scratch LMDB file, and reports microseconds per message for
each step: ``prime`` (tokenize and hash the text), ``append`` (staging and
writing the entries), ``merge`` (amortised) and ``commit`` (the whole
commit, queue pages included). Texts have the shape of bench/realclient.py's
(a tag, two small numbers, two timestamps, filler).

``--prefill N`` first writes N messages the same way, untimed: how the cost
grows with the history already in the store. No trio, no sockets, one
thread, so no GIL hand-overs: the node pays somewhat more per message than
this (see docs/performance.md); this is for comparing layouts and code.

    python bench/index_path.py                        # 20,000 messages on an empty store
    python bench/index_path.py --prefill 200000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

import cbor2
import lmdb

from chinwag.node import history_index

NODE = "i2myd5vzjyqj47ynkb6v2cl2x6cfqd2oiy7hlh5cjmzaprzyjx7q"
STEPS = ("prime", "append", "merge", "commit")


def make_messages(count: int, pairs: int) -> list[tuple[int, str, bytes]]:
    out = []
    for i in range(count):
        pair = i % pairs
        text = f"M {pair} {i} {time.perf_counter_ns()} {time.time_ns()} " + "x" * 20
        env = {
            "from": {"u": f"s{pair}", "n": NODE},
            "to": {"u": f"r{pair}", "n": NODE},
            "body": {"text": text},
        }
        record = cbor2.dumps({"unit": {"env": cbor2.dumps(env), "sig": os.urandom(64)}})
        out.append((pair, text, record))
    return out


def run_once(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="chinwag-index-path-") as scratch:
        env = lmdb.open(scratch, max_dbs=16, map_size=1 << 34, sync=False)
        try:
            return replay(env, args)
        finally:
            env.close()


def replay(env: lmdb.Environment, args: argparse.Namespace) -> dict[str, float]:
    dbs = {name: env.open_db(name.encode()) for name in history_index.DB_NAMES}
    queue = env.open_db(b"queue")
    messages = make_messages(args.prefill + args.messages, args.pairs)
    heads: dict[int, int] = {}
    totals = dict.fromkeys(STEPS, 0.0)
    log_key = staged = 0
    clock = time.perf_counter
    conv_rows: dict[bytes, bytes] = {}  # the writer's copy (Store._conv_rows)

    def next_key() -> int:
        nonlocal log_key
        log_key += 1
        return log_key

    for start in range(0, len(messages), args.batch):
        if start == args.prefill:
            totals = dict.fromkeys(STEPS, 0.0)
        txn = env.begin(write=True)
        entries: list[history_index.Staged] = []
        for pair, text, record in messages[start : start + args.batch]:
            owners = ((2 * pair + 1, f"s{pair}@{NODE}"), (2 * pair + 2, f"r{pair}@{NODE}"))
            for uid, _ in owners:
                heads[uid] = seq = heads.get(uid, 0) + 1
                txn.put(uid.to_bytes(4, "big") + seq.to_bytes(8, "big"), record, db=queue)
            t0 = clock()
            history_index.prime_message(record, owners[0][1], owners[1][1], text)
            t1 = clock()
            for uid, owner in owners:
                entry = history_index.stage(uid, owner, heads[uid], record)
                if entry is not None:
                    entries.append(entry)
            totals["prime"] += t1 - t0
            totals["append"] += clock() - t1
        t0 = clock()
        written: dict[bytes, bytes] = {}
        staged += history_index.write_staged(txn, dbs, entries, next_key, conv_rows, written)
        totals["append"] += clock() - t0
        t0 = clock()
        if staged >= args.merge_at:
            history_index.merge_log(txn, dbs)
            staged = 0
        t1 = clock()
        txn.commit()
        conv_rows.update(written)
        totals["merge"] += t1 - t0
        totals["commit"] += clock() - t1
    return {step: totals[step] / args.messages * 1e6 for step in STEPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="timed messages")
    parser.add_argument("--prefill", type=int, default=0, help="untimed messages first")
    parser.add_argument("--pairs", type=int, default=20, help="sender/receiver pairs")
    parser.add_argument("--batch", type=int, default=8, help="messages per commit")
    parser.add_argument("--merge-at", type=int, default=2048, help="log rows per merge")
    parser.add_argument("--rounds", type=int, default=3, help="runs; medians reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [run_once(args) for _ in range(max(1, args.rounds))]
    result: dict[str, Any] = {
        f"{step}_us_per_msg": round(statistics.median(r[step] for r in runs), 1) for step in STEPS
    }
    result.update(messages=args.messages, prefill=args.prefill, rounds=len(runs))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
