"""Link requests from strangers: N dials with fresh keys against one node.

Each dial sends a ``hello`` with a fresh key; with ``--confirm`` it also sends
the signed confirm (a proven but unknown key). Reports the rate, the durable
peer rows (expected: 0), the requests held in memory (bounded by
``--max-pending``) and the node's resident memory before and after.

    python bench/hellos.py                    # 10,000 unproven hellos
    python bench/hellos.py -n 10000 --confirm --max-pending 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import trio

from chinwag.node.app import Node
from chinwag.node.client import open_ws
from chinwag.node.config import NodeConfig
from chinwag.node.identity import load_or_init_identity
from chinwag.protocol.envelope import NodeKey
from chinwag.protocol.handshake import FED_SUBPROTOCOL, DialerHandshake


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def dial(url: str, target: bytes, confirm: bool) -> None:
    async with open_ws(url, subprotocols=[FED_SUBPROTOCOL]) as ws:
        hs = DialerHandshake(NodeKey.generate(), "stranger", target)
        with trio.fail_after(10):
            await ws.send_message(hs.start())
            welcome = await ws.get_message()
            assert isinstance(welcome, bytes)
            confirm_bytes = hs.receive_welcome(welcome)
            if confirm:
                await ws.send_message(confirm_bytes)
                await ws.get_message()  # the refusal


async def main(count: int, confirm: bool, max_pending: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = NodeConfig(data_dir=Path(tmp), port=0, mdns=False, max_pending_peers=max_pending)
        node = Node(config, load_or_init_identity(Path(tmp), "bench"))
        async with trio.open_nursery() as nursery:
            running = await nursery.start(node.run)
            url = running.url.replace("http://", "ws://") + "/federation"
            before = rss_kib()
            started = time.perf_counter()
            for _ in range(count):
                await dial(url, node.identity.key.public, confirm)
            elapsed = time.perf_counter() - started
            stats = node.federation.statistics()
            print(f"dials           {count} ({'proven' if confirm else 'unproven'})")
            print(f"rate            {count / elapsed:,.0f}/s ({elapsed:.1f} s)")
            print(f"durable rows    {len(node.registry.all())}")
            print(f"pending memory  {stats.pending_requests} (cap {stats.pending_capacity})")
            print(f"evicted         {stats.pending_evicted}")
            print(f"RSS             {before} -> {rss_kib()} KiB (node and dialer together)")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--confirm", action="store_true")
    parser.add_argument("--max-pending", type=int, default=256)
    args = parser.parse_args()
    trio.run(main, args.n, args.confirm, args.max_pending)
