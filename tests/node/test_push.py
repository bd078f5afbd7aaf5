"""Push to offline devices, against a real node and a real HTTP receiver on loopback.

Registering a loopback/private endpoint without ``--push-allow-private`` is
answered ``400 bad_request`` (the URL is refused like any other bad URL), and
``--push-allow-private`` never opens loopback or link-local. So the tests
reach their receiver through an injected seam (:func:`route`): test names
resolve to a global address, every address check of node/dialcheck.py runs
on it, and only the final TCP connect is sent to the receiver on loopback.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import cbor2
import h11
import pytest
import trio

from chinwag.node.client import ClientError, api_call, connect
from chinwag.node.push import MAX_ENDPOINTS_PER_DEVICE, PushStats

from ..integration.logwatch import JsonLog, json_log_fixture  # noqa: F401 - the fixture

TIMEOUT = 10
#: What test names resolve to by default: a global address, never connected
#: (the injected connect goes to loopback).
PUBLIC = "93.184.216.34"


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
        return self.url_at("push.test")

    def url_at(self, host: str, path: str = "/push/abc?k=1") -> str:
        return f"http://{host}:{self.port}{path}"

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
                    assert event.method == b"POST" and event.target.startswith(b"/push/")
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


def route(node: Any, names: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Test DNS and connect for the node's push: ``push.test`` (and any name in
    ``names``) resolves as given, IP literals to themselves; every connect
    goes to loopback. Returns the name table (tests may change it)."""
    table: dict[str, tuple[str, ...]] = {"push.test": (PUBLIC,), **(names or {})}

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        try:
            found: tuple[str, ...] = (str(ipaddress.ip_address(host)),)
        except ValueError:
            if host not in table:
                raise OSError(f"no such test name {host!r}") from None
            found = table[host]
        return [(2, 1, 6, "", (address, port)) for address in found]

    async def to_loopback(address: str, port: int) -> trio.SocketStream:
        return await trio.open_tcp_stream("127.0.0.1", port)

    node.node.push.getaddrinfo = getaddrinfo
    node.node.push.open_tcp_stream = to_loopback
    return table


async def routed(start_node: Any, **config: Any) -> Any:
    node = await start_node(**config)
    route(node)
    return node


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
    node = await routed(start_node, name="home", push_coalesce=0.3)
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
    assert final.deliveries == 0
    assert receiver.bodies == [{"type": "message", "user": "bob", "count": 5, "from": "alice@home"}]


async def test_no_push_while_a_device_is_online(start_node, receiver) -> None:
    node = await routed(start_node, push_coalesce=0.05)
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
    node = await routed(start_node, push_coalesce=0.05)
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
    node = await routed(start_node, name="home", push_coalesce=0.05)
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
    node = await routed(start_node, push_coalesce=0.05)
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
    node = await routed(start_node, push_coalesce=0.05)
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
    node = await routed(start_node, push_coalesce=0.05)
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
    node = await routed(start_node, push_coalesce=0.2)
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
        assert (await stats(node, lambda s: s.notified >= 2)).deliveries == 1
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


#: Names the address tests resolve (besides ``push.test``).
NAMES: dict[str, tuple[str, ...]] = {
    "localhost": ("127.0.0.1", "::1"),
    "metadata.test": ("169.254.169.254",),
    "mapped-metadata.test": ("::ffff:169.254.169.254",),
    "public-and-loopback.test": (PUBLIC, "127.0.0.1"),
    "public-and-lan.test": (PUBLIC, "10.0.0.7"),
    "lan.test": ("192.168.1.20",),
}
#: Never dialled, whatever the admin allows.
NEVER = (
    "http://127.0.0.1:9/x",
    "http://localhost:9/x",
    "http://[::1]/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.1.1/x",
    "http://[::ffff:169.254.169.254]/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://[fe80::1]/x",
    "http://224.0.0.1/x",
    "https://0.0.0.0/x",
    "http://0.1.2.3/x",
    "http://metadata.test/x",
    "http://mapped-metadata.test/x",
    "http://public-and-loopback.test/x",
)
#: Private LAN addresses: dialled only with --push-allow-private.
LAN = (
    "http://10.1.2.3/x",
    "http://[fd00::1]/x",
    "http://[fec0::1]/x",  # deprecated site-local: not global
    "http://lan.test/x",
    "http://public-and-lan.test/x",  # one private address refuses the whole name
)


