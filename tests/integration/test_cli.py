"""The ``chinwag`` command end to end: init, run, user, send, tail."""

from __future__ import annotations

import json
import os
import stat

from .procs import run_cli, spawn_node

PW = "cli-password"


async def test_init_refuses_to_overwrite_and_creates_private_files(tmp_path) -> None:
    data = tmp_path / "data"
    first = await run_cli(["init", "--data", str(data), "--name", "kitchen"], tmp_path)
    assert first.returncode == 0, first.stderr
    node_id = first.stdout.decode().strip()
    assert len(node_id) == 52 and node_id.islower()
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(data / "node.key").st_mode) == 0o600
    again = await run_cli(["init", "--data", str(data)], tmp_path)
    assert again.returncode == 6  # conflict
    assert b"refusing" in again.stderr and b"Traceback" not in again.stderr


async def test_users_offline_then_chat_through_a_running_node(nursery, tmp_path) -> None:
    data = tmp_path / "data"
    home = tmp_path
    init = await run_cli(["init", "--data", str(data), "--name", "kitchen"], home)
    assert init.returncode == 0
    # Node not running: the CLI opens the store itself.
    added = await run_cli(["user", "add", "alice", "--data", str(data)], home, password=PW)
    assert added.returncode == 0, added.stderr
    proc = await spawn_node(nursery, data, "--signup", "closed", home=home)
    # Node running: the same command goes through the admin socket.
    added = await run_cli(["user", "add", "bob", "--data", str(data)], home, password=PW)
    assert added.returncode == 0, added.stderr
    listed = await run_cli(["user", "list", "--data", str(data), "--json"], home)
    assert [u["user"] for u in json.loads(listed.stdout)["users"]] == ["alice", "bob"]
    dup = await run_cli(["user", "add", "bob", "--data", str(data)], home, password=PW)
    assert dup.returncode != 0 and b"user_exists" in dup.stderr

    common = ["--server", proc.url, "--user", "alice"]
    sent = await run_cli(["send", *common, "bob@kitchen", "hello bob"], home, password=PW)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.decode().startswith("id=") and "seq=1" in sent.stdout.decode()

    lines = b"one\ntwo\nthree\n"
    many = await run_cli(["send", *common, "bob", "-"], home, stdin=lines)  # cached token
    assert many.returncode == 0, many.stderr
    assert [ln.split()[1] for ln in many.stdout.decode().splitlines()] == [
        "seq=2",
        "seq=3",
        "seq=4",
    ]

    tail = await run_cli(
        ["tail", "--server", proc.url, "--user", "bob", "--json"], home, password=PW
    )
    assert tail.returncode == 0, tail.stderr
    items = [json.loads(line) for line in tail.stdout.decode().splitlines()]
    assert [i["text"] for i in items] == ["hello bob", "one", "two", "three"]
    assert items[0]["from"] == "alice@kitchen" and items[0]["to"] == "bob@kitchen"
    assert {"seq", "id", "from", "to", "ts", "text"} <= items[0].keys()
    since = await run_cli(
        ["tail", "--server", proc.url, "--user", "bob", "--json", "--since", "3"], home
    )
    assert [json.loads(x)["text"] for x in since.stdout.decode().splitlines()] == ["three"]

    wrong = await run_cli(
        ["send", "--server", proc.url, "--user", "carol", "bob", "x"], home, password="nope"
    )
    assert wrong.returncode != 0 and b"Traceback" not in wrong.stderr
    assert b"wrong user or password" in wrong.stderr
    bad = await run_cli(["send", *common, "not a valid address!", "x"], home)
    assert bad.returncode != 0 and b"Traceback" not in bad.stderr

    removed = await run_cli(["user", "remove", "bob", "--data", str(data)], home)
    assert removed.returncode == 0
    assert await proc.terminate() == 0


async def test_client_errors_when_node_not_running(tmp_path) -> None:
    result = await run_cli(
        ["send", "--server", "http://127.0.0.1:9", "--user", "a", "b", "x"], tmp_path, password="x"
    )
    assert result.returncode != 0
    assert b"cannot reach" in result.stderr and b"Traceback" not in result.stderr


