#!/usr/bin/env python3
"""Federation benchmark: 1:1 messages from users on n1 to users on n2 over one link.

Two nodes on 127.0.0.1 (fresh data directories under /tmp, ``--no-mdns``, the
per-device limits lifted), trusting each other by pinned key; ``--pairs``
senders ``s0..`` on n1 and receivers ``r0..`` on n2, sender ``sI`` writing to
``rI@n2``. n2 verifies the Ed25519 signature of every envelope it takes
from the link (``PeerRegistry.apply_inbound``); nothing here turns that off.

Phases, in order (each can be skipped with a 0):

* warm-up (``--warmup`` messages, not measured);
* ``max`` (``--messages``): every sender keeps ``--window`` sends in flight
  as ``send_many`` batches of ``--batch`` frames. Delivered/s = messages
  received on n2 / (last receipt - phase start). Each text carries its send
  time, so latency = receipt - send in this process; it is split at the
  ``ts`` n1 stamps on the message (send -> n1 ``ts``, n1 ``ts`` -> receipt
  on n2, which holds the link and n2's commit);
* ``rate`` (``--rate R[,R2,...]``, ``--rate-seconds`` each): R messages/s in
  total, each sender on its own staggered schedule, one ``send`` frame per
  message, never waiting for the previous ``ok``: latency at moderate load;
* ``catch-up`` (``--catchup N``): n2 is stopped (SIGTERM, or SIGKILL with
  ``--kill``), the senders queue N messages for receivers on n2 (n1's
  outbox to n2 must reach N), n2 restarts on the same port. Polling both
  admin sockets every ``--poll`` s gives the time until n2 has committed all
  N into its users' queues (its ``received`` counter for n1) and until n1's
  outbox is empty (n2 acknowledged after its commit); queue heads on n2 are
  checked before and after. Catch-up/s = N / (outbox empty - n2 ready).
  ``--catchup-online`` also connects the receivers as soon as n2 is ready
  and counts until they have all N (delivery to devices during catch-up).

CPU of both nodes (``/proc``), of this process and of the whole machine is
read around each measured phase ("other_load_cores" = what none of the three
used: the machine is shared). ``--spy DIR`` records both nodes with py-spy
(raw collapsed stacks, ``--threads``) during the ``max`` and catch-up phases
(and n1 while it queues for the stopped n2);
summarise with ``python bench/spystats.py FILE``.

Bounded: every phase has a deadline inside ``--timeout`` (170 s); both nodes
are stopped and the temp directory removed on the way out, whatever happens.

    python bench/federation.py                         # all phases, defaults
    python bench/federation.py --catchup 20000 --rate 1000,2000,3000
    python bench/repeat.py -n 5 -- bench/federation.py --wait-quiet 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nodeproc import (  # noqa: E402  (bench/ is not a package)
    BENCH_LIMITS,
    BENCH_SIGNUPS,
    CpuSample,
    cpu_seconds,
    machine_cpu,
    memory_kb,
    percentile,
    raise_nofile_limit,
    send_windowed,
    wait_for_quiet,
)

from chinwag.node.admin import admin_request  # noqa: E402
from chinwag.node.client import ChatClient, ClientError, connect, login, signup  # noqa: E402

PASSWORD = "bench-password"
READY_MARK = " ready at "


# ------------------------------------------------------------------ nodes


_TAKEN: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free port below the ephemeral range, so that the nodes' own outgoing
    connections (thousands in a large mesh) can never take a port kept for a
    node that has not started yet, as a port picked by binding to 0 could."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(10_000, max(10_001, low))
        if port in _TAKEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


class Node:
    """A node on 127.0.0.1 with a fixed port, so a restart keeps its URL."""

    def __init__(self, root: Path, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.data = root / name
        self.log_path = root / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.node_id = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._args = args
        self._ready_lines = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> float:
        """Start the node; return seconds until it printed its ready line."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        cmd = [
            self._args.python,
            # The CLI with cheap Argon2id: many users sign up (test-only entry).
            str(Path(__file__).resolve().parent.parent / "tests" / "fastkdf.py"),
            "-m",
            "chinwag.cli",
            "run",
            "--data",
            str(self.data),
            "--name",
            self.name,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--no-mdns",
            *BENCH_LIMITS,
            *BENCH_SIGNUPS,
            *self._args.node_arg,
        ]
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        while time.monotonic() - started < timeout:
            lines = self.log_path.read_text(errors="replace").count(READY_MARK)
            if lines > self._ready_lines:
                self._ready_lines = lines
                return time.monotonic() - started
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def status(node: Node) -> dict[str, Any]:
    return await admin_request(node.data, "status", {}, timeout=10)