async def refused(node: Any, token: str, url: str) -> str:
    with pytest.raises(ClientError) as info:
        await register(node, token, url)
    assert info.value.code == "bad_request" and info.value.status == 400, url
    assert "not dialling push endpoint" in info.value.message, url
    return info.value.message


async def test_private_endpoints_refused_unless_allowed(start_node) -> None:
    node = await start_node()
    route(node, NAMES)
    bob = await node.user("bob")
    for url in NEVER:
        await refused(node, bob, url)
    for url in LAN:
        assert "--push-allow-private" in await refused(node, bob, url), url
    await register(node, bob, "http://push.test/x")  # resolves to a global address


async def test_allow_private_opens_lan_ranges_only(start_node) -> None:
    node = await start_node(push_allow_private=True)
    route(node, NAMES)
    bob = await node.user("bob", "phone")
    carol = await node.user("carol", "phone")
    for url in NEVER:
        await refused(node, bob, url)
    for index, url in enumerate(LAN):
        await register(node, bob if index < 4 else carol, url)


async def test_a_name_that_turns_inward_is_not_posted_to(start_node, receiver) -> None:
    """Resolved again at each attempt: after registration the name points at
    cloud metadata (DNS rebinding); the POST is refused, not retried."""
    node = await start_node(push_coalesce=0.05, push_allow_private=True)
    names = route(node)
    bob = await node.user("bob", "phone")
    await register(node, bob, receiver.url)
    names["push.test"] = (PUBLIC, "::ffff:169.254.169.254")
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "hello")
    final = await stats(node, lambda s: s.failed >= 1 and s.deliveries == 0)
    assert final.retried == 0 and final.sent == 0 and receiver.arrivals == 0


@pytest.mark.parametrize(
    "body",
    [
        {"endpoint": "ftp://example.org/x"},
        {"endpoint": "http://127.0.0.1:99999/x"},
        {"endpoint": "http://127.0.0.1:abc/x"},
        {"endpoint": "http://127.0.0.1:0/x"},
        {"endpoint": "http://user:pw@127.0.0.1:9/x"},
        {"endpoint": "http://push.test:9/a b"},
        {"endpoint": "http://push.test:9/\x01"},
        {"endpoint": "http://push.test:9/" + "a" * 500},
        {"endpoint": 42},
        {"endpoint": "http://push.test:9/x", "include_text": "yes"},
        {},
    ],
)
async def test_bad_endpoints_are_refused(start_node, body) -> None:
    node = await routed(start_node)
    bob = await node.user("bob")
    with pytest.raises(ClientError) as info:
        await api_call(node.url, "POST", "/api/push", body, bob)
    assert info.value.code == "bad_request" and info.value.status == 400


async def test_limits_and_long_urls(start_node) -> None:
    node = await routed(start_node)
    bob = await node.user("bob", "d" * 64)
    longest = "http://push.test:9/" + "a" * (512 - len("http://push.test:9/"))
    await register(node, bob, longest)
    await register(node, bob, longest, include_text=True)  # replaces, does not add
    for i in range(MAX_ENDPOINTS_PER_DEVICE - 1):
        await register(node, bob, f"http://push.test:9/{i}")
    with pytest.raises(ClientError) as info:
        await register(node, bob, "http://push.test:9/one-too-many")
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
    node = await routed(start_node, data_dir=tmp_path / "n", push_coalesce=0.05)
    await register(node, await node.user("bob", "phone"), receiver.url)
    await node.stop()
    node = await routed(start_node, data_dir=tmp_path / "n", push_coalesce=0.05)
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "after restart")
    await receiver.wait_until(lambda bodies: len(bodies) >= 1)


async def test_rows_of_the_first_layout_and_of_removed_users(start_node, tmp_path) -> None:
    node = await routed(
        start_node,
        data_dir=tmp_path / "n",
    )
    bob = await node.user("bob", "phone")
    await register(node, await node.user("carol", "phone"), "http://push.test:9/c")
    store = node.node.store
    uid = store.get_user("bob").uid
    legacy = "http://push.test:9/old"

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
    node = await routed(
        start_node,
        data_dir=tmp_path / "n",
    )
    rows = node.node.store.read(
        lambda view: list(view.txn.cursor(db=view.db("push_endpoints")).iternext())
    )
    assert rows == []


