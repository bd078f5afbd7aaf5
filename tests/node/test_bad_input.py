"""Bad input: each gets its typed error, and the session or node stays fine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import cbor2
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from chinwag.node.client import ClientError, connect, open_ws
from chinwag.protocol.codec import decode_cbor, encode_cbor

TIMEOUT = 10


@asynccontextmanager
async def raw_ws(url: str, **kwargs: Any) -> AsyncIterator[WebSocketConnection]:
    async with open_ws(
        url.replace("http://", "ws://") + "/ws", subprotocols=["chinwag.cbor.v1"], **kwargs
    ) as ws:
        yield ws


async def frames_of(ws: WebSocketConnection) -> list[dict[str, Any]]:
    with trio.fail_after(TIMEOUT):
        item = decode_cbor(await ws.get_message())
    return item if isinstance(item, list) else [item]


async def reply_to(ws: WebSocketConnection, rid: Any = None) -> dict[str, Any]:
    """The next ok/err frame (optionally for ``rid``), skipping msg frames."""
    while True:
        for frame in await frames_of(ws):
            if frame["t"] in ("ok", "err") and (rid is None or frame.get("rid") == rid):
                return frame


@asynccontextmanager
async def authed(node, user: str = "alice") -> AsyncIterator[WebSocketConnection]:
    token = await node.user(user)
    async with raw_ws(node.url) as ws:
        await ws.send_message(encode_cbor({"t": "auth", "rid": 0, "token": token}))
        assert (await reply_to(ws, 0))["t"] == "ok"
        yield ws


async def still_works(ws: WebSocketConnection, rid: int = 999) -> None:
    await ws.send_message(encode_cbor({"t": "heartbeat", "rid": rid}))
    assert (await reply_to(ws, rid))["t"] == "ok"


CBOR_BOMBS = {
    "garbage": b"\xff\xfe\xfd not cbor at all",
    "indefinite map": b"\xbf\x61t\x69heartbeat\xff",
    "indefinite array": b"\x9f\xa1\x61t\x69heartbeat\xff",
    "deep nesting": b"\x81" * 200 + b"\x00",
    "tag 28 shared ref": b"\xd8\x1c\xa1\x61t\x69heartbeat",
    "tag 29 cyclic": b"\x81\xd8\x1d\x00",
    "bignum tag": b"\xa2\x61t\x64sync\x65after\xc2\x49\x01" + b"\x00" * 8,
    "duplicate keys": b"\xa2\x61t\x69heartbeat\x61t\x64sync",
    "trailing bytes": encode_cbor({"t": "heartbeat"}) + b"\x00",
    "huge declared length": b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
}


@pytest.mark.parametrize("name", sorted(CBOR_BOMBS))
async def test_malformed_cbor_gets_bad_frame_and_session_survives(start_node, name) -> None:
    node = await start_node()
    async with authed(node) as ws:
        await ws.send_message(CBOR_BOMBS[name])
        reply = await reply_to(ws)
        assert reply["t"] == "err" and reply["code"] == "bad_frame", reply
        await still_works(ws)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"t": "nonsense", "rid": 1}, "bad_frame"),
        ({"rid": 1}, "bad_frame"),
        ({"t": "send", "rid": 1, "to": "bob"}, "bad_frame"),
        ({"t": "send", "rid": 1, "to": 7, "text": "x"}, "bad_frame"),
        ({"t": "sync", "rid": 1, "after": "zero"}, "bad_frame"),
        ({"t": "sync", "rid": 1, "after": -5}, "bad_frame"),
        ({"t": "send", "rid": 1, "to": "bob", "text": "x", "from": "bob"}, "bad_frame"),
        ({"t": "send", "rid": 1, "to": "nobody", "text": "x"}, "no_such_user"),
        ({"t": "send", "rid": 1, "to": "bob@elsewhere", "text": "x"}, "no_such_node"),
        ({"t": "send", "rid": 1, "to": "Not A Name!", "text": "x"}, "bad_request"),
        ({"t": "send", "rid": 1, "to": "bob", "text": "x" * (16 * 1024 + 1)}, "too_large"),
        ({"t": "auth", "rid": 1, "token": "again"}, "bad_request"),
    ],
)
async def test_bad_frames_get_typed_errors(start_node, frame, code) -> None:
    node = await start_node()
    await node.user("bob")
    async with authed(node) as ws:
        await ws.send_message(encode_cbor(frame))
        reply = await reply_to(ws, 1)
        assert reply["t"] == "err" and reply["code"] == code, reply
        await still_works(ws)


async def test_send_as_another_user_is_impossible(start_node) -> None:
    """The sender is the authenticated user; a forged 'from' is refused."""
    node = await start_node()
    bob = await node.user("bob")
    await node.user("carol")
    async with authed(node, "alice") as ws:
        await ws.send_message(
            encode_cbor({"t": "send", "rid": 1, "to": "carol", "text": "x", "from": "bob"})
        )
        assert (await reply_to(ws, 1))["code"] == "bad_frame"
        await ws.send_message(encode_cbor({"t": "send", "rid": 2, "to": "carol", "text": "hey"}))
        assert (await reply_to(ws, 2))["t"] == "ok"
    async with connect(node.url, bob) as b:
        assert await b.sync(0) == 0  # nothing landed in bob's queue


async def test_oversized_frame_is_refused(start_node) -> None:
    node = await start_node()
    async with authed(node) as ws:
        big = encode_cbor({"t": "heartbeat", "rid": 5, "pad": "x" * (70 * 1024)})
        await ws.send_message(big)
        reply = await reply_to(ws)
        assert reply["code"] == "too_large"
        await still_works(ws)


async def test_message_over_one_mib_closes_with_1009(start_node) -> None:
    node = await start_node()
    async with authed(node) as ws:
        await ws.send_message(b"\x00" * (1024 * 1024 + 10))
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(TIMEOUT):
            while True:
                await ws.get_message()
        assert info.value.reason.code == 1009


async def test_send_before_auth_is_unauthorized(start_node) -> None:
    node = await start_node()
    await node.user("bob")
    async with raw_ws(node.url) as ws:
        await ws.send_message(encode_cbor({"t": "send", "rid": 1, "to": "bob", "text": "x"}))
        frames = await frames_of(ws)
        assert frames[0]["t"] == "err" and frames[0]["code"] == "unauthorized"
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "the node is fine")


async def test_preauth_message_over_4_kib_is_refused(start_node) -> None:
    node = await start_node()
    async with raw_ws(node.url) as ws:
        await ws.send_message(encode_cbor({"t": "auth", "rid": 1, "token": "x" * 5000}))
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(TIMEOUT):
            while True:
                await ws.get_message()
        assert info.value.reason.code == 1009


async def test_bad_token_is_unauthorized(start_node) -> None:
    node = await start_node()
    with pytest.raises(ClientError) as info:
        async with connect(node.url, "not-a-real-token"):
            pass
    assert info.value.code == "unauthorized"


async def test_flood_is_rate_limited_with_retry_after(start_node) -> None:
    node = await start_node(send_rate=5, send_burst=10)
    await node.user("bob")
    async with connect(node.url, await node.user("alice")) as a:
        results = await a.send_many([("bob", f"m{i}", f"c{i}") for i in range(30)])
        errors = [r for r in results if isinstance(r, ClientError)]
        assert 0 < len(errors) <= 20
        assert all(e.code == "rate_limited" and e.retry_after_ms for e in errors)
        await trio.sleep(max(e.retry_after_ms for e in errors) / 1000)
        await a.send("bob", "after waiting")  # the session is fine


async def test_silent_client_is_dropped(start_node) -> None:
    node = await start_node(handshake_timeout=0.5)
    async with raw_ws(node.url) as ws:
        with pytest.raises(ConnectionClosed), trio.fail_after(TIMEOUT):
            while True:
                await ws.get_message()


async def test_client_without_heartbeat_is_dropped(start_node) -> None:
    node = await start_node(heartbeat_interval=0.2, heartbeat_deadline=0.6)
    async with authed(node) as ws:
        with pytest.raises(ConnectionClosed), trio.fail_after(TIMEOUT):
            while True:
                await ws.get_message()


async def test_client_that_stops_reading_is_disconnected(start_node) -> None:
    node = await start_node(send_timeout=0.5, send_rate=100_000, send_burst=100_000)
    bob_token = await node.user("bob")
    async with connect(node.url, await node.user("alice")) as a:
        # Bob syncs, then never reads again; the socket buffers fill up.
        async with raw_ws(node.url, message_queue_size=1) as ws:
            await ws.send_message(encode_cbor({"t": "auth", "rid": 0, "token": bob_token}))
            await reply_to(ws, 0)
            await ws.send_message(encode_cbor({"t": "sync", "rid": 1, "after": 0}))
            text = "y" * 15_000
            with trio.fail_after(30):
                while node.node.hub.is_online("bob"):
                    await a.send_many([("bob", text, None) for _ in range(50)])
        # Alice was never blocked, and bob catches up by sync.
        head = node.node.store.queue_head("bob")
        async with connect(node.url, bob_token) as b:
            await b.sync(0)
            with trio.fail_after(TIMEOUT):
                while b.cursor < head:
                    await b.messages.receive()


async def test_too_many_connections_from_one_address(start_node) -> None:
    node = await start_node(max_connections_per_address=2)
    token = await node.user("alice")
    async with connect(node.url, token), connect(node.url, token):
        with pytest.raises(ClientError):
            async with connect(node.url, token):
                pass
    async with connect(node.url, token):
        pass  # freed again


def test_cbor_fixtures_are_what_they_claim() -> None:
    """The bombs are refused by cbor2's permissive default or are deliberately odd."""
    with pytest.raises(Exception):  # noqa: B017
        cbor2.loads(CBOR_BOMBS["garbage"])


