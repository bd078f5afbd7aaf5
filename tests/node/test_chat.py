"""1:1 chat on one node: live delivery, multi-device sync, restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from trio_websocket import WebSocketConnection, wrap_client_stream

from chinwag.node.app import wall_clock_ms
from chinwag.node.client import ChatClient, connect, open_ws
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.codec import decode_cbor, encode_cbor

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


# ---------------------------------------------------------------- re-sync


class RawSession:
    """A device connection that sees every frame, in order (no cursor filter)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.rid = 0
        self._pending: list[dict[str, Any]] = []

    async def request(self, frame: dict[str, Any]) -> int:
        self.rid += 1
        await self.ws.send_message(encode_cbor({**frame, "rid": self.rid}))
        return self.rid

    async def next_frame(self) -> dict[str, Any]:
        with trio.fail_after(TIMEOUT):
            while not self._pending:
                item = decode_cbor(await self.ws.get_message())
                self._pending.extend(item if isinstance(item, list) else [item])
        return self._pending.pop(0)

    async def until_reply(self, rid: int) -> tuple[list[int], dict[str, Any]]:
        """The ``seq`` of every msg before the reply to ``rid``, and that reply."""
        seqs = []
        while True:
            frame = await self.next_frame()
            if frame["t"] == "msg":
                seqs.append(frame["seq"])
            elif frame.get("rid") == rid:
                return seqs, frame

    async def msg_seqs(self, count: int) -> list[int]:
        seqs = []
        while len(seqs) < count:
            frame = await self.next_frame()
            assert frame["t"] in ("msg", "presence"), frame
            if frame["t"] == "msg":
                seqs.append(frame["seq"])
        return seqs


@asynccontextmanager
async def raw_session(node: Any, token: str) -> AsyncIterator[RawSession]:
    url = node.url.replace("http://", "ws://") + "/ws"
    async with open_ws(url, subprotocols=["chinwag.cbor.v1"]) as ws:
        session = RawSession(ws)
        rid = await session.request({"t": "auth", "token": token})
        _, reply = await session.until_reply(rid)
        assert reply["t"] == "ok"
        yield session


async def fill_queue(node: Any, count: int) -> None:
    """``count`` messages from alice to bob, written through the store."""
    bob = UserAddress("bob", node.running.identity.id)
    for i in range(count):  # one at a time: seq i + 1 is text m{i + 1}
        await node.node.store.send_direct("alice", "d", None, bob, f"m{i + 1}", wall_clock_ms())


async def test_a_second_sync_restarts_the_stream_from_its_after(start_node) -> None:
    node = await start_node()
    alice = await node.user("alice")
    bob = await node.user("bob")
    await fill_queue(node, 5)
    async with raw_session(node, bob) as b:
        before, reply = await b.until_reply(await b.request({"t": "sync", "after": 0}))
        assert before == [] and reply["head"] == 5
        assert await b.msg_seqs(5) == [1, 2, 3, 4, 5]
        # Again from 2: 3, 4, 5 are sent again, in order, then the live stream.
        before, reply = await b.until_reply(await b.request({"t": "sync", "after": 2}))
        assert before == [] and reply == {"t": "ok", "rid": b.rid, "head": 5}
        assert await b.msg_seqs(3) == [3, 4, 5]
        async with connect(node.url, alice) as a:
            await a.send("bob", "live")
        assert await b.msg_seqs(1) == [6]
        # From the head: nothing to resend; from 0: everything, once, in order.
        await b.until_reply(await b.request({"t": "sync", "after": 6}))
        await b.until_reply(await b.request({"t": "sync", "after": 0}))
        assert await b.msg_seqs(6) == [1, 2, 3, 4, 5, 6]
        _, reply = await b.until_reply(await b.request({"t": "heartbeat"}))
        assert reply["t"] == "ok"  # and no msg in between: nothing sent twice


async def test_a_sync_in_the_middle_of_a_backlog_restarts_it(start_node) -> None:
    node = await start_node(sync_page=4)  # many pages, so the stream is mid-way
    await node.user("alice")
    bob = await node.user("bob")
    await fill_queue(node, 40)
    async with raw_session(node, bob) as b:
        await b.until_reply(await b.request({"t": "sync", "after": 0}))
        first = await b.msg_seqs(1)
        assert first == [1]
        # Whatever the old stream sent before the new ok is in order and from
        # where it was; everything after the ok is the stream from 30.
        early, _ = await b.until_reply(await b.request({"t": "sync", "after": 30}))
        assert early == list(range(2, 2 + len(early)))
        assert await b.msg_seqs(10) == list(range(31, 41))
        # Two syncs in one message: the last one wins.
        await b.ws.send_message(
            encode_cbor(
                [{"t": "sync", "rid": 100, "after": 0}, {"t": "sync", "rid": 101, "after": 35}]
            )
        )
        await b.until_reply(101)
        assert await b.msg_seqs(5) == [36, 37, 38, 39, 40]


# ---------------------------------------------------------------- replies during a catch-up


