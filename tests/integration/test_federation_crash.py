"""SIGKILL either end of a federation link: acknowledged messages arrive once, in order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from chinwag.node.client import ClientError, connect, login, signup

from .procs import NodeProcess, run_cli, spawn_node

PW = "federation-crash-password"
FLAGS = ("--send-rate", "100000", "--send-burst", "100000", "--heartbeat", "1")
TIMEOUT = 60


async def init(home: Path, data: Path, name: str) -> str:
    result = await run_cli(["init", "--data", str(data), "--name", name], home)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


async def status(home: Path, data: Path) -> dict[str, Any]:
    result = await run_cli(["status", "--json", "--data", str(data)], home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def wait_link(home: Path, data: Path, state: str = "linked") -> None:
    with trio.fail_after(TIMEOUT):
        while True:
            peers = (await status(home, data))["peers"]
            if peers and all(p["link"] == state for p in peers):
                return
            await trio.sleep(0.1)


async def receive_all(url: str, token: str, count: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with connect(url, token) as bob:
        await bob.sync(0)
        with trio.fail_after(TIMEOUT):
            while len(frames) < count:
                frames.append(await bob.messages.receive())
        with trio.move_on_after(0.5):
            extra = await bob.messages.receive()
            raise AssertionError(f"more than expected: {extra['body']}")
    return frames


async def pair(nursery: trio.Nursery, tmp_path: Path) -> tuple[Any, ...]:
    d1, d2 = tmp_path / "n1", tmp_path / "n2"
    id1, id2 = await init(tmp_path, d1, "n1"), await init(tmp_path, d2, "n2")
    p1 = await spawn_node(nursery, d1, *FLAGS, home=tmp_path)
    p2 = await spawn_node(nursery, d2, *FLAGS, "--peer", f"{p1.url}#{id1}", home=tmp_path)
    assert (
        await run_cli(["peers", "add", f"{p2.url}#{id2}", "--data", str(d1)], tmp_path)
    ).returncode == 0
    await wait_link(tmp_path, d1)
    await signup(p1.url, "alice", PW)
    await signup(p2.url, "bob", PW)
    return d1, d2, p1, p2


def listen_of(proc: NodeProcess) -> str:
    return proc.url.removeprefix("http://")


async def test_receiver_killed_with_1000_queued(nursery, tmp_path) -> None:
    d1, d2, p1, p2 = await pair(nursery, tmp_path)
    alice = await login(p1.url, "alice", PW)
    bob = await login(p2.url, "bob", PW)
    await p2.kill()
    sent = []
    async with connect(p1.url, alice.token) as a:
        for start in range(0, 1000, 100):
            items = [("bob@n2", f"m{i}", f"c{i}") for i in range(start, start + 100)]
            for reply in await a.send_many(items):
                assert not isinstance(reply, ClientError), reply
                sent.append(reply.id)
    assert (await status(tmp_path, d1))["peers"][0]["outbox"] == 1000
    p2 = await spawn_node(nursery, d2, *FLAGS, "--listen", listen_of(p2), home=tmp_path)
    frames = await receive_all(p2.url, bob.token, 1000)
    assert [f["body"]["text"] for f in frames] == [f"m{i}" for i in range(1000)]
    assert [f["id"] for f in frames] == sent
    await wait_link(tmp_path, d1)
    with trio.fail_after(TIMEOUT):
        while (await status(tmp_path, d1))["peers"][0]["outbox"]:  # noqa: ASYNC110
            await trio.sleep(0.1)


async def test_sender_killed_mid_stream(nursery, tmp_path) -> None:
    d1, d2, p1, p2 = await pair(nursery, tmp_path)
    alice = await login(p1.url, "alice", PW)
    bob = await login(p2.url, "bob", PW)
    acked: list[tuple[str, int]] = []
    enough = trio.Event()

    async def burst() -> None:
        try:
            async with connect(p1.url, alice.token) as a:
                for w in range(400):
                    items = [("bob@n2", f"m{w}-{i}", f"c{w}-{i}") for i in range(25)]
                    for (_, text, _), reply in zip(items, await a.send_many(items), strict=True):
                        if not isinstance(reply, ClientError):
                            acked.append((text, reply.id))
                    if len(acked) >= 600:
                        enough.set()
        except (ClientError, trio.BrokenResourceError, OSError):
            pass

    async with trio.open_nursery() as inner:
        inner.start_soon(burst)
        with trio.fail_after(TIMEOUT):
            await enough.wait()
        await p1.kill()
    p1 = await spawn_node(nursery, d1, *FLAGS, "--listen", listen_of(p1), home=tmp_path)
    # Every acked message arrives exactly once, in id order; unacked ones may too.
    got: list[dict[str, Any]] = []
    async with connect(p2.url, bob.token) as b:
        await b.sync(0)
        with trio.fail_after(TIMEOUT):
            want = {i for _, i in acked}
            while not want <= {f["id"] for f in got}:
                got.append(await b.messages.receive())
    ids = [f["id"] for f in got]
    assert len(ids) == len(set(ids)), "a message arrived twice"
    assert ids == sorted(ids)


async def test_receiver_killed_during_catch_up(nursery, tmp_path) -> None:
    """SIGKILL the receiver while several push frames are in flight and being
    committed (node/link.py checks one while it commits others): after the
    restart every message arrives exactly once, in order."""
    d1, d2, p1, p2 = await pair(nursery, tmp_path)
    alice = await login(p1.url, "alice", PW)
    bob = await login(p2.url, "bob", PW)
    await p2.kill()
    total = 1500
    sent = []
    async with connect(p1.url, alice.token) as a:
        for start in range(0, total, 250):
            items = [("bob@n2", f"m{i}", f"c{i}") for i in range(start, start + 250)]
            for reply in await a.send_many(items):
                assert not isinstance(reply, ClientError), reply
                sent.append(reply.id)
    p2 = await spawn_node(nursery, d2, *FLAGS, "--listen", listen_of(p2), home=tmp_path)
    # Kill it as soon as the first messages are committed (the rest in flight).
    async with connect(p2.url, bob.token) as b:
        await b.sync(0)
        with trio.fail_after(TIMEOUT):
            await b.messages.receive()
    await p2.kill()
    p2 = await spawn_node(nursery, d2, *FLAGS, "--listen", listen_of(p2), home=tmp_path)
    frames = await receive_all(p2.url, bob.token, total)
    assert [f["body"]["text"] for f in frames] == [f"m{i}" for i in range(total)]
    assert [f["id"] for f in frames] == sent
    await wait_link(tmp_path, d1)
    with trio.fail_after(TIMEOUT):
        while (await status(tmp_path, d1))["peers"][0]["outbox"]:  # noqa: ASYNC110
            await trio.sleep(0.1)
