"""Revoking a session ends its live WebSockets: logout, password change, user removal."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed

from chinwag.node.admin import admin_request
from chinwag.node.client import ChatClient, ClientError, api_call, connect, open_ws
from chinwag.node.passwords import FAST_TEST_COST, hash_password
from chinwag.protocol.codec import decode_cbor, encode_cbor
from chinwag.protocol.errors import ErrorCode

TIMEOUT = 10


async def ended_by_node(client: ChatClient) -> ErrorCode:
    """Wait until the node closes the connection; the code of its ``bye``."""
    with trio.fail_after(TIMEOUT):
        async for _ in client.messages:
            pass
    assert client.closed_reason is not None, "closed without a bye"
    return client.closed_reason.code


async def test_logout_ends_the_live_sessions_of_that_token_only(start_node) -> None:
    node = await start_node()
    laptop = await node.user("alice", "laptop")
    phone = await node.user("alice", "phone")
    async with (
        connect(node.url, laptop) as first,
        connect(node.url, laptop) as second,  # the same token, twice
        connect(node.url, phone) as other,
    ):
        await api_call(node.url, "POST", "/api/logout", {}, token=laptop)
        assert await ended_by_node(first) == ErrorCode.UNAUTHORIZED
        assert await ended_by_node(second) == ErrorCode.UNAUTHORIZED
        # The other device's session is untouched.
        ack = await other.send("alice", "still here")
        assert ack.seq == 1
    with pytest.raises(ClientError) as info:
        async with connect(node.url, laptop):
            pass
    assert info.value.code == "unauthorized"


async def test_password_change_sends_bye_unauthorized_and_closes_1008(start_node) -> None:
    node = await start_node()
    token = await node.user("alice")
    url = node.url.replace("http://", "ws://") + "/ws"
    async with (
        open_ws(url, subprotocols=["chinwag.cbor.v1"]) as ws,
        connect(node.url, await node.user("alice", "phone")) as phone,
    ):
        await ws.send_message(encode_cbor({"t": "auth", "rid": 1, "token": token}))
        with trio.fail_after(TIMEOUT):
            assert decode_cbor(await ws.get_message())["t"] == "ok"
        await admin_request(
            node.node.config.data_dir,
            "user.passwd",
            {"user": "alice", "pw_hash": await hash_password("new password", FAST_TEST_COST)},
        )
        frames = []
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as closed:
            while True:
                item = decode_cbor(await ws.get_message())
                frames.extend(item if isinstance(item, list) else [item])
        assert frames[-1]["t"] == "bye" and frames[-1]["code"] == "unauthorized"
        assert closed.value.reason.code == 1008
        # Every session of the user is revoked, so every device is cut.
        assert await ended_by_node(phone) == ErrorCode.UNAUTHORIZED


async def test_removing_a_user_ends_their_sessions(start_node) -> None:
    node = await start_node()
    alice = await node.user("alice")
    bob = await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await a.sync(0)
        await admin_request(node.node.config.data_dir, "user.remove", {"user": "alice"})
        assert await ended_by_node(a) == ErrorCode.UNAUTHORIZED
        assert not b.is_closed
        await b.send("bob", "bob is fine")
    assert node.node.hub.online_devices("alice") == frozenset()
