"""Edit, delete, react and reply on one node (issue 17), over real sockets."""

from __future__ import annotations

from typing import Any

import lmdb
import pytest
import trio

from chinwag.node.actions_store import DB_NAMES as ACTION_DBS
from chinwag.node.app import NodeSeams
from chinwag.node.client import ChatClient, ClientError, connect

from ..conftest import ShiftedClock
from .test_migrations import _U32, set_meta

TIMEOUT = 20


def conv_of(node: Any, user: str) -> str:
    return f"{user}@{node.running.identity.id}"


async def until_kind(client: ChatClient, kind: str) -> dict[str, Any]:
    """Skip live frames up to the next one of ``kind``."""
    with trio.fail_after(TIMEOUT):
        while True:
            frame = await client.messages.receive()
            if frame.get("kind") == kind:
                return frame


async def page_of(client: ChatClient, conv: str) -> dict[int, dict[str, Any]]:
    page = await client.history(conv)
    return {int(m["id"]): m for m in page["msgs"]}


async def test_edit_delete_react_reply_live_and_in_pages(start_node) -> None:
    node = await start_node()
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await a.sync(0)
        await b.sync(0)
        sent = await a.send("bob", "hello wrold")
        other = await a.send("bob", "keep me")
        await until_kind(b, "text")
        await until_kind(b, "text")

        await a.edit(sent.id, "hello world")
        live = await until_kind(b, "edit")
        assert live["body"] == {"target": sent.id, "text": "hello world"}
        msgs = await page_of(b, conv_of(node, "alice"))
        assert msgs[sent.id]["body"]["text"] == "hello world"
        assert msgs[sent.id]["edited"] is True
        assert set(msgs) == {sent.id, other.id}  # actions are not page entries
        hits = (await b.search("world"))["hits"]
        assert [int(h["msg"]["id"]) for h in hits] == [sent.id]
        assert (await b.search("wrold"))["hits"] == []

        await b.react(sent.id, "👍")
        await b.react(sent.id, "👍")  # idempotent: counted once
        await a.react(sent.id, "👍")
        await b.react(sent.id, "🎉")
        await b.react(sent.id, "🎉", remove=True)
        frame = await until_kind(a, "react")
        assert frame["body"] == {"target": sent.id, "emoji": "👍", "remove": False}
        msgs = await page_of(a, conv_of(node, "bob"))
        reactions = msgs[sent.id]["reactions"]
        assert list(reactions) == ["👍"]
        assert sorted(u["u"] for u in reactions["👍"]) == ["alice", "bob"]

        reply = await b.send("alice", "indeed", reply_to=sent.id)
        frame = await until_kind(a, "text")
        while int(frame["id"]) != reply.id:
            frame = await until_kind(a, "text")
        quoted = frame["body"]["reply_to"]
        assert quoted["id"] == sent.id and quoted["excerpt"] == "hello world"
        assert quoted["from"]["u"] == "alice"
        assert quoted["from"]["n"] == node.running.identity.id

        await a.delete(sent.id)
        frame = await until_kind(b, "delete")
        assert frame["body"] == {"target": sent.id}
        for client, peer in ((a, "bob"), (b, "alice")):
            msgs = await page_of(client, conv_of(node, peer))
            assert msgs[sent.id]["deleted"] is True
            assert "text" not in msgs[sent.id]["body"]
            assert "reactions" not in msgs[sent.id]
            assert msgs[other.id]["body"]["text"] == "keep me"
            assert (await client.search("world"))["hits"] == []
        # A fresh sync replays the queue: the original rewritten in place,
        # then the actions in the stream (the edit record without its text).
        frames = []
        async with connect(node.url, bob) as again:
            head = await again.sync(0)
            with trio.fail_after(TIMEOUT):
                while not frames or frames[-1]["seq"] < head:
                    frames.append(await again.messages.receive())
        by_id = {int(f["id"]): f for f in frames if "id" in f}
        assert by_id[sent.id]["deleted"] is True and "text" not in by_id[sent.id]["body"]
        edits = [f for f in frames if f.get("kind") == "edit"]
        assert edits and all("text" not in f["body"] for f in edits)
        assert all("wrold" not in repr(f) and "hello world" not in repr(f) for f in frames)


