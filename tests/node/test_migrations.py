"""Store schema versions: upgrading an older data directory, refusing a newer one."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import lmdb
import pytest
import trio

from chinwag.cli.exitcodes import Exit
from chinwag.node.client import connect
from chinwag.node.history_index import DB_NAMES as HISTORY_DBS
from chinwag.node.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    plan,
)

from ..integration.procs import run_cli
from ..integration.test_backup import queue_ids

_U32 = struct.Struct(">I")


def set_meta(data_dir: Path, **values: bytes | None) -> None:
    """Rewrite ``meta`` keys of a stopped node's store (None deletes one)."""
    env = lmdb.open(str(data_dir / "db"), max_dbs=64, subdir=True)
    try:
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            for key, value in values.items():
                if value is None:
                    txn.delete(key.encode(), db=meta)
                else:
                    txn.put(key.encode(), value, db=meta)
    finally:
        env.close()


def get_meta(data_dir: Path, key: str) -> bytes | None:
    env = lmdb.open(str(data_dir / "db"), max_dbs=64, subdir=True, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            value = txn.get(key.encode(), db=meta)
            return None if value is None else bytes(value)
    finally:
        env.close()


def drop_history_index(data_dir: Path) -> None:
    """Remove the schema-3 databases (node/history_index.py) of a stopped node."""
    env = lmdb.open(str(data_dir / "db"), max_dbs=64, subdir=True)
    try:
        with env.begin(write=True) as txn:
            for name in HISTORY_DBS:
                txn.drop(env.open_db(name.encode(), txn=txn, create=False), delete=True)
    finally:
        env.close()


def make_schema_2(data_dir: Path) -> None:
    """Turn a stopped node's store into the schema-2 layout: no history index."""
    drop_history_index(data_dir)
    set_meta(data_dir, schema=_U32.pack(2))


def make_schema_1(data_dir: Path, *, stamped: bool = True) -> None:
    """Turn a stopped node's store into the schema-1 layout.

    Schema 2 differs from 1 only by ``meta: writer`` (node/migrations.py),
    schema 3 from 2 by the history index, so a store written by today's code
    minus those, stamped 1 (or, with ``stamped=False``, with no stamp at all:
    how a store before the key looked), is what the version before left behind.
    """
    drop_history_index(data_dir)
    set_meta(data_dir, writer=None, schema=_U32.pack(1) if stamped else None)


async def chat_history(start_node, data: Path) -> list[str]:
    """A stopped node in ``data`` whose bob got five messages from alice
    (index merged at once: stores before schema 6 have no ``index_log`` rows,
    and its row layout is schema 8's)."""
    node = await start_node(data_dir=data, name="kitchen", search_stage_max=1)
    alice = await node.user("alice")
    await node.user("bob")
    async with connect(node.url, alice) as client:
        for n in range(5):
            await client.send("bob", f"before {n}")
    await node.stop()
    return [f"before {n}" for n in range(5)]


@pytest.mark.parametrize("stamped", [True, False], ids=["schema-1", "no-schema-key"])
async def test_a_store_of_the_previous_format_is_upgraded_after_a_backup(
    start_node, tmp_path: Path, stamped: bool
) -> None:
    data = tmp_path / "kitchen"
    texts = await chat_history(start_node, data)
    make_schema_1(data, stamped=stamped)
    assert get_meta(data, "writer") is None

    node = await start_node(data_dir=data)
    # It serves what it held: the users log in, the history syncs, and new
    # messages commit on top of it.
    assert [text for _, text in await queue_ids(node.url, "bob")] == texts
    async with connect(node.url, await node.user("alice")) as client:
        ack = await client.send("bob", "after")
    assert ack.seq == len(texts) + 1
    await node.stop()
    assert get_meta(data, "schema") == _U32.pack(SCHEMA_VERSION)
    assert get_meta(data, "writer")  # the schema-2 key, set at every open

    # The backup taken before migrating holds the old layout, restorable.
    (backup,) = (data / "backups").iterdir()
    assert backup.name.startswith("pre-migration-1-")
    manifest = json.loads((backup / "backup.json").read_text())
    assert manifest["schema"] == 1 and manifest["online"] is False
    restored = tmp_path / "restored"
    result = await run_cli(["restore", str(backup), "--data", str(restored)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert get_meta(restored, "writer") is None
    again = await start_node(data_dir=restored)
    assert [text for _, text in await queue_ids(again.url, "bob")] == texts
    # A store already at the current version is not backed up again.
    await again.stop()
    assert len(list((restored / "backups").iterdir())) == 1
    again = await start_node(data_dir=restored)
    await again.stop()
    assert len(list((restored / "backups").iterdir())) == 1


async def test_a_store_written_by_a_newer_version_is_refused_untouched(
    start_node, tmp_path: Path
) -> None:
    data = tmp_path / "kitchen"
    await chat_history(start_node, data)
    newer = SCHEMA_VERSION + 1
    set_meta(data, schema=_U32.pack(newer), writer=b"9.9.9")
    before = (data / "db" / "data.mdb").read_bytes()

    with trio.fail_after(60):
        run = await run_cli(["run", "--data", str(data), "--listen", "127.0.0.1:0"], tmp_path)
    assert run.returncode == Exit.STORAGE
    message = run.stderr.decode()
    assert "Traceback" not in message
    assert f"written by chinwag 9.9.9 (store schema {newer})" in message
    assert f"reads store schema {SCHEMA_VERSION} and older" in message
    # Offline admin commands refuse the same way.
    listed = await run_cli(["user", "list", "--data", str(data)], tmp_path)
    assert listed.returncode == Exit.STORAGE and b"written by chinwag 9.9.9" in listed.stderr
    assert b"Traceback" not in listed.stderr
    # Nothing was written: the newer chinwag can still open it as it left it.
    assert (data / "db" / "data.mdb").read_bytes() == before
    assert not (data / "backups").exists()

    # A backup of it says so, and an older chinwag will not restore it.
    dest = tmp_path / "b"
    made = await run_cli(["backup", str(dest), "--data", str(data)], tmp_path)
    assert made.returncode == 0, made.stderr
    refused = await run_cli(["restore", str(dest), "--data", str(tmp_path / "r")], tmp_path)
    assert refused.returncode != 0 and f"store schema {newer}".encode() in refused.stderr


async def test_a_schema_2_store_gets_its_history_index_built(start_node, tmp_path: Path) -> None:
    data = tmp_path / "kitchen"
    node = await start_node(data_dir=data, name="kitchen")
    node_id = node.running.identity.id
    alice, carol = await node.user("alice"), await node.user("carol")
    await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, carol) as c:
        for n in range(5):
            await a.send("bob", f"before {n} Crème")
        await c.send("bob", "from carol 안녕하세요")
        await a.send(f"alice@{node_id}", "a note to self")
    await node.stop()
    make_schema_2(data)

    node = await start_node(data_dir=data)
    async with connect(node.url, await node.user("bob")) as b:
        convs = (await b.convs())["convs"]
        assert [(c["conv"], c["unread"], c["read_seq"]) for c in convs] == [
            (f"carol@{node_id}", 1, 0),
            (f"alice@{node_id}", 5, 0),
        ]
        page = await b.history(f"alice@{node_id}", limit=3)
        assert [m["body"]["text"] for m in page["msgs"]] == [f"before {n} Crème" for n in (4, 3, 2)]
        rest = await b.history(f"alice@{node_id}", before=page["next"])
        assert [m["seq"] for m in rest["msgs"]] == [2, 1] and "next" not in rest
        assert len((await b.search("creme"))["hits"]) == 5
        assert len((await b.search("안녕"))["hits"]) == 1
        # New messages are indexed on top of the migrated ones.
        async with connect(node.url, alice) as a:
            await a.send("bob", "after creme")
        assert len((await b.search("creme"))["hits"]) == 6
        assert (await b.convs())["convs"][0]["unread"] == 6
    async with connect(node.url, alice) as a:
        (note,) = [c for c in (await a.convs())["convs"] if c["conv"] == f"alice@{node_id}"]
        assert note["unread"] == 0  # her own note
    await node.stop()
    assert get_meta(data, "schema") == _U32.pack(SCHEMA_VERSION)
    (backup,) = (data / "backups").iterdir()
    assert backup.name.startswith("pre-migration-2-")


def make_schema_3(data_dir: Path) -> None:
    """Turn a stopped node's store into the schema-3 layout: the history index
    with its ``conv_recent`` table (conversations newest first)."""
    env = lmdb.open(str(data_dir / "db"), max_dbs=64, subdir=True)
    try:
        with env.begin(write=True) as txn:
            recent = env.open_db(b"conv_recent", txn=txn)
            txn.put(b"\0\0\0\1" + b"\xff" * 8, b"x" * 8, db=recent)
            txn.put(b"meta-schema-3", b"", db=recent)
    finally:
        env.close()
    set_meta(data_dir, schema=_U32.pack(3))


def has_table(data_dir: Path, name: str) -> bool:
    env = lmdb.open(str(data_dir / "db"), max_dbs=64, subdir=True)
    try:
        with env.begin(write=True) as txn:
            try:
                env.open_db(name.encode(), txn=txn, create=False)
            except lmdb.NotFoundError:
                return False
            return True
    finally:
        env.close()


async def test_a_schema_3_store_loses_conv_recent_and_lists_conversations_in_order(
    start_node, tmp_path: Path
) -> None:
    data = tmp_path / "kitchen"
    # Schema 3 wrote every search posting with its entry: so does a merge at
    # every commit.
    node = await start_node(data_dir=data, name="kitchen", search_stage_max=1)
    node_id = node.running.identity.id
    alice, carol = await node.user("alice"), await node.user("carol")
    await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, carol) as c:
        await a.send("bob", "one word")
        await c.send("bob", "two words")
        await a.send("bob", "three words")
    await node.stop()
    make_schema_3(data)
    assert has_table(data, "conv_recent")

    node = await start_node(data_dir=data)
    async with connect(node.url, await node.user("bob")) as b:
        convs = (await b.convs())["convs"]
        assert [(c["conv"], c["unread"]) for c in convs] == [
            (f"alice@{node_id}", 2),
            (f"carol@{node_id}", 1),
        ]
        page = await b.convs(limit=1)
        assert page["convs"][0]["conv"] == f"alice@{node_id}"
        rest = await b.convs(limit=1, before=page["next"])
        assert [c["conv"] for c in rest["convs"]] == [f"carol@{node_id}"]
        assert "next" not in rest
        async with connect(node.url, await node.user("carol")) as c:
            await c.send("bob", "four")
        assert [c["conv"] for c in (await b.convs())["convs"]] == [
            f"carol@{node_id}",
            f"alice@{node_id}",
        ]
        # Postings of schema 3 and entries since are both found, newest first.
        hits = (await b.search("words"))["hits"]
        assert [h["msg"]["body"]["text"] for h in hits] == ["three words", "two words"]
        async with connect(node.url, await node.user("carol")) as c:
            await c.send("bob", "more words")
        hits = (await b.search("words"))["hits"]
        assert [h["msg"]["body"]["text"] for h in hits][:2] == ["more words", "three words"]
    await node.stop()
    assert get_meta(data, "schema") == _U32.pack(SCHEMA_VERSION)
    assert not has_table(data, "conv_recent")
    (backup,) = (data / "backups").iterdir()
    assert backup.name.startswith("pre-migration-3-")


def test_migration_plan_runs_every_step_in_order() -> None:
    def step(n: int) -> Migration:
        return Migration(n, f"step {n}", lambda txn, dbs, node_id: None)

    chain = (step(1), step(2), step(3))
    assert [m.from_version for m in plan(1, 4, chain)] == [1, 2, 3]
    assert [m.from_version for m in plan(3, 4, chain)] == [3]
    assert plan(4, 4, chain) == []
    with pytest.raises(RuntimeError, match="no migration from store schema 2"):
        plan(1, 4, (step(1), step(3)))
    # The real registry reaches the current version from schema 1.
    assert plan(1, SCHEMA_VERSION, MIGRATIONS)[-1].from_version == SCHEMA_VERSION - 1


async def test_no_migration_without_its_backup(start_node, tmp_path: Path) -> None:
    data = tmp_path / "kitchen"
    await chat_history(start_node, data)
    make_schema_1(data)
    (data / "backups").write_text("in the way\n")  # the backup cannot be made
    run = await run_cli(["run", "--data", str(data), "--listen", "127.0.0.1:0"], tmp_path)
    assert run.returncode != 0
    message = run.stderr.decode()
    assert "Traceback" not in message and "cannot listen" not in message
    assert "backup taken first failed" in message and "nothing was changed" in message
    assert get_meta(data, "schema") == _U32.pack(1)
    assert get_meta(data, "writer") is None


async def test_a_schema_3_store_gets_the_blob_tables(start_node, tmp_path: Path) -> None:
    from chinwag.node.blob_client import download_blob, upload_file
    from chinwag.node.blob_index import DB_NAMES as BLOB_DBS

    data = tmp_path / "kitchen"
    texts = await chat_history(start_node, data)
    env = lmdb.open(str(data / "db"), max_dbs=64)
    try:
        with env.begin(write=True) as txn:
            for name in BLOB_DBS:
                txn.drop(env.open_db(name.encode(), txn=txn, create=False), delete=True)
    finally:
        env.close()
    set_meta(data, schema=_U32.pack(3))

    node = await start_node(data_dir=data)
    assert [text for _, text in await queue_ids(node.url, "bob")] == texts
    (tmp_path / "f").write_bytes(b"after the upgrade")
    alice, bob = await node.user("alice"), await node.user("bob")
    with trio.fail_after(20):
        att = await upload_file(node.url, alice, tmp_path / "f")
        async with connect(node.url, alice) as client:
            await client.send("bob", "a file", attachments=[att])
        assert await download_blob(node.url, bob, att["sha256"], tmp_path / "g") == 17
    await node.stop()
    assert get_meta(data, "schema") == _U32.pack(SCHEMA_VERSION)
    assert any(p.name.startswith("pre-migration-3-") for p in (data / "backups").iterdir())


def make_older_postings(data_dir: Path, schema: int) -> int:
    """Turn a stopped node's store into the search postings of ``schema``:
    6 = ``terms`` keyed uid | term hash | seq, 7 = ``postings`` keyed
    uid | epoch | term hash | seq (schema 8 packs them in ``epoch_terms``
    blocks: uid | epoch -> term hash | seq & 0xFF per posting), and its
    ``index_log`` rows (one entry each: uid | seq | ch | cum | term hashes;
    schema 8 puts a write's entries in one row, each with a count of
    hashes); return how many postings."""
    env = lmdb.open(str(data_dir / "db"), max_dbs=64, subdir=True)
    count = 0
    try:
        with env.begin(write=True) as txn:
            blocks = env.open_db(b"epoch_terms", txn=txn, create=False)
            older = env.open_db(b"terms" if schema == 6 else b"postings", txn=txn)
            rows = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=blocks)]
            for key, value in rows:
                user, epoch = key[:4], int.from_bytes(key[4:], "big")
                for i in range(0, len(value), 5):
                    th, seq = value[i : i + 4], (epoch << 8 | value[i + 4]).to_bytes(8, "big")
                    older_key = user + th + seq if schema == 6 else key + th + seq
                    txn.put(older_key, b"", db=older)
                    count += 1
            txn.drop(blocks, delete=True)
            log = env.open_db(b"index_log", txn=txn, create=False)
            rows = [bytes(v) for v in txn.cursor(db=log).iternext(keys=False)]
            txn.drop(log, delete=False)
            n = 0
            for row in rows:
                while row:
                    stop = 30 + 4 * int.from_bytes(row[28:30], "big")
                    n += 1
                    txn.put(n.to_bytes(8, "big"), row[:28] + row[30:stop], db=log)
                    row = row[stop:]
    finally:
        env.close()
    set_meta(data_dir, schema=_U32.pack(schema))
    return count