@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}")])
async def test_deeply_nested_json_frame_is_refused_and_session_survives(
    start_node, opener, closer
) -> None:
    """Nesting far past the stack is refused (by the item bound, before the
    parser recurses), and the session survives."""
    import json

    from chinwag.protocol.codec import decode_json

    node = await start_node()
    token = await node.user("alice")
    async with open_ws(
        node.url.replace("http://", "ws://") + "/ws", subprotocols=["chinwag.json.v1"]
    ) as ws:

        async def reply(rid: int | None) -> dict[str, Any]:
            with trio.fail_after(TIMEOUT):
                while True:
                    item = decode_json(await ws.get_message())
                    for frame in item if isinstance(item, list) else [item]:
                        if frame.get("rid") == rid and frame["t"] in ("ok", "err"):
                            return frame

        await ws.send_message(json.dumps({"t": "auth", "rid": 1, "token": token}))
        assert (await reply(1))["t"] == "ok"
        depth = 900_000 // (len(opener) + len(closer))  # under the 1 MiB message cap
        await ws.send_message(opener * depth + "1" + closer * depth)
        answer = await reply(None)
        assert answer["t"] == "err" and answer["code"] == "too_large", answer
        await ws.send_message(json.dumps({"t": "heartbeat", "rid": 2}))
        assert (await reply(2))["t"] == "ok"


async def test_upgrade_without_a_known_subprotocol_gets_a_json_error(start_node) -> None:
    node = await start_node()
    url = node.url.replace("http://", "ws://") + "/ws"
    with pytest.raises(ConnectionRejected) as info:
        async with open_ws(url, subprotocols=["chinwag.xml.v9"]):
            pass
    assert info.value.status_code == 400
    body = json.loads(info.value.body)
    assert body["error"]["code"] == "bad_request"
    assert "chinwag.json.v1" in body["error"]["message"]