async def test_only_the_sender_edits_or_deletes(start_node) -> None:
    node = await start_node()
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        sent = await a.send("bob", "mine")
        for call in (b.edit(sent.id, "yours"), b.delete(sent.id)):
            with pytest.raises(ClientError) as caught:
                await call
            assert caught.value.code == "forbidden"
        with pytest.raises(ClientError) as caught:
            await a.edit(123456, "nothing")
        assert caught.value.code == "not_found"
        with pytest.raises(ClientError) as caught:
            await b.send("alice", "re", reply_to=99)
        assert caught.value.code == "not_found"
        for bad in ("thumbsup", "👍 ok", "x" * 20):
            with pytest.raises(ClientError) as caught:
                await b.react(sent.id, bad)
            assert caught.value.code in ("bad_frame", "bad_request")
        assert node.node.store.action_stats.view().refused == 2
        msgs = await page_of(b, conv_of(node, "alice"))
        assert msgs[sent.id]["body"]["text"] == "mine"
        await a.delete(sent.id)
        with pytest.raises(ClientError) as caught:
            await a.edit(sent.id, "back")
        assert caught.value.code == "not_found"


async def test_reactions_per_user_are_capped(start_node) -> None:
    node = await start_node()
    alice = await node.user("alice")
    emoji = [chr(0x1F600 + i) for i in range(21)]
    async with connect(node.url, alice) as a:
        sent = await a.send("alice", "note to self")
        for e in emoji[:20]:
            await a.react(sent.id, e)
        with pytest.raises(ClientError) as caught:
            await a.react(sent.id, emoji[20])
        assert caught.value.code == "too_large"
        await a.react(sent.id, emoji[0], remove=True)
        await a.react(sent.id, emoji[20])
        msgs = await page_of(a, conv_of(node, "alice"))
        assert len(msgs[sent.id]["reactions"]) == 20


async def test_delete_window(start_node) -> None:
    clock = ShiftedClock()
    node = await start_node(seams=NodeSeams(federation_now_ms=clock), delete_window=3600.0)
    alice = await node.user("alice")
    async with connect(node.url, alice) as a:
        old = await a.send("alice", "old")
        fresh = await a.send("alice", "fresh")
        await a.delete(fresh.id)
        clock.shift(3601)
        with pytest.raises(ClientError) as caught:
            await a.delete(old.id)
        assert caught.value.code == "forbidden"
        await a.edit(old.id, "edits have no window")


async def test_a_schema_3_store_gets_its_message_ids_indexed(start_node, tmp_path) -> None:
    data = tmp_path / "den"
    # Merged at once: a schema-4 store has no index_log rows (schema 6 added it).
    node = await start_node(data_dir=data, name="den", search_stage_max=1)
    alice = await node.user("alice")
    await node.user("bob")
    async with connect(node.url, alice) as a:
        old = await a.send("bob", "written before schema 5")
    await node.stop()
    env = lmdb.open(str(data / "db"), max_dbs=64, subdir=True)
    try:
        with env.begin(write=True) as txn:
            for name in ACTION_DBS:
                txn.drop(env.open_db(name.encode(), txn=txn, create=False), delete=True)
    finally:
        env.close()
    set_meta(data, schema=_U32.pack(4))

    node = await start_node(data_dir=data)
    async with connect(node.url, alice) as a:
        await a.edit(old.id, "edited after the upgrade")
        msgs = await page_of(a, conv_of(node, "bob"))
        assert msgs[old.id]["body"]["text"] == "edited after the upgrade"
