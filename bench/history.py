#!/usr/bin/env python3
"""History benchmark (issue 15): conversations, pages and search at scale.

Fills a store directly (no sockets: the fill is not what is measured) with
``--messages`` 1:1 messages to one user, ``bob``, from ``--convs`` senders
(each message is appended to bob's queue and to its sender's, as a real send
is, and indexed in the same transaction). Texts are 6-14 words drawn from a
Zipf-like vocabulary of 5,000 words; every tenth message is Korean, Japanese
or Chinese. Then it times, at the node (the request handlers of
node/history_ops.py on the store, no network):

* ``convs`` (50 per page) + the newest page of the newest conversation (50);
* one older page of a conversation (50, from the middle of its history);
* search: ``--queries`` queries of one or two words (common and rare words,
  CJK bigrams), newest 20 hits, p50/p99/max;

and reports the index's disk bytes per queue entry (LMDB pages of the four
index databases over the entries indexed) and the index's CPU per entry
during the fill (time inside ``history_index.stage``, ``write_staged`` and
``merge_log``).

    python bench/history.py                      # 100,000 messages in 50 conversations
    python bench/history.py --messages 20000 --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from chinwag.node import history_index
from chinwag.node.config import NodeConfig
from chinwag.node.history_ops import HistoryOps
from chinwag.node.hub import Hub
from chinwag.node.identity import load_or_init_identity
from chinwag.node.router import Router
from chinwag.node.store import Store, WriteTxn, unit_record
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.envelope import Envelope, sign_envelope
from chinwag.protocol.frames import Convs, History, Search

CJK = ["안녕하세요 여러분 오늘 날씨가 좋네요", "東京の天気はどうですか", "我们明天见面吧 好的"]


def vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return sorted(words)


def make_text(rng: random.Random, vocab: list[str], n: int) -> str:
    if n % 10 == 0:
        return rng.choice(CJK)
    # Zipf-like: low indices far more often.
    return " ".join(
        vocab[min(len(vocab) - 1, int(rng.paretovariate(1.1)) - 1)]
        for _ in range(rng.randint(6, 14))
    )


class _Session:
    """Stands for a device session (the rate-limit bucket's key)."""


async def fill(store: Store, node_id: str, senders: list[str], total: int, seed: int) -> float:
    """Send ``total`` messages to bob round-robin from ``senders``; return the
    seconds spent indexing (inside the index's stage, write_staged and merge_log)."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    spent = [0.0]
    names = ("stage", "write_staged", "merge_log")
    originals = {name: getattr(history_index, name) for name in names}

    def timed(fn: Any) -> Any:
        def run(*args: Any) -> Any:
            # CPU time of the writer thread: wall time on a crowded machine lies.
            start = time.thread_time()
            result = fn(*args)
            spent[0] += time.thread_time() - start
            return result

        return run

    for name, fn in originals.items():
        setattr(history_index, name, timed(fn))
    try:
        batch = 1000
        now = int(time.time() * 1000) - total
        for first in range(0, total, batch):

            def op(w: WriteTxn, first: int = first) -> None:
                for n in range(first, min(total, first + batch)):
                    # Conversations of very different sizes, like real ones.
                    sender = senders[min(len(senders) - 1, int(rng.paretovariate(0.7)) - 1)]
                    env = Envelope(
                        id=w.next_id(now + n),
                        sender=UserAddress(sender, node_id),
                        to=UserAddress("bob", node_id),
                        group=None,
                        ts=now + n,
                        kind="text",
                        body={"text": make_text(rng, vocab, n)},
                    )
                    record = unit_record(sign_envelope(w.node_key, env))
                    w.append_to_queue("bob", record)
                    w.append_to_queue(sender, record)

            await store.transact(op)
    finally:
        for name, fn in originals.items():
            setattr(history_index, name, fn)
    return spent[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def index_bytes(store: Store) -> dict[str, int]:
    """LMDB bytes (pages) of each index database and of the queue."""

    def read(view: Any) -> dict[str, int]:
        out = {}
        for name in (*history_index.DB_NAMES, "queue"):
            stat = view.txn.stat(view.db(name))
            pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
            out[name] = pages * stat["psize"]
        return out

    return store.read(read)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="chinwag-history-") as tmp:
        data = Path(tmp)
        identity = load_or_init_identity(data, "bench")
        config = NodeConfig(data_dir=data, history_rate=1e9, history_burst=10**9)
        store = Store(data, identity.key, map_size=1 << 30)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            senders = [f"s{n}" for n in range(args.convs)]
            for name in ["bob", *senders]:
                await store.create_user(name, "x", 0)
            started = time.perf_counter()
            indexing = await fill(store, identity.id, senders, args.messages, args.seed)
            fill_s = time.perf_counter() - started
            router = Router(identity, store, lambda: int(time.time() * 1000))
            ops = HistoryOps(config, store, router, Hub(), identity.id)
            session = _Session()

            cpu_ms: dict[str, list[float]] = {}

            async def call(request: Any) -> tuple[float, dict[str, Any]]:
                # Wall time (what a user waits at an idle node, plus this
                # machine's crowding) and the handler's own CPU time.
                start, cpu = time.perf_counter(), time.thread_time()
                reply = await ops.handle("bob", session, request)  # type: ignore[arg-type]
                cpu_ms.setdefault(type(request).__name__, []).append(
                    (time.thread_time() - cpu) * 1000
                )
                return (time.perf_counter() - start) * 1000, reply

            first_ms: list[float] = []
            older_ms: list[float] = []
            for _ in range(args.repeat):
                ms1, convs = await call(Convs(1, 50, None))
                newest = convs["convs"][0]["conv"]
                ms2, _page = await call(History(2, newest, 50, None))
                first_ms.append(ms1 + ms2)
            # The biggest conversation, paged from the middle of its history.
            rows = convs["convs"]
            big = max(rows, key=lambda c: c["unread"])
            middle = max(2, big["last"]["seq"] // 2)
            for _ in range(args.repeat):
                ms, page = await call(History(3, big["conv"], 50, middle))
                older_ms.append(ms)
            assert len(page["msgs"]) == 50

            rng = random.Random(args.seed + 1)
            vocab = vocabulary(random.Random(args.seed))
            queries = []
            for n in range(args.queries):
                kind = n % 5
                if kind == 0:
                    queries.append(vocab[rng.randint(0, 5)])  # very common word
                elif kind == 1:
                    queries.append(vocab[rng.randint(0, 200)])
                elif kind == 2:
                    queries.append(f"{vocab[rng.randint(0, 50)]} {vocab[rng.randint(0, 300)]}")
                elif kind == 3:
                    queries.append(vocab[rng.randint(1000, 4999)])  # rare word, often no hit
                else:
                    queries.append(rng.choice(["여러분", "天気", "明天", "안녕", "東京"]))
            search_ms: list[float] = []
            hits = 0
            for n, q in enumerate(queries):
                ms, reply = await call(Search(4 + n, q, None, 20, None))
                search_ms.append(ms)
                hits += len(reply["hits"])
            entries = 2 * args.messages
            result = {
                "messages": args.messages,
                "convs": args.convs,
                "fill_s": round(fill_s, 1),
                "index_us_per_entry": round(indexing / entries * 1e6, 1),
                "convs_plus_newest_page_ms_p50": round(statistics.median(first_ms), 2),
                "convs_plus_newest_page_ms_max": round(max(first_ms), 2),
                "older_page_ms_p50": round(statistics.median(older_ms), 2),
                "older_page_ms_max": round(max(older_ms), 2),
                "search_ms_p50": round(percentile(search_ms, 0.5), 2),
                "search_ms_p99": round(percentile(search_ms, 0.99), 2),
                "search_ms_max": round(max(search_ms), 2),
                "search_hits_avg": round(hits / len(queries), 1),
                "queue_entries": entries,
                "search_cpu_ms_p50": round(percentile(cpu_ms["Search"], 0.5), 2),
                "search_cpu_ms_p99": round(percentile(cpu_ms["Search"], 0.99), 2),
                "history_cpu_ms_p50": round(percentile(cpu_ms["History"], 0.5), 2),
                "convs_cpu_ms_p50": round(percentile(cpu_ms["Convs"], 0.5), 2),
            }
            sizes = index_bytes(store)
            result["index_bytes_per_entry"] = round(
                sum(v for k, v in sizes.items() if k != "queue") / entries, 1
            )
            result.update({f"bytes_per_entry_{k}": round(v / entries, 1) for k, v in sizes.items()})
            nursery.cancel_scope.cancel()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--convs", type=int, default=50)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=50, help="timings per page kind")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = trio.run(run, args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:34} {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
