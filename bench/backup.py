"""How long an online backup takes, and what it does to chat meanwhile.

    .venv/bin/python -m bench.backup --messages 50000

Starts a node (bench/nodeproc.py), fills bob's and alice's queues with
``--messages`` 1:1 messages (pipelined), then measures the acknowledgement
latency of one device sending one message at a time: first for
``--seconds`` without a backup, then while ``chinwag backup`` runs through
the admin socket. Prints one JSON object: store and backup sizes, the
backup's duration, and latency percentiles (ms) for both phases.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from chinwag.node.admin import admin_request
from chinwag.node.client import ChatClient, connect, login, signup

from .nodeproc import NodeProcess, percentile

PASSWORD = "bench-password-1"


async def fill(client: ChatClient, count: int, size: int) -> None:
    text = "x" * size
    for start in range(0, count, 256):
        n = min(256, count - start)
        await client.send_many([("bob", text, None)] * n)


async def latencies(client: ChatClient, until: trio.Event, seconds: float) -> list[float]:
    out: list[float] = []
    deadline = trio.current_time() + seconds
    while not until.is_set() and trio.current_time() < deadline:
        t0 = time.perf_counter()
        await client.send("bob", "ping")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "sends": len(ordered),
        "p50_ms": round(percentile(ordered, 50), 2),
        "p99_ms": round(percentile(ordered, 99), 2),
        "max_ms": round(ordered[-1], 2) if ordered else None,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with NodeProcess() as node:
        for user in ("alice", "bob"):
            await signup(node.url, user, PASSWORD)
        token = (await login(node.url, "alice", PASSWORD)).token
        data = node.data_dir / "node"
        async with connect(node.url, token) as client:
            t0 = time.perf_counter()
            await fill(client, args.messages, args.size)
            fill_s = time.perf_counter() - t0
            never = trio.Event()
            baseline = await latencies(client, never, args.seconds)
            done = trio.Event()
            result: dict[str, Any] = {}
            with tempfile.TemporaryDirectory(dir=args.dest_root) as root:
                dest = Path(root) / "backup"

                async def backup() -> None:
                    start = time.perf_counter()
                    result["manifest"] = await admin_request(
                        data, "backup", {"dest": str(dest)}, 3600
                    )
                    result["backup_s"] = round(time.perf_counter() - start, 3)
                    done.set()

                async with trio.open_nursery() as nursery:
                    during: list[float] = []

                    async def measure() -> None:
                        during.extend(await latencies(client, done, 3600))

                    nursery.start_soon(measure)
                    nursery.start_soon(backup)
        store_bytes = (data / "db" / "data.mdb").stat().st_size
        files = result["manifest"]["files"]
        return {
            "messages": args.messages,
            "text_bytes": args.size,
            "fill_s": round(fill_s, 2),
            "store_file_bytes": store_bytes,
            "backup_store_bytes": files["db/data.mdb"]["size"],
            "backup_s": result["backup_s"],
            "acks_without_backup": summary(baseline),
            "acks_during_backup": summary(during),
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=200, help="text bytes per message")
    parser.add_argument("--seconds", type=float, default=3.0, help="baseline phase")
    parser.add_argument("--dest-root", default=None, help="where the backup is written")
    print(json.dumps(trio.run(main, parser.parse_args()), indent=1))
