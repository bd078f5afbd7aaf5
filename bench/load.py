#!/usr/bin/env python3
"""Load generator: drive one chinwag node over loopback with 1:1 messages.

The node runs in a subprocess (fresh data dir on disk, per-device rate limits
lifted); this process is the load generator. It creates ``--pairs``
sender/receiver users, connects one device each, and sends ``--messages``
durable, signed 1:1 messages from each sender to its receiver:

* ``--mode max`` (default): as fast as possible, each sender keeping
  ``--window`` sends in flight as ``--window/--batch`` concurrent
  ``send_many`` batches of ``--batch`` frames;
* ``--mode rate --rate R``: R messages/s in total, paced with trio (each
  sender sends alone on its own staggered schedule, one frame per message).

Each text carries its send time (``perf_counter_ns`` and ``time_ns``), so
latency is receive time minus send time on one clock. Receivers ack every
``--ack-every`` messages, as a real client would.

Reported: delivered messages/s (messages received / time from the first send
to the last receipt), p50/p99/max send->receive latency, node CPU seconds per
1,000 messages (utime+stime of all node threads, and of the trio thread
alone), load-generator CPU per 1,000 messages, node RSS at the end. A warm-up
phase (``--warmup`` messages, not measured) runs first. ``--timeout`` bounds
the whole run; on timeout the partial figures are printed and marked.

    python bench/load.py                         # mode max, 20 pairs, 50,000 messages
    python bench/load.py --mode rate --rate 1000 --messages 20000
    python bench/load.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import trio
from nodeproc import (
    NodeProcess,
    cpu_seconds,
    machine_cpu,
    memory_kb,
    percentile,
    raise_nofile_limit,
    send_windowed,
    thread_count,
    wait_for_quiet,
)

from chinwag.node.client import ChatClient, ClientError, connect, login, signup

PASSWORD = "bench-password"


@dataclass
class Phase:
    """One round of sending; receivers count the texts tagged with ``tag``."""

    tag: str
    expected: int
    record: bool
    done: trio.Event = field(default_factory=trio.Event)
    received: int = 0
    sent_ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    #: ms from send to the ``ts`` the node put on the message (wall clock, ms
    #: resolution). The router takes ``ts`` when it hands the send to the
    #: store, so this is the inbound leg (client, socket, decode, dispatch).
    commit_ms: list[int] = field(default_factory=list)
    #: ms from that ``ts`` to receipt: group commit (fsync), streamer, outbound leg.
    deliver_ms: list[int] = field(default_factory=list)
    start_ns: int = 0
    last_recv_ns: int = 0
    max_lag_ms: float = 0.0

    def check_done(self) -> None:
        if self.received >= self.expected and not self.done.is_set():
            self.last_recv_ns = time.perf_counter_ns()
            self.done.set()

    def failed(self, code: str, count: int = 1) -> None:
        self.errors[code] += count
        self.expected -= count
        self.check_done()


@dataclass
class State:
    phase: Phase | None = None
    stray: int = 0
    closed_receivers: int = 0
    #: WebSocket messages that reached receivers / senders (see count_ws_messages).
    ws_messages: Counter[str] = field(default_factory=Counter)


def count_ws_messages(client: ChatClient, counter: Counter[str], key: str) -> None:
    """Count the WebSocket messages a client receives (how well the node batches).

    Wraps the client's private WebSocket ``get_message``: a bench-only peek.
    """
    ws = client._ws  # noqa: SLF001
    inner = ws.get_message

    async def get_message() -> Any:
        data = await inner()
        counter[key] += 1
        return data

    ws.get_message = get_message


def make_text(tag: str, sender: int, n: int, size: int) -> str:
    head = f"{tag} {sender} {n} {time.perf_counter_ns()} {time.time_ns()} "
    return head + "x" * max(0, size - len(head))


async def receiver(client: ChatClient, state: State, ack_every: int) -> None:
    unacked = 0
    seq = 0
    try:
        while True:
            frame = await client.messages.receive()
            now_ns = time.perf_counter_ns()
            seq = frame.get("seq", seq)
            body = frame.get("body") or {}
            parts = str(body.get("text", "")).split(" ", 5)
            phase = state.phase
            if phase is None or len(parts) < 5 or parts[0] != phase.tag:
                state.stray += 1
                continue
            if phase.record:
                wall_ms = time.time_ns() // 1_000_000
                phase.latencies_ms.append((now_ns - int(parts[3])) / 1e6)
                ts = frame.get("ts")
                if isinstance(ts, int):
                    phase.commit_ms.append(ts - int(parts[4]) // 1_000_000)
                    phase.deliver_ms.append(wall_ms - ts)
            phase.received += 1
            phase.check_done()
            unacked += 1
            if ack_every and unacked >= ack_every:
                unacked = 0
                await client.ack(seq)
    except (trio.EndOfChannel, trio.ClosedResourceError):
        state.closed_receivers += 1


async def sender_max(
    client: ChatClient, idx: int, to: str, count: int, phase: Phase, args: argparse.Namespace
) -> None:
    def settle(results: list[Any] | ClientError, k: int) -> None:
        if isinstance(results, ClientError):
            phase.failed(results.code, k)
            return
        for result in results:
            if isinstance(result, ClientError):
                phase.failed(result.code)
            else:
                phase.sent_ok += 1

    await send_windowed(
        client,
        count,
        args.batch,
        args.window,
        lambda n: (to, make_text(phase.tag, idx, n, args.size), _cid(args, phase, idx, n)),
        settle,
    )


async def sender_rate(
    client: ChatClient,
    idx: int,
    to: str,
    count: int,
    phase: Phase,
    args: argparse.Namespace,
    t0: float,
) -> None:
    interval = args.pairs / args.rate
    offset = idx / args.rate

    async def send_one(n: int) -> None:
        try:
            text = make_text(phase.tag, idx, n, args.size)
            await client.send(to, text, _cid(args, phase, idx, n))
            phase.sent_ok += 1
        except ClientError as exc:
            phase.failed(exc.code)

    async with trio.open_nursery() as nursery:
        for n in range(count):
            due = t0 + offset + n * interval
            await trio.sleep_until(due)
            phase.max_lag_ms = max(phase.max_lag_ms, (trio.current_time() - due) * 1000)
            nursery.start_soon(send_one, n)


def _cid(args: argparse.Namespace, phase: Phase, idx: int, n: int) -> str | None:
    return None if args.no_cid else f"{phase.tag}-{idx}-{n}"


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def run_phase(
    senders: list[ChatClient],
    state: State,
    phase: Phase,
    args: argparse.Namespace,
    mode: str,
) -> None:
    state.phase = phase
    counts = _split(phase.expected, len(senders))
    phase.start_ns = time.perf_counter_ns()
    t0 = trio.current_time() + 0.01
    async with trio.open_nursery() as nursery:
        for idx, (client, count) in enumerate(zip(senders, counts, strict=True)):
            if count == 0:
                continue
            to = f"r{idx}"
            if mode == "max":
                nursery.start_soon(sender_max, client, idx, to, count, phase, args)
            else:
                nursery.start_soon(sender_rate, client, idx, to, count, phase, args, t0)
        await phase.done.wait()


async def setup_users(url: str, pairs: int) -> tuple[list[str], list[str]]:
    """Sign up and log in s0..sN-1 and r0..rN-1; return their tokens."""
    limiter = trio.CapacityLimiter(16)
    tokens: dict[str, str] = {}

    async def one(name: str) -> None:
        async with limiter:
            await signup(url, name, PASSWORD)
            tokens[name] = (await login(url, name, PASSWORD, "bench")).token

    async with trio.open_nursery() as nursery:
        for i in range(pairs):
            nursery.start_soon(one, f"s{i}")
            nursery.start_soon(one, f"r{i}")
    return [tokens[f"s{i}"] for i in range(pairs)], [tokens[f"r{i}"] for i in range(pairs)]


def summarize(
    phase: Phase,
    node_cpu: Any,
    client_cpu: float,
    timed_out: bool,
) -> dict[str, Any]:
    end_ns = phase.last_recv_ns or time.perf_counter_ns()
    wall = max(1e-9, (end_ns - phase.start_ns) / 1e9)
    lat = sorted(phase.latencies_ms)
    commit = sorted(float(v) for v in phase.commit_ms)
    deliver = sorted(float(v) for v in phase.deliver_ms)
    per_k = 1000 / phase.received if phase.received else math.nan
    return {
        "timed_out": timed_out,
        "messages_received": phase.received,
        "messages_acked_to_sender": phase.sent_ok,
        "send_errors": dict(phase.errors),
        "wall_s": round(wall, 3),
        "delivered_per_s": round(phase.received / wall, 1),
        "latency_ms": {
            "p50": round(percentile(lat, 50), 2),
            "p90": round(percentile(lat, 90), 2),
            "p99": round(percentile(lat, 99), 2),
            "max": round(lat[-1], 2) if lat else math.nan,
        },
        "send_to_node_ts_ms_p50_p99": [percentile(commit, 50), percentile(commit, 99)],
        "node_ts_to_receive_ms_p50_p99": [percentile(deliver, 50), percentile(deliver, 99)],
        "node_cpu_s": round(node_cpu.total, 2),
        "node_cpu_s_per_1000": round(node_cpu.total * per_k, 4),
        "node_trio_thread_cpu_s_per_1000": round(node_cpu.main * per_k, 4),
        "node_kernel_cpu_s_per_1000": round(node_cpu.system * per_k, 4),
        "node_cpu_utilisation": round(node_cpu.total / wall, 2),
        "client_cpu_s_per_1000": round(client_cpu * per_k, 4),
        "client_cpu_utilisation": round(client_cpu / wall, 2),
        "max_pacing_lag_ms": round(phase.max_lag_ms, 2),
    }


def start_spy(pid: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """Sample the node with py-spy (raw collapsed stacks) while the measured phase runs."""
    cmd = [args.spy_bin, "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    cmd += ["--output", args.spy, "--nonblocking"]
    if args.spy_gil:
        cmd.append("--gil")
    if args.spy_threads:
        cmd.append("--threads")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # let it attach before the phase starts
    return proc


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(node: NodeProcess, args: argparse.Namespace) -> dict[str, Any]:
    state = State()
    timed_out = False
    phase = Phase("M", args.messages, record=True)
    cpu_before = cpu_seconds(node.pid)
    client_before = _client_cpu()
    machine_before = machine_cpu()
    measured: tuple[float, float] | None = None
    close_error = None
    with trio.move_on_after(args.timeout) as scope:
        sender_tokens, receiver_tokens = await setup_users(node.url, args.pairs)
        try:
            async with AsyncExitStack() as stack:
                senders = [
                    await stack.enter_async_context(connect(node.url, t)) for t in sender_tokens
                ]
                receivers = [
                    await stack.enter_async_context(connect(node.url, t)) for t in receiver_tokens
                ]
                for client in receivers:
                    await client.sync(0)
                    count_ws_messages(client, state.ws_messages, "receivers")
                for client in senders:
                    count_ws_messages(client, state.ws_messages, "senders")
                async with trio.open_nursery() as nursery:
                    for client in receivers:
                        nursery.start_soon(receiver, client, state, args.ack_every)
                    if args.warmup:
                        warmup = Phase("W", args.warmup, record=False)
                        await run_phase(senders, state, warmup, args, "max")
                        await trio.sleep(0.5)
                    spy = start_spy(node.pid, args) if args.spy else None
                    cpu_before = cpu_seconds(node.pid)
                    client_before = _client_cpu()
                    machine_before = machine_cpu()
                    state.ws_messages.clear()
                    await run_phase(senders, state, phase, args, args.mode)
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                        await trio.to_thread.run_sync(spy.wait)
                    nursery.cancel_scope.cancel()
                    measured = (cpu_seconds(node.pid) - cpu_before, _client_cpu() - client_before)
        except ClientError as exc:
            # A close that times out (a node still busy) keeps the figures.
            close_error = str(exc)
    if scope.cancelled_caught:
        timed_out = True
    if measured is None:
        measured = (cpu_seconds(node.pid) - cpu_before, _client_cpu() - client_before)
    node_cpu, client_cpu = measured
    machine_after = machine_cpu()
    result = summarize(phase, node_cpu, client_cpu, timed_out)
    wall = result["wall_s"]
    # Cores busy on the whole machine (node + load generator + anyone else), and
    # cores stolen by the hypervisor, while the measured phase ran.
    result["machine_busy_cores"] = round((machine_after["busy"] - machine_before["busy"]) / wall, 2)
    # What neither the node nor the load generator used: other processes.
    result["other_load_cores"] = round(
        result["machine_busy_cores"]
        - result["node_cpu_utilisation"]
        - result["client_cpu_utilisation"],
        2,
    )
    result["machine_steal_cores"] = round(
        (machine_after["steal"] - machine_before["steal"]) / wall, 2
    )
    result["node_memory_kb"] = memory_kb(node.pid)
    result["node_threads"] = thread_count(node.pid)
    result["stray_messages"] = state.stray
    if close_error is not None:
        result["close_error"] = close_error
    received = max(1, phase.received)
    # Frames per WebSocket message the node sent: msg frames to receivers, ok
    # frames to senders (both ~1 per message).
    result["msg_frames_per_ws_message"] = round(
        received / max(1, state.ws_messages["receivers"]), 2
    )
    result["ok_frames_per_ws_message"] = round(
        phase.sent_ok / max(1, state.ws_messages["senders"]), 2
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("max", "rate"), default="max")
    parser.add_argument("--rate", type=float, default=1000.0, help="total msgs/s (mode rate)")
    parser.add_argument("--pairs", type=int, default=20, help="sender/receiver pairs")
    parser.add_argument("--messages", type=int, default=50_000, help="measured messages")
    parser.add_argument("--warmup", type=int, default=2_000, help="unmeasured messages first")
    parser.add_argument("--batch", type=int, default=64, help="frames per send_many (max)")
    parser.add_argument("--window", type=int, default=128, help="in-flight sends per sender")
    parser.add_argument("--size", type=int, default=64, help="text length in characters")
    parser.add_argument("--ack-every", type=int, default=100, help="receiver acks (0: never)")
    parser.add_argument("--no-cid", action="store_true", help="send without client ids")
    parser.add_argument("--timeout", type=float, default=110.0, help="hard limit (s)")
    parser.add_argument("--data-root", help="where the node's temp data dir goes")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the node")
    parser.add_argument("--node-arg", action="append", default=[], help="extra node flag")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for the machine to be idle (shared machines)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--spy", metavar="FILE", help="py-spy the node (raw stacks to FILE)")
    parser.add_argument("--spy-bin", default="py-spy", help="py-spy executable")
    parser.add_argument("--spy-gil", action="store_true", help="py-spy --gil")
    parser.add_argument("--spy-threads", action="store_true", help="py-spy --threads")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.messages < 1 or args.batch < 1 or args.rate <= 0:
        parser.error("--pairs, --messages, --batch and --rate must be positive")
    if args.batch > 256:
        parser.error("--batch is at most 256 (MAX_BATCH_FRAMES)")

    raise_nofile_limit()
    quiet_before = wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
    with NodeProcess(
        data_root=args.data_root, extra_args=tuple(args.node_arg), python=args.python
    ) as node:
        result = trio.run(drive, node, args)
        result["node_alive"] = node.proc is not None and node.proc.poll() is None
        if not result["node_alive"]:
            result["node_log_tail"] = node.log_tail()
    result["machine_busy_cores_before"] = quiet_before
    result["config"] = {
        k: getattr(args, k)
        for k in ("mode", "rate", "pairs", "messages", "warmup", "batch", "window", "size")
    } | {"ack_every": args.ack_every, "cid": not args.no_cid}
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 1 if result["timed_out"] or not result["node_alive"] else 0


def print_table(r: dict[str, Any]) -> None:
    c = r["config"]
    mode = f"rate {c['rate']:g}/s" if c["mode"] == "rate" else f"max (window {c['window']})"
    mem = r["node_memory_kb"]
    lat = r["latency_ms"]
    rows = [
        ("mode", f"{mode}, {c['pairs']} pairs, batch {c['batch']}, {c['size']}-char texts"),
        ("messages received", f"{r['messages_received']} in {r['wall_s']} s"),
        ("send errors", str(r["send_errors"] or "none")),
        (
            "node batching",
            f"{r['msg_frames_per_ws_message']} msg frames / WebSocket message to receivers, "
            f"{r['ok_frames_per_ws_message']} ok frames to senders",
        ),
        ("delivered messages/s", f"{r['delivered_per_s']:,.0f}"),
        ("latency p50 / p99 / max", f"{lat['p50']} / {lat['p99']} / {lat['max']} ms"),
        (
            "  send->node ts p50/p99",
            "{:g} / {:g} ms".format(*r["send_to_node_ts_ms_p50_p99"]),
        ),
        (
            "  node ts->receive p50/p99",
            "{:g} / {:g} ms".format(*r["node_ts_to_receive_ms_p50_p99"]),
        ),
        (
            "node CPU s / 1,000 msgs",
            f"{r['node_cpu_s_per_1000']} (trio thread {r['node_trio_thread_cpu_s_per_1000']}, "
            f"kernel {r['node_kernel_cpu_s_per_1000']}); "
            f"{r['node_cpu_utilisation']} cores",
        ),
        (
            "load gen CPU s / 1,000",
            f"{r['client_cpu_s_per_1000']}; {r['client_cpu_utilisation']} cores",
        ),
        (
            "node RSS at end",
            f"{mem.get('VmRSS', 0) / 1024:.1f} MiB (anon {mem.get('RssAnon', 0) / 1024:.1f}, "
            f"file {mem.get('RssFile', 0) / 1024:.1f})",
        ),
    ]
    rows.append(
        (
            "machine busy / steal",
            f"{r['machine_busy_cores']} / {r['machine_steal_cores']} cores of "
            f"{os.cpu_count()} (other processes: {r['other_load_cores']})",
        )
    )
    if c["mode"] == "rate":
        rows.append(("max pacing lag", f"{r['max_pacing_lag_ms']} ms"))
    if r["timed_out"]:
        rows.append(("TIMED OUT", "figures are partial"))
    if not r["node_alive"]:
        rows.append(("NODE DIED", r.get("node_log_tail", "")))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