async def test_contacts_cli_with_presence(start_node, tmp_path) -> None:
    node = await start_node(name="cafe", presence_grace=0.1)
    await node.user("alice")
    bob = await node.user("bob")
    common = ["--server", node.url, "--user", "alice"]
    added = await run_cli(
        ["contacts", *common, "add", "bob"], tmp_path, password="correct horse battery staple"
    )
    assert added.returncode == 0, added.stderr
    from chinwag.node.client import connect

    async with connect(node.url, bob):
        listed = await run_cli(["contacts", *common, "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    (item,) = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    assert item["address"] == "bob@cafe" and item["status"] == "online"
    assert item["last_active_at"] > 0
    removed = await run_cli(["contacts", *common, "remove", "bob@cafe"], tmp_path)
    assert removed.returncode == 0
    assert (await run_cli(["contacts", *common, "--json"], tmp_path)).stdout == b""


async def test_group_cli(start_node, tmp_path) -> None:
    node = await start_node(name="den")
    pw = "correct horse battery staple"
    await node.user("alice")
    await node.user("bob")
    a = ["--server", node.url, "--user", "alice"]
    created = await run_cli(["group", "create", "book", *a], tmp_path, password=pw)
    assert created.returncode == 0, created.stderr
    assert created.stdout.decode().strip() == "#book@den"
    added = await run_cli(["group", "add", "#book@den", "bob@den", *a], tmp_path)
    assert added.returncode == 0, added.stderr
    # bob does not have alice in his contacts: he is invited, and accepts.
    b = ["--server", node.url, "--user", "bob"]
    invites = await run_cli(["group", "invites", *b], tmp_path, password=pw)
    assert invites.returncode == 0, invites.stderr
    assert invites.stdout.decode().startswith("#book@den  from alice@den")
    members = await run_cli(["group", "members", "#book@den", *a], tmp_path)
    assert "bob@den" in members.stdout.decode() and "invited" in members.stdout.decode()
    accepted = await run_cli(["group", "accept", "#book@den", *b], tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.decode().strip() == "accepted #book@den"
    again = await run_cli(["group", "accept", "#book@den", *b], tmp_path)
    assert again.returncode != 0 and b"not_found" in again.stderr
    assert (await run_cli(["group", "invites", *b, "--json"], tmp_path)).stdout == b""
    sent = await run_cli(["send", *a, "#book@den", "chapter one"], tmp_path)
    assert sent.returncode == 0, sent.stderr
    tail = await run_cli(["tail", *b, "--json"], tmp_path)
    items = [json.loads(line) for line in tail.stdout.decode().splitlines()]
    texts = [i for i in items if i["kind"] == "text"]
    assert texts[0]["text"] == "chapter one" and texts[0]["group"] == "#book@den"
    members = await run_cli(["group", "members", "#book@den", *b, "--json"], tmp_path)
    got = {json.loads(x)["address"] for x in members.stdout.decode().splitlines()}
    assert got == {"alice@den", "bob@den"}
    listed = await run_cli(["group", "list", *b], tmp_path)
    assert "#book@den" in listed.stdout.decode()
    left = await run_cli(["group", "leave", "#book@den", *b], tmp_path)
    assert left.returncode == 0, left.stderr
    denied = await run_cli(["send", *b, "#book@den", "still here?"], tmp_path)
    assert denied.returncode != 0 and b"forbidden" in denied.stderr


async def test_push_cli(start_node, tmp_path) -> None:
    node = await start_node(name="pub", push_allow_private=True)
    await node.user("bob")
    pw = "correct horse battery staple"
    b = ["--server", node.url, "--user", "bob", "--device", "phone"]
    url = "http://10.0.0.9:9/up/xyz"  # a private LAN address: allowed, never dialled here
    added = await run_cli(["push", "add", url, *b], tmp_path, password=pw)
    assert added.returncode == 0, added.stderr
    listed = await run_cli(["push", "list", *b, "--json"], tmp_path)
    assert json.loads(listed.stdout)["endpoints"] == [
        {"endpoint": url, "device": "phone", "include_text": False}
    ]
    removed = await run_cli(["push", "remove", url, *b], tmp_path)
    assert removed.returncode == 0
    listed = await run_cli(["push", "list", *b, "--json"], tmp_path)
    assert json.loads(listed.stdout)["endpoints"] == []


async def test_status_needs_the_running_node(tmp_path) -> None:
    """As the README says: ``status`` answers only from a running node."""
    data = tmp_path / "data"
    assert (await run_cli(["init", "--data", str(data)], tmp_path)).returncode == 0
    offline = await run_cli(["status", "--data", str(data)], tmp_path)
    assert offline.returncode != 0
    assert b"not running" in offline.stderr and b"Traceback" not in offline.stderr


async def test_run_checks_public_urls_before_starting(tmp_path) -> None:
    data = tmp_path / "node"
    bad = await run_cli(
        ["run", "--data", str(data), "--no-mdns", "--public-url", "ftp://kitchen"], tmp_path
    )
    assert bad.returncode == 2  # usage
    assert b"--public-url: not a node URL" in bad.stderr
    many = ["--public-url", "http://192.0.2.7:7600"] * 5
    too_many = await run_cli(["run", "--data", str(data), "--no-mdns", *many], tmp_path)
    assert too_many.returncode == 2 and b"at most 4" in too_many.stderr


async def test_send_stdin_waits_out_the_rate_limit_and_keeps_line_order(nursery, tmp_path) -> None:
    """2,000 lines at the default per-device rate (100/s, burst 200): the node
    refuses some as ``rate_limited``; the CLI waits ``retry_after_ms`` and goes
    on, never gives up, and every line lands once, in stdin order."""
    data = tmp_path / "data"
    assert (
        await run_cli(["init", "--data", str(data), "--name", "mill"], tmp_path)
    ).returncode == 0
    proc = await spawn_node(nursery, data, home=tmp_path)
    for name in ("alice", "bob"):
        added = await run_cli(["user", "add", name, "--data", str(data)], tmp_path, password=PW)
        assert added.returncode == 0, added.stderr
    count = 2000
    lines = [f"line {i:04d}" for i in range(count)]
    common = ["--server", proc.url, "--user", "alice"]
    sent = await run_cli(
        ["send", *common, "bob", "-"],
        tmp_path,
        stdin="\n".join(lines).encode() + b"\n",
        password=PW,
    )
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert sent.stderr == b""
    seqs = [int(line.split()[1].removeprefix("seq=")) for line in sent.stdout.decode().splitlines()]
    assert seqs == list(range(1, count + 1))
    tail = await run_cli(
        ["tail", "--server", proc.url, "--user", "bob", "--json"], tmp_path, password=PW
    )
    assert tail.returncode == 0, tail.stderr
    assert [json.loads(x)["text"] for x in tail.stdout.decode().splitlines()] == lines
    assert await proc.terminate() == 0
