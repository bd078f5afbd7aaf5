#!/usr/bin/env python3
"""Node memory per idle authenticated device connection.

Starts a node in a subprocess (fresh data dir), signs up ``--users`` users and
logs each in on ``--devices`` devices over HTTP (``--users x --devices``
tokens, 1,000 by default), then opens those WebSocket connections from this
one trio process in ``--steps`` equal steps. Every connection authenticates
and sends ``sync 0`` (so its stream is live, as a real client's would be), and
then stays idle apart from the client library's heartbeat.

The node's memory (VmRSS, and RssAnon: its heap, without the LMDB map pages
that count as file-backed) is read from ``/proc`` after log-ins and a short
warm-up (10 connections opened and closed), and again after each step once
the node has been quiet for ``--settle`` seconds. Reported: KiB per idle
connection = (RSS with all connections - baseline) / connections, for VmRSS
and RssAnon, plus the marginal slope between the first and the last step.

    python bench/idle.py                       # 100 users x 10 devices
    python bench/idle.py --users 1000 --devices 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import trio
from nodeproc import NodeProcess, memory_kb, raise_nofile_limit, thread_count, wait_for_quiet

from chinwag.node.client import ClientError, connect, login, signup

PASSWORD = "bench-password"


async def make_tokens(url: str, users: int, devices: int) -> list[str]:
    limiter = trio.CapacityLimiter(16)
    tokens: list[str] = []

    async def one_user(i: int) -> None:
        name = f"idle{i}"
        async with limiter:
            await signup(url, name, PASSWORD)
        for d in range(devices):
            async with limiter:
                tokens.append((await login(url, name, PASSWORD, f"dev{d}")).token)

    async with trio.open_nursery() as nursery:
        for i in range(users):
            nursery.start_soon(one_user, i)
    return tokens


async def hold(
    url: str,
    token: str,
    release: trio.Event,
    sync: bool,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """One device connection: authenticate, sync, report started, idle until released."""
    try:
        async with connect(url, token) as client:
            if sync:
                await client.sync(0)
            task_status.started()
            await release.wait()
    except ClientError:
        # Closing 1,000 connections at once can outlast the client's 2 s close
        # handshake; only errors before the release matter.
        if not release.is_set():
            raise


async def open_all(
    holders: trio.Nursery,
    url: str,
    tokens: list[str],
    release: trio.Event,
    sync: bool,
    concurrency: int,
) -> None:
    """Open one held connection per token (``concurrency`` handshakes at once)."""
    limiter = trio.CapacityLimiter(concurrency)

    async def one(token: str) -> None:
        async with limiter:
            await holders.start(hold, url, token, release, sync)

    async with trio.open_nursery() as starters:
        for token in tokens:
            starters.start_soon(one, token)


async def settled_memory(pid: int, settle: float) -> dict[str, int]:
    """Memory once the node has had ``settle`` seconds to itself."""
    await trio.sleep(settle)
    return memory_kb(pid)


async def trace_snapshot(pid: int, out: str) -> None:
    """Ask a node run by bench/tracenode.py for its allocation diff; wait for it."""
    done = trio.Path(out + ".done")
    await done.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    with trio.fail_after(60):
        while not await done.exists():  # noqa: ASYNC110 - another process writes it
            await trio.sleep(0.2)


async def drive(node: NodeProcess, args: argparse.Namespace) -> dict[str, Any]:
    tokens = await make_tokens(node.url, args.users, args.devices)
    # Warm-up: first-use costs (imports, caches, arenas) out of the baseline.
    warm_release = trio.Event()
    async with trio.open_nursery() as holders:
        await open_all(holders, node.url, tokens[:10], warm_release, args.sync, args.concurrency)
        warm_release.set()
    baseline = await settled_memory(node.pid, args.settle)
    if args.tracemalloc:
        os.kill(node.pid, signal.SIGUSR1)  # first snapshot: the baseline
    steps: list[dict[str, Any]] = []
    release = trio.Event()
    per_step = [len(tokens) * (i + 1) // args.steps for i in range(args.steps)]
    async with trio.open_nursery() as holders:
        started = 0
        for target in per_step:
            batch = tokens[started:target]
            await open_all(holders, node.url, batch, release, args.sync, args.concurrency)
            started = target
            mem = await settled_memory(node.pid, args.settle)
            steps.append({"connections": target, **mem})
        node_threads = thread_count(node.pid)
        if args.tracemalloc:
            await trace_snapshot(node.pid, args.tracemalloc)
        release.set()
    final = steps[-1]
    n = int(final["connections"])
    first = steps[0]

    def per_conn(key: str) -> float:
        return round((int(final[key]) - baseline[key]) / n, 2)

    def slope(key: str) -> float | None:
        if final["connections"] == first["connections"]:
            return None
        span = int(final["connections"]) - int(first["connections"])
        return round((int(final[key]) - int(first[key])) / span, 2)

    return {
        "connections": n,
        "users": args.users,
        "devices_per_user": args.devices,
        "synced": args.sync,
        "baseline_kb": baseline,
        "steps": steps,
        "kb_per_connection_vmrss": per_conn("VmRSS"),
        "kb_per_connection_anon": per_conn("RssAnon"),
        "marginal_kb_per_connection_vmrss": slope("VmRSS"),
        "marginal_kb_per_connection_anon": slope("RssAnon"),
        "node_threads": node_threads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--devices", type=int, default=10, help="devices (connections) per user")
    parser.add_argument("--steps", type=int, default=4, help="measure after each of N steps")
    parser.add_argument("--settle", type=float, default=3.0, help="quiet seconds before a reading")
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes at once")
    parser.add_argument("--no-sync", dest="sync", action="store_false", help="auth only")
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
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--tracemalloc",
        metavar="FILE",
        help="run the node under bench/tracenode.py; write its allocation diff to FILE "
        "(diagnosis only: the RSS figures of such a run are inflated)",
    )
    args = parser.parse_args(argv)
    if args.users < 1 or args.devices < 1 or args.steps < 1:
        parser.error("--users, --devices and --steps must be positive")

    limit = raise_nofile_limit()
    need = args.users * args.devices + 100
    if limit < need:
        parser.error(f"RLIMIT_NOFILE is {limit}; {need} file descriptors needed")
    trace: dict[str, Any] = {}
    if args.tracemalloc:
        args.tracemalloc = os.path.abspath(args.tracemalloc)
        trace = {
            "python_args": (str(Path(__file__).with_name("tracenode.py")),),
            "env": {"CHINWAG_TRACE_OUT": args.tracemalloc},
        }
    quiet_before = wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
    with NodeProcess(
        data_root=args.data_root, extra_args=tuple(args.node_arg), python=args.python, **trace
    ) as node:
        result: dict[str, Any] | None = None

        async def bounded() -> None:
            nonlocal result
            with trio.move_on_after(args.timeout):
                result = await drive(node, args)

        trio.run(bounded)
        alive = node.proc is not None and node.proc.poll() is None
        tail = "" if alive else node.log_tail()
    if result is None:
        print(f"timed out after {args.timeout:g} s", file=sys.stderr)
        return 1
    result["node_alive"] = alive
    result["machine_busy_cores_before"] = quiet_before
    if tail:
        result["node_log_tail"] = tail
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0 if alive else 1


def print_table(r: dict[str, Any]) -> None:
    b = r["baseline_kb"]
    print(
        f"{r['connections']} idle connections ({r['users']} users x {r['devices_per_user']} "
        f"devices, {'auth + sync' if r['synced'] else 'auth only'})"
    )
    print(f"{'connections':>11}  {'VmRSS MiB':>9}  {'RssAnon MiB':>11}")
    print(f"{0:>11}  {b['VmRSS'] / 1024:>9.1f}  {b['RssAnon'] / 1024:>11.1f}")
    for s in r["steps"]:
        print(f"{s['connections']:>11}  {s['VmRSS'] / 1024:>9.1f}  {s['RssAnon'] / 1024:>11.1f}")
    print(
        f"KiB per idle connection: {r['kb_per_connection_vmrss']} (VmRSS), "
        f"{r['kb_per_connection_anon']} (RssAnon); marginal "
        f"{r['marginal_kb_per_connection_vmrss']} / {r['marginal_kb_per_connection_anon']}"
    )
    if not r["node_alive"]:
        print("NODE DIED:\n" + r.get("node_log_tail", ""))


if __name__ == "__main__":
    sys.exit(main())