def peer_entry(st: dict[str, Any], other: Node) -> dict[str, Any]:
    for peer in st["peers"]:
        if peer["node_id"] == other.node_id:
            return dict(peer)
    return {"link": "none", "outbox": 0, "sent": 0, "received": 0, "refused": 0}


def queue_heads(st: dict[str, Any], prefix: str) -> dict[str, int]:
    return {q["user"]: int(q["head"]) for q in st["queues"] if q["user"].startswith(prefix)}


async def wait_link(a: Node, b: Node, linked: bool, timeout: float) -> None:
    with trio.fail_after(timeout):
        while (peer_entry(await status(a), b)["link"] == "linked") != linked:  # noqa: ASYNC110
            await trio.sleep(0.05)


# ------------------------------------------------------------------ CPU readings


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuWindow:
    """CPU of n1, n2, this process and the machine over one measured phase."""

    nodes: list[Node]
    before: list[CpuSample] = field(default_factory=list)
    own: float = 0.0
    machine: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def start(self) -> CpuWindow:
        self.before = [cpu_seconds(n.pid) for n in self.nodes]
        self.own = own_cpu()
        self.machine = machine_cpu()
        self.wall = time.monotonic()
        return self

    def finish(self, messages: int) -> dict[str, Any]:
        wall = max(1e-6, time.monotonic() - self.wall)
        per_k = 1000 / messages if messages else math.nan
        out: dict[str, Any] = {}
        used = 0.0
        for node, before in zip(self.nodes, self.before, strict=True):
            if not node.running():
                continue
            cpu = cpu_seconds(node.pid) - before
            used += cpu.total
            out[f"{node.name}_cores"] = round(cpu.total / wall, 2)
            out[f"{node.name}_trio_cores"] = round(cpu.main / wall, 2)
            out[f"{node.name}_cpu_s_per_1000"] = round(cpu.total * per_k, 4)
        own = own_cpu() - self.own
        machine = machine_cpu()
        busy = (machine["busy"] - self.machine["busy"]) / wall
        out["loadgen_cores"] = round(own / wall, 2)
        out["machine_busy_cores"] = round(busy, 2)
        out["other_load_cores"] = round(max(0.0, busy - used / wall - own / wall), 2)
        out["steal_cores"] = round((machine["steal"] - self.machine["steal"]) / wall, 2)
        return out


