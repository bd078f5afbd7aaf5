"""``chinwag backup``, ``restore`` and ``export`` against real nodes."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from chinwag.node.client import connect, login

from ..conftest import PASSWORD
from .procs import run_cli
from .test_federation import linked

TIMEOUT = 15
#: Each sender stops after this many messages even if the backup is slow.
MAX_SENDS = 3000


async def queue_ids(url: str, user: str) -> list[tuple[int, str]]:
    """``(id, text)`` of every message in ``user``'s queue, read by a device sync."""
    token = (await login(url, user, PASSWORD)).token
    out: list[tuple[int, str]] = []
    last = 0
    async with connect(url, token) as client:
        head = await client.sync(0)
        with trio.fail_after(TIMEOUT):
            while last < head:
                frame = await client.messages.receive()
                last = frame["seq"]
                if frame.get("kind") != "event":
                    out.append((frame["id"], frame["body"]["text"]))
    return out


def lines(result: Any) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


async def test_backup_while_two_clients_send_restores_each_acked_message_once(
    start_node, tmp_path: Path
) -> None:
    kitchen = await start_node(name="kitchen")
    shed = await start_node(name="shed")
    await linked(kitchen, shed)
    tokens = {name: await kitchen.user(name) for name in ("alice", "bob")}
    acked: dict[str, list[int]] = {"alice": [], "bob": []}
    backup_started = trio.Event()
    backup_done = trio.Event()
    warmed_up = trio.Event()  # both senders have had 50 messages acknowledged
    during: Counter[str] = Counter()

    async def sender(user: str, to: str) -> None:
        async with connect(kitchen.url, tokens[user]) as client:
            for n in range(MAX_SENDS):
                if backup_done.is_set():
                    return
                ack = await client.send(to, f"{user} {n}")
                acked[user].append(ack.id)
                if min(len(ids) for ids in acked.values()) >= 50:
                    warmed_up.set()
                if backup_started.is_set():
                    during[user] += 1

    dest = tmp_path / "backup"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender, "alice", "bob")
            nursery.start_soon(sender, "bob", "alice")
            await warmed_up.wait()
            before = {user: list(ids) for user, ids in acked.items()}
            backup_started.set()
            started_at = time.monotonic()
            result = await run_cli(
                ["backup", str(dest), "--data", str(kitchen.node.config.data_dir)], tmp_path
            )
            took = time.monotonic() - started_at
            backup_done.set()
    assert result.returncode == 0, result.stderr
    assert "from the running node" in result.stdout.decode()
    # Chat went on while the backup ran (the copy does not hold the writer).
    assert sum(during.values()) > 0, took
    manifest = json.loads((dest / "backup.json").read_text())
    assert manifest["online"] is True and manifest["node_id"] == kitchen.running.identity.id
    assert {"db/data.mdb", "node.key", "node.json"} <= manifest["files"].keys()
    assert not [p for p in await trio.Path(tmp_path).iterdir() if ".partial-" in p.name]

    await kitchen.stop()
    restored = tmp_path / "restored"
    done = await run_cli(["restore", str(dest), "--data", str(restored)], tmp_path)
    assert done.returncode == 0, done.stderr
    again = await start_node(data_dir=restored)
    assert again.running.identity.id == kitchen.running.identity.id

    # Every message acknowledged before the backup began is there, once, in
    # both queues; nothing at all is there twice.
    for user in ("alice", "bob"):
        ids = [msg_id for msg_id, _ in await queue_ids(again.url, user)]
        counts = Counter(ids)
        assert max(counts.values()) == 1
        for sent in before.values():
            assert all(counts[msg_id] == 1 for msg_id in sent)

    # The restored node links with its peer again and carries traffic.
    with trio.fail_after(TIMEOUT):
        await again.node.federation.wait_linked(shed.node.identity.key.public)
        await shed.node.federation.wait_linked(again.node.identity.key.public)
    carol = await shed.user("carol")
    async with connect(again.url, tokens["alice"]) as alice:
        await alice.send("carol@shed", "after the restore")
    async with connect(shed.url, carol) as client:
        await client.sync(0)
        with trio.fail_after(TIMEOUT):
            frame = await client.messages.receive()
    assert frame["body"]["text"] == "after the restore"


