#!/usr/bin/env python3
"""Federation at scale: N nodes as processes on one machine (127.0.0.1, mDNS off).

For each N in ``--nodes`` (e.g. ``10,25,50``), in order:

* **converge**: every node is started with the others on its seed list
  (``--peer URL#ID``, ``--topology mesh``; identities are made beforehand so
  every id is known); the time from the first start until every node reports
  N-1 live links;
* **idle** (``--idle`` s, 60): CPU of every node process (``/proc``) and its
  store commits (``status.store.commits``) over the window: the whole
  federation's cores, the busiest node's, and the commits per node;
* **1:1**: ``--direct`` messages between random pairs of users (one per node),
  paced at ``--rate``/s, each carrying its send time: p50/p99 of send ->
  receipt on the recipient's device;
* **group fan-out**: one group hosted on n0 with one member per node,
  ``--group-messages`` sent by the host's member: the time until every member
  has every message;
* **presence**: a user on the last node, watched by a user on every other
  node, connects: the time until every watcher's device sees it online;
* **churn**: ``--churn`` of the nodes (20 %) are killed (SIGKILL); every live
  node's user sends ``--churn-messages`` to each killed node's user (durable
  in outboxes); the killed nodes restart on their ports. Times from the
  restart command: until they are ready, until all links are back, and until
  every outbox towards them is empty (backlog drained), checked against the
  restarted nodes' queue heads (``arrived``). The status polls (every 0.25 s)
  bound the resolution.

``--topology`` names how nodes learn each other: ``mesh`` (full seed lists)
or ``seed`` (a community hub n0 that added every leaf; each leaf has only
the hub as its seed and its admin runs ``peers trust-introductions HUB``,
one command per leaf: leaves learn each other from the hub's signed
introductions and reach each other through it, one relay hop; presence is
not measured there, as it needs a link).

    python bench/federation_scale.py --nodes 10,25 --idle 60

Bounded: each N runs inside ``--timeout`` s; every node is stopped and the
temporary directory removed on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))
from federation import PASSWORD as PW  # noqa: E402
from federation import Node, status  # noqa: E402
from nodeproc import cpu_seconds, machine_cpu, memory_kb, percentile, raise_nofile_limit  # noqa: E402

from chinwag.node.admin import admin_request  # noqa: E402
from chinwag.node.client import ChatClient, api_call, connect, login, signup  # noqa: E402
from chinwag.node.identity import init_identity  # noqa: E402

TOPOLOGIES = ("mesh", "seed")


# ------------------------------------------------------------------ the federation
def seed_args(topology: str, me: int, nodes: list[Node], ids: list[str]) -> list[str]:
    """The seed-list flags of node ``me``."""
    if topology == "mesh":
        out: list[str] = []
        for i, node in enumerate(nodes):
            if i != me:
                out += ["--peer", f"{node.url}#{ids[i]}"]
        return out
    if topology == "seed":
        # n0 is the community's hub: its admin added every leaf (as an
        # invitation would); each leaf knows only the hub.
        if me == 0:
            return seed_args("mesh", 0, nodes, ids)
        return ["--peer", f"{nodes[0].url}#{ids[0]}"]
    raise ValueError(f"unknown topology {topology!r}")


def expected_links(topology: str, n: int, me: int = 0) -> int:
    """Links node ``me`` has once the federation has converged."""
    if topology == "mesh":
        return n - 1
    if topology == "seed":
        return n - 1 if me == 0 else 1
    raise ValueError(f"unknown topology {topology!r}")


async def take_introductions(nodes: list[Node], ids: list[str], timeout: float) -> float:
    """Seed topology: every leaf's admin runs ``peers trust-introductions HUB``
    (one command per leaf); the time until every leaf trusts every other node."""
    started = time.monotonic()
    for node in nodes[1:]:
        await admin_request(node.data, "peers.trust_introductions", {"id": ids[0]}, timeout=30)
    n = len(nodes)
    await wait_all(
        nodes,
        lambda i, v: sum(p["state"] == "trusted" for p in v["peers"]) >= n - 1,
        timeout,
    )
    return time.monotonic() - started


async def statuses(nodes: list[Node]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = [None] * len(nodes)
    limiter = trio.CapacityLimiter(8)

    async def one(i: int) -> None:
        if not nodes[i].running():
            return
        async with limiter:
            try:
                out[i] = await status(nodes[i])
            except Exception:  # noqa: BLE001 - a node busy or restarting: read again
                out[i] = None

    async with trio.open_nursery() as nursery:
        for i in range(len(nodes)):
            nursery.start_soon(one, i)
    return out


async def wait_all(nodes: list[Node], predicate: Any, timeout: float, poll: float = 0.5) -> float:
    """Poll every node's status until ``predicate(i, status)`` holds for all;
    return the seconds it took."""
    started = time.monotonic()
    with trio.fail_after(timeout):
        while True:
            views = await statuses(nodes)
            if all(v is not None and predicate(i, v) for i, v in enumerate(views)):
                return time.monotonic() - started
            await trio.sleep(poll)


async def start_all(nodes: list[Node]) -> None:
    limiter = trio.CapacityLimiter(6)

    async def one(node: Node) -> None:
        async with limiter:
            await trio.to_thread.run_sync(node.start, 120.0)

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(one, node)


# ------------------------------------------------------------------ phases
async def idle_phase(nodes: list[Node], seconds: float) -> dict[str, Any]:
    before = await statuses(nodes)
    cpu0 = [cpu_seconds(n.pid).total for n in nodes]
    machine0 = machine_cpu()
    wall0 = time.monotonic()
    await trio.sleep(seconds)
    wall = time.monotonic() - wall0
    cpu = [cpu_seconds(n.pid).total - c for n, c in zip(nodes, cpu0, strict=True)]
    machine = machine_cpu()
    after = await statuses(nodes)
    commits = [
        int(a["store"]["commits"]) - int(b["store"]["commits"])
        for a, b in zip(after, before, strict=True)
        if a and b
    ]
    gossip = [a.get("gossip", {}) for a in after if a]
    return {
        "seconds": round(wall, 1),
        "federation_cores": round(sum(cpu) / wall, 3),
        "busiest_node_cores": round(max(cpu) / wall, 4),
        "mean_node_cores": round(sum(cpu) / wall / len(nodes), 4),
        "commits_total": sum(commits),
        "commits_max_per_node": max(commits, default=0),
        "gossip_records_verified": sum(g.get("records_verified", 0) for g in gossip),
        "machine_busy_cores": round((machine["busy"] - machine0["busy"]) / wall, 2),
    }


class Devices:
    """One connected device per user; receipts recorded by text tag."""

    def __init__(self) -> None:
        self.clients: dict[str, ChatClient] = {}
        self.direct_ms: list[float] = []
        self.group_got: dict[str, int] = {}
        self.group_last = 0.0
        self.changed = trio.Event()

    async def serve(self, key: str, url: str, token: str, task_status: Any) -> None:
        async with connect(url, token, message_buffer=100_000) as client:
            await client.sync(client.info.head if client.info else 0)
            self.clients[key] = client
            task_status.started()
            async for frame in client.messages:
                if frame.get("kind") != "text":
                    continue
                text = str(frame["body"].get("text", ""))
                tag, _, sent = text.partition(":")
                if tag == "d":
                    self.direct_ms.append((time.time_ns() - int(sent)) / 1e6)
                elif tag == "g":
                    self.group_got[key] = self.group_got.get(key, 0) + 1
                    self.group_last = time.monotonic()
                event, self.changed = self.changed, trio.Event()
                event.set()

    async def until(self, predicate: Any, timeout: float) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()


async def direct_phase(
    devices: Devices, names: list[str], count: int, rate: float, rng: random.Random
) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        for k in range(count):
            a, b = rng.sample(range(len(names)), 2)
            client = devices.clients[names[a]]
            nursery.start_soon(client.send, f"u@{names[b]}", f"d:{time.time_ns()}", f"d{k}")
            await trio.sleep(1 / rate)
    await devices.until(lambda: len(devices.direct_ms) >= count, 60)
    ms = sorted(devices.direct_ms)
    return {
        "messages": count,
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(ms[-1], 1),
    }


async def group_phase(
    devices: Devices, nodes: list[Node], names: list[str], tokens: dict[str, str], messages: int
) -> dict[str, Any]:
    host = devices.clients[names[0]]
    for name in names[1:]:
        # The host's member as a contact: the add is direct, not an invitation.
        await api_call(
            nodes[names.index(name)].url,
            "POST",
            "/api/contacts",
            {"address": f"u@{names[0]}"},
            tokens[name],
        )
    group = f"#scale@{names[0]}"
    await host.group("create", name="scale")
    others = [f"u@{name}" for name in names[1:]]
    for start in range(0, len(others), 50):
        await host.group("add", group=group, members=others[start : start + 50])
    # Every member node has the member list (outboxes drained) before timing.
    await wait_all(nodes, lambda i, v: all(p["outbox"] == 0 for p in v["peers"]), 120)
    started = time.monotonic()
    batch = [(group, f"g:{time.time_ns()}", f"g{k}") for k in range(messages)]
    for reply in await host.send_many(batch):
        if not hasattr(reply, "id"):
            raise RuntimeError(f"group send failed: {reply}")
    total = messages * len(names)
    await devices.until(lambda: sum(devices.group_got.values()) >= total, 300)
    return {
        "members": len(names),
        "messages": messages,
        "deliveries": total,
        "seconds": round(devices.group_last - started, 2),
    }


async def presence_phase(
    devices: Devices, nodes: list[Node], names: list[str], tokens: dict[str, str]
) -> dict[str, Any]:
    star_node = nodes[-1]
    star = f"p@{names[-1]}"
    await signup(star_node.url, "p", PW)
    star_token = (await login(star_node.url, "p", PW, "bench")).token
    for name in names[:-1]:
        await api_call(
            nodes[names.index(name)].url, "POST", "/api/contacts", {"address": star}, tokens[name]
        )
    # Subscriptions have reached the star's node.
    await trio.sleep(2)
    seen: list[float] = []
    started = time.monotonic()

    async def watch(client: ChatClient) -> None:
        await client.wait_presence(star, "online", 120)
        seen.append(time.monotonic() - started)

    async with connect(star_node.url, star_token):
        async with trio.open_nursery() as nursery:
            for name in names[:-1]:
                nursery.start_soon(watch, devices.clients[name])
    seen.sort()
    return {
        "watchers": len(seen),
        "p50_ms": round(percentile(seen, 50) * 1000, 1),
        "all_ms": round(seen[-1] * 1000, 1),
    }


async def churn_phase(
    nodes: list[Node],
    names: list[str],
    tokens: dict[str, str],
    args: argparse.Namespace,
    rng: random.Random,
) -> dict[str, Any]:
    n = len(nodes)
    killed = sorted(rng.sample(range(1, n), max(1, round(n * args.churn))))
    live = [i for i in range(n) if i not in killed]
    heads0 = {}
    for i in killed:
        st = await status(nodes[i])
        heads0[i] = next((q["head"] for q in st["queues"] if q["user"] == "u"), 0)
    for i in killed:
        nodes[i].stop(signal.SIGKILL)
    killed_ids = {nodes[i].node_id for i in killed}
    # Every live node's user queues messages for each killed node's user.
    limiter = trio.CapacityLimiter(8)

    async def send_from(i: int) -> None:
        async with limiter, connect(nodes[i].url, tokens[names[i]]) as client:
            batch = [
                (f"u@{names[j]}", f"c:{k}", f"c{i}-{j}-{k}")
                for j in killed
                for k in range(args.churn_messages)
            ]
            for reply in await client.send_many(batch):
                if not hasattr(reply, "id"):
                    raise RuntimeError(f"churn send failed: {reply}")

    async with trio.open_nursery() as nursery:
        for i in live:
            nursery.start_soon(send_from, i)
    backlog = len(live) * len(killed) * args.churn_messages
    started = time.monotonic()
    await start_all([nodes[i] for i in killed])
    restarted = time.monotonic() - started
    await wait_all(
        nodes,
        lambda i, v: v["federation"]["links"] >= expected_links(args.topology, n, i),
        args.timeout,
        poll=0.25,
    )
    relinked = time.monotonic() - started
    await wait_all(
        nodes,
        lambda i, v: all(p["outbox"] == 0 for p in v["peers"] if p["node_id"] in killed_ids),
        args.timeout,
        poll=0.25,
    )
    drained = time.monotonic() - started
    arrived = 0
    for i in killed:
        st = await status(nodes[i])
        arrived += next((q["head"] for q in st["queues"] if q["user"] == "u"), 0) - heads0[i]
    return {
        "killed": len(killed),
        "backlog": backlog,
        "arrived": arrived,
        "restart_s": round(restarted, 1),
        "relinked_s": round(relinked, 1),
        "drained_s": round(drained, 1),
    }


# ------------------------------------------------------------------ one size
async def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="chinwag-scale-", dir=args.data_root))
    names = [f"n{i}" for i in range(n)]
    common = argparse.Namespace(python=args.python, node_arg=[])
    nodes = [Node(root, name, common) for name in names]
    ids = [init_identity(node.data, node.name).id for node in nodes]
    for i, node in enumerate(nodes):
        node.node_id = ids[i]
        node._args = argparse.Namespace(  # noqa: SLF001 - one seed list per node
            python=args.python,
            node_arg=[*seed_args(args.topology, i, nodes, ids), *args.node_arg],
        )
    result: dict[str, Any] = {"nodes": n, "topology": args.topology}
    try:
        with trio.fail_after(args.timeout):
            started = time.monotonic()
            await start_all(nodes)
            result["started_s"] = round(time.monotonic() - started, 1)
            await wait_all(
                nodes,
                lambda i, v: v["federation"]["links"] >= expected_links(args.topology, n, i),
                args.timeout,
            )
            if args.topology == "seed":
                result["introductions_s"] = round(
                    await take_introductions(nodes, ids, args.timeout), 1
                )
            result["converge_s"] = round(time.monotonic() - started, 1)
            tokens: dict[str, str] = {}
            for node in nodes:
                await signup(node.url, "u", PW)
                tokens[node.name] = (await login(node.url, "u", PW, "bench")).token
            # Let the start-up settle (first gossip rounds, sign-up commits).
            await trio.sleep(args.settle)
            result["idle"] = await idle_phase(nodes, args.idle)
            devices = Devices()
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(devices.serve, node.name, node.url, tokens[node.name])
                result["direct"] = await direct_phase(devices, names, args.direct, args.rate, rng)
                result["group"] = await group_phase(
                    devices, nodes, names, tokens, args.group_messages
                )
                if args.topology == "seed":
                    # Presence subscriptions travel over links; leaves have
                    # none between them, and presence is not relayed.
                    result["presence"] = {"watchers": 0, "p50_ms": None, "all_ms": "n/a"}
                else:
                    result["presence"] = await presence_phase(devices, nodes, names, tokens)
                nursery.cancel_scope.cancel()
            if args.churn > 0:
                result["churn"] = await churn_phase(nodes, names, tokens, args, rng)
            rss = [memory_kb(node.pid)["VmRSS"] for node in nodes if node.running()]
            result["rss_mb_per_node"] = round(sum(rss) / len(rss) / 1024, 1)
    except BaseException:
        for node in nodes[:3]:
            print(f"--- {node.name} log tail:\n{node.log_tail()}", file=sys.stderr)
        raise
    finally:
        with trio.CancelScope(shield=True):
            for node in nodes:
                await trio.to_thread.run_sync(node.stop)
        shutil.rmtree(root, ignore_errors=True)
    return result


def print_row(r: dict[str, Any]) -> None:
    idle, d, g, p = r["idle"], r["direct"], r["group"], r["presence"]
    c = r.get("churn", {})
    print(
        f"| {r['nodes']} | {r['converge_s']} | {idle['federation_cores'] * 100:.1f} % "
        f"| {idle['busiest_node_cores'] * 100:.2f} % | {idle['commits_total']} "
        f"| {d['p50_ms']} / {d['p99_ms']} | {g['seconds']} | {p['all_ms']} "
        f"| {c.get('backlog', '-')} in {c.get('drained_s', '-')} s "
        f"| {idle['machine_busy_cores']} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", default="10,25", help="comma-separated federation sizes")
    p.add_argument("--topology", choices=TOPOLOGIES, default="mesh")
    p.add_argument("--idle", type=float, default=60.0, help="idle window (s)")
    p.add_argument("--settle", type=float, default=10.0, help="pause before the idle window")
    p.add_argument("--direct", type=int, default=200, help="1:1 messages")
    p.add_argument("--rate", type=float, default=20.0, help="1:1 messages per second")
    p.add_argument("--group-messages", type=int, default=20)
    p.add_argument("--churn", type=float, default=0.2, help="share of nodes killed")
    p.add_argument("--churn-messages", type=int, default=5, help="per live node and killed node")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--timeout", type=float, default=900.0, help="per federation size (s)")
    p.add_argument("--data-root", help="where the temporary data directories go")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--node-arg", action="append", default=[], help="extra flag for every node")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    raise_nofile_limit()
    results = []
    for n in (int(x) for x in args.nodes.split(",")):
        result = trio.run(run_size, n, args)
        print(json.dumps(result), flush=True)
        results.append(result)
    print(
        "\n| N | converge s | idle CPU, federation (of one core) | busiest node "
        "| idle commits | 1:1 p50 / p99 ms | group fan-out s | presence ms "
        "| churn backlog drained | machine busy cores |"
    )
    print("| --- " * 10 + "|")
    for result in results:
        print_row(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