async def test_identical_endpoints_count_once(start_node, receiver) -> None:
    """One URL registered by 4 devices of bob and by carol: one POST each time."""
    node = await routed(start_node, push_coalesce=0.05)
    for device in ("a", "b", "c", "d"):
        await register(node, await node.user("bob", device), receiver.url)
    await register(node, await node.user("carol", "phone"), receiver.url)
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "one")
        await stats(node, lambda s: s.sent >= 1 and s.deliveries == 0)
        await a.send_many([("bob", "two", None), ("carol", "three", None)])
        final = await stats(node, lambda s: s.notified >= 3 and s.sent >= 2 and s.deliveries == 0)
    # Without the fold: 5 POSTs for the first message, 5 more for the next two.
    # bob's and carol's windows may close together: one POST carries the newer.
    assert final.sent in (2, 3) and len(receiver.posts) == final.sent
    first = receiver.bodies[0]
    assert first["user"] == "bob" and first["count"] == 1 and "text" not in first


async def test_posts_to_one_host_are_bounded_node_wide(start_node, receiver) -> None:
    """The reflector: 36 endpoints of two users under three names of one host,
    several messages each. Only the host's burst is POSTed; the rest waits for
    a turn (bounded per host, oldest dropped), folding newer notifications in."""
    node = await start_node(
        push_coalesce=0.05, push_host_rate=0.001, push_host_burst=4, push_host_pending=8
    )
    route(node, {"b.test": (PUBLIC,), "c.test": (PUBLIC,)})
    urls = [
        receiver.url_at(host, f"/push/{i}")
        for i, host in enumerate(["push.test", "b.test", "c.test"] * 12)
    ]
    for device in range(8):  # 4 endpoints per device, 32 per user
        token = await node.user("bob", f"d{device}")
        for url in urls[device * 4 : device * 4 + 4]:
            await register(node, token, url)
    carol = await node.user("carol", "phone")
    for url in urls[32:]:
        await register(node, carol, url)
    async with connect(node.url, await node.user("alice")) as a:
        for n in range(5):
            await a.send_many([("bob", f"b{n}", None), ("carol", f"c{n}", None)])
            await stats(node, lambda s, n=n: s.notified >= 2 * (n + 1))
    final = await stats(node, lambda s: s.waiting == 8 and s.deliveries == 8 and s.sent == 4)
    assert receiver.arrivals == 4 and final.hosts == 1 and final.failed == 0
    assert final.dropped >= 36 - 4 - 8


async def test_failures_back_off_per_host(start_node, receiver) -> None:
    """A failing host gets one POST, then the whole host waits out its back-off:
    8 endpoints on it are not retried each on their own."""
    node = await routed(
        start_node, push_coalesce=0.05, push_host_concurrency=1, push_backoff_min=60
    )
    receiver.statuses = [503] * 50
    bob = await node.user("bob", "phone")
    for device in ("phone", "tablet"):
        token = bob if device == "phone" else await node.user("bob", device)
        for i in range(4):
            await register(node, token, receiver.url_at("push.test", f"/push/{device}{i}"))
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "down?")
    final = await stats(node, lambda s: s.host_backoffs >= 1 and s.waiting == 8)
    assert receiver.arrivals == 1 and final.retried == 1 and final.sent == 0


async def test_a_host_recovers_after_its_back_off(start_node, receiver) -> None:
    node = await routed(
        start_node, push_coalesce=0.05, push_host_concurrency=1, push_backoff_min=0.1
    )
    receiver.statuses = [503]
    bob = await node.user("bob", "phone")
    for i in range(4):
        await register(node, bob, receiver.url_at("push.test", f"/push/{i}"))
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "back soon")
    final = await stats(node, lambda s: s.sent >= 4 and s.deliveries == 0)
    assert [status for status, _ in receiver.posts] == [503, 200, 200, 200, 200]
    assert final.host_backoffs == 1 and final.retried == 1 and final.failed == 0


async def test_a_failed_push_is_logged_with_its_host_only(
    start_node, receiver, json_log: JsonLog
) -> None:
    node = await routed(start_node, push_coalesce=0.05)
    bob = await node.user("bob", "phone")
    url = receiver.url + "/secret-token-in-the-path"
    await register(node, bob, url)
    receiver.statuses = [400]
    async with connect(node.url, await node.user("alice")) as a:
        await a.send("bob", "bad")
    await stats(node, lambda s: s.failed >= 1)
    failed = await json_log.wait_for("push_failed")
    assert failed["reason"] == "HTTP 400" and failed["host"] in receiver.url
    assert "secret-token" not in json_log.path.read_text()
