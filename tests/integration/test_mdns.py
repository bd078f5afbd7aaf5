"""mDNS discovery, only ever inside network namespaces that the tests create.

- Discovery processes (tests/integration/mdns_peer.py, no node) announce fake
  node ids with a load; ``chinwag discover`` lists them and recommends the
  least loaded; live load changes and goodbyes reach the other peers; a
  malformed record is ignored.
- ``--interface`` keeps discovery to the interfaces asked for.
- Real nodes find each other by mDNS and link under ``--trust-lan``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from chinwag.protocol.addresses import node_id_text

from .netns import Netns, NetnsError, NetnsFactory, netns, netns_factory, ns_prefix  # noqa: F401
from .procs import run_cli, spawn_node

PEER = str(Path(__file__).with_name("mdns_peer.py"))
WAIT = 15


class Peer:
    """One mdns_peer.py process: its JSON-line events, and commands on stdin."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self.events: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self.ended = False
        self._changed = trio.Event()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def pump(self) -> None:
        assert self.process.stdout is not None
        buf = b""
        try:
            while chunk := await self.process.stdout.receive_some(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.events.append(json.loads(line))
                    self._wake()
        finally:
            self.ended = True
            self._wake()

    async def drain_stderr(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.receive_some(65536):
            self.stderr += chunk[-8192:]

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                for event in self.events:
                    if pred(event):
                        return event
                if self.ended:
                    raise AssertionError(
                        f"peer {self.name} exited: {self.events} "
                        f"{self.stderr.decode(errors='replace')}"
                    )
                await self._changed.wait()

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")


async def start_peer(nursery: trio.Nursery, ns: Netns, name: str, *args: str) -> Peer:
    process = await ns.spawn(nursery, [sys.executable, PEER, "--name", name, *args])
    peer = Peer(name, process)
    nursery.start_soon(peer.pump)
    nursery.start_soon(peer.drain_stderr)
    await peer.wait_for(lambda e: e["event"] == "started")
    return peer


async def discover(ns: Netns, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await ns.run([sys.executable, "-m", "chinwag.cli", "discover", *args])


def change_of(node_id: str, pred: Callable[[Any], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "change" and e["node_id"] == node_id and pred(e["node"])


async def test_discover_lists_load_recommends_lowest_and_follows_changes(
    nursery: trio.Nursery,
    netns: Netns,  # noqa: F811
) -> None:
    loads = {"alpha": (5, 9), "beta": (1, 7), "gamma": (1, 3)}
    ids = {name: node_id_text(os.urandom(32)) for name in loads}
    ports = {"alpha": 7601, "beta": 7602, "gamma": 7603}
    peers: dict[str, Peer] = {}

    async def start(name: str) -> None:
        users, conns = loads[name]
        peers[name] = await start_peer(
            nursery, netns, name, "--id", ids[name], "--port", str(ports[name]),
            "--users", str(users), "--conns", str(conns), "--interface", "127.0.0.1",
        )  # fmt: skip

    async with trio.open_nursery() as starting:
        for name in loads:
            starting.start_soon(start, name)
        # A record that is not a chinwag node's: ignored (and counted) by everyone.
        starting.start_soon(
            start_peer, nursery, netns, "raw", "--port", "9", "--interface", "127.0.0.1",
            "--raw", "id=NOT-AN-ID", "name=evil", "v=1", "users=0", "conns=0",
        )  # fmt: skip

    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run(key: str, *args: str) -> None:
        results[key] = await discover(netns, "--timeout", "3", "--interface", "127.0.0.1", *args)

    async with trio.open_nursery() as both:
        both.start_soon(run, "json", "--json")
        both.start_soon(run, "text")
    for result in results.values():
        assert result.returncode == 0, result.stderr

    nodes = json.loads(results["json"].stdout)
    assert {n["name"]: (n["users_online"], n["connections"]) for n in nodes} == loads
    assert {n["name"]: n["node_id"] for n in nodes} == ids
    assert {n["name"]: n["url"] for n in nodes} == {
        name: f"http://127.0.0.1:{port}" for name, port in ports.items()
    }
    assert [n["name"] for n in nodes if n["recommended"]] == ["gamma"]
    text = results["text"].stdout.decode()
    assert [line.split()[1] for line in text.splitlines() if line.startswith("* ")][0] == "gamma"
    assert ids["gamma"][:12] in text and "users online 5  connections 9" in text

    # Live: alpha's load drops (re-announced), beta leaves (goodbye packets).
    await peers["alpha"].send("load 0 0")
    await peers["gamma"].wait_for(change_of(ids["alpha"], lambda n: n and n["users_online"] == 0))
    await peers["beta"].send("quit")
    with trio.fail_after(WAIT):
        assert await peers["beta"].process.wait() == 0
    await peers["gamma"].wait_for(change_of(ids["beta"], lambda n: n is None))
    await peers["alpha"].wait_for(change_of(ids["beta"], lambda n: n is None))
    stats = (await peers["beta"].wait_for(lambda e: e["event"] == "stopped"))["stats"]
    assert stats["malformed"] >= 1 and stats["nodes"] == 2 and stats["dropped"] == 0
    # No peer ever listed the malformed record or itself.
    for name, peer in peers.items():
        seen = {e["node_id"] for e in peer.events if e["event"] == "change"}
        assert seen <= set(ids.values()) - {ids[name]}


async def test_discovery_stays_on_the_interfaces_asked_for(
    nursery: trio.Nursery,
    netns_factory: NetnsFactory,  # noqa: F811
) -> None:
    try:
        hub, far = netns_factory.make(), netns_factory.make()
        if_hub, if_far = netns_factory.link(hub, far, "10.77.1.1/24", "10.77.1.2/24")
    except NetnsError as exc:
        pytest.skip(f"cannot make namespaces linked by veth here: {exc}")
    on_lo, on_link = node_id_text(os.urandom(32)), node_id_text(os.urandom(32))
    async with trio.open_nursery() as starting:
        # In the hub, on loopback only; across the veth link, on the link only.
        starting.start_soon(
            start_peer, nursery, hub, "onlo", "--id", on_lo, "--port", "7701",
            "--interface", "127.0.0.1",
        )  # fmt: skip
        starting.start_soon(
            start_peer, nursery, far, "onlink", "--id", on_link, "--port", "7702",
            "--interface", if_far,
        )  # fmt: skip

    results: dict[str, list[dict[str, Any]]] = {}

    async def run(interface: str) -> None:
        done = await discover(hub, "--json", "--timeout", "2", "--interface", interface)
        assert done.returncode == 0, done.stderr
        results[interface] = json.loads(done.stdout)

    # At once: each must see only its own interface's node, although the other
    # process in the same namespace has joined the mDNS group on the other one.
    async with trio.open_nursery() as both:
        both.start_soon(run, if_hub)
        both.start_soon(run, "127.0.0.1")
    assert [(n["node_id"], n["url"]) for n in results[if_hub]] == [
        (on_link, "http://10.77.1.2:7702")
    ]
    assert [(n["node_id"], n["url"]) for n in results["127.0.0.1"]] == [
        (on_lo, "http://127.0.0.1:7701")
    ]

    bad = await discover(hub, "--timeout", "1", "--interface", "no-such-if0")
    assert bad.returncode == 2 and b"no-such-if0" in bad.stderr


PW = "mdns-test-password"
TIMEOUT = 40


async def status(home: Path, data: Path) -> dict[str, Any]:
    result = await run_cli(["status", "--json", "--data", str(data)], home)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


async def test_nodes_discover_link_and_chat_under_trust_lan(
    nursery: trio.Nursery,
    tmp_path: Path,
    netns: Netns,  # noqa: F811
) -> None:
    prefix = ns_prefix(netns)
    names = ["n1", "n2", "n3"]
    dirs = {n: tmp_path / n for n in names}
    for name in names:
        assert (
            await run_cli(["init", "--data", str(dirs[name]), "--name", name], tmp_path)
        ).returncode == 0
    procs = {}
    for name in names:
        procs[name] = await spawn_node(
            nursery,
            dirs[name],
            "--trust-lan",
            "--mdns-interface",
            "127.0.0.1",
            home=tmp_path,
            prefix=prefix,
        )
    # The admin socket is a file: reachable from outside the namespace.
    assert (
        await run_cli(["user", "add", "alice", "--data", str(dirs["n1"])], tmp_path, password=PW)
    ).returncode == 0
    assert (
        await run_cli(["user", "add", "bob", "--data", str(dirs["n2"])], tmp_path, password=PW)
    ).returncode == 0
    with trio.fail_after(TIMEOUT):
        while True:  # noqa: ASYNC110  (other processes' state: bounded poll)
            peers = (await status(tmp_path, dirs["n1"]))["peers"]
            linked = {p["name"] for p in peers if p["link"] == "linked"}
            if {"n2", "n3"} <= linked:
                break
            await trio.sleep(0.2)
    assert all(p["state"] == "trusted" for p in peers)

    sent = await run_cli(
        ["send", "--server", procs["n1"].url, "--user", "alice", "bob@n2", "found you by mDNS"],
        tmp_path,
        password=PW,
        prefix=prefix,
    )
    assert sent.returncode == 0, sent.stderr
    with trio.fail_after(TIMEOUT):
        while True:  # noqa: ASYNC110
            tail = await run_cli(
                ["tail", "--server", procs["n2"].url, "--user", "bob", "--json"],
                tmp_path,
                password=PW,
                prefix=prefix,
            )
            assert tail.returncode == 0, tail.stderr
            if tail.stdout.strip():
                break
            await trio.sleep(0.2)
    item = json.loads(tail.stdout.splitlines()[0])
    assert item["text"] == "found you by mDNS" and item["from"] == "alice@n1"

    # One browse can miss a node whose answer comes after its window on a
    # loaded machine (multicast gives no promise of time); a user would run it
    # again, and so does the test, a bounded number of times.
    for _attempt in range(3):
        found = await run_cli(
            ["discover", "--json", "--timeout", "3", "--interface", "127.0.0.1"],
            tmp_path,
            prefix=prefix,
        )
        assert found.returncode == 0, found.stderr
        nodes = json.loads(found.stdout)
        if sorted(n["name"] for n in nodes) == names:
            break
    assert sorted(n["name"] for n in nodes) == names
    assert all("users_online" in n and "connections" in n for n in nodes)
    assert sum(n["recommended"] for n in nodes) == 1
    best = next(n for n in nodes if n["recommended"])
    assert best["users_online"] == min(n["users_online"] for n in nodes)
