"""Push to offline devices, against a real node and a real HTTP receiver on loopback.

Registering a loopback/private endpoint without ``--push-allow-private`` is
answered ``400 bad_request`` (the URL is refused like any other bad URL).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import cbor2
import h11
import pytest
import trio

from chinwag.node.client import ClientError, api_call, connect
from chinwag.node.push import MAX_ENDPOINTS_PER_DEVICE, PushStats, address_allowed

TIMEOUT = 10


class Receiver:
    """A tiny HTTP server: records every POST, answers with chosen statuses."""

    def __init__(self) -> None:
        self.posts: list[tuple[int, dict[str, Any]]] = []
        self.statuses: list[int] = []
        #: Hold answers until this is set (a push endpoint that hangs).
        self.release: trio.Event | None = None
        self.port = 0
        self.arrivals = 0
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push/abc?k=1"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """Bodies of the POSTs answered 2xx."""
        return [body for status, body in self.posts if status < 300]

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
                elif isinstance(event, h11.Request):
                    assert event.method == b"POST" and event.target == b"/push/abc?k=1"
                    assert (b"content-type", b"application/json") in event.headers
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            self.arrivals += 1
            self._wake()
            if self.release is not None:
                await self.release.wait()
            status = self.statuses.pop(0) if self.statuses else 200
            self.posts.append((status, json.loads(body)))
            self._wake()
            await stream.send_all(
                conn.send(h11.Response(status_code=status, headers=[("content-length", "0")]))
                + conn.send(h11.EndOfMessage())
            )

    def _wake(self) -> None:
        event, self._changed = self._changed, trio.Event()
        event.set()

    async def wait_arrivals(self, count: int) -> None:
        with trio.fail_after(TIMEOUT):
            while self.arrivals < count:
                await self._changed.wait()

    async def wait_until(self, done: Callable[[list[dict[str, Any]]], bool]) -> None:
        with trio.fail_after(TIMEOUT):
            while not done(self.bodies):
                await self._changed.wait()


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    rec = Receiver()
    await nursery.start(rec.serve)
    return rec


async def stats(node: Any, done: Callable[[PushStats], bool]) -> PushStats:
    with trio.fail_after(TIMEOUT):
        return await node.node.push.wait_statistics(done)


def went_offline(node: Any, name: str) -> trio.Event:
    """Set when the node sees the last device of ``name`` go."""
    event = trio.Event()
    node.node.hub.observe_presence(
        lambda user, online: event.set() if user == name and not online else None
    )
    return event


async def register(node: Any, token: str, url: str, **extra: Any) -> dict[str, Any]:
    return await api_call(node.url, "POST", "/api/push", {"endpoint": url, **extra}, token)


async def test_one_coalesced_post_for_an_offline_user_without_text(start_node, receiver) -> None:
    node = await start_node(name="home", push_allow_private=True, push_coalesce=0.3)
    bob_phone = await node.user("bob", "phone")
    added = await register(node, bob_phone, receiver.url)
    assert added == {"endpoint": receiver.url, "device": "phone", "include_text": False}
    async with connect(node.url, await node.user("alice")) as alice:
        acks = await alice.send_many([("bob", f"secret {i}", f"c{i}") for i in range(5)])
    assert all(not isinstance(ack, ClientError) for ack in acks)
    await receiver.wait_until(lambda bodies: len(bodies) >= 1)
    final = await stats(node, lambda s: s.sent >= 1)
    # One window for the whole burst, nothing else pending: no second POST can come.
    assert final.windows == 1 and final.sent == 1 and final.failed == 0
    assert not node.node.push._windows and not node.node.push._deliveries
    assert receiver.bodies == [{"type": "message", "user": "bob", "count": 5, "from": "alice@home"}]


async def test_no_push_while_a_device_is_online(start_node, receiver) -> None:
    node = await start_node(push_allow_private=True, push_coalesce=0.05)
    bob = await node.user("bob", "phone")
    await register(node, bob, receiver.url)
    offline = went_offline(node, "bob")
    alice = await node.user("alice")
    async with connect(node.url, bob) as b, connect(node.url, alice) as a:
        await b.sync(0)
        await a.send("bob", "you are online")  # its commit has been observed when this returns
        assert node.node.push.statistics().windows == 0
        await b.next_message(TIMEOUT)
    with trio.fail_after(TIMEOUT):
        await offline.wait()
    async with connect(node.url, alice) as a:
        await a.send("bob", "now you are not")
    await receiver.wait_until(lambda bodies: len(bodies) >= 1)
    final = await stats(node, lambda s: s.sent >= 1)
    assert final.windows == 1 and len(receiver.posts) == 1
    # count is what no device has acknowledged (bob never acked the first one).
    assert receiver.bodies[0]["count"] == 2 and "text" not in receiver.bodies[0]


async def test_text_only_when_opted_in(start_node, receiver) -> None:
    node = await start_node(push_allow_private=True, push_coalesce=0.05)
    bob = await node.user("bob", "phone")
    await register(node, bob, receiver.url, include_text=True)
    listed = await api_call(node.url, "GET", "/api/push", token=bob)
    assert listed["endpoints"] == [
        {"endpoint": receiver.url, "device": "phone", "include_text": True}
    ]
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "hello there")
    await receiver.wait_until(lambda bodies: len(bodies) >= 1)
    assert receiver.bodies[0]["text"] == "hello there"


async def test_group_message_names_the_group(start_node, receiver) -> None:
    node = await start_node(name="home", push_allow_private=True, push_coalesce=0.05)
    bob = await node.user("bob", "phone")
    await register(node, bob, receiver.url)
    alice = await node.user("alice")
    # bob has alice as a contact, so her add makes him a member at once.
    await api_call(node.url, "POST", "/api/contacts", {"address": "alice"}, bob)
    async with connect(node.url, alice) as a:
        await a.group("create", name="team")
        await a.group("add", group="#team@home", members=["bob@home"])
        await a.send("#team@home", "hi team")
    await receiver.wait_until(lambda bodies: any("group" in b for b in bodies))
    body = next(b for b in receiver.bodies if "group" in b)
    assert body["group"] == "#team@home" and body["from"] == "alice@home"
    assert "text" not in body


async def test_500_is_retried_then_succeeds(start_node, receiver) -> None:
    node = await start_node(push_allow_private=True, push_coalesce=0.05)
    bob = await node.user("bob", "phone")
    await register(node, bob, receiver.url)
    receiver.statuses = [500, 503]
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "retry me")
    await receiver.wait_until(lambda bodies: len(bodies) >= 1)
    final = await stats(node, lambda s: s.sent >= 1)
    assert [status for status, _ in receiver.posts] == [500, 503, 200]
    assert final.retried == 2 and final.failed == 0
    assert receiver.posts[0][1] == receiver.posts[2][1]


async def test_410_forgets_the_endpoint(start_node, receiver) -> None:
    node = await start_node(push_allow_private=True, push_coalesce=0.05)
    bob = await node.user("bob", "phone")
    await register(node, bob, receiver.url)
    receiver.statuses = [410]
    alice = await node.user("alice")
    async with connect(node.url, alice) as a:
        await a.send("bob", "gone")
    final = await stats(node, lambda s: s.forgotten >= 1)
    assert final.retried == 0 and len(receiver.posts) == 1
    listed = await api_call(node.url, "GET", "/api/push", token=bob)
    assert listed["endpoints"] == []
    async with connect(node.url, alice) as a:
        await a.send("bob", "nobody listens")  # no endpoint left: no window
    assert node.node.push.statistics().windows == 1


async def test_other_4xx_gives_up_without_forgetting(start_node, receiver) -> None:
    node = await start_node(push_allow_private=True, push_coalesce=0.05)
    bob = await node.user("bob", "phone")
    await register(node, bob, receiver.url)
    receiver.statuses = [400]
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "bad")
    final = await stats(node, lambda s: s.failed >= 1)
    assert final.retried == 0 and final.forgotten == 0
    listed = await api_call(node.url, "GET", "/api/push", token=bob)
    assert len(listed["endpoints"]) == 1


async def test_a_hanging_endpoint_never_delays_delivery(start_node, receiver) -> None:
    node = await start_node(push_allow_private=True, push_coalesce=0.2)
    bob = await node.user("bob", "phone")
    await register(node, bob, receiver.url)
    receiver.release = trio.Event()  # the endpoint takes the POST, then does not answer
    offline = went_offline(node, "bob")
    with trio.fail_after(TIMEOUT):
        async with connect(node.url, await node.user("alice")) as a:
            await a.send("bob", "m0")
            await receiver.wait_arrivals(1)
            await a.send_many([("bob", "m1", None), ("bob", "m2", None)])
        # The second window ends while the first POST hangs: folded into it.
        await stats(node, lambda s: s.notified >= 2)
        assert len(node.node.push._deliveries) == 1
        async with connect(node.url, bob) as b:
            await b.sync(0)
            got = [(await b.next_message(TIMEOUT))["body"]["text"] for _ in range(3)]
    assert got == ["m0", "m1", "m2"]
    with trio.fail_after(TIMEOUT):
        await offline.wait()  # (a delivery stops once a device is online)
    receiver.release.set()
    await receiver.wait_until(lambda bodies: len(bodies) >= 2)
    final = await stats(node, lambda s: s.sent >= 2)
    assert [b["count"] for b in receiver.bodies] == [1, 3] and final.sent == 2


async def test_private_endpoints_refused_unless_allowed(start_node, receiver) -> None:
    node = await start_node()
    bob = await node.user("bob")
    for url in (
        receiver.url,
        "http://localhost:9/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://169.254.1.1/x",
        "http://224.0.0.1/x",
        "http://[::ffff:127.0.0.1]/x",
        "https://0.0.0.0/x",
    ):
        with pytest.raises(ClientError) as info:
            await register(node, bob, url)
        assert info.value.code == "bad_request" and info.value.status == 400, url
        assert "private" in info.value.message


@pytest.mark.parametrize(
    "body",
    [
        {"endpoint": "ftp://example.org/x"},
        {"endpoint": "http://127.0.0.1:99999/x"},
        {"endpoint": "http://127.0.0.1:abc/x"},
        {"endpoint": "http://127.0.0.1:0/x"},
        {"endpoint": "http://user:pw@127.0.0.1:9/x"},
        {"endpoint": "http://127.0.0.1:9/a b"},
        {"endpoint": "http://127.0.0.1:9/\x01"},
        {"endpoint": "http://127.0.0.1:9/" + "a" * 500},
        {"endpoint": 42},
        {"endpoint": "http://127.0.0.1:9/x", "include_text": "yes"},
        {},
    ],
)
async def test_bad_endpoints_are_refused(start_node, body) -> None:
    node = await start_node(push_allow_private=True)
    bob = await node.user("bob")
    with pytest.raises(ClientError) as info:
        await api_call(node.url, "POST", "/api/push", body, bob)
    assert info.value.code == "bad_request" and info.value.status == 400


async def test_limits_and_long_urls(start_node) -> None:
    node = await start_node(push_allow_private=True)
    bob = await node.user("bob", "d" * 64)
    longest = "http://127.0.0.1:9/" + "a" * (512 - len("http://127.0.0.1:9/"))
    await register(node, bob, longest)
    await register(node, bob, longest, include_text=True)  # replaces, does not add
    for i in range(MAX_ENDPOINTS_PER_DEVICE - 1):
        await register(node, bob, f"http://127.0.0.1:9/{i}")
    with pytest.raises(ClientError) as info:
        await register(node, bob, "http://127.0.0.1:9/one-too-many")
    assert info.value.code == "too_large"
    listed = await api_call(node.url, "GET", "/api/push", token=bob)
    assert len(listed["endpoints"]) == MAX_ENDPOINTS_PER_DEVICE
    assert {"endpoint": longest, "device": "d" * 64, "include_text": True} in listed["endpoints"]
    removed = await api_call(node.url, "DELETE", "/api/push", {"endpoint": longest}, bob)
    assert removed == {"endpoint": longest}
    listed = await api_call(node.url, "GET", "/api/push", token=bob)
    assert len(listed["endpoints"]) == MAX_ENDPOINTS_PER_DEVICE - 1
    with pytest.raises(ClientError) as info:
        await api_call(node.url, "GET", "/api/push")
    assert info.value.code == "unauthorized"


async def test_endpoints_survive_a_restart(start_node, receiver, tmp_path) -> None:
    node = await start_node(data_dir=tmp_path / "n", push_allow_private=True, push_coalesce=0.05)
    await register(node, await node.user("bob", "phone"), receiver.url)
    await node.stop()
    node = await start_node(data_dir=tmp_path / "n", push_allow_private=True, push_coalesce=0.05)
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "after restart")
    await receiver.wait_until(lambda bodies: len(bodies) >= 1)


async def test_rows_of_the_first_layout_and_of_removed_users(start_node, tmp_path) -> None:
    node = await start_node(data_dir=tmp_path / "n", push_allow_private=True)
    bob = await node.user("bob", "phone")
    await register(node, await node.user("carol", "phone"), "http://127.0.0.1:9/c")
    store = node.node.store
    uid = store.get_user("bob").uid
    legacy = "http://127.0.0.1:9/old"

    def put_legacy(w: Any) -> None:  # key ends in the URL itself, value {text}
        key = uid.to_bytes(4, "big") + b"phone\x00" + legacy.encode()
        w.txn.put(key, cbor2.dumps({"text": True}), db=w.db("push_endpoints"))

    await store.transact(put_legacy)
    listed = await api_call(node.url, "GET", "/api/push", token=bob)
    assert listed["endpoints"] == [{"endpoint": legacy, "device": "phone", "include_text": True}]
    await api_call(node.url, "DELETE", "/api/push", {"endpoint": legacy}, bob)
    assert (await api_call(node.url, "GET", "/api/push", token=bob))["endpoints"] == []
    # A removed user's rows are deleted when the node starts again.
    await store.remove_user("carol")
    await node.stop()
    node = await start_node(data_dir=tmp_path / "n", push_allow_private=True)
    rows = node.node.store.read(
        lambda view: list(view.txn.cursor(db=view.db("push_endpoints")).iternext())
    )
    assert rows == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("ff0e::1", False),
        ("::ffff:127.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 around 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 around 10.0.0.1
        ("not an address", False),
    ],
)
def test_address_allowed(address: str, allowed: bool) -> None:
    assert address_allowed(address, allow_private=False) is allowed
    assert address_allowed(address, allow_private=True)
