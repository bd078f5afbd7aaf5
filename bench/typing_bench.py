"""Typing benchmark: 100 active devices in one group across three nodes.

A group hosted on n1 with ``--members`` members spread over n1, n2 and n3, each
with one connected device. For ``--seconds`` every device types like a real
client: a ``typing start`` every ``--renew`` seconds (at its own phase), and
every ``--stop-every``-th round a ``stop`` instead. Measured over that window:
the typing changes the nodes took from devices, the ``typing`` link frames
(and all link frames) each node sent per second, the typing frames delivered
to devices, and each node's CPU. Without coalescing every change would cost
one link frame per other member node; with it a node sends one frame per
(peer node, conversation) per ``typing_flush`` window.

    python bench/typing_bench.py --members 100 --seconds 20

(Not ``bench/typing.py``: run as a script, that name would shadow the
standard library's ``typing`` for everything the script imports.)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))
from federation import PASSWORD as PW  # noqa: E402
from federation import CpuWindow, Node, status, wait_link  # noqa: E402

from chinwag.node.admin import admin_request  # noqa: E402
from chinwag.node.client import api_call, connect, login, signup  # noqa: E402

GROUP = "#room@n1"


def link_frames(st: dict[str, Any]) -> int:
    return sum(int(p.get("frames_sent", 0)) for p in st["peers"])


async def setup(nodes: list[Node], members: int) -> list[tuple[Node, str, str]]:
    names = [(nodes[i % 3], f"t{i}") for i in range(members)]
    out = []
    for node, name in names:
        await signup(node.url, name, PW)
        token = (await login(node.url, name, PW)).token
        if name != names[0][1]:
            # The owner as a contact: the add is then direct, not an invitation.
            await api_call(node.url, "POST", "/api/contacts", {"address": "t0@n1"}, token)
        out.append((node, name, token))
    async with connect(nodes[0].url, out[0][2]) as owner:
        await owner.group("create", name="room")
        others = [f"{name}@{node.name}" for node, name, _ in out[1:]]
        for start in range(0, len(others), 50):
            await owner.group("add", group=GROUP, members=others[start : start + 50])
    with trio.fail_after(60):
        while True:  # noqa: ASYNC110 (other processes: poll their status)
            views = [await status(n) for n in nodes]
            if all(all(p["outbox"] == 0 for p in v["peers"]) for v in views):
                break
            await trio.sleep(0.1)
    return out


async def typing_window(
    nodes: list[Node], devices: list[tuple[Node, str, str]], args: argparse.Namespace
) -> dict[str, Any]:
    received = 0
    sent_frames = 0

    def count(frame: dict[str, Any]) -> None:
        nonlocal received
        if frame.get("t") == "typing":
            received += 1

    async def device(node: Node, token: str, seed: int, task_status: Any) -> None:
        nonlocal sent_frames
        async with connect(node.url, token) as client:
            client.on_signal = count
            task_status.started()
            await start_line.wait()
            rng = random.Random(seed)
            await trio.sleep(rng.uniform(0, args.renew))  # its own phase
            deadline = trio.current_time() + args.seconds
            rounds = 0
            while trio.current_time() < deadline:
                rounds += 1
                state = "stop" if rounds % args.stop_every == 0 else "start"
                await client.typing(GROUP, state)
                sent_frames += 1
                await trio.sleep(args.renew)

    start_line = trio.Event()
    before = {n.name: await status(n) for n in nodes}
    with trio.fail_after(args.seconds + args.renew + 120):
        async with trio.open_nursery() as nursery:
            for i, (node, _name, token) in enumerate(devices):
                await nursery.start(device, node, token, i)
            cpu = CpuWindow(nodes).start()
            started = time.monotonic()
            start_line.set()
        wall = time.monotonic() - started
        usage = cpu.finish(sent_frames)
    after = {n.name: await status(n) for n in nodes}
    per_node: dict[str, Any] = {}
    changes = 0
    for node in nodes:
        a, b = after[node.name]["typing"], before[node.name]["typing"]
        taken = (a["received"] - b["received"]) - (a["dropped"] - b["dropped"])
        changes += taken
        per_node[node.name] = {
            "device_frames": a["received"] - b["received"],
            "dropped": a["dropped"] - b["dropped"],
            "typing_link_frames_sent": a["link_frames_sent"] - b["link_frames_sent"],
            "typing_link_frames_per_s": round(
                (a["link_frames_sent"] - b["link_frames_sent"]) / wall, 1
            ),
            "all_link_frames_per_s": round(
                (link_frames(after[node.name]) - link_frames(before[node.name])) / wall, 1
            ),
            "delivered_to_devices": a["delivered"] - b["delivered"],
        }
    typing_links = sum(p["typing_link_frames_sent"] for p in per_node.values())
    # Uncoalesced, each change crosses to every other member node: the typist's
    # node to the host, the host to the other two (2 frames per change).
    uncoalesced = 2 * changes
    return {
        "members": len(devices),
        "seconds": round(wall, 1),
        "renew_s": args.renew,
        "device_frames_sent": sent_frames,
        "changes_taken": changes,
        "typing_link_frames": typing_links,
        "typing_link_frames_per_s": round(typing_links / wall, 1),
        "uncoalesced_link_frames": uncoalesced,
        "coalescing": round(uncoalesced / typing_links, 1) if typing_links else None,
        "typing_frames_received_by_devices": received,
        "nodes_cpu_ms_per_device_frame": round(
            sum(v for k, v in usage.items() if k.endswith("_cpu_s_per_1000")), 3
        ),
        "per_node": per_node,
        "cpu": usage,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="chinwag-typingbench-"))
    node_args = argparse.Namespace(python=args.python, node_arg=list(args.node_arg))
    nodes = [Node(root, f"n{i}", node_args) for i in (1, 2, 3)]
    try:
        for node in nodes:
            await trio.to_thread.run_sync(node.start)
            node.node_id = (await status(node))["node_id"]
        for a in nodes:
            for b in nodes:
                if a is not b:
                    await admin_request(a.data, "peers.add", {"peer": f"{b.url}#{b.node_id}"})
        for a in nodes:
            for b in nodes:
                if a is not b:
                    await wait_link(a, b, True, 60)
        devices = await setup(nodes, args.members)
        return await typing_window(nodes, devices, args)
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0, help="the typing window")
    parser.add_argument("--renew", type=float, default=3.0, help="a device's start interval (s)")
    parser.add_argument("--stop-every", type=int, default=4, help="every n-th round is a stop")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the nodes")
    parser.add_argument(
        "--node-arg", action="append", default=[], help="extra flag for every node's run"
    )
    args = parser.parse_args()
    print(json.dumps(trio.run(run, args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