def postings_count(data_dir: Path) -> int:
    """Postings in the ``epoch_terms`` blocks (5 bytes each)."""
    env = lmdb.open(str(data_dir / "db"), max_dbs=64, subdir=True, readonly=True)
    try:
        with env.begin() as txn:
            blocks = env.open_db(b"epoch_terms", txn=txn, create=False)
            return sum(len(v) // 5 for v in txn.cursor(db=blocks).iternext(keys=False))
    finally:
        env.close()


@pytest.mark.parametrize("older", [7, 6])
async def test_a_store_of_the_previous_schema_is_upgraded(
    start_node, tmp_path: Path, older: int
) -> None:
    """The last step (7 -> 8) from exactly its source layout, and 6 -> 8,
    whose first step now writes schema 8's blocks itself. A tripwire: a new
    schema version needs this test rewritten for its predecessor."""
    assert SCHEMA_VERSION == 8, "a new schema: add an upgrade test from the one before it"
    data = tmp_path / "kitchen"
    node = await start_node(data_dir=data, name="kitchen", search_stage_max=1)
    node_id = node.running.identity.id
    alice = await node.user("alice")
    await node.user("bob")
    async with connect(node.url, alice) as a:
        first = await a.send("bob", "older words")
        # Past the first epoch (256 entries of each queue): the layouts differ past a prefix.
        for n in range(300):
            await a.send("bob", f"filler {n}")
    await node.stop()
    # Two messages left in index_log (merged only past 10,000 entries).
    node = await start_node(data_dir=data, search_stage_max=10_000)
    async with connect(node.url, alice) as a:
        await a.send("bob", "newer words")
        await a.send("bob", "newest")
    await node.stop()
    copied = make_older_postings(data, older)
    assert copied > 600  # every message merged (one row per merge) into both users' postings

    node = await start_node(data_dir=data)
    async with connect(node.url, await node.user("bob")) as b:
        [conv] = (await b.convs())["convs"]
        assert (conv["conv"], conv["unread"]) == (f"alice@{node_id}", 303)
        hits = (await b.search("words"))["hits"]
        assert [h["msg"]["body"]["text"] for h in hits] == ["newer words", "older words"]
        [hit] = (await b.search("newest"))["hits"]  # one term: its whole entry was rewritten
        assert hit["msg"]["body"]["text"] == "newest"
        assert [h["msg"]["body"]["text"] for h in (await b.search("filler 7"))["hits"]] == [
            "filler 7"
        ]
    async with connect(node.url, alice) as a:
        await a.edit(first.id, "edited after the upgrade")
    async with connect(node.url, await node.user("bob")) as b:
        assert (await b.search("older"))["hits"] == []
        [hit] = (await b.search("upgrade"))["hits"]
        assert hit["msg"]["id"] == first.id
    await node.stop()
    assert get_meta(data, "schema") == _U32.pack(SCHEMA_VERSION)
    assert not has_table(data, "terms") and not has_table(data, "postings")
    assert postings_count(data) >= copied
    (backup,) = (data / "backups").iterdir()
    assert backup.name.startswith(f"pre-migration-{older}-")
