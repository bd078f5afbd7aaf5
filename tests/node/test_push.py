"""Push to offline devices, against a real HTTP receiver on loopback."""

from __future__ import annotations

import json
from typing import Any

import h11
import pytest
import trio

from chinwag.node.client import ClientError, api_call, connect

TIMEOUT = 10


class Receiver:
    """A tiny HTTP server that records POSTs and answers with chosen statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses = statuses or []
        self.port = 0
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push/abc"

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER)
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            status = self.statuses.pop(0) if self.statuses else 200
            if status < 300:
                self.bodies.append(json.loads(body))
            await stream.send_all(
                conn.send(h11.Response(status_code=status, headers=[("content-length", "0")]))
                + conn.send(h11.EndOfMessage())
            )
            event, self._changed = self._changed, trio.Event()
            event.set()

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(TIMEOUT):
            while len(self.bodies) < count:
                await self._changed.wait()


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    rec = Receiver()
    await nursery.start(rec.serve)
    return rec


async def test_one_coalesced_post_for_an_offline_user_without_text(start_node, receiver) -> None:
    node = await start_node(push_allow_private=True, push_coalesce=0.3)
    bob_phone = await node.user("bob", "phone")
    await api_call(node.url, "POST", "/api/push", {"endpoint": receiver.url}, bob_phone)
    async with connect(node.url, await node.user("alice")) as alice:
        await alice.send_many([("bob", f"secret {i}", f"c{i}") for i in range(5)])
    await receiver.wait_for(1)
    (body,) = receiver.bodies
    assert body["count"] == 5 and body["from"].startswith("alice@")
    assert "text" not in body and body["type"] == "message"
    with trio.fail_after(TIMEOUT):
        while node.node.push.stats.sent < 1:  # noqa: ASYNC110 (the node reads the answer)
            await trio.sleep(0.01)
    await trio.sleep(0.2)
    assert len(receiver.bodies) == 1 and node.node.push.stats.sent == 1


async def test_no_push_while_a_device_is_online(start_node, receiver) -> None:
    node = await start_node(push_allow_private=True, push_coalesce=0.1)
    bob = await node.user("bob", "phone")
    await api_call(node.url, "POST", "/api/push", {"endpoint": receiver.url}, bob)
    async with connect(node.url, bob) as b, connect(node.url, await node.user("alice")) as a:
        await b.sync(0)
        await a.send("bob", "you are online")
        await b.next_message(TIMEOUT)
        await trio.sleep(0.3)  # longer than the coalescing window: nothing may come
    assert receiver.bodies == []
    # Offline again: the next message is pushed.
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "now you are not")
    await receiver.wait_for(1)


async def test_text_only_when_opted_in(start_node, receiver) -> None:
    node = await start_node(push_allow_private=True, push_coalesce=0.1)
    bob = await node.user("bob", "phone")
    await api_call(
        node.url, "POST", "/api/push", {"endpoint": receiver.url, "include_text": True}, bob
    )
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "hello there")
    await receiver.wait_for(1)
    assert receiver.bodies[0]["text"] == "hello there"


async def test_410_forgets_and_500_is_retried(start_node, receiver) -> None:
    node = await start_node(push_allow_private=True, push_coalesce=0.05)
    bob = await node.user("bob", "phone")
    await api_call(node.url, "POST", "/api/push", {"endpoint": receiver.url}, bob)
    receiver.statuses = [500, 200]
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "retry me")
    await receiver.wait_for(1)
    assert node.node.push.stats.retried >= 1
    receiver.statuses = [410]
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "gone")
    with trio.fail_after(TIMEOUT):
        while node.node.push.stats.forgotten < 1:  # noqa: ASYNC110
            await trio.sleep(0.02)
    listed = await api_call(node.url, "GET", "/api/push", token=bob)
    assert listed["endpoints"] == []


async def test_private_endpoints_refused_unless_allowed(start_node, receiver) -> None:
    node = await start_node()
    bob = await node.user("bob")
    with pytest.raises(ClientError) as info:
        await api_call(node.url, "POST", "/api/push", {"endpoint": receiver.url}, bob)
    assert info.value.code == "bad_request" and "private" in info.value.message
    with pytest.raises(ClientError):
        await api_call(node.url, "POST", "/api/push", {"endpoint": "ftp://example"}, bob)
