#!/usr/bin/env python3
"""Abuse soak: attacks on one node while a legitimate user keeps chatting.

One node runs in a subprocess with its production settings (default limits,
open sign-up, the production password-hash cost) and a fresh data directory.
A legitimate user ``legit`` keeps one device connected and sends one message a
second to ``friend`` (connected too, acking each message as the web client
does), and logs in afresh every ``--login-every`` seconds. Meanwhile the
attacks below run one after another, each for about ``--phase`` seconds:

* ``quiet``: no attack (the baseline);
* ``guess``: 256 concurrent wrong-password log-ins for one account from four
  source addresses, then the right password;
* ``login_flood``: 400 concurrent log-ins of unknown users (each is hashed);
* ``signup_flood``: 150 concurrent sign-ups from one address;
* ``decoder_bomb``: 8 connections of one account, each sending 1 MiB
  WebSocket messages that decode to about a million empty lists;
* ``fragments``: one WebSocket message sent as 100,000 one-byte fragments;
* ``conn_flood``: ``--flood`` idle, unauthenticated WebSocket connections
  from 170 loopback addresses, held open through the phase;
* ``storage``: one account sends 16 KiB texts to a group of 20 as fast as
  the node lets it;
* ``http_edges``: a 60 KiB request head in one write and a 1 TB
  ``Content-Length``, repeatedly.

Reported per phase: the legitimate user's send latency (p50/p99/max, ms),
log-in times, errors, what the attacker got back, and the node's peak RSS;
at the end, whether every acknowledged message reached ``friend`` exactly
once. Every loop is bounded in count and time; all traffic is on loopback.

    python bench/abuse.py                    # all phases, ~15 s each
    python bench/abuse.py --phase 10 --only guess,decoder_bomb --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
import wsproto
import wsproto.events as wse
from nodeproc import NodeProcess, memory_kb, percentile, raise_nofile_limit

from chinwag.node.client import ChatClient, ClientError, connect, login, split_url

PASSWORD = "legit-password-1234"
ATTACKER_PASSWORD = "attacker-password-1234"
CBOR_SUB = "chinwag.cbor.v1"
#: Every network wait of the attackers and the legitimate user is bounded.
IO_TIMEOUT = 20.0


@dataclass
class PhaseResult:
    name: str
    send_ms: list[float] = field(default_factory=list)
    login_ms: list[float] = field(default_factory=list)
    legit_errors: Counter[str] = field(default_factory=Counter)
    attacker: Counter[str] = field(default_factory=Counter)
    peak_rss_kb: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        sends = sorted(self.send_ms)
        logins = sorted(self.login_ms)
        return {
            "phase": self.name,
            "sends": len(sends),
            "send_p50_ms": round(percentile(sends, 50), 1),
            "send_p99_ms": round(percentile(sends, 99), 1),
            "send_max_ms": round(max(sends), 1) if sends else None,
            "logins": len(logins),
            "login_max_ms": round(max(logins), 1) if logins else None,
            "legit_errors": dict(self.legit_errors),
            "attacker": dict(self.attacker),
            "peak_rss_mb": round(self.peak_rss_kb / 1024, 1),
            **self.notes,
        }


# ---------------------------------------------------------------- raw HTTP


async def _tcp(url: str, source: str | None) -> trio.SocketStream:
    host, port, _ = split_url(url)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        if source is not None:
            await sock.bind((source, 0))
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def http_post(
    url: str, path: str, body: dict[str, Any], source: str | None, timeout: float = IO_TIMEOUT
) -> int:
    """POST a JSON body from ``source``; the HTTP status (0: no answer in ``timeout``)."""
    host, port, _ = split_url(url)
    data = json.dumps(body).encode()
    conn = h11.Connection(h11.CLIENT)
    with trio.move_on_after(timeout):
        try:
            stream = await _tcp(url, source)
        except OSError:
            return 0
        async with stream:
            headers = [
                ("Host", f"{host}:{port}"),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                ("Connection", "close"),
            ]
            try:
                await stream.send_all(
                    conn.send(h11.Request(method="POST", target=path, headers=headers))
                )
                await stream.send_all(conn.send(h11.Data(data=data)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                        continue
                    if isinstance(event, h11.Response):
                        return event.status_code
                    if isinstance(event, h11.ConnectionClosed):
                        return 0
            except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError):
                return 0
    return 0


async def raw_exchange(url: str, payload: bytes) -> str:
    """Send raw bytes, return the first status line the node answers (or why not)."""
    with trio.move_on_after(IO_TIMEOUT):
        try:
            stream = await _tcp(url, None)
        except OSError as exc:
            return f"connect: {exc.strerror}"
        async with stream:
            try:
                await stream.send_all(payload)
                data = await stream.receive_some(4096)
            except (OSError, trio.BrokenResourceError) as exc:
                return f"reset ({type(exc).__name__})"
            return data.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
    return "timeout"


# ---------------------------------------------------------------- raw WebSocket


class RawWs:
    """A wsproto client over a trio stream, for frames no real client sends."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    @classmethod
    async def open(cls, url: str, source: str | None = None) -> RawWs:
        host, port, _ = split_url(url)
        raw = cls(await _tcp(url, source))
        await raw.stream.send_all(
            raw.ws.send(wse.Request(host=f"{host}:{port}", target="/ws", subprotocols=[CBOR_SUB]))
        )
        while True:
            raw.ws.receive_data(await raw.stream.receive_some(65536) or None)
            for event in raw.ws.events():
                if isinstance(event, wse.AcceptConnection):
                    return raw
                if isinstance(event, wse.RejectConnection):
                    raise ConnectionError(f"upgrade refused: {event.status_code}")

    async def send(self, data: bytes, fragments: int = 1) -> None:
        step = max(1, len(data) // fragments)
        chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            await self.stream.send_all(self.ws.send(wse.BytesMessage(chunk, message_finished=last)))

    async def receive(self) -> bytes | None:
        """The next complete binary message, or None once the node closed."""
        parts: list[bytes] = []
        while True:
            for event in self.ws.events():
                if isinstance(event, wse.BytesMessage):
                    parts.append(bytes(event.data))
                    if event.message_finished:
                        return b"".join(parts)
                elif isinstance(event, wse.CloseConnection):
                    return None
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(data)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def cbor_auth(token: str) -> bytes:
    import cbor2

    return cbor2.dumps({"t": "auth", "rid": 1, "token": token})


def cbor_bomb(size: int = 1 << 20) -> bytes:
    """An array (32-bit length) of empty arrays filling ``size`` bytes."""
    count = size - 5
    return b"\x9a" + count.to_bytes(4, "big") + b"\x80" * count


# ---------------------------------------------------------------- the legitimate user


class Legit:
    def __init__(self, url: str, token_send: str, token_recv: str) -> None:
        self.url = url
        self.token_send = token_send
        self.token_recv = token_recv
        self.phase: PhaseResult | None = None
        self.acked: set[int] = set()
        self.received: Counter[int] = Counter()
        #: Set (and replaced) whenever ``friend`` receives a legitimate message.
        self.got_one = trio.Event()
        self.n = 0

    async def run_sender(self) -> None:
        async with connect(self.url, self.token_send) as client:
            while True:
                start = trio.current_time()
                await self._send_once(client)
                await trio.sleep_until(start + 1.0)

    async def run_logins(self, every: float) -> None:
        while True:
            start = trio.current_time()
            await self._login_once()
            await trio.sleep_until(start + every)

    async def _send_once(self, client: ChatClient) -> None:
        phase = self.phase
        self.n += 1
        t0 = time.perf_counter()
        try:
            with trio.fail_after(IO_TIMEOUT):
                ack = await client.send("friend", f"legit {self.n}", cid=f"legit-{self.n}")
        except trio.TooSlowError:
            if phase:
                phase.legit_errors["send_timeout"] += 1
            return
        except ClientError as exc:
            if phase:
                phase.legit_errors[f"send_{exc.code}"] += 1
            return
        self.acked.add(ack.id)
        if phase:
            phase.send_ms.append((time.perf_counter() - t0) * 1000)

    async def _login_once(self) -> None:
        phase = self.phase
        t0 = time.perf_counter()
        try:
            with trio.fail_after(IO_TIMEOUT):
                await login(self.url, "legit", PASSWORD, "legit-laptop")
        except trio.TooSlowError:
            if phase:
                phase.legit_errors["login_timeout"] += 1
            return
        except ClientError as exc:
            if phase:
                phase.legit_errors[f"login_{exc.code}"] += 1
            return
        if phase:
            phase.login_ms.append((time.perf_counter() - t0) * 1000)

    async def run_receiver(self) -> None:
        async with connect(self.url, self.token_recv) as client:
            await client.sync(0)
            while True:
                frame = await client.next_message(timeout=3600)
                body = frame.get("body") or {}
                text = body.get("text") if isinstance(body, dict) else None
                if isinstance(text, str) and text.startswith("legit "):
                    self.received[int(frame["id"])] += 1
                    event, self.got_one = self.got_one, trio.Event()
                    event.set()
                await client.ack(int(frame["seq"]))


# ---------------------------------------------------------------- attacks


async def attack_guess(url: str, result: PhaseResult, _: argparse.Namespace) -> None:
    statuses: Counter[str] = Counter()

    async def guess(i: int) -> None:
        status = await http_post(
            url, "/api/login", {"user": "victim", "password": f"wrong-{i}"}, f"127.0.0.{2 + i % 4}"
        )
        statuses[str(status)] += 1

    async with trio.open_nursery() as nursery:
        for i in range(256):
            nursery.start_soon(guess, i)
    right = await http_post(
        url, "/api/login", {"user": "victim", "password": PASSWORD}, "127.0.0.6"
    )
    result.attacker.update(statuses)
    result.notes["right_password_after_guesses"] = right


async def attack_login_flood(url: str, result: PhaseResult, _: argparse.Namespace) -> None:
    async def one(i: int) -> None:
        status = await http_post(
            url,
            "/api/login",
            {"user": f"nobody{i}", "password": "x" * 12},
            f"127.0.1.{1 + i % 100}",
        )
        result.attacker[str(status)] += 1

    async with trio.open_nursery() as nursery:
        for i in range(400):
            nursery.start_soon(one, i)


async def attack_signup_flood(url: str, result: PhaseResult, _: argparse.Namespace) -> None:
    async def one(i: int) -> None:
        status = await http_post(
            url, "/api/signup", {"user": f"flood{i}", "password": "flood-password-1"}, "127.0.2.1"
        )
        result.attacker[str(status)] += 1

    async with trio.open_nursery() as nursery:
        for i in range(150):
            nursery.start_soon(one, i)


async def attack_decoder_bomb(url: str, result: PhaseResult, args: argparse.Namespace) -> None:
    token = args.attacker_token
    bomb = cbor_bomb()
    deadline = trio.current_time() + args.phase

    async def one(c: int) -> None:
        while trio.current_time() < deadline:
            try:
                raw = await RawWs.open(url, f"127.0.3.{1 + c}")
            except (OSError, ConnectionError):
                result.attacker["connect_refused"] += 1
                await trio.sleep(0.5)
                continue
            try:
                await raw.send(cbor_auth(token))
                await raw.receive()
                while trio.current_time() < deadline:
                    await raw.send(bomb)
                    result.attacker["bombs_sent"] += 1
                    answer = await raw.receive()
                    if answer is None:
                        result.attacker["closed_by_node"] += 1
                        break
                    result.attacker["answered"] += 1
            except (OSError, trio.BrokenResourceError, wsproto.utilities.LocalProtocolError):
                result.attacker["closed_by_node"] += 1
            finally:
                await raw.aclose()

    with trio.move_on_after(args.phase + IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for c in range(8):
                nursery.start_soon(one, c)


async def attack_fragments(url: str, result: PhaseResult, args: argparse.Namespace) -> None:
    with trio.move_on_after(args.phase + IO_TIMEOUT):
        raw = await RawWs.open(url, "127.0.4.1")
        try:
            await raw.send(cbor_auth(args.attacker_token))
            await raw.receive()
            t0 = time.perf_counter()
            try:
                await raw.send(b"\x80" * 100_000, fragments=100_000)
                answer = await raw.receive()
                result.attacker["closed_by_node" if answer is None else "answered"] += 1
            except (OSError, trio.BrokenResourceError, wsproto.utilities.LocalProtocolError):
                result.attacker["closed_by_node"] += 1
            result.notes["fragments_s"] = round(time.perf_counter() - t0, 2)
        finally:
            await raw.aclose()


async def attack_conn_flood(url: str, result: PhaseResult, args: argparse.Namespace) -> None:
    held: list[RawWs] = []
    limiter = trio.CapacityLimiter(64)

    async def one(i: int) -> None:
        async with limiter:
            try:
                with trio.fail_after(IO_TIMEOUT):
                    held.append(await RawWs.open(url, f"127.0.{10 + i // 250}.{1 + i % 250 % 170}"))
                result.attacker["opened"] += 1
            except (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError):
                result.attacker["refused"] += 1

    try:
        with trio.move_on_after(args.phase * 2):
            async with trio.open_nursery() as nursery:
                for i in range(args.flood):
                    nursery.start_soon(one, i)
        await trio.sleep(args.phase / 2)  # held idle while the legitimate user goes on
        alive = 0
        for raw in held:
            try:
                raw.ws.receive_data(b"")
            except Exception:
                pass
            alive += 1
        result.notes["flood_connections_held"] = alive
    finally:
        for raw in held:
            await raw.aclose()


async def attack_storage(url: str, result: PhaseResult, args: argparse.Namespace) -> None:
    data_dir = args.data_dir
    before = _du(data_dir)
    text = "x" * (16 * 1024 - 64)
    async with connect(url, args.attacker_token) as client:
        try:
            created = await client.group("create", name="spam", title="spam")
            await client.group("add", group=created["group"], members=args.group_members)
        except ClientError as exc:
            result.attacker[f"group_{exc.code}"] += 1
        deadline = trio.current_time() + args.phase
        n = 0
        while trio.current_time() < deadline and n < 100_000:
            n += 1
            try:
                await client.send("#spam@bench", text)
                result.attacker["ok"] += 1
            except ClientError as exc:
                result.attacker[exc.code] += 1
                if exc.code == "rate_limited":
                    await trio.sleep(0.05)
    result.notes["store_growth_mb"] = round((_du(data_dir) - before) / 1e6, 1)


async def attack_http_edges(url: str, result: PhaseResult, args: argparse.Namespace) -> None:
    host, port, _ = split_url(url)
    big_head = (
        f"GET /.well-known/chinwag HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
        + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(600))
        + b"\r\n"
    )
    huge_body = (
        f"POST /api/login HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{"
    ).encode()
    deadline = trio.current_time() + args.phase
    rounds = 0
    while trio.current_time() < deadline and rounds < 200:
        rounds += 1
        result.attacker["head60k: " + await raw_exchange(url, big_head)] += 1
        result.attacker["content_length_1tb: " + await raw_exchange(url, huge_body)] += 1
        await trio.sleep(0.05)


def _du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


ATTACKS: dict[str, Callable[[str, PhaseResult, argparse.Namespace], Awaitable[None]] | None] = {
    "quiet": None,
    "guess": attack_guess,
    "login_flood": attack_login_flood,
    "signup_flood": attack_signup_flood,
    "decoder_bomb": attack_decoder_bomb,
    "fragments": attack_fragments,
    "conn_flood": attack_conn_flood,
    "storage": attack_storage,
    "http_edges": attack_http_edges,
}


# ---------------------------------------------------------------- driver


async def signup_from(url: str, user: str, password: str, source: str) -> None:
    """Sign up from its own loopback address: the node allows only a few
    sign-ups per address (its defaults are what this benchmark runs)."""
    status = await http_post(url, "/api/signup", {"user": user, "password": password}, source)
    if status not in (200, 201):
        raise RuntimeError(f"sign-up of {user} from {source}: HTTP {status}")


async def watch_rss(pid: int, legit: Legit) -> None:
    while True:
        rss = memory_kb(pid).get("VmRSS", 0)
        if legit.phase is not None:
            legit.phase.peak_rss_kb = max(legit.phase.peak_rss_kb, rss)
        await trio.sleep(0.25)


async def drive(node: NodeProcess, args: argparse.Namespace) -> dict[str, Any]:
    url = node.url
    names = ["legit", "friend", "victim", "attacker"] + [f"member{i}" for i in range(20)]
    for i, name in enumerate(names):
        password = ATTACKER_PASSWORD if name == "attacker" else PASSWORD
        await signup_from(url, name, password, f"127.0.5.{1 + i}")
    args.group_members = [f"member{i}" for i in range(20)]
    args.attacker_token = (await login(url, "attacker", ATTACKER_PASSWORD, "bot")).token
    args.data_dir = str(node.data_dir)
    legit = Legit(
        url,
        (await login(url, "legit", PASSWORD, "legit-laptop")).token,
        (await login(url, "friend", PASSWORD, "friend-phone")).token,
    )
    results: list[PhaseResult] = []
    chosen = [p for p in ATTACKS if not args.only or p in args.only.split(",")]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(legit.run_receiver)
        nursery.start_soon(legit.run_sender)
        nursery.start_soon(legit.run_logins, args.login_every)
        nursery.start_soon(watch_rss, node.pid, legit)
        for name in chosen:
            result = PhaseResult(name)
            legit.phase = result
            t0 = trio.current_time()
            attack = ATTACKS[name]
            if attack is not None:
                with trio.move_on_after(args.phase * 4 + IO_TIMEOUT):
                    await attack(url, result, args)
            await trio.sleep_until(t0 + args.phase)
            legit.phase = None
            results.append(result)
            print(json.dumps(result.summary()), file=sys.stderr, flush=True)
            if node.proc is not None and node.proc.poll() is not None:
                break
        # Let the last acknowledged sends reach ``friend``.
        with trio.move_on_after(10):
            while len(legit.received) < len(legit.acked):
                await legit.got_one.wait()
        nursery.cancel_scope.cancel()
    duplicates = sum(1 for count in legit.received.values() if count > 1)
    return {
        "phases": [r.summary() for r in results],
        "acked": len(legit.acked),
        "received": len(legit.received),
        "lost": max(0, len(legit.acked) - len(legit.received)),
        "duplicates": duplicates,
        "node_alive": node.proc is not None and node.proc.poll() is None,
        "node_peak_rss_mb": round(memory_kb(node.pid).get("VmHWM", 0) / 1024, 1)
        if node.proc is not None and node.proc.poll() is None
        else None,
    }


def print_table(r: dict[str, Any]) -> None:
    print(
        f"{'phase':<14}{'sends':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'login max':>11}{'RSS MB':>8}  errors / attacker"
    )
    for p in r["phases"]:
        print(
            f"{p['phase']:<14}{p['sends']:>6}{p['send_p50_ms']:>9}{p['send_p99_ms']:>9}"
            f"{str(p['send_max_ms']):>9}{str(p['login_max_ms']):>11}{p['peak_rss_mb']:>8}  "
            f"{p['legit_errors'] or '-'} / {p['attacker']}"
        )
    print(
        f"acked {r['acked']}, received {r['received']}, lost {r['lost']}, "
        f"duplicates {r['duplicates']}, node alive {r['node_alive']}, "
        f"node peak RSS {r['node_peak_rss_mb']} MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", type=float, default=15.0, help="seconds per attack")
    parser.add_argument("--login-every", type=float, default=5.0)
    parser.add_argument("--flood", type=int, default=3000, help="connections in conn_flood")
    parser.add_argument("--only", default="", help="comma-separated phases")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    with NodeProcess(
        bench_limits=False, production_auth=True, extra_args=("--signup", "open")
    ) as node:
        result = trio.run(drive, node, args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
