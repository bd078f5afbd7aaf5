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
from federation import Node, status, wait_link  # noqa: E402
from nodeproc import percentile  # noqa: E402

from chinwag.node.admin import admin_request  # noqa: E402
from chinwag.node.client import api_call, connect, login, signup  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def fanout(nodes: list[Node], members: int, messages: int) -> dict[str, Any]:
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
        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                for node, name in names:
                    await nursery.start(member, node, name)
                started = time.monotonic()
                for start in range(0, messages, 50):
                    batch = [
                        ("#big@n1", str(time.time_ns()), f"g{k}")
                        for k in range(start, min(messages, start + 50))
                    ]
                    for reply in await host.send_many(batch):
                        if not hasattr(reply, "id"):
                            raise RuntimeError(reply)
                await done.wait()
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
    node_args = argparse.Namespace(python=sys.executable, node_arg=[])
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
            result["fanout"] = await fanout(nodes, args.members, args.messages)
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
    args = parser.parse_args()
    print(json.dumps(trio.run(run, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
