"""1:1 chat on one node: live delivery, multi-device sync, restart."""

from __future__ import annotations

import json
from typing import Any

import trio

from chinwag.node.client import ChatClient, connect

TIMEOUT = 10


async def drain(client: ChatClient, count: int) -> list[dict[str, Any]]:
    got = []
    with trio.fail_after(TIMEOUT):
        while len(got) < count:
            got.append(await client.messages.receive())
    return got


def texts(frames: list[dict[str, Any]]) -> list[str]:
    return [f["body"]["text"] for f in frames]


async def test_live_delivery_to_every_device_of_both_users(start_node) -> None:
    node = await start_node()
    tokens = {
        ("alice", 1): await node.user("alice", "laptop"),
        ("alice", 2): await node.user("alice", "phone"),
        ("bob", 1): await node.user("bob", "laptop"),
        ("bob", 2): await node.user("bob", "phone"),
    }
    async with (
        connect(node.url, tokens["alice", 1]) as a1,
        connect(node.url, tokens["alice", 2]) as a2,
        connect(node.url, tokens["bob", 1]) as b1,
        connect(node.url, tokens["bob", 2]) as b2,
    ):
        for client in (a1, a2, b1, b2):
            assert await client.sync(0) == 0
        ack1 = await a1.send("bob", "hi bob")
        ack2 = await b2.send(f"alice@{node.running.identity.name}", "hi alice")
        assert ack1.seq == 1 and ack2.seq == 2  # positions in each sender's queue
        assert ack2.id > ack1.id
        for client in (a1, a2, b1, b2):
            frames = await drain(client, 2)
            assert texts(frames) == ["hi bob", "hi alice"]
            assert [f["seq"] for f in frames] == [1, 2]
            assert frames[0]["from"]["u"] == "alice" and frames[0]["to"]["u"] == "bob"
            assert frames[0]["from"]["n"] == node.running.identity.id
            assert frames[0]["id"] == ack1.id
            assert frames[1]["from"]["u"] == "bob" and frames[1]["to"]["u"] == "alice"


async def test_offline_device_gets_exactly_what_it_missed(start_node) -> None:
    node = await start_node()
    alice = await node.user("alice")
    phone = await node.user("bob", "phone")
    laptop = await node.user("bob", "laptop")
    async with connect(node.url, phone) as b_phone:
        await b_phone.sync(0)
        async with connect(node.url, alice) as a:
            for i in range(5):
                await a.send("bob", f"m{i}")
        seen = await drain(b_phone, 5)
        cursor = seen[2]["seq"]  # the phone "saw" three, then went away
    async with connect(node.url, alice) as a:
        for i in range(5, 8):
            await a.send("bob", f"m{i}")
    async with connect(node.url, phone) as b_phone, connect(node.url, laptop) as b_laptop:
        await b_phone.sync(cursor)
        missed = await drain(b_phone, 5)
        assert texts(missed) == ["m3", "m4", "m5", "m6", "m7"]
        await b_laptop.sync(0)
        assert texts(await drain(b_laptop, 8)) == [f"m{i}" for i in range(8)]
        # Nothing more is pending for either device.
        with trio.move_on_after(0.3):
            extra = await b_phone.messages.receive()
            raise AssertionError(f"unexpected extra message {extra}")


async def test_sync_and_live_handover_has_no_gap_or_duplicate(start_node) -> None:
    node = await start_node(send_rate=100_000, send_burst=100_000)
    alice = await node.user("alice")
    bob = await node.user("bob")
    total = 400
    async with connect(node.url, alice) as a:
        for start in range(0, 200, 50):
            await a.send_many([("bob", f"m{i}", f"c{i}") for i in range(start, start + 50)])

        async def keep_sending() -> None:
            for start in range(200, total, 20):
                await a.send_many([("bob", f"m{i}", f"c{i}") for i in range(start, start + 20)])

        async with trio.open_nursery() as nursery, connect(node.url, bob) as b:
            nursery.start_soon(keep_sending)
            await b.sync(0)  # starts while the sender is still going
            frames = await drain(b, total)
    assert [f["seq"] for f in frames] == list(range(1, total + 1))
    assert texts(frames) == [f"m{i}" for i in range(total)]


async def test_restart_loses_nothing(start_node, tmp_path) -> None:
    data = tmp_path / "restart"
    node = await start_node(data_dir=data)
    alice = await node.user("alice")
    bob = await node.user("bob")
    async with connect(node.url, alice) as a:
        acks = [await a.send("bob", f"before {i}") for i in range(10)]
    await node.stop()
    node = await start_node(data_dir=data)
    async with connect(node.url, bob) as b, connect(node.url, alice) as a:
        await b.sync(0)
        frames = await drain(b, 10)
        assert texts(frames) == [f"before {i}" for i in range(10)]
        assert [f["id"] for f in frames] == [ack.id for ack in acks]
        after = await a.send("bob", "after restart")
        assert after.id > acks[-1].id  # ids stay monotonic across restarts
        assert (await drain(b, 1))[0]["body"]["text"] == "after restart"


async def test_resend_with_same_cid_is_not_duplicated(start_node) -> None:
    node = await start_node()
    alice = await node.user("alice")
    bob = await node.user("bob")
    async with connect(node.url, alice) as a:
        first = await a.send("bob", "once", cid="fixed-cid-1")
        again = await a.send("bob", "once", cid="fixed-cid-1")
        assert again == first
    async with connect(node.url, bob) as b:
        head = await b.sync(0)
        assert head == 1
        assert texts(await drain(b, 1)) == ["once"]


async def test_json_subprotocol_carries_ids_as_strings(start_node) -> None:
    from chinwag.node.client import open_ws
    from chinwag.protocol.codec import decode_json

    node = await start_node()
    alice = await node.user("alice")
    await node.user("bob")
    url = node.url.replace("http", "ws") + "/ws"
    async with open_ws(url, subprotocols=["chinwag.json.v1"]) as ws:
        await ws.send_message(json.dumps({"t": "auth", "rid": 1, "token": alice}))
        assert decode_json(await ws.get_message())["t"] == "ok"
        await ws.send_message('{"t":"send","rid":2,"to":"bob","text":"json hi","cid":"j1"}')
        reply = decode_json(await ws.get_message())
        assert reply["t"] == "ok" and isinstance(reply["id"], str) and reply["id"].isdigit()
        await ws.send_message('{"t":"sync","rid":3,"after":0}')
        frames = []
        with trio.fail_after(TIMEOUT):
            while not any(isinstance(f, dict) and f.get("t") == "msg" for f in frames):
                item = decode_json(await ws.get_message())
                frames.extend(item if isinstance(item, list) else [item])
        msg = next(f for f in frames if f["t"] == "msg")
        assert msg["id"] == reply["id"] and msg["body"]["text"] == "json hi"
