"""Abuse resistance (issue 11): decoder bombs, fragment floods, connection
floods from many addresses. Real nodes on loopback, real sockets."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import wsproto
import wsproto.events as wse
from trio_websocket import WebSocketConnection

from chinwag.node.client import connect
from chinwag.protocol.codec import decode_cbor, encode_cbor

from .test_bad_input import authed, reply_to

TIMEOUT = 20


def cbor_array_head(count: int) -> bytes:
    return bytes([0x99]) + count.to_bytes(2, "big") if count > 23 else bytes([0x80 | count])


def empty_arrays_bomb(rows: int = 1000) -> bytes:
    """~1 MiB that a permissive decoder turns into ~a million empty lists:
    one heartbeat padded with ``rows`` arrays of 1,024 empty arrays (every
    container within the per-container and depth bounds). Before the item
    bound it was decoded in full (~1 s) and only then refused as a frame
    over 64 KiB."""
    row = cbor_array_head(1024) + b"\x80" * 1024
    return b"\xa2\x61t\x69heartbeat\x61p" + cbor_array_head(rows) + row * rows


async def bomb_and_collect(node: Any, token: str, bombs: int, codes: list[str]) -> None:
    async with authed_with(node, token) as ws:
        for _ in range(bombs):
            await ws.send_message(empty_arrays_bomb())
        for _ in range(bombs):
            reply = await reply_to(ws)
            codes.append(reply.get("code", reply["t"]))


@asynccontextmanager
async def authed_with(node: Any, token: str) -> AsyncIterator[WebSocketConnection]:
    from .test_bad_input import raw_ws

    async with raw_ws(node.url) as ws:
        await ws.send_message(encode_cbor({"t": "auth", "rid": 0, "token": token}))
        assert (await reply_to(ws, 0))["t"] == "ok"
        yield ws


async def test_decoder_bomb_is_refused_and_other_users_stay_fast(start_node) -> None:
    node = await start_node()
    await node.user("bob")
    mallory = await node.user("mallory")
    codes: list[str] = []
    latencies: list[float] = []
    async with connect(node.url, await node.user("alice")) as alice:
        await alice.send("bob", "warm-up")
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(bomb_and_collect, node, mallory, 4, codes)
                for i in range(8):
                    start = time.perf_counter()
                    await alice.send("bob", f"while bombed {i}")
                    latencies.append(time.perf_counter() - start)
                    await trio.sleep(0.05)
    assert codes == ["too_large"] * 12, codes
    # Generous: refusing a bomb costs milliseconds; decoding one took ~1 s.
    assert max(latencies) < 1.0, latencies


# ------------------------------------------------------------ raw WebSocket


class RawWs:
    """A client speaking WebSocket through wsproto by hand, to send what
    trio-websocket never would (e.g. a message in thousands of fragments)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.closed: wse.CloseConnection | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, local_address: str | None = None) -> AsyncIterator[RawWs]:
        host, port = url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port), local_address=local_address)
        raw = cls(stream)
        try:
            await raw.send(wse.Request(host=host, target="/ws", subprotocols=["chinwag.cbor.v1"]))
            event = await raw.next_event()
            assert isinstance(event, wse.AcceptConnection), event
            yield raw
        finally:
            await stream.aclose()

    async def send(self, event: wse.Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def send_many_fragments(self, count: int) -> None:
        """``count`` one-byte fragments of a message that is never finished."""
        data = b"".join(
            self.ws.send(wse.BytesMessage(data=b"\x00", message_finished=False))
            for _ in range(count)
        )
        await self.stream.send_all(data)

    async def next_event(self) -> wse.Event | None:
        while True:
            for event in self.ws.events():
                if isinstance(event, wse.CloseConnection):
                    self.closed = event
                return event
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(data)

    async def message(self) -> Any:
        parts = b""
        while True:
            event = await self.next_event()
            if event is None or isinstance(event, wse.CloseConnection):
                return event
            if isinstance(event, wse.BytesMessage):
                parts += event.data
                if event.message_finished:
                    return decode_cbor(parts)


async def test_message_in_too_many_fragments_is_closed_with_1009(start_node) -> None:
    node = await start_node()
    token = await node.user("alice")
    async with RawWs.open(node.url) as raw:
        await raw.send(wse.BytesMessage(data=encode_cbor({"t": "auth", "rid": 0, "token": token})))
        assert (await raw.message())["t"] == "ok"
        fragments = 20_000
        # One byte each: 140 KB on the wire, a 20,000-byte message.
        start = time.perf_counter()
        with trio.fail_after(TIMEOUT):
            try:
                for _ in range(fragments // 1000):
                    await raw.send_many_fragments(1000)
            except (trio.BrokenResourceError, OSError):
                pass  # the node closed while we were still sending
            while raw.closed is None:
                if await raw.next_event() is None:
                    break
        elapsed = time.perf_counter() - start
    assert raw.closed is not None and raw.closed.code == 1009, raw.closed
    assert elapsed < 5, elapsed
    # The node is fine.
    async with authed(node, "alice"):
        pass


# ------------------------------------------------------- connection floods


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def test_idle_flood_from_many_addresses_cannot_lock_out_users(start_node) -> None:
    """Idle connections from many addresses (the per-address cap never trips)
    used to fill the node's connection cap; now only the unauthenticated ones
    are bounded, oldest dropped first, and real users get through."""
    node = await start_node(max_connections=120, max_unauthenticated=40)
    await node.user("bob")
    alice_token = await node.user("alice")
    host, port = host_port(node.url)
    flood: list[trio.SocketStream] = []
    try:
        async with connect(node.url, alice_token) as alice:  # authenticated before
            with trio.fail_after(TIMEOUT):
                # 200 idle connections from 127.0.0.2 .. 127.0.0.21, 10 each.
                for n in range(200):
                    source = f"127.0.0.{2 + n % 20}"
                    flood.append(await trio.open_tcp_stream(host, port, local_address=source))
                    if n % 20 == 19:  # let the node accept them
                        await trio.sleep(0.01)
                # Statistics have no event to await; poll, bounded by fail_after.
                while node.node.server.statistics().admission.evicted < 200 - 40:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            stats = node.node.server.statistics()
            assert stats.admission.unauthenticated <= 40
            start = time.perf_counter()
            with trio.fail_after(TIMEOUT):
                await alice.send("bob", "still here")  # an existing session
                carol = await node.user("carol")  # a new sign-up and log-in
                async with connect(node.url, carol) as c:
                    await c.send("bob", "got in")
            assert time.perf_counter() - start < 2.0
    finally:
        for stream in flood:
            await stream.aclose()


# ------------------------------------------------------------ HTTP edges


async def http_exchange(url: str, request: bytes, local_address: str | None = None) -> Any:
    """Send raw bytes; return the h11 Response (status, headers) read back."""
    import h11

    host, port = host_port(url)
    stream = await trio.open_tcp_stream(host, port, local_address=local_address)
    conn = h11.Connection(h11.CLIENT)
    try:
        await stream.send_all(request)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            assert isinstance(event, h11.Response), event
            return event
    finally:
        await stream.aclose()


async def test_request_head_over_16_kib_is_refused_even_in_one_write(start_node) -> None:
    node = await start_node()
    pad = b"x" * (60 * 1024)
    head = b"GET /.well-known/chinwag HTTP/1.1\r\nhost: x\r\nx-pad: " + pad + b"\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        response = await http_exchange(node.url, head)
        assert response.status_code == 431
        # One just under the cap still works.
        small = b"GET /.well-known/chinwag HTTP/1.1\r\nhost: x\r\nx-pad: " + pad[:15_000]
        assert (await http_exchange(node.url, small + b"\r\n\r\n")).status_code == 200


async def test_oversized_content_length_is_refused_at_once(start_node) -> None:
    node = await start_node()
    head = b"POST /api/login HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n"
    with trio.fail_after(3):  # before: no answer until the 10 s body timeout
        response = await http_exchange(node.url, head)
    assert response.status_code == 413


async def test_connection_cap_429_carries_retry_after(start_node) -> None:
    node = await start_node(max_connections_per_address=1)
    host, port = host_port(node.url)
    request = b"GET /.well-known/chinwag HTTP/1.1\r\nhost: x\r\n\r\n"
    held = await trio.open_tcp_stream(host, port, local_address="127.0.0.7")
    try:
        with trio.fail_after(TIMEOUT):
            response = await http_exchange(node.url, request, local_address="127.0.0.7")
    finally:
        await held.aclose()
    assert response.status_code == 429
    assert dict(response.headers).get(b"retry-after") == b"1"


async def test_decoding_work_is_charged_to_the_sending_account(start_node) -> None:
    """An account over its read budget is read more slowly; others are not."""
    node = await start_node(read_rate=1000, read_burst=100)
    async with authed(node, "mallory") as ws, authed(node, "alice") as other:
        start = time.perf_counter()
        # 60 heartbeats, ~35 units each: ~2,000 units at 1,000 units/s.
        for rid in range(60):
            await ws.send_message(encode_cbor({"t": "heartbeat", "rid": rid}))
        other_start = time.perf_counter()
        await other.send_message(encode_cbor({"t": "heartbeat", "rid": 1}))
        await reply_to(other, 1)
        other_elapsed = time.perf_counter() - other_start
        with trio.fail_after(TIMEOUT):
            await reply_to(ws, 59)
        elapsed = time.perf_counter() - start
    assert elapsed > 1.5, elapsed
    assert other_elapsed < 0.5, other_elapsed
