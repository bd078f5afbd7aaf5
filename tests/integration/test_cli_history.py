"""``chinwag tail --last N`` and ``chinwag search`` against a real node."""

from __future__ import annotations

import json

from chinwag.node.client import connect

from .procs import run_cli

PW = "correct horse battery staple"


async def test_tail_last_prints_the_last_messages_without_a_seq(start_node, tmp_path) -> None:
    node = await start_node(name="den")
    await node.user("alice")
    bob = await node.user("bob")
    async with connect(node.url, bob) as client:
        for n in range(12):
            await client.send("alice", f"note {n}")
    common = ["--server", node.url, "--user", "alice", "--json"]
    last = await run_cli(["tail", *common, "--last", "3"], tmp_path, password=PW)
    assert last.returncode == 0, last.stderr
    items = [json.loads(line) for line in last.stdout.decode().splitlines()]
    assert [i["text"] for i in items] == ["note 9", "note 10", "note 11"]
    assert [i["seq"] for i in items] == [10, 11, 12]
    # More than the queue holds: all of it; -n is the short form.
    everything = await run_cli(["tail", *common, "-n", "50"], tmp_path)
    assert len(everything.stdout.decode().splitlines()) == 12
    plain = await run_cli(["tail", "--server", node.url, "--user", "alice", "-n", "1"], tmp_path)
    assert plain.stdout.decode().startswith("[12] ") and "note 11" in plain.stdout.decode()
    for bad in (["--last", "0"], ["--last", "2", "--since", "3"]):
        refused = await run_cli(["tail", *common, *bad], tmp_path)
        assert refused.returncode == 2 and b"Traceback" not in refused.stderr


async def test_search_prints_hits_newest_first_and_pages(start_node, tmp_path) -> None:
    node = await start_node(name="den")
    alice = await node.user("alice")
    bob = await node.user("bob")
    await node.user("carol")
    async with connect(node.url, bob) as client:
        for n in range(7):
            await client.send("alice", f"the Crème brûlée number {n}")
        await client.send("alice", "nothing to see")
    async with connect(node.url, alice) as client:
        await client.send("carol", "une crème for carol")
        await client.send("carol", "안녕하세요 여러분")

    common = ["--server", node.url, "--user", "alice"]
    found = await run_cli(["search", *common, "creme", "--json"], tmp_path, password=PW)
    assert found.returncode == 0, found.stderr
    hits = [json.loads(line) for line in found.stdout.decode().splitlines()]
    assert [h["text"] for h in hits] == ["une crème for carol"] + [
        f"the Crème brûlée number {n}" for n in range(6, -1, -1)
    ]
    assert hits[0]["conv"].startswith("carol@") and hits[1]["conv"].startswith("bob@")
    assert set(hits[0]) == {"conv", "id", "seq", "from", "ts", "text"}
    assert [h["seq"] for h in hits] == sorted((h["seq"] for h in hits), reverse=True)

    # --limit pages: three at a time, newest first.
    limited = await run_cli(["search", *common, "brulee", "--limit", "3", "--json"], tmp_path)
    assert [json.loads(x)["text"][-1] for x in limited.stdout.decode().splitlines()] == [
        "6",
        "5",
        "4",
    ]
    # --in one conversation (by name, as typed), and Korean text.
    only = await run_cli(["search", *common, "crème", "--in", "bob@den", "--json"], tmp_path)
    assert len(only.stdout.decode().splitlines()) == 7
    korean = await run_cli(["search", *common, "여러분"], tmp_path)
    assert korean.returncode == 0 and "안녕하세요 여러분" in korean.stdout.decode()
    assert " carol@den alice@den: 안녕하세요 여러분" in korean.stdout.decode()
    none = await run_cli(["search", *common, "absent"], tmp_path)
    assert none.returncode == 0 and none.stdout == b""
    unknown = await run_cli(["search", *common, "creme", "--in", "nobody@den"], tmp_path)
    assert unknown.returncode != 0 and b"Traceback" not in unknown.stderr


async def test_search_walks_several_pages_without_repeats(start_node, tmp_path) -> None:
    node = await start_node(name="den")
    await node.user("alice")
    bob = await node.user("bob")
    async with connect(node.url, bob) as client:
        acks = await client.send_many([("alice", f"bulk item {n}", None) for n in range(60)])
        assert not any(isinstance(a, Exception) for a in acks)
    common = ["--server", node.url, "--user", "alice", "bulk", "--json"]
    first = await run_cli(["search", *common, "--limit", "55"], tmp_path, password=PW)
    assert first.returncode == 0, first.stderr
    seqs = [json.loads(line)["seq"] for line in first.stdout.decode().splitlines()]
    assert seqs == list(range(60, 5, -1))  # two pages (50 + 5), newest first
    everything = await run_cli(["search", *common, "--limit", "500"], tmp_path)
    texts = [json.loads(line)["text"] for line in everything.stdout.decode().splitlines()]
    assert texts == [f"bulk item {n}" for n in range(59, -1, -1)]
