"""Group fan-out and presence benchmark on three nodes (127.0.0.1, mDNS off).

Fan-out: a 100-member group hosted on n1 with members spread over n1, n2 and
n3, every member connected; one sender pipelines M messages; deliveries/s =
messages x members received, and p99 send-to-receive latency.

Presence: a user on n1 with 1,000 contacts (watchers) spread over the three
nodes; the cost of one status change: home-node CPU per change and the time
until a watcher on a remote node sees it.

    python bench/groups.py --members 100 --messages 200 --watchers 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))
from federation import PASSWORD as PW  # noqa: E402
from federation import CpuWindow, Node, Spy, status, wait_link  # noqa: E402
from nodeproc import percentile, send_windowed  # noqa: E402

from chinwag.node.admin import admin_request  # noqa: E402
from chinwag.node.client import api_call, connect, login, signup  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def fanout(
    nodes: list[Node], members: int, messages: int, args: argparse.Namespace
) -> dict[str, Any]:
    names = [(nodes[i % 3], f"m{i}") for i in range(members)]
    tokens = {}
    owner = names[0][1]
    for node, name in names:
        await signup(node.url, name, PW)
        tokens[name] = (await login(node.url, name, PW)).token
        if name != owner:
            # The owner as a contact: the add is then direct, not an invitation.
            contact = {"address": f"{owner}@n1"}
            await api_call(node.url, "POST", "/api/contacts", contact, tokens[name])
    received = 0
    latencies: list[float] = []
    done = trio.Event()
    last = 0.0
    total = messages * members

    async def member(node: Node, name: str, task_status: Any) -> None:
        nonlocal received, last
        async with connect(node.url, tokens[name], message_buffer=messages + 100) as client:
            await client.sync(client.info.head if client.info else 0)
            task_status.started()
            while True:
                frame = await client.messages.receive()
                if frame.get("kind") != "text":
                    continue
                latencies.append((time.time_ns() - int(frame["body"]["text"])) / 1e6)
                received += 1
                last = time.monotonic()
                if received >= total:
                    done.set()

    async with connect(nodes[0].url, tokens[owner]) as host:
        await host.group("create", name="big")
        others = [f"{name}@{node.name}" for node, name in names[1:]]
        for start in range(0, len(others), 50):
            await host.group("add", group="#big@n1", members=others[start : start + 50])
        # Wait until every member node has the member list.
        with trio.fail_after(60):
            while True:  # noqa: ASYNC110 (other processes)
                views = [await admin_request(n.data, "status", {}) for n in nodes]
                if all(all(p["outbox"] == 0 for p in v["peers"]) for v in views):
                    break
                await trio.sleep(0.1)
        errors: list[Any] = []

        def settle(results: list[Any] | Exception, k: int) -> None:
            for reply in results if isinstance(results, list) else [results]:
                if not hasattr(reply, "id"):
                    errors.append(reply)

        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                for node, name in names:
                    await nursery.start(member, node, name)
                spy = Spy(args, nodes, "groups")
                cpu = CpuWindow(nodes).start()
                started = time.monotonic()
                # ``--batch 1``: one send frame per WebSocket message, as real
                # clients send; ``--window`` of them in flight.
                await send_windowed(
                    host,
                    messages,
                    args.batch,
                    args.window,
                    lambda k: ("#big@n1", str(time.time_ns()), f"g{k}"),
                    settle,
                )
                if errors:
                    raise RuntimeError(errors[0])
                await done.wait()
                usage = cpu.finish(received)
                await spy.stop()
                nursery.cancel_scope.cancel()
    seconds = last - started
    return {
        "members": members,
        "messages": messages,
        "deliveries": received,
        "seconds": round(seconds, 2),
        "deliveries_per_s": round(received / seconds),
        "p50_ms": round(percentile(sorted(latencies), 50), 1),
        "p99_ms": round(percentile(sorted(latencies), 99), 1),
        "batch": args.batch,
        "window": args.window,
        # Node CPU (all three) per 1,000 deliveries, and each node's share.
        "nodes_cpu_s_per_1000": round(
            sum(v for k, v in usage.items() if k.endswith("_cpu_s_per_1000")), 4
        ),
        "cpu": usage,
    }


async def presence(nodes: list[Node], watchers: int, changes: int) -> dict[str, Any]:
    await signup(nodes[0].url, "star", PW)
    star = (await login(nodes[0].url, "star", PW)).token
    watcher_tokens = []
    for i in range(watchers):
        node = nodes[i % 3]
        await signup(node.url, f"fan{i}", PW)
        token = (await login(node.url, f"fan{i}", PW)).token
        await api_call(node.url, "POST", "/api/contacts", {"address": "star@n1"}, token)
        watcher_tokens.append((node, token))
    remote_node, remote_token = watcher_tokens[1]
    times = []
    assert nodes[0].proc is not None
    async with connect(remote_node.url, remote_token) as fan:
        cpu0 = cpu_seconds(nodes[0].proc.pid)
        for _ in range(changes):
            started = time.monotonic()
            async with connect(nodes[0].url, star):
                await fan.wait_presence("star@n1", "online", 10)
                times.append((time.monotonic() - started) * 1000)
            await fan.wait_presence("star@n1", "offline", 10)
        cpu = cpu_seconds(nodes[0].proc.pid) - cpu0
    subs = await status(nodes[0])
    return {
        "watchers": watchers,
        "changes": changes * 2,
        "home_cpu_ms_per_change": round(cpu * 1000 / (changes * 2), 2),
        "remote_sees_online_p50_ms": round(percentile(sorted(times), 50), 1),
        "peers": len(subs["peers"]),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="chinwag-groupbench-"))
    # What bench/federation.py's Node reads from its own command line.
    node_args = argparse.Namespace(python=args.python, node_arg=[])
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
        result: dict[str, Any] = {}
        if args.messages:
            result["fanout"] = await fanout(nodes, args.members, args.messages, args)
        if args.watchers:
            result["presence"] = await presence(nodes, args.watchers, args.changes)
        return result
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=50, help="send frames per WebSocket message")
    parser.add_argument("--window", type=int, default=50, help="sends in flight")
    parser.add_argument("--spy", metavar="DIR", help="py-spy the three nodes during fan-out")
    parser.add_argument("--spy-bin", default="py-spy", help="py-spy executable")
    parser.add_argument("--spy-gil", action="store_true", help="py-spy --gil")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the nodes")
    args = parser.parse_args()
    if args.spy and args.spy_bin == "py-spy":
        local = Path(sys.executable).with_name("py-spy")
        args.spy_bin = str(local) if local.exists() else "py-spy"
    print(json.dumps(trio.run(run, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
