"""Federation benchmark: 1:1 messages from users on n1 to users on n2 over one link.

Two nodes on 127.0.0.1 (fresh data directories, mDNS off), trusting each
other. Phase 1 (throughput): senders on n1 pipeline messages to receivers on
n2; delivered messages/s at the receivers and end-to-end latency (send time
embedded in the text, same clock). Phase 2 (catch-up): n2 is stopped, N
messages are queued in n1's outbox for it, n2 restarts on the same port; the
time until n1's outbox to n2 is empty gives the catch-up rate. Every envelope
is signature-checked by n2. Bounded in count and time; cleans up after itself.

    python bench/federation.py --messages 20000 --pairs 10 --catchup 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from chinwag.node.admin import admin_request
from chinwag.node.client import ClientError, connect, login, signup

PW = "bench-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Node:
    def __init__(self, root: Path, name: str) -> None:
        self.data = root / name
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.node_id = ""
        self._starts = 0  # "ready" lines seen in the shared log so far

    def start(self) -> None:
        env = dict(os.environ, CHINWAG_TEST_FAST_KDF="1", PYTHONUNBUFFERED="1")
        log = open(self.data.parent / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
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
                "--send-rate",
                "1000000",
                "--send-burst",
                "1000000",
                "--max-conn-per-address",
                "5000",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + 30
        path = self.data.parent / f"{self.name}.log"
        while time.monotonic() < deadline:
            if path.read_text(errors="replace").count(" ready at ") > self._starts:
                self._starts += 1
                return
            if self.proc.poll() is not None:
                raise RuntimeError(path.read_text())
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def status(node: Node) -> dict[str, Any]:
    return await admin_request(node.data, "status", {})


async def outbox_to(node: Node, other: Node) -> tuple[int, str]:
    for peer in (await status(node))["peers"]:
        if peer["node_id"] == other.node_id:
            return int(peer["outbox"]), str(peer["link"])
    return 0, "none"


async def wait_linked(a: Node, b: Node, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while (await outbox_to(a, b))[1] != "linked":  # noqa: ASYNC110 (another process)
            await trio.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]


async def throughput(n1: Node, n2: Node, pairs: int, total: int, rate: float) -> dict[str, Any]:
    senders = [(await login(n1.url, f"s{i}", PW)).token for i in range(pairs)]
    receivers = [(await login(n2.url, f"r{i}", PW)).token for i in range(pairs)]
    per = total // pairs
    latencies: list[float] = []
    done = trio.Event()
    received = 0
    first_send = 0.0
    last_receive = 0.0

    async def receive(token: str, task_status: Any) -> None:
        nonlocal received, last_receive
        async with connect(n2.url, token, message_buffer=10_000) as client:
            await client.sync(client.info.head if client.info else 0)
            task_status.started()
            while received < per * pairs:
                frame = await client.messages.receive()
                now = time.time_ns()
                sent_ns = int(frame["body"]["text"].split(":", 1)[0])
                latencies.append((now - sent_ns) / 1e6)
                received += 1
                last_receive = time.monotonic()
                if received % 500 == 0:
                    await client.ack(frame["seq"])
            done.set()

    async def send(index: int, token: str) -> None:
        async with connect(n1.url, token) as client:
            window = 100 if rate <= 0 else max(1, int(rate / pairs / 20))
            interval = 0 if rate <= 0 else window / (rate / pairs)
            sent = 0
            while sent < per:
                started = time.monotonic()
                batch = [
                    (f"r{index}@{n2.name}", f"{time.time_ns()}:m{sent + k}", f"{index}-{sent + k}")
                    for k in range(min(window, per - sent))
                ]
                for reply in await client.send_many(batch):
                    if isinstance(reply, ClientError):
                        raise reply
                sent += len(batch)
                if interval:
                    await trio.sleep(max(0, interval - (time.monotonic() - started)))

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            for token in receivers:
                await nursery.start(receive, token)
            first_send = time.monotonic()
            for i, token in enumerate(senders):
                nursery.start_soon(send, i, token)
            await done.wait()
            nursery.cancel_scope.cancel()
    elapsed = last_receive - first_send
    return {
        "messages": received,
        "seconds": round(elapsed, 2),
        "delivered_per_s": round(received / elapsed),
        "p50_ms": round(pct(latencies, 50), 1),
        "p99_ms": round(pct(latencies, 99), 1),
    }


async def catchup(n1: Node, n2: Node, pairs: int, total: int) -> dict[str, Any]:
    n2.stop()
    senders = [(await login(n1.url, f"s{i}", PW)).token for i in range(pairs)]
    per = total // pairs

    async def send(index: int, token: str) -> None:
        async with connect(n1.url, token) as client:
            for start in range(0, per, 200):
                batch = [
                    (f"r{index}@{n2.name}", f"{time.time_ns()}:q{k}", f"q{index}-{k}")
                    for k in range(start, min(per, start + 200))
                ]
                for reply in await client.send_many(batch):
                    if isinstance(reply, ClientError):
                        raise reply

    queue_started = time.monotonic()
    with trio.fail_after(900):
        async with trio.open_nursery() as nursery:
            for i, token in enumerate(senders):
                nursery.start_soon(send, i, token)
    queue_seconds = time.monotonic() - queue_started
    depth, _ = await outbox_to(n1, n2)
    await trio.to_thread.run_sync(n2.start)
    started = time.monotonic()
    with trio.fail_after(900):
        while (await outbox_to(n1, n2))[0] > 0:  # noqa: ASYNC110 (another process)
            await trio.sleep(0.05)
    seconds = time.monotonic() - started
    return {
        "queued": depth,
        "queue_rate_per_s": round(depth / queue_seconds),
        "catchup_seconds": round(seconds, 2),
        "catchup_per_s": round(depth / seconds),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="chinwag-fedbench-"))
    n1, n2 = Node(root, "n1"), Node(root, "n2")
    try:
        for node in (n1, n2):
            await trio.to_thread.run_sync(node.start)
            node.node_id = (await status(node))["node_id"]
        await admin_request(n1.data, "peers.add", {"peer": f"{n2.url}#{n2.node_id}"})
        await admin_request(n2.data, "peers.add", {"peer": f"{n1.url}#{n1.node_id}"})
        await wait_linked(n1, n2)
        for i in range(args.pairs):
            await signup(n1.url, f"s{i}", PW)
            await signup(n2.url, f"r{i}", PW)
        result: dict[str, Any] = {"pairs": args.pairs}
        result["max"] = await throughput(n1, n2, args.pairs, args.messages, 0)
        if args.rate:
            result["paced"] = await throughput(n1, n2, args.pairs, args.rate * 10, args.rate)
            result["paced"]["rate"] = args.rate
        if args.catchup:
            result["catchup"] = await catchup(n1, n2, args.pairs, args.catchup)
        return result
    finally:
        n1.stop()
        n2.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--rate", type=int, default=1000, help="paced phase msgs/s (0: skip)")
    parser.add_argument("--catchup", type=int, default=100_000, help="0: skip")
    args = parser.parse_args()
    result = trio.run(run, args)
    print(json.dumps(result))
    if "max" in result:
        m = result["max"]
        print(
            f"max: {m['delivered_per_s']} msg/s  p50 {m['p50_ms']} ms  p99 {m['p99_ms']} ms",
            file=sys.stderr,
        )
    if "catchup" in result:
        c = result["catchup"]
        print(f"catch-up: {c['queued']} queued, {c['catchup_per_s']} msg/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