async def test_restore_refuses_a_non_empty_target_and_a_damaged_backup(
    start_node, tmp_path: Path
) -> None:
    node = await start_node(name="kitchen")
    await node.user("alice")
    data = node.node.config.data_dir
    dest = tmp_path / "b"
    dest.mkdir()  # an empty directory is a fine destination
    assert (await run_cli(["backup", str(dest), "--data", str(data)], tmp_path)).returncode == 0
    refused = await run_cli(["backup", str(dest), "--data", str(data)], tmp_path)
    assert refused.returncode != 0 and b"not empty" in refused.stderr

    target = tmp_path / "target"
    target.mkdir()
    (target / "something").write_text("keep me")
    result = await run_cli(["restore", str(dest), "--data", str(target)], tmp_path)
    assert result.returncode != 0 and b"not empty" in result.stderr
    assert b"Traceback" not in result.stderr
    assert [p.name for p in target.iterdir()] == ["something"]
    running = await run_cli(["restore", str(dest), "--data", str(data)], tmp_path)
    assert running.returncode != 0 and b"not empty" in running.stderr

    not_backup = await run_cli(["restore", str(target), "--data", str(tmp_path / "x")], tmp_path)
    assert not_backup.returncode != 0 and b"not a chinwag backup" in not_backup.stderr
    with (dest / "node.json").open("a") as fh:
        fh.write(" ")
    damaged = await run_cli(["restore", str(dest), "--data", str(tmp_path / "y")], tmp_path)
    assert damaged.returncode != 0 and b"damaged" in damaged.stderr
    assert not (tmp_path / "y").exists()


