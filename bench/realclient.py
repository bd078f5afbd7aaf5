#!/usr/bin/env python3
"""Real-client load benchmark: drive a node the way real clients do.

The client side shares no code with the node: it is asyncio with the
`websockets` library, `cbor2` for frames and `urllib` for the HTTP API, and
it behaves like the web client:

* one frame per WebSocket message, both ways (the node may batch what it
  sends; the client never does);
* after every received WebSocket message that held ``msg`` frames, one
  ``ack`` frame with the highest ``seq`` in it (senders ack their own copies
  too, as every device does).

The node runs in a subprocess (``nodeproc.NodeProcess``: fresh data dir on
disk so every commit pays its fsync, signing and strict decoding as in
production, per-device send limits lifted). Scenarios (``--scenario``):

* ``pairs`` (default): ``--pairs`` sender/receiver users, one device each;
  sender ``sI`` writes to ``rI``. ``--mode max`` keeps ``--window`` sends in
  flight per sender (the next goes when an ``ok`` comes back); ``--mode rate
  --rate R`` sends R messages/s in total on staggered schedules, never
  waiting for ``ok``.
* ``group``: one group of ``--members`` users (all connected); ``--senders``
  of them send to it (``--mode max`` or ``rate``); a delivery is one ``msg``
  of the group received by a member other than its sender.
* ``federation``: two nodes linked by pinned keys (through the admin CLI);
  ``--pairs`` senders on the first write to receivers on the second, over
  the one link; the headline is delivered messages/s end to end.
* ``idle``: ``--users`` x ``--devices`` authenticated, synced, idle
  connections (heartbeats every 10 s); reported: node memory per connection
  (VmRSS and RssAnon growth over the connections, settled).

Reported (JSON with ``--json``): delivered messages/s (messages received /
time from the phase's first send to its last receipt), deliveries/s for
groups, send->receive latency p50/p99/max (the text carries the send time),
node CPU seconds per 1,000 messages (utime+stime of all node threads; for
groups per 1,000 deliveries too), client CPU per 1,000, node RSS, and the
frames per WebSocket message the node sent (how much it batched).
``--spy FILE`` records the node with py-spy during the measured phase (raw
stacks; summarise with ``bench/spystats.py``). Every phase is bounded by
``--timeout``; on timeout the partial figures are printed and marked.

    python bench/realclient.py                                # pairs, max
    python bench/realclient.py --mode rate --rate 1000 --messages 20000
    python bench/realclient.py --scenario group --members 20 --senders 4
    python bench/realclient.py --scenario idle --users 100 --devices 10
    python bench/repeat.py -n 5 -- bench/realclient.py --wait-quiet 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cbor2
from nodeproc import (
    NodeProcess,
    cpu_seconds,
    machine_cpu,
    memory_kb,
    percentile,
    raise_nofile_limit,
    wait_for_quiet,
)
from websockets.asyncio.client import ClientConnection, connect

PASSWORD = "bench-password-realclient"
SUBPROTOCOL = "chinwag.cbor.v1"


# ---------------------------------------------------------------- HTTP API


def http_json(url: str, path: str, body: dict[str, Any], token: str | None = None) -> Any:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
        method="POST",
    )
    for _ in range(50):
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code != 429:
                raise RuntimeError(f"{path}: HTTP {exc.code} {exc.read()[:200]!r}") from exc
            time.sleep(float(exc.headers.get("Retry-After", "0.2") or 0.2))
    raise RuntimeError(f"{path}: still rate limited")


def make_user(url: str, name: str, devices: int = 1) -> list[str]:
    """Sign ``name`` up and log ``devices`` devices in; their tokens."""
    http_json(url, "/api/signup", {"user": name, "password": PASSWORD})
    return [
        http_json(url, "/api/login", {"user": name, "password": PASSWORD, "device": f"d{i}"})[
            "token"
        ]
        for i in range(devices)
    ]


# ---------------------------------------------------------------- a device


@dataclass
class Tally:
    """What every device of one phase counts, in this process."""

    tag: str = ""
    record: bool = False
    expected: int = 0
    received: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    last_ns: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    errors: Counter[str] = field(default_factory=Counter)
    #: (receiving user, message id) of every delivery, to count duplicates.
    seen: set[tuple[str, int]] = field(default_factory=set)
    duplicates: int = 0
    #: WebSocket messages and frames the node sent (all devices).
    ws_messages: int = 0
    frames: int = 0

    def check(self) -> None:
        if self.expected and self.received >= self.expected and not self.done.is_set():
            self.last_ns = time.perf_counter_ns()
            self.done.set()


class Device:
    """One connection: auth, sync from the head, read, ack per message."""

    def __init__(self, user: str, token: str, tally: Tally) -> None:
        self.user = user
        self.token = token
        self.tally = tally
        self.ws: ClientConnection | None = None
        self._rid = 10
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.window: asyncio.Semaphore | None = None
        self.reader: asyncio.Task[None] | None = None

    async def open(self, ws_url: str) -> None:
        self.ws = await connect(
            ws_url,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            compression=None,
            max_size=2 << 20,
            ping_interval=None,
            open_timeout=30,
        )
        await self.ws.send(cbor2.dumps({"t": "auth", "rid": 1, "token": self.token}))
        reply = await self._reply_to(1)
        await self.ws.send(cbor2.dumps({"t": "sync", "rid": 2, "after": reply["head"]}))
        await self._reply_to(2)
        self.reader = asyncio.create_task(self._read())

    async def _reply_to(self, rid: int) -> dict[str, Any]:
        """Read until the reply to ``rid`` (presence frames may come first)."""
        assert self.ws is not None
        while True:
            item = cbor2.loads(await asyncio.wait_for(self.ws.recv(), 30))
            for frame in item if isinstance(item, list) else [item]:
                if frame.get("rid") == rid:
                    if frame.get("t") != "ok":
                        raise RuntimeError(f"refused: {frame}")
                    return frame

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        assert self.ws is not None
        self._rid += 1
        frame["rid"] = self._rid
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[self._rid] = future
        await self.ws.send(cbor2.dumps(frame))
        return await asyncio.wait_for(future, 30)

    async def send_text(self, to: str, text: str) -> None:
        """One ``send`` frame in its own WebSocket message, not awaiting its ``ok``."""
        assert self.ws is not None
        self._rid += 1
        await self.ws.send(cbor2.dumps({"t": "send", "rid": self._rid, "to": to, "text": text}))

    async def _read(self) -> None:
        assert self.ws is not None
        tally = self.tally
        async for data in self.ws:
            now = time.perf_counter_ns()
            item = cbor2.loads(data)
            frames = item if isinstance(item, list) else [item]
            tally.ws_messages += 1
            tally.frames += len(frames)
            top = 0
            for frame in frames:
                kind = frame.get("t")
                if kind == "msg":
                    top = max(top, frame["seq"])
                    self._on_msg(frame, now)
                elif kind in ("ok", "err"):
                    rid = frame.get("rid")
                    future = self._replies.pop(rid, None) if rid is not None else None
                    if future is not None and not future.done():
                        future.set_result(frame)
                    elif kind == "err":
                        tally.errors[frame.get("code", "?")] += 1
                        if self.window is not None:
                            self.window.release()
                    elif self.window is not None:
                        self.window.release()
            if top:
                await self.ws.send(cbor2.dumps({"t": "ack", "seq": top}))

    def _on_msg(self, frame: dict[str, Any], now: int) -> None:
        tally = self.tally
        body = frame.get("body")
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.startswith(tally.tag + " "):
            return
        sender = frame.get("from")
        if isinstance(sender, dict) and sender.get("u") == self.user:
            return  # one's own copy: acked, not a delivery
        key = (self.user, frame["id"])
        if key in tally.seen:
            tally.duplicates += 1
            return
        tally.seen.add(key)
        tally.received += 1
        if tally.record:
            tally.latencies_ns.append(now - int(text.split(" ", 3)[2]))
        tally.check()

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            await self.ws.close()


def text_of(tag: str, size: int) -> str:
    head = f"{tag} x {time.perf_counter_ns()} "
    return head + "." * max(0, size - len(head))


# ---------------------------------------------------------------- sending


async def send_max(device: Device, to: str, count: int, window: int, tag: str, size: int) -> None:
    device.window = asyncio.Semaphore(window)
    for _ in range(count):
        await device.window.acquire()
        await device.send_text(to, text_of(tag, size))


async def send_rate(
    device: Device, to: str, count: int, per_second: float, offset: float, tag: str, size: int
) -> None:
    device.window = None
    start = time.monotonic() + offset
    for n in range(count):
        delay = start + n / per_second - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await device.send_text(to, text_of(tag, size))


@dataclass
class Plan:
    """Who sends how much to whom in one phase."""

    senders: list[tuple[Device, str]]
    per_sender: list[int]
    receivers_per_message: int


async def run_phase(
    node: NodeProcess, plan: Plan, tally: Tally, args: argparse.Namespace, *, record: bool
) -> dict[str, Any]:
    total = sum(plan.per_sender)
    tally.tag = f"p{time.monotonic_ns()}"
    tally.record = record
    tally.expected = total * plan.receivers_per_message
    tally.received = 0
    tally.latencies_ns = []
    tally.done = asyncio.Event()
    tally.errors.clear()
    tally.seen.clear()
    tally.duplicates = 0
    ws_before, frames_before = tally.ws_messages, tally.frames
    spy = start_spy(node.pid, args) if record and args.spy else None
    cpu0, own0 = cpu_seconds(node.pid), time.process_time()
    start = time.perf_counter_ns()
    if args.mode == "max":
        tasks = [
            send_max(dev, to, n, args.window, tally.tag, args.size)
            for (dev, to), n in zip(plan.senders, plan.per_sender, strict=True)
        ]
    else:
        per_sender = args.rate / len(plan.senders)
        tasks = [
            send_rate(dev, to, n, per_sender, i / args.rate, tally.tag, args.size)
            for i, ((dev, to), n) in enumerate(zip(plan.senders, plan.per_sender, strict=True))
        ]
    sending = asyncio.gather(*tasks)
    completed = True
    try:
        await asyncio.wait_for(asyncio.shield(tally.done.wait()), args.timeout)
    except TimeoutError:
        completed = False
    sending.cancel()
    try:
        await sending
    except (asyncio.CancelledError, Exception):
        pass
    end = tally.last_ns or time.perf_counter_ns()
    cpu = cpu_seconds(node.pid) - cpu0
    own = time.process_time() - own0
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        spy.wait(timeout=60)
    seconds = (end - start) / 1e9
    messages = tally.received / max(1, plan.receivers_per_message)
    lat = sorted(x / 1e6 for x in tally.latencies_ns)
    ws = tally.ws_messages - ws_before
    return {
        "completed": completed,
        "messages": round(messages),
        "deliveries": tally.received,
        "seconds": round(seconds, 3),
        "messages_per_s": round(messages / seconds) if seconds else 0,
        "deliveries_per_s": round(tally.received / seconds) if seconds else 0,
        "p50_ms": round(percentile(lat, 50), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(lat[-1], 2) if lat else None,
        "node_cpu_s_per_1000": round(1000 * cpu.total / max(1, messages), 4),
        "node_trio_cpu_s_per_1000": round(1000 * cpu.main / max(1, messages), 4),
        "node_cpu_s_per_1000_deliveries": round(1000 * cpu.total / max(1, tally.received), 4),
        "node_cores": round(cpu.total / seconds, 2) if seconds else 0,
        "client_cpu_s_per_1000": round(1000 * own / max(1, messages), 4),
        "frames_per_ws_message": round((tally.frames - frames_before) / max(1, ws), 2),
        "errors": dict(tally.errors),
        "duplicates": tally.duplicates,
    }


def start_spy(pid: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [args.spy_bin, "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    cmd += ["--output", args.spy, "--nonblocking", "--threads"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------- scenarios


async def open_devices(ws_url: str, specs: list[tuple[str, str]], tally: Tally) -> list[Device]:
    devices = [Device(user, token, tally) for user, token in specs]
    # In slices: the node admits a bounded number of unauthenticated connections.
    for i in range(0, len(devices), 100):
        await asyncio.gather(*(d.open(ws_url) for d in devices[i : i + 100]))
    return devices


async def scenario_pairs(node: NodeProcess, args: argparse.Namespace) -> dict[str, Any]:
    url, ws_url = node.url, node.url.replace("http", "ws", 1) + "/ws"
    specs: list[tuple[str, str]] = []
    for i in range(args.pairs):
        specs.append((f"s{i}", make_user(url, f"s{i}")[0]))
        specs.append((f"r{i}", make_user(url, f"r{i}")[0]))
    tally = Tally()
    devices = await open_devices(ws_url, specs, tally)
    senders = [(devices[2 * i], f"r{i}") for i in range(args.pairs)]
    try:
        return await measure(node, senders, 1, tally, args)
    finally:
        await asyncio.gather(*(d.close() for d in devices), return_exceptions=True)


async def scenario_group(node: NodeProcess, args: argparse.Namespace) -> dict[str, Any]:
    url, ws_url = node.url, node.url.replace("http", "ws", 1) + "/ws"
    names = [f"m{i}" for i in range(args.members)]
    tokens = [make_user(url, name)[0] for name in names]
    # Members who have the owner in their contacts are added directly (consent).
    for token in tokens[1:]:
        http_json(url, "/api/contacts", {"address": names[0]}, token)
    tally = Tally()
    devices = await open_devices(ws_url, list(zip(names, tokens, strict=True)), tally)
    owner = devices[0]
    reply = await owner.request({"t": "group", "op": "create", "name": "bench"})
    group = reply["group"]
    reply = await owner.request({"t": "group", "op": "add", "group": group, "members": names[1:]})
    if reply.get("t") != "ok" or reply.get("members") != args.members:
        raise RuntimeError(f"group add: {reply}")
    senders = [(devices[i], group) for i in range(args.senders)]
    try:
        return await measure(node, senders, args.members - 1, tally, args)
    finally:
        await asyncio.gather(*(d.close() for d in devices), return_exceptions=True)


async def measure(
    node: NodeProcess,
    senders: list[tuple[Device, str]],
    fan: int,
    tally: Tally,
    args: argparse.Namespace,
) -> dict[str, Any]:
    if args.warmup:
        await run_phase(
            node, Plan(senders, split(args.warmup, len(senders)), fan), tally, args, record=False
        )
    if args.wait_quiet:
        wait_for_quiet(args.wait_quiet)
    machine0 = machine_cpu()
    result = await run_phase(
        node, Plan(senders, split(args.messages, len(senders)), fan), tally, args, record=True
    )
    machine1 = machine_cpu()
    busy = machine1["busy"] - machine0["busy"]
    result["machine_busy_cores"] = round(busy / max(1e-9, result["seconds"]), 2)
    result["node_rss_kib"] = memory_kb(node.pid).get("VmRSS", 0)
    return result


async def scenario_idle(node: NodeProcess, args: argparse.Namespace) -> dict[str, Any]:
    url, ws_url = node.url, node.url.replace("http", "ws", 1) + "/ws"
    specs: list[tuple[str, str]] = []
    for u in range(args.users):
        name = f"u{u}"
        specs += [(name, token) for token in make_user(url, name, args.devices)]
    tally = Tally()
    # One warm connection first, so one-off costs (imports, caches) are not counted.
    warm = await open_devices(ws_url, specs[:1], tally)
    await asyncio.sleep(args.settle)
    before = memory_kb(node.pid)
    devices = await open_devices(ws_url, specs[1:], tally)

    async def heartbeats() -> None:
        while True:
            await asyncio.sleep(10)
            for d in devices:
                assert d.ws is not None
                await d.ws.send(cbor2.dumps({"t": "heartbeat"}))

    beat = asyncio.create_task(heartbeats())
    await asyncio.sleep(args.settle)
    after = memory_kb(node.pid)
    beat.cancel()
    count = len(devices)
    await asyncio.gather(*(d.close() for d in warm + devices), return_exceptions=True)
    return {
        "connections": count,
        "rss_kib_per_connection": round((after["VmRSS"] - before["VmRSS"]) / count, 2),
        "anon_kib_per_connection": round(
            (after.get("RssAnon", 0) - before.get("RssAnon", 0)) / count, 2
        ),
        "node_rss_kib": after["VmRSS"],
    }


def admin(node: NodeProcess, *argv: str) -> str:
    """The admin CLI against a running node (its admin socket), as an admin would."""
    return subprocess.run(
        [sys.executable, "-m", "chinwag.cli", *argv, "--data", str(node.data_dir / "node")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def node_status(node: NodeProcess) -> dict[str, Any]:
    return json.loads(admin(node, "status", "--json"))  # type: ignore[no-any-return]


async def link(n1: NodeProcess, n2: NodeProcess) -> None:
    ids = [node_status(n)["node_id"] for n in (n1, n2)]
    admin(n1, "peers", "add", f"{n2.url}#{ids[1]}")
    admin(n2, "peers", "add", f"{n1.url}#{ids[0]}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        peers = node_status(n1).get("peers", [])
        if any(p.get("node_id") == ids[1] and p.get("link") == "linked" for p in peers):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the two nodes did not link within 30 s")


async def scenario_federation(
    n1: NodeProcess, n2: NodeProcess, args: argparse.Namespace
) -> dict[str, Any]:
    """Senders on n1, receivers on n2, one link between them; n1's CPU and n2's."""
    await link(n1, n2)
    ws1, ws2 = (n.url.replace("http", "ws", 1) + "/ws" for n in (n1, n2))
    n2_name = "bench2"
    s_specs = [(f"s{i}", make_user(n1.url, f"s{i}")[0]) for i in range(args.pairs)]
    r_specs = [(f"r{i}", make_user(n2.url, f"r{i}")[0]) for i in range(args.pairs)]
    tally = Tally()
    devices = await open_devices(ws1, s_specs, tally) + await open_devices(ws2, r_specs, tally)
    senders = [(devices[i], f"r{i}@{n2_name}") for i in range(args.pairs)]
    cpu2 = cpu_seconds(n2.pid)
    try:
        result = await measure(n1, senders, 1, tally, args)
    finally:
        await asyncio.gather(*(d.close() for d in devices), return_exceptions=True)
    used2 = cpu_seconds(n2.pid) - cpu2
    # n2's reading spans the warm-up too; n1's spans the measured phase only.
    result["receiver_node_cpu_s_per_1000_incl_warmup"] = round(
        1000 * used2.total / max(1, result["messages"] + args.warmup), 4
    )
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile_limit()
    extra: tuple[str, ...] = tuple(args.node_arg or ())
    if args.scenario == "federation":
        with (
            NodeProcess(extra_args=extra) as n1,
            NodeProcess(extra_args=(*extra, "--name", "bench2")) as n2,
        ):
            return {
                "scenario": args.scenario,
                "mode": args.mode,
                **await scenario_federation(n1, n2, args),
            }
    with NodeProcess(extra_args=extra) as node:
        if args.scenario == "pairs":
            result = await scenario_pairs(node, args)
        elif args.scenario == "group":
            result = await scenario_group(node, args)
        else:
            result = await scenario_idle(node, args)
    return {"scenario": args.scenario, "mode": args.mode, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--scenario", choices=("pairs", "group", "idle", "federation"), default="pairs"
    )
    parser.add_argument("--mode", choices=("max", "rate"), default="max")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--senders", type=int, default=4, help="group: members who send")
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--warmup", type=int, default=3_000)
    parser.add_argument("--window", type=int, default=16, help="max: sends in flight per sender")
    parser.add_argument("--rate", type=float, default=1000.0, help="rate: messages/s in total")
    parser.add_argument("--size", type=int, default=64, help="text length in characters")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="bound per phase (s)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S")
    parser.add_argument("--node-arg", action="append", help="extra `chinwag run` argument")
    parser.add_argument("--spy", metavar="FILE", help="py-spy the node (raw stacks to FILE)")
    parser.add_argument("--spy-bin", default="py-spy")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    result = {"commit": commit, **asyncio.run(run(args))}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")
    return 0 if result.get("completed", True) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