async def test_requests_during_a_long_catch_up_are_answered_not_dropped(
    start_node, nursery: trio.Nursery
) -> None:
    """The stream fills at most part of the outgoing queue, so a device that
    catches up on a long backlog (reading slowly) and sends requests meanwhile
    gets its replies instead of being disconnected as a slow consumer."""
    node = await start_node(send_queue_frames=16)
    await node.user("alice")
    bob_token = await node.user("bob")
    bob = UserAddress("bob", node.running.identity.id)
    big = "x" * 16_000
    count = 300  # about 4.8 MB: far more than a small receive window holds
    for _ in range(count):
        await node.node.store.send_direct("alice", "d", None, bob, big, wall_clock_ms())

    # A client socket with a tiny receive buffer, so the node's writer blocks
    # and its outgoing queue fills up while we do not read.
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", node.running.port))
    ws = await wrap_client_stream(
        nursery, trio.SocketStream(sock), "127.0.0.1", "/ws", subprotocols=["chinwag.cbor.v1"]
    )
    raw = RawSession(ws)
    try:
        _, reply = await raw.until_reply(await raw.request({"t": "auth", "token": bob_token}))
        assert reply["t"] == "ok"
        await raw.request({"t": "sync", "after": 0})
        session = next(iter(node.node.hub._sessions["bob"]))  # noqa: SLF001
        with trio.fail_after(TIMEOUT):  # until the writer and the streamer wait
            await trio.testing.wait_all_tasks_blocked(cushion=0.1)
        # The stream has filled its share of the outgoing queue (12 of 16).
        assert session._out_send.statistics().current_buffer_used == 12  # noqa: SLF001
        rids = [await raw.request({"t": "heartbeat"}) for _ in range(3)]
        seqs, answered = [], []
        with trio.fail_after(30):
            while len(seqs) < count or len(answered) < len(rids):
                frame = await raw.next_frame()
                assert frame["t"] != "bye", frame
                if frame["t"] == "msg":
                    seqs.append(frame["seq"])
                elif frame["t"] == "ok" and frame["rid"] in rids:
                    answered.append(frame["rid"])
        assert seqs == list(range(1, count + 1))
        assert sorted(answered) == sorted(rids)
    finally:
        await trio.aclose_forcefully(ws._stream)  # noqa: SLF001


async def test_acks_cost_no_commit_of_their_own_and_survive_a_restart(start_node, tmp_path) -> None:
    """Each received message acked on its own, as the web client does: the
    cursors ride on the sends' commits, and a graceful stop writes the rest."""
    data = tmp_path / "acks"
    node = await start_node(data_dir=data, ack_flush_delay=3600)
    alice = await node.user("alice")
    bob = await node.user("bob", "phone")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await b.sync(0)
        before = node.node.store.statistics()
        for i in range(20):
            await a.send("bob", f"m{i}")
            (frame,) = await drain(b, 1)
            await b.ack(frame["seq"])
        await b.call({"t": "heartbeat"})  # the node has read every ack
        after = node.node.store.statistics()
        assert after.acks - before.acks == 20
        assert after.ack_commits == 0
        # Write operations: the 20 sends and what was already pending (the
        # log-ins' presence), none for the acks.
        assert after.ops - before.ops <= 20 + before.pending
        assert after.commits - before.commits <= after.ops - before.ops
        assert node.node.status()["queues"] == [
            {"user": "alice", "head": 20, "max_unacked": 20},
            {"user": "bob", "head": 20, "max_unacked": 0},
        ]
    await node.stop()
    node = await start_node(data_dir=data)
    assert [d.acked for d in node.node.store.list_devices("bob")] == [20]


async def test_a_senders_ok_and_own_copy_leave_in_one_websocket_message(start_node) -> None:
    """The commit callback queues both before the writer runs: one message,
    not one per frame (real clients send one frame per message and get
    three frames back per 1:1 message otherwise)."""
    node = await start_node()
    await node.user("bob")
    async with raw_session(node, await node.user("alice")) as alice:
        rid = await alice.request({"t": "sync", "after": 0})
        await alice.until_reply(rid)
        for i in range(5):
            rid = await alice.request({"t": "send", "to": "bob", "text": f"m{i}"})
            with trio.fail_after(TIMEOUT):
                item = decode_cbor(await alice.ws.get_message())
            frames = [f for f in (item if isinstance(item, list) else [item])]
            assert [(f["t"], f.get("rid")) for f in frames] == [("ok", rid), ("msg", None)]
            assert frames[1]["seq"] == frames[0]["seq"] == i + 1


async def test_sends_past_the_inflight_bound_wait_and_are_answered_in_order(start_node) -> None:
    """max_inflight_sends bounds the sends awaiting their commit: the reader
    waits for room (the commit callback makes it) and every send is answered,
    in order, with a mix of accepted and refused ones."""
    node = await start_node(max_inflight_sends=2)
    await node.user("bob")
    async with connect(node.url, await node.user("alice")) as a:
        items: list[tuple[str, str, str | None]] = [
            ("bob" if i % 5 else "nobody", f"m{i}", f"c{i}") for i in range(30)
        ]
        with trio.fail_after(TIMEOUT):
            replies = await a.send_many(items)
    refused = [i for i, r in enumerate(replies) if not hasattr(r, "seq")]
    assert refused == list(range(0, 30, 5))  # "nobody" is no user here
    seqs = [r.seq for r in replies if hasattr(r, "seq")]
    assert seqs == list(range(1, 25))