def tcp_attempt_fails() -> int:
    """Failed TCP connects on the whole machine (/proc/net/snmp AttemptFails)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("AttemptFails")])


class Spy:
    """py-spy on both nodes for one phase (raw collapsed stacks, one file per node)."""

    def __init__(
        self, args: argparse.Namespace, nodes: list[Node], tag: str, settle: bool = True
    ) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        if not args.spy:
            return
        Path(args.spy).mkdir(parents=True, exist_ok=True)
        for node in nodes:
            cmd = [args.spy_bin, "record", "--pid", str(node.pid), "--rate", "200"]
            cmd += ["--format", "raw", "--threads", "--nonblocking"]
            cmd += ["--output", str(Path(args.spy) / f"{tag}-{node.name}.txt")]
            if args.spy_gil:
                cmd.append("--gil")
            self.procs.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        if self.procs and settle:
            time.sleep(0.5)  # attach before the phase starts

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for proc in self.procs:
            try:
                await trio.to_thread.run_sync(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []


# ------------------------------------------------------------------ traffic


@dataclass
class Phase:
    tag: str
    expected: int
    record: bool = True
    received: int = 0
    sent_ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    start_ns: int = 0
    last_recv_ns: int = 0
    last_ok_ns: int = 0
    max_lag_ms: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    to_ts_ms: list[int] = field(default_factory=list)
    from_ts_ms: list[int] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)

    def got(self) -> None:
        self.received += 1
        if self.received >= self.expected:
            self.last_recv_ns = time.perf_counter_ns()
            self.done.set()

    def failed(self, code: str, count: int = 1) -> None:
        self.errors[code] = self.errors.get(code, 0) + count


class Receivers:
    """Receiver connections on n2; every msg frame is matched to the current phase."""

    def __init__(self, ack_every: int) -> None:
        self.phase: Phase | None = None
        self.stray = 0
        self.ack_every = ack_every

    async def run(self, client: ChatClient) -> None:
        unacked = 0
        seq = 0
        async for frame in client.messages:
            now_ns = time.perf_counter_ns()
            seq = frame.get("seq", seq)
            parts = str((frame.get("body") or {}).get("text", "")).split(" ", 5)
            phase = self.phase
            if phase is None or len(parts) < 5 or parts[0] != phase.tag:
                self.stray += 1
                continue
            if phase.record:
                wall_ms = time.time_ns() // 1_000_000
                phase.latencies_ms.append((now_ns - int(parts[3])) / 1e6)
                ts = frame.get("ts")
                if isinstance(ts, int):
                    phase.to_ts_ms.append(ts - int(parts[4]) // 1_000_000)
                    phase.from_ts_ms.append(wall_ms - ts)
            phase.got()
            unacked += 1
            if self.ack_every and unacked >= self.ack_every:
                unacked = 0
                await client.ack(seq)


def make_text(tag: str, sender: int, n: int, size: int) -> str:
    head = f"{tag} {sender} {n} {time.perf_counter_ns()} {time.time_ns()} "
    return head + "x" * max(0, size - len(head))


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def send_max(
    client: ChatClient, idx: int, to: str, count: int, phase: Phase, args: argparse.Namespace
) -> None:
    """Keep ``--window`` sends in flight as batches of ``--batch`` frames."""

    def settle(results: list[Any] | ClientError, k: int) -> None:
        if isinstance(results, ClientError):
            phase.failed(results.code, k)
            return
        for result in results:
            if isinstance(result, ClientError):
                phase.failed(result.code)
            else:
                phase.sent_ok += 1
        phase.last_ok_ns = time.perf_counter_ns()

    await send_windowed(
        client,
        count,
        args.batch,
        args.window,
        lambda n: (to, make_text(phase.tag, idx, n, args.size), f"{phase.tag}-{idx}-{n}"),
        settle,
    )


async def send_paced(
    client: ChatClient,
    idx: int,
    to: str,
    count: int,
    phase: Phase,
    rate: float,
    pairs: int,
    t0: float,
    size: int,
) -> None:
    """``rate / pairs`` messages/s from this sender, one frame each, staggered."""
    interval = pairs / rate
    offset = idx / rate

    async def one(n: int) -> None:
        try:
            await client.send(to, make_text(phase.tag, idx, n, size), f"{phase.tag}-{idx}-{n}")
            phase.sent_ok += 1
        except ClientError as exc:
            phase.failed(exc.code)

    async with trio.open_nursery() as nursery:
        for n in range(count):
            due = t0 + offset + n * interval
            await trio.sleep_until(due)
            phase.max_lag_ms = max(phase.max_lag_ms, (trio.current_time() - due) * 1000)
            nursery.start_soon(one, n)


async def run_phase(
    senders: list[ChatClient],
    n2_name: str,
    phase: Phase,
    start: Callable[[ChatClient, int, str, int, float], Any],
    deadline: float,
) -> bool:
    """Run the senders until every message of ``phase`` arrived; False if out of time."""
    phase.start_ns = time.perf_counter_ns()
    t0 = trio.current_time() + 0.01
    with trio.move_on_after(deadline) as scope:
        async with trio.open_nursery() as nursery:
            for idx, (client, count) in enumerate(
                zip(senders, split(phase.expected, len(senders)), strict=True)
            ):
                if count:
                    nursery.start_soon(start, client, idx, f"r{idx}@{n2_name}", count, t0)
            await phase.done.wait()
    return not scope.cancelled_caught


def summarise(phase: Phase, completed: bool) -> dict[str, Any]:
    end_ns = phase.last_recv_ns or time.perf_counter_ns()
    wall = max(1e-9, (end_ns - phase.start_ns) / 1e9)
    lat = sorted(phase.latencies_ms)
    to_ts = sorted(float(v) for v in phase.to_ts_ms)
    from_ts = sorted(float(v) for v in phase.from_ts_ms)
    out: dict[str, Any] = {
        "completed": completed,
        "messages": phase.received,
        "send_errors": dict(phase.errors),
        "seconds": round(wall, 3),
        "delivered_per_s": round(phase.received / wall),
    }
    if phase.last_ok_ns:
        accepted_wall = max(1e-9, (phase.last_ok_ns - phase.start_ns) / 1e9)
        out["accepted_by_n1_per_s"] = round(phase.sent_ok / accepted_wall)
    if lat:
        out["latency_ms"] = {
            "p50": round(percentile(lat, 50), 1),
            "p90": round(percentile(lat, 90), 1),
            "p99": round(percentile(lat, 99), 1),
            "max": round(lat[-1], 1),
        }
        out["send_to_n1_ts_ms"] = {"p50": percentile(to_ts, 50), "p99": percentile(to_ts, 99)}
        out["n1_ts_to_receipt_ms"] = {
            "p50": percentile(from_ts, 50),
            "p99": percentile(from_ts, 99),
        }
    if phase.max_lag_ms:
        out["max_pacing_lag_ms"] = round(phase.max_lag_ms, 1)
    return out


class OutboxWatch:
    """Polls n1's outbox depth to n2 while a phase runs (the link's backlog)."""

    def __init__(self, n1: Node, n2: Node) -> None:
        self.n1, self.n2 = n1, n2
        self.peak = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, int(peer_entry(await status(self.n1), self.n2)["outbox"]))
            await trio.sleep(0.1)


# ------------------------------------------------------------------ phases


async def setup(n1: Node, n2: Node, pairs: int) -> tuple[list[str], list[str]]:
    for node in (n1, n2):
        await trio.to_thread.run_sync(node.start)
        node.node_id = (await status(node))["node_id"]
    await admin_request(n1.data, "peers.add", {"peer": f"{n2.url}#{n2.node_id}"})
    await admin_request(n2.data, "peers.add", {"peer": f"{n1.url}#{n1.node_id}"})
    await wait_link(n1, n2, True, 30)
    tokens: dict[str, str] = {}
    limiter = trio.CapacityLimiter(8)

    async def one(node: Node, name: str) -> None:
        async with limiter:
            await signup(node.url, name, PASSWORD)
            tokens[name] = (await login(node.url, name, PASSWORD, "bench")).token

    async with trio.open_nursery() as nursery:
        for i in range(pairs):
            nursery.start_soon(one, n1, f"s{i}")
            nursery.start_soon(one, n2, f"r{i}")
    return [tokens[f"s{i}"] for i in range(pairs)], [tokens[f"r{i}"] for i in range(pairs)]


async def live_phases(
    n1: Node,
    n2: Node,
    send_tokens: list[str],
    recv_tokens: list[str],
    args: argparse.Namespace,
    deadline: float,
) -> dict[str, Any]:
    """Warm-up, max and paced phases with all senders and receivers connected."""
    out: dict[str, Any] = {}
    receivers = Receivers(args.ack_every)
    async with AsyncExitStack() as stack:
        senders = [await stack.enter_async_context(connect(n1.url, t)) for t in send_tokens]
        clients = [
            await stack.enter_async_context(connect(n2.url, t, message_buffer=8192))
            for t in recv_tokens
        ]
        for client in clients:
            await client.sync(client.info.head if client.info else 0)
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(receivers.run, client)

            def max_sender(phase: Phase) -> Callable[..., Any]:
                async def start(c: ChatClient, i: int, to: str, k: int, _t0: float) -> None:
                    await send_max(c, i, to, k, phase, args)

                return start

            if args.warmup:
                phase = Phase("W", args.warmup, record=False)
                receivers.phase = phase
                if not await run_phase(senders, n2.name, phase, max_sender(phase), 60):
                    raise RuntimeError("warm-up did not complete in 60 s")
                await trio.sleep(0.5)

            if args.messages:
                phase = Phase("M", args.messages)
                receivers.phase = phase
                watch = OutboxWatch(n1, n2)
                nursery.start_soon(watch.run)
                st_before = [await status(n) for n in (n1, n2)]
                spy = Spy(args, [n1, n2], "max")
                cpu = CpuWindow([n1, n2]).start()
                done = await run_phase(
                    senders, n2.name, phase, max_sender(phase), deadline - time.monotonic()
                )
                result = summarise(phase, done)
                result["cpu"] = cpu.finish(phase.received)
                await spy.stop()
                st_after = [await status(n) for n in (n1, n2)]
                result["n1_outbox_peak"] = watch.peak
                for node, before, after in zip((n1, n2), st_before, st_after, strict=True):
                    commits = after["store"]["commits"] - before["store"]["commits"]
                    ops = after["store"]["ops"] - before["store"]["ops"]
                    result[f"{node.name}_commits"] = commits
                    result[f"{node.name}_ops_per_commit"] = round(ops / max(1, commits), 1)
                out["max"] = result
                await trio.sleep(0.5)

            for rate in args.rate:
                count = int(rate * args.rate_seconds)
                phase = Phase(f"R{rate}", count)
                receivers.phase = phase
                cpu = CpuWindow([n1, n2]).start()

                def paced(p: Phase, r: int) -> Callable[..., Any]:
                    async def start(c: ChatClient, i: int, to: str, k: int, t0: float) -> None:
                        await send_paced(c, i, to, k, p, r, len(senders), t0, args.size)

                    return start

                remaining = deadline - time.monotonic()
                done = await run_phase(senders, n2.name, phase, paced(phase, rate), remaining)
                result = summarise(phase, done)
                result["cpu"] = cpu.finish(phase.received)
                out[f"rate_{rate}"] = result
                await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    out["stray_messages"] = receivers.stray
    return out


async def catchup_phase(
    n1: Node,
    n2: Node,
    send_tokens: list[str],
    recv_tokens: list[str],
    args: argparse.Namespace,
    deadline: float,
) -> dict[str, Any]:
    total = args.catchup
    pairs = len(send_tokens)
    out: dict[str, Any] = {"messages": total, "stop_signal": "SIGKILL" if args.kill else "SIGTERM"}
    heads_before = queue_heads(await status(n2), "r")
    await trio.to_thread.run_sync(n2.stop, signal.SIGKILL if args.kill else signal.SIGTERM)
    await wait_link(n1, n2, False, 30)
    depth0 = int(peer_entry(await status(n1), n2)["outbox"])
    if depth0:
        raise RuntimeError(f"n1's outbox to n2 holds {depth0} entries before queueing")

    # Queue N messages for receivers on the stopped n2.
    fails_before = tcp_attempt_fails()
    queue_spy = Spy(args, [n1], "queue")
    cpu = CpuWindow([n1]).start()
    started = time.monotonic()
    errors: dict[str, int] = {}

    def count_errors(results: list[Any] | ClientError, k: int) -> None:
        if isinstance(results, ClientError):
            errors[results.code] = errors.get(results.code, 0) + k
            return
        for reply in results:
            if isinstance(reply, ClientError):
                errors[reply.code] = errors.get(reply.code, 0) + 1

    async def queue_from(idx: int, token: str, count: int) -> None:
        async with connect(n1.url, token) as client:
            await send_windowed(
                client,
                count,
                args.catchup_batch,
                2 * args.catchup_batch,  # two batches in flight
                lambda n: (f"r{idx}@{n2.name}", make_text("C", idx, n, args.size), f"C-{idx}-{n}"),
                count_errors,
            )

    with trio.fail_after(max(1.0, deadline - time.monotonic())):
        async with trio.open_nursery() as nursery:
            for idx, (token, count) in enumerate(
                zip(send_tokens, split(total, pairs), strict=True)
            ):
                nursery.start_soon(queue_from, idx, token, count)
    queue_seconds = time.monotonic() - started
    out["queue_cpu"] = cpu.finish(total)
    await queue_spy.stop()
    out["queue_errors"] = errors
    out["queue_seconds"] = round(queue_seconds, 2)
    out["queued_per_s"] = round(total / queue_seconds)
    out["failed_dials_while_queueing"] = tcp_attempt_fails() - fails_before
    depth = int(peer_entry(await status(n1), n2)["outbox"])
    out["n1_outbox_queued"] = depth
    if depth != total:
        raise RuntimeError(f"n1's outbox holds {depth}, expected {total} ({errors})")

    # Restart n2 on the same port and watch both ends drain.
    spy: Spy | None = None
    timeline: list[tuple[float, int, int]] = []  # (s since ready, n1 outbox, n2 stored)
    received: dict[str, int] = {}
    all_received = trio.Event()
    t_start = time.monotonic()
    out["n2_start_s"] = round(await trio.to_thread.run_sync(n2.start), 2)
    t_ready = time.monotonic()
    cpu = CpuWindow([n1, n2]).start()
    if args.spy:
        spy = Spy(args, [n1, n2], "catchup", settle=False)
    t_linked = t_stored = t_acked = t_devices = math.nan

    async def online(idx: int, token: str, expect: int) -> None:
        nonlocal t_devices
        async with connect(n2.url, token, message_buffer=8192) as client:
            await client.sync(heads_before.get(f"r{idx}", 0))
            got = 0
            async for frame in client.messages:
                if str((frame.get("body") or {}).get("text", "")).startswith("C "):
                    got += 1
                    if got % 500 == 0:
                        await client.ack(frame["seq"])
                    if got >= expect:
                        break
            received[f"r{idx}"] = got
            if len(received) == pairs:
                t_devices = time.monotonic()
                all_received.set()

    with trio.fail_after(max(1.0, deadline - time.monotonic())):
        async with trio.open_nursery() as nursery:
            if args.catchup_online:
                for idx, (token, count) in enumerate(
                    zip(recv_tokens, split(total, pairs), strict=True)
                ):
                    nursery.start_soon(online, idx, token, count)
            else:
                all_received.set()
            while True:
                st1, st2 = await status(n1), await status(n2)
                now = time.monotonic()
                p1, p2 = peer_entry(st1, n2), peer_entry(st2, n1)
                depth, stored = int(p1["outbox"]), int(p2["received"])
                timeline.append((now - t_ready, depth, stored))
                if math.isnan(t_linked) and p1["link"] == "linked":
                    t_linked = now
                if math.isnan(t_stored) and stored >= total:
                    t_stored = now
                if math.isnan(t_acked) and depth == 0:
                    t_acked = now
                if not math.isnan(t_acked) and not math.isnan(t_stored):
                    break
                await trio.sleep(args.poll)
            await all_received.wait()
    if spy is not None:
        await spy.stop()
    out["cpu"] = cpu.finish(total)
    heads_after = queue_heads(await status(n2), "r")
    out["n2_queue_growth"] = sum(heads_after.get(u, 0) - h for u, h in heads_before.items())
    if out["n2_queue_growth"] != total:
        raise RuntimeError(f"n2's queues grew by {out['n2_queue_growth']}, expected {total}")
    out["n2_refused"] = int(peer_entry(await status(n2), n1)["refused"])
    out["link_up_after_ready_s"] = round(t_linked - t_ready, 3)
    out["stored_after_ready_s"] = round(t_stored - t_ready, 2)
    out["acked_after_ready_s"] = round(t_acked - t_ready, 2)
    out["acked_after_restart_s"] = round(t_acked - t_start, 2)
    out["catchup_per_s"] = round(total / (t_acked - t_ready))
    out["catchup_incl_start_per_s"] = round(total / (t_acked - t_start))
    out["steady_per_s"] = steady_rate(timeline, total)
    if args.catchup_online:
        out["devices_received_after_ready_s"] = round(t_devices - t_ready, 2)
        out["devices_per_s"] = round(total / (t_devices - t_ready))
    return out


def steady_rate(timeline: list[tuple[float, int, int]], total: int) -> int:
    """Stored/s on n2 between 10 % and 90 % of the backlog (no link set-up, no tail)."""
    lo = next((t for t, _, s in timeline if s >= 0.1 * total), None)
    hi = next((t for t, _, s in timeline if s >= 0.9 * total), None)
    if lo is None or hi is None or hi <= lo:
        return 0
    stored_lo = next(s for t, _, s in timeline if t == lo)
    stored_hi = next(s for t, _, s in timeline if t == hi)
    return round((stored_hi - stored_lo) / (hi - lo))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    root = Path(tempfile.mkdtemp(prefix="chinwag-fedbench-", dir=args.data_root))
    n1, n2 = Node(root, "n1", args), Node(root, "n2", args)
    result: dict[str, Any] = {
        "config": {
            "pairs": args.pairs,
            "messages": args.messages,
            "warmup": args.warmup,
            "batch": args.batch,
            "window": args.window,
            "size": args.size,
            "rate": args.rate,
            "rate_seconds": args.rate_seconds,
            "catchup": args.catchup,
            "kill": args.kill,
            "catchup_online": args.catchup_online,
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        with trio.fail_after(args.timeout):
            send_tokens, recv_tokens = await setup(n1, n2, args.pairs)
            if args.messages or args.rate or args.warmup:
                result.update(await live_phases(n1, n2, send_tokens, recv_tokens, args, deadline))
            if args.catchup:
                result["catchup"] = await catchup_phase(
                    n1, n2, send_tokens, recv_tokens, args, deadline
                )
            result["memory_kb"] = {n.name: memory_kb(n.pid) for n in (n1, n2) if n.running()}
    except BaseException:
        for node in (n1, n2):
            print(f"--- {node.name} log tail:\n{node.log_tail()}", file=sys.stderr)
        raise
    finally:
        with trio.CancelScope(shield=True):
            for node in (n1, n2):
                await trio.to_thread.run_sync(node.stop)
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    others = [
        phase["cpu"]["other_load_cores"]
        for phase in (result.get("max"), result.get("catchup"))
        if phase and "cpu" in phase
    ]
    result["other_load_cores"] = max(others, default=0.0)
    return result


def print_table(r: dict[str, Any]) -> None:
    def lat(p: dict[str, Any]) -> str:
        ms = p.get("latency_ms", {})
        return f"p50 {ms.get('p50')} ms, p99 {ms.get('p99')} ms, max {ms.get('max')} ms"

    lines = [f"federation benchmark, {r['date']}, {os.cpu_count()} CPUs"]
    if "max" in r:
        m = r["max"]
        lines.append(
            f"max:      {m['delivered_per_s']:>6} delivered/s (target >= 3000), {lat(m)}; "
            f"n1 {m['cpu'].get('n1_cores')} cores, n2 {m['cpu'].get('n2_cores')} cores, "
            f"other {m['cpu']['other_load_cores']}; n1 outbox peak {m['n1_outbox_peak']}"
        )
    for key, p in r.items():
        if key.startswith("rate_"):
            lines.append(
                f"{key + ':':<10}{p['delivered_per_s']:>6} delivered/s, {lat(p)}; "
                f"send->n1 ts p99 {p['send_to_n1_ts_ms']['p99']} ms, "
                f"n1 ts->receipt p99 {p['n1_ts_to_receipt_ms']['p99']} ms"
            )
    if "catchup" in r:
        c = r["catchup"]
        lines.append(
            f"catch-up: {c['catchup_per_s']:>6} msg/s (target >= 5000): {c['messages']} in "
            f"{c['acked_after_ready_s']} s after n2 ready (n2 start {c['n2_start_s']} s, link "
            f"{c['link_up_after_ready_s']} s, stored {c['stored_after_ready_s']} s, steady "
            f"{c['steady_per_s']}/s); n1 {c['cpu'].get('n1_cores')} cores, n2 "
            f"{c['cpu'].get('n2_cores')} cores"
        )
        lines.append(
            f"queueing: {c['queued_per_s']:>6} msg/s into n1's outbox while n2 was down "
            f"({c['failed_dials_while_queueing']} failed TCP connects meanwhile)"
        )
        if "devices_per_s" in c:
            lines.append(f"devices:  {c['devices_per_s']:>6} msg/s received by clients on n2")
    print("\n".join(lines), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10, help="sender/receiver pairs")
    parser.add_argument("--messages", type=int, default=20_000, help="max phase (0: skip)")
    parser.add_argument("--warmup", type=int, default=1_000, help="unmeasured messages first")
    parser.add_argument("--batch", type=int, default=64, help="frames per send_many")
    parser.add_argument("--window", type=int, default=128, help="in-flight sends per sender")
    parser.add_argument("--size", type=int, default=64, help="text length in characters")
    parser.add_argument("--ack-every", type=int, default=100, help="receiver acks (0: never)")
    parser.add_argument(
        "--rate", default="1000", help="paced phases, total msgs/s, comma-separated ('' skips)"
    )
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="length of each")
    parser.add_argument("--catchup", type=int, default=100_000, help="messages queued (0: skip)")
    parser.add_argument("--catchup-batch", type=int, default=200, help="frames per send_many")
    parser.add_argument("--kill", action="store_true", help="stop n2 with SIGKILL, not SIGTERM")
    parser.add_argument(
        "--catchup-online", action="store_true", help="receivers connect as n2 comes back"
    )
    parser.add_argument("--poll", type=float, default=0.025, help="catch-up poll interval (s)")
    parser.add_argument("--timeout", type=float, default=170.0, help="hard limit (s)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, help="wait for an idle machine")
    parser.add_argument("--data-root", help="where the temp data directories go")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the nodes")
    parser.add_argument("--node-arg", action="append", default=[], help="extra node flag")
    parser.add_argument("--keep", action="store_true", help="keep data directories and logs")
    parser.add_argument("--spy", metavar="DIR", help="py-spy both nodes (max, catch-up)")
    parser.add_argument("--spy-bin", default="py-spy", help="py-spy executable")
    parser.add_argument("--spy-gil", action="store_true", help="py-spy --gil")
    parser.add_argument("--json", action="store_true", help="print only one JSON object")
    args = parser.parse_args(argv)
    args.rate = [int(r) for r in str(args.rate).split(",") if r.strip() and int(r) > 0]
    if args.pairs < 1 or args.batch < 1:
        parser.error("--pairs and --batch must be at least 1")
    if args.spy and args.spy_bin == "py-spy":
        local = Path(sys.executable).with_name("py-spy")
        args.spy_bin = str(local) if local.exists() else "py-spy"
    raise_nofile_limit()
    if args.wait_quiet:
        wait_for_quiet(args.wait_quiet)
    result = trio.run(run, args)
    print(json.dumps(result))
    if not args.json:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
