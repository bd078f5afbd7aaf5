"""Nodes find each other by mDNS inside a test-made network namespace and link."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from .netns import netns, ns_prefix  # noqa: F401  (fixture)
from .procs import run_cli, spawn_node

PW = "pw"
TIMEOUT = 40


async def status(home: Path, data: Path) -> dict[str, Any]:
    result = await run_cli(["status", "--json", "--data", str(data)], home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_nodes_discover_link_and_chat_under_trust_lan(nursery, tmp_path, netns) -> None:  # noqa: F811
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

    found = await run_cli(
        ["discover", "--json", "--timeout", "2", "--interface", "127.0.0.1"],
        tmp_path,
        prefix=prefix,
    )
    assert found.returncode == 0, found.stderr
    nodes = json.loads(found.stdout)
    assert sorted(n["name"] for n in nodes) == names
    assert all("users_online" in n and "connections" in n for n in nodes)
    assert sum(n["recommended"] for n in nodes) == 1
    best = next(n for n in nodes if n["recommended"])
    assert best["users_online"] == min(n["users_online"] for n in nodes)
