"""Attachments: upload and cross-node transfer of one file, with the nodes' memory.

    .venv/bin/python -m bench.files --mb 20

Starts two nodes (bench/nodeproc.py), links them, signs alice up on the
first and bob on the second. Then, timed: alice uploads a ``--mb`` MB file
of random bytes to her node (``POST /api/blobs``); sends it to bob@n2; n2
fetches it over the federation link (64 KiB chunks in 1 MiB windows) and
bob downloads it from n2. The nodes' RSS is sampled every 20 ms during each
phase. Prints one JSON object: MB/s per phase and each node's RSS (MiB)
before and at its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from chinwag.node.admin import admin_request
from chinwag.node.blob_client import download_blob, upload_file
from chinwag.node.client import ClientError, connect, login, signup

from .nodeproc import NodeProcess, memory_kb

PASSWORD = "bench-password-1"
MB = 1_000_000


async def node_id(node: NodeProcess) -> str:
    return str((await admin_request(node.data_dir / "node", "status", {}))["node_id"])


async def link(a: NodeProcess, b: NodeProcess) -> None:
    ida, idb = await node_id(a), await node_id(b)
    await admin_request(a.data_dir / "node", "peers.add", {"peer": f"{b.url}#{idb}"})
    await admin_request(b.data_dir / "node", "peers.add", {"peer": f"{a.url}#{ida}"})
    with trio.fail_after(30):
        while True:
            peers = (await admin_request(a.data_dir / "node", "status", {}))["peers"]
            if peers and all(p["link"] == "linked" for p in peers):
                return
            await trio.sleep(0.05)


class RssWatch:
    """The peak RSS (MiB) of some processes while a phase runs."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.before = {k: memory_kb(p)["VmRSS"] / 1024 for k, p in pids.items()}
        self.peak = dict(self.before)

    async def run(self, done: trio.Event) -> None:
        while not done.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], memory_kb(pid)["VmRSS"] / 1024)
            with trio.move_on_after(0.02):
                await done.wait()

    def report(self) -> dict[str, Any]:
        return {
            k: {"rss_before_mib": round(self.before[k], 1), "rss_peak_mib": round(self.peak[k], 1)}
            for k in self.pids
        }


async def timed(watch: RssWatch, work: Any) -> tuple[float, Any]:
    done = trio.Event()
    result: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run, done)
        t0 = time.perf_counter()
        result.append(await work())
        elapsed = time.perf_counter() - t0
        done.set()
    return elapsed, result[0]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    size = int(args.mb * MB)
    limit = ("--max-file-size", str(size + MB))
    with tempfile.TemporaryDirectory() as scratch, NodeProcess(extra_args=limit) as n1:
        with NodeProcess(extra_args=limit) as n2:
            await link(n1, n2)
            n2_id = await node_id(n2)
            await signup(n1.url, "alice", PASSWORD)
            await signup(n2.url, "bob", PASSWORD)
            alice = (await login(n1.url, "alice", PASSWORD)).token
            bob = (await login(n2.url, "bob", PASSWORD)).token
            path = Path(scratch) / "payload.bin"
            path.write_bytes(os.urandom(size))
            out: dict[str, Any] = {"mb": args.mb}

            watch = RssWatch(n1=n1.pid)
            seconds, att = await timed(watch, lambda: upload_file(n1.url, alice, path))
            out["upload"] = {"seconds": round(seconds, 3), "mb_s": round(args.mb / seconds, 1)}
            out["upload"].update(watch.report())

            async def transfer() -> None:
                async with connect(n1.url, alice) as client, connect(n2.url, bob) as b:
                    await b.sync(0)
                    # Both nodes are named "bench": bob is addressed by n2's id.
                    await client.send(f"bob@{n2_id}", "", attachments=[att])
                    await b.messages.receive()  # committed on n2: the fetch starts
                dest = Path(scratch) / "fetched.bin"
                while True:  # until n2 has fetched it (the first GET that is not pending)
                    try:
                        await download_blob(n2.url, bob, att["sha256"], dest)
                        return
                    except ClientError as exc:
                        if exc.code != "blob_pending":
                            raise
                        await trio.sleep(0.02)

            watch = RssWatch(n1=n1.pid, n2=n2.pid)
            seconds, _ = await timed(watch, transfer)
            out["cross_node"] = {
                "seconds": round(seconds, 3),
                "mb_s": round(args.mb / seconds, 1),
                "note": "send, fetch over the link, first download from n2 (all included)",
            }
            out["cross_node"].update(watch.report())

            watch = RssWatch(n2=n2.pid)
            dest = Path(scratch) / "again.bin"
            seconds, _ = await timed(watch, lambda: download_blob(n2.url, bob, att["sha256"], dest))
            out["download"] = {"seconds": round(seconds, 3), "mb_s": round(args.mb / seconds, 1)}
            out["download"].update(watch.report())
            assert dest.read_bytes() == path.read_bytes()
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=20.0, help="file size in MB (default 20)")
    args = parser.parse_args()
    print(json.dumps(trio.run(main, args), indent=2))


if __name__ == "__main__":
    cli()