async def test_offline_backup_of_a_stopped_node(start_node, tmp_path: Path) -> None:
    data = tmp_path / "kitchen"
    node = await start_node(data_dir=data, name="kitchen")
    token = await node.user("alice")
    await node.user("bob")
    async with connect(node.url, token) as client:
        for n in range(20):
            await client.send("bob", f"hello {n}")
    await node.stop()
    (data / "peers").write_text("# seed peers\n")  # a config file comes along

    dest = tmp_path / "offline"
    result = await run_cli(["backup", str(dest), "--data", str(data)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "from the stopped node" in result.stdout.decode()
    assert json.loads((dest / "backup.json").read_text())["online"] is False
    restored = tmp_path / "restored"
    assert (
        await run_cli(["restore", str(dest), "--data", str(restored)], tmp_path)
    ).returncode == 0
    assert (restored / "peers").read_text() == "# seed peers\n"
    again = await start_node(data_dir=restored)
    texts = [text for _, text in await queue_ids(again.url, "bob")]
    assert texts == [f"hello {n}" for n in range(20)]


async def test_export_equals_tail_json_for_the_user_and_the_admin(
    start_node, tmp_path: Path
) -> None:
    node = await start_node(name="kitchen")
    data = str(node.node.config.data_dir)
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await a.send("bob", "one")
        await b.send("alice", "two ünïcode")
        await a.group("create", name="club")
        await a.group("add", group="#club@kitchen", members=["bob@kitchen"])
        await a.send("#club@kitchen", "to the club")
        await a.send("bob", "three")
    home = tmp_path
    user = ["--server", node.url, "--user", "bob"]
    tail = lines(await run_cli(["tail", *user, "--json"], home, password=PASSWORD))
    assert [i["text"] for i in tail if i["kind"] != "event"][-1] == "three"
    assert len(tail) >= 4

    as_user = lines(await run_cli(["export", *user], home, password=PASSWORD))
    as_admin = lines(await run_cli(["export", "--user", "bob", "--data", data], home))
    assert as_user == tail
    assert as_admin == tail
    since = lines(await run_cli(["export", "--user", "bob", "--data", data, "--since", "2"], home))
    assert since == [i for i in tail if i["seq"] > 2]
    tail_since = lines(await run_cli(["tail", *user, "--json", "--since", "2"], home))
    assert since == tail_since
    # By time: from the first message stamped at or after that time.
    cut = tail[2]["ts"] or tail[3]["ts"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut / 1000)) + f".{cut % 1000:03d}"
    by_time = lines(
        await run_cli(["export", "--user", "bob", "--data", data, "--since", iso], home)
    )
    first = next(n for n, i in enumerate(tail) if i["ts"] is not None and i["ts"] >= cut)
    assert by_time == tail[first:]

    missing = await run_cli(["export", "--user", "nobody", "--data", data], home)
    assert missing.returncode != 0 and b"no_such_user" in missing.stderr

    await node.stop()
    offline = lines(await run_cli(["export", "--user", "bob", "--data", data], home))
    assert offline == tail


async def test_backup_carries_the_blobs_and_the_restored_node_serves_them(
    start_node, tmp_path: Path
) -> None:
    from chinwag.node.blob_client import download_blob, upload_file

    node = await start_node(name="kitchen")
    data = node.node.config.data_dir
    alice = await node.user("alice")
    await node.user("bob")
    content = b"a file that must survive a restore\n" * 100
    (tmp_path / "notes.txt").write_bytes(content)
    with trio.fail_after(TIMEOUT):
        att = await upload_file(node.url, alice, tmp_path / "notes.txt")
        async with connect(node.url, alice) as client:
            await client.send("bob", "the notes", attachments=[att])
    blob = f"blobs/{att['sha256'][:2]}/{att['sha256'][2:4]}/{att['sha256']}"
    assert (data / blob).is_file()
    # An upload still being received: its temporary file is no part of the
    # node's state, and may vanish (renamed to its hash) while a backup copies.
    in_flight = data / "blobs" / "tmp" / "up-in-flight"
    in_flight.write_bytes(b"half an upload")

    dest = tmp_path / "backup"
    result = await run_cli(["backup", str(dest), "--data", str(data)], tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((dest / "backup.json").read_text())
    assert manifest["online"] is True
    assert blob in manifest["files"]
    assert manifest["files"][blob]["size"] == len(content)
    assert not [name for name in manifest["files"] if name.startswith("blobs/tmp/")]

    await node.stop()
    restored = tmp_path / "restored"
    done = await run_cli(["restore", str(dest), "--data", str(restored)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (restored / blob).read_bytes() == content
    again = await start_node(data_dir=restored)
    token = (await login(again.url, "bob", PASSWORD)).token
    with trio.fail_after(TIMEOUT):
        size = await download_blob(again.url, token, att["sha256"], tmp_path / "got")
    assert size == len(content) and (tmp_path / "got").read_bytes() == content


async def test_export_equals_tail_json_with_files_edits_deletes_and_reactions(
    start_node, tmp_path: Path
) -> None:
    from chinwag.node.blob_client import upload_file

    node = await start_node(name="kitchen")
    data = str(node.node.config.data_dir)
    alice, bob = await node.user("alice"), await node.user("bob")
    (tmp_path / "photo.txt").write_bytes(b"not really a photo")
    with trio.fail_after(TIMEOUT):
        att = await upload_file(node.url, alice, tmp_path / "photo.txt")
        async with connect(node.url, alice) as a, connect(node.url, bob) as b:
            sent = await a.send("bob", "with a file", attachments=[att])
            edited = await a.send("bob", "first draft")
            await a.edit(edited.id, "second draft")
            gone = await a.send("bob", "oops")
            await a.delete(gone.id)
            await b.react(sent.id, "👍")
            await b.send("alice", "reply", reply_to=edited.id)
    home = tmp_path
    user = ["--server", node.url, "--user", "bob"]
    tail = lines(await run_cli(["tail", *user, "--json"], home, password=PASSWORD))
    by_id = {item["id"]: item for item in tail if item["kind"] == "text"}
    assert by_id[sent.id]["attachments"][0]["sha256"] == att["sha256"]
    assert by_id[sent.id]["reactions"]
    assert by_id[edited.id]["edited"] is True and by_id[edited.id]["text"] == "second draft"
    assert by_id[gone.id]["deleted"] is True and by_id[gone.id]["text"] is None
    assert {"edit", "delete", "react"} <= {item["kind"] for item in tail}
    assert any(item.get("reply_to") for item in tail)
    assert "oops" not in json.dumps(tail)

    as_user = lines(await run_cli(["export", *user], home, password=PASSWORD))
    as_admin = lines(await run_cli(["export", "--user", "bob", "--data", data], home))
    assert as_user == tail
    assert as_admin == tail
    await node.stop()
    assert lines(await run_cli(["export", "--user", "bob", "--data", data], home)) == tail
