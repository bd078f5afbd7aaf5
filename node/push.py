"""Push to offline devices: UnifiedPush-style HTTP(S) endpoints per device.

When a message lands for a user none of whose devices is online, each of the
user's endpoints gets one POST (JSON: type, user, count, from or group; the
text only if that endpoint opted in). A burst is coalesced into one POST per
window; endpoints answering 404/410 are forgotten. Dialling out follows the
node's one rule (node/dialcheck.py): resolve at each attempt, refuse the name
if any address is loopback/link-local/special (or private, unless the admin
allowed private ones), connect to the checked address, follow no redirects,
bound time and response size.

Endpoints are URLs users choose, so push must not become an HTTP reflector:
identical endpoint URLs (registered by several devices or users) share one
delivery, and every POST takes a turn in its destination host's lane
(node/push_hosts.py): a token bucket, a concurrency cap and a back-off per
host, shared by every endpoint and user of the node, with a bounded number of
notifications waiting per host.

Push never delays delivery: the commit observer only does in-memory work (and
one short read for a user who has endpoints and is offline); windows are kept
by one scheduler task, and each endpoint URL has at most one delivery task,
into which newer notifications are folded. Windows and deliveries are
bounded; past a bound the oldest is dropped and counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import SplitResult, urlsplit

import cbor2
import h11
import trio

from chinwag.protocol.envelope import SignedUnit, decode_envelope
from chinwag.protocol.errors import ErrorCode, ProtocolError

from .config import NodeConfig
from .dialcheck import Resolver, resolve_for_dial
from .http_api import HttpApi, HttpRequest, HttpResponse, json_response
from .hub import Hub
from .logs import event
from .push_hosts import HostLanes, HostLimits
from .store import Store, WriteTxn

log = logging.getLogger(__name__)

MAX_URL_CHARS = 512
MAX_ENDPOINTS_PER_DEVICE = 4
MAX_ENDPOINTS_PER_USER = 32
#: Users with an open coalescing window; past it the oldest window is dropped.
MAX_PENDING_USERS = 10_000
#: Endpoints with a delivery in progress or waiting to retry; past it the
#: oldest is dropped.
MAX_DELIVERIES = 10_000
MAX_RESPONSE_BYTES = 64 * 1024
MAX_ATTEMPTS = 5
#: Each attempt (resolve, connect, TLS, request, response head) within this.
POST_TIMEOUT = 10.0
#: Resolving an endpoint's host at registration.
RESOLVE_TIMEOUT = 5.0
CONCURRENT_POSTS = 16
#: Opted-in text is cut to this many UTF-8 bytes (push services take ~4 KiB).
MAX_PUSH_TEXT_BYTES = 2048


@dataclass(frozen=True)
class Endpoint:
    device: str
    url: str
    include_text: bool


@dataclass
class PushStats:
    #: POSTs answered 2xx.
    sent: int = 0
    #: Notifications given up (attempts exhausted, 3xx/4xx, refused address).
    failed: int = 0
    #: Attempts that will be retried.
    retried: int = 0
    #: Windows or deliveries dropped because their bound was reached
    #: (``push_host_pending`` included).
    dropped: int = 0
    #: Endpoints deleted after a 404/410 (or whose device is gone).
    forgotten: int = 0
    #: Coalescing windows opened.
    windows: int = 0
    #: Windows that ended with a notification (POSTs queued or folded in).
    notified: int = 0
    #: Deliveries in progress now (one per endpoint URL), waiting ones included.
    deliveries: int = 0
    #: Deliveries waiting for their host's turn now (rate, concurrency, back-off).
    waiting: int = 0
    #: Times a host was put into back-off after a failed attempt.
    host_backoffs: int = 0
    #: Hosts with a lane (node/push_hosts.py).
    hosts: int = 0


# ------------------------------------------------------------------ storage
# push_endpoints: uid(4) | device | 0x00 | sha256(url)[:16] -> cbor {url, text}
# (the URL is hashed so that a 512-character URL and a 64-character device
# fit LMDB's 511-byte key limit). Rows written with the URL itself in the key
# and without "url" in the value are still read and removed.


def _prefix(uid: int) -> bytes:
    return uid.to_bytes(4, "big")


def _key(uid: int, device: str, url: str) -> bytes:
    return _prefix(uid) + device.encode() + b"\x00" + hashlib.sha256(url.encode()).digest()[:16]


def _legacy_key(uid: int, device: str, url: str) -> bytes | None:
    key = _prefix(uid) + device.encode() + b"\x00" + url.encode()
    return key if len(key) <= 511 else None


def _decode_row(key: bytes, value: bytes) -> Endpoint | None:
    device, _, tail = key[4:].partition(b"\x00")
    try:
        item = cbor2.loads(value)
        url = item.get("url")
        if url is None:  # a row of the first layout: the URL is the key's tail
            url = tail.decode()
        return Endpoint(device.decode(), str(url), bool(item.get("text")))
    except (ValueError, AttributeError, cbor2.CBORDecodeError):
        return None


def _rows(txn: Any, db: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    cursor = txn.cursor(db=db)
    if cursor.set_range(prefix):
        for key, value in cursor:
            if not bytes(key).startswith(prefix):
                break
            out.append((bytes(key), bytes(value)))
    return out


# ------------------------------------------------------------ address checks
class DialError(Exception):
    """An attempt failed before or without an HTTP answer.

    ``paced``: the host's lane already backs off for it, so the delivery does
    not wait on its own before the next attempt.
    """

    def __init__(self, message: str, retry: bool, paced: bool = False) -> None:
        super().__init__(message)
        self.retry = retry
        self.paced = paced


def parse_endpoint(url: object) -> tuple[SplitResult, int]:
    """The checked parts and port of an endpoint URL, or ``bad_request``."""
    bad = ProtocolError(
        ErrorCode.BAD_REQUEST,
        f"an endpoint is an http(s) URL of at most {MAX_URL_CHARS} printable ASCII characters",
    )
    if (
        not isinstance(url, str)
        or not 0 < len(url) <= MAX_URL_CHARS
        or not all(33 <= ord(c) < 127 for c in url)
    ):
        raise bad
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    if parts.username is not None or parts.password is not None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "an endpoint URL may not carry credentials")
    try:
        port = parts.port
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "bad port in the endpoint URL") from exc
    if port == 0:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "bad port in the endpoint URL")
    return parts, port or (443 if parts.scheme == "https" else 80)


# ------------------------------------------------------------------ service
@dataclass
class _Window:
    deadline: float
    base: int  # the highest seq any device had acknowledged when it opened


@dataclass(eq=False)
class _Delivery:
    """The one delivery of an endpoint URL, whoever registered it."""

    url: str
    #: The user of the latest body (whose devices coming online end it).
    user: str
    body: dict[str, Any]
    #: The (user, device) registrations of this URL folded into it: a 404/410
    #: forgets them all.
    owners: set[tuple[str, str]] = field(default_factory=set)
    #: A newer body arrived after the current attempt took its copy.
    fresh: bool = True
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class Push:
    """Registers endpoints (HTTP API) and notifies offline users."""

    def __init__(
        self,
        config: NodeConfig,
        store: Store,
        hub: Hub,
        node_label: Callable[[str], str | None],
    ) -> None:
        self._config = config
        self._store = store
        self._hub = hub
        self._node_label = node_label
        #: Users who have (or may have) endpoints: the commit observer's filter.
        self._registered: set[str] = set()
        self._windows: dict[str, _Window] = {}  # oldest (earliest deadline) first
        self._windows_changed = trio.Event()
        #: One delivery per endpoint URL: identical endpoints count once.
        self._deliveries: dict[str, _Delivery] = {}  # oldest first
        self._nursery: trio.Nursery | None = None
        self._posts = trio.CapacityLimiter(CONCURRENT_POSTS)
        self._tls: ssl.SSLContext | None = None
        self._stats = PushStats()
        self._stats_changed = trio.Event()
        self._hosts = HostLanes(
            HostLimits(
                rate=config.push_host_rate,
                burst=config.push_host_burst,
                pending=config.push_host_pending,
                concurrency=config.push_host_concurrency,
                backoff_min=config.push_backoff_min,
                backoff_max=config.push_backoff_max,
            ),
            on_change=self._wake_stats,
        )
        self._api: HttpApi | None = None
        #: Name resolution and TCP connect for POSTs. Tests inject both to
        #: reach a receiver on loopback through a name that resolves to a
        #: global address; the checks of node/dialcheck.py still run.
        self.getaddrinfo: Resolver | None = None
        self.open_tcp_stream: Callable[[str, int], Awaitable[trio.abc.Stream]] = (
            trio.open_tcp_stream
        )

    def _session(self, request: HttpRequest) -> Any:
        assert self._api is not None, "register_routes first"
        return self._api.authorized(request)

    def register_routes(self, api: HttpApi) -> None:
        self._api = api
        api.add_route("GET", "/api/push", self.list_endpoints)
        api.add_route("POST", "/api/push", self.add_endpoint)
        api.add_route("DELETE", "/api/push", self.remove_endpoint)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load who has endpoints, observe commits, run the window scheduler."""
        await self._load()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._hub.observe_commits(self._queues_grew)
            task_status.started()
            await self._schedule_windows()

    # ------------------------------------------------------------ statistics
    def statistics(self) -> PushStats:
        return replace(
            self._stats,
            deliveries=len(self._deliveries),
            waiting=self._hosts.waiting(),
            host_backoffs=self._hosts.backoffs,
            hosts=self._hosts.hosts(),
        )

    async def wait_statistics(self, predicate: Callable[[PushStats], bool]) -> PushStats:
        """Wait until ``predicate`` holds for the statistics (tests, tools)."""
        while not predicate(self.statistics()):
            await self._stats_changed.wait()
        return self.statistics()

    def _count(self, name: str, n: int = 1) -> None:
        setattr(self._stats, name, getattr(self._stats, name) + n)
        self._wake_stats()

    def _wake_stats(self) -> None:
        event, self._stats_changed = self._stats_changed, trio.Event()
        event.set()

    # ------------------------------------------------------------- endpoints
    def endpoints(self, user: str) -> list[Endpoint]:
        def fn(view: Any) -> list[Endpoint]:
            record = view.get_user(user)
            if record is None:
                return []
            rows = _rows(view.txn, view.db("push_endpoints"), _prefix(record.uid))
            return [e for e in (_decode_row(k, v) for k, v in rows) if e is not None]

        return self._store.read(fn)

    async def _load(self) -> None:
        """Fill the filter; delete rows of removed users and devices."""

        def op(w: WriteTxn) -> set[str]:
            db = w.db("push_endpoints")
            users: set[str] = set()
            for key, _ in _rows(w.txn, db, b""):
                name = w.txn.get(key[:4], db=w.db("uid_user"))
                device = key[4:].partition(b"\x00")[0]
                if name is None or w.txn.get(key[:4] + device, db=w.db("devices")) is None:
                    w.txn.delete(key, db=db)
                else:
                    users.add(bytes(name).decode())
            return users

        self._registered = await self._store.transact(op)

    async def check_url(self, url: object) -> str:
        """Validate an endpoint for registration; ``bad_request`` if refused."""
        parts, port = parse_endpoint(url)
        assert isinstance(url, str) and parts.hostname is not None
        try:
            with trio.fail_after(RESOLVE_TIMEOUT):
                await self._resolve(parts.hostname, port)
        except (trio.TooSlowError, OSError) as exc:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"cannot resolve {parts.hostname[:100]!r}"
            ) from exc
        except ProtocolError as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, self._refusal(exc)) from exc
        return url

    async def _resolve(self, host: str, port: int) -> str:
        """The checked address to POST to (node/dialcheck.py's one rule)."""
        return await resolve_for_dial(
            host,
            port,
            allow_private=self._config.push_allow_private,
            getaddrinfo=self.getaddrinfo,
            label="push endpoint",
        )

    def _refusal(self, exc: ProtocolError) -> str:
        if "private" in exc.message and not self._config.push_allow_private:
            return exc.message + " (the admin may allow it: chinwag run --push-allow-private)"
        return exc.message

    async def add_endpoint(self, request: HttpRequest) -> HttpResponse:
        session = self._session(request)
        body = HttpApi.json_body(request)
        include_text = body.get("include_text", False)
        if not isinstance(include_text, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'include_text' is true or false")
        url = await self.check_url(body.get("endpoint"))

        def op(w: WriteTxn) -> None:
            uid = w.require_user(session.user).uid
            db = w.db("push_endpoints")
            key = _key(uid, session.device, url)
            mine = session.device.encode() + b"\x00"
            count = device_count = 0
            for old, value in _rows(w.txn, db, _prefix(uid)):
                device = old[4:].partition(b"\x00")[0]
                if w.txn.get(_prefix(uid) + device, db=w.db("devices")) is None:
                    w.txn.delete(old, db=db)  # its device is gone
                    continue
                found = _decode_row(old, value)
                if found is not None and found.url == url and found.device == session.device:
                    w.txn.delete(old, db=db)  # re-registered: replaced below
                    continue
                count += 1
                device_count += old[4:].startswith(mine)
            if count >= MAX_ENDPOINTS_PER_USER or device_count >= MAX_ENDPOINTS_PER_DEVICE:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"too many push endpoints ({MAX_ENDPOINTS_PER_DEVICE} per device, "
                    f"{MAX_ENDPOINTS_PER_USER} per user)",
                )
            w.txn.put(key, cbor2.dumps({"url": url, "text": include_text}), db=db)

        await self._store.transact(op)
        self._registered.add(session.user)
        return json_response(
            201, {"endpoint": url, "device": session.device, "include_text": include_text}
        )

    async def remove_endpoint(self, request: HttpRequest) -> HttpResponse:
        session = self._session(request)
        url = HttpApi.json_body(request).get("endpoint")
        if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "give the 'endpoint' to remove")
        await self._forget(session.user, session.device, url)
        return json_response(200, {"endpoint": url})

    async def list_endpoints(self, request: HttpRequest) -> HttpResponse:
        session = self._session(request)
        return json_response(
            200,
            {
                "endpoints": [
                    {"endpoint": e.url, "device": e.device, "include_text": e.include_text}
                    for e in self.endpoints(session.user)
                ]
            },
        )

    async def _forget(self, user: str, device: str, url: str) -> None:
        def op(w: WriteTxn) -> bool:
            record = w.get_user(user)
            if record is None:
                return False
            db = w.db("push_endpoints")
            w.txn.delete(_key(record.uid, device, url), db=db)
            legacy = _legacy_key(record.uid, device, url)
            if legacy is not None:
                w.txn.delete(legacy, db=db)
            return bool(_rows(w.txn, db, _prefix(record.uid)))

        if not await self._store.transact(op):
            self._registered.discard(user)

    # ------------------------------------------------------------- windows
    def _queues_grew(self, users: frozenset[str]) -> None:
        """Commit observer (trio thread): open a window per offline user."""
        if self._nursery is None:
            return
        for user in users:
            if user not in self._registered or user in self._windows:
                continue
            if self._hub.is_online(user):
                continue
            if len(self._windows) >= MAX_PENDING_USERS:
                self._windows.pop(next(iter(self._windows)))
                self._count("dropped")
            acked = max((d.acked for d in self._store.list_devices(user)), default=0)
            deadline = trio.current_time() + self._config.push_coalesce
            self._windows[user] = _Window(deadline, acked)
            self._count("windows")
            if len(self._windows) == 1:
                self._windows_changed.set()

    async def _schedule_windows(self) -> None:
        """Close windows in deadline order (the dict's order: one fixed length)."""
        while True:
            if not self._windows:
                self._windows_changed = trio.Event()
                await self._windows_changed.wait()
                continue
            await trio.sleep_until(next(iter(self._windows.values())).deadline)
            now = trio.current_time()
            while self._windows:
                user, window = next(iter(self._windows.items()))
                if window.deadline > now:
                    break
                del self._windows[user]
                try:
                    self._notify(user, window.base)
                except Exception:  # a bug here must not stop push or the node
                    log.exception("push notification for %s failed", user)

    def _notify(self, user: str, base: int) -> None:
        if self._hub.is_online(user):
            return
        head = self._store.queue_head(user)
        count = head - base
        if count <= 0:
            return
        endpoints = self.endpoints(user)
        devices = {d.device for d in self._store.list_devices(user)}
        latest = self._store.read_queue(user, head - 1, 1)
        summary = self._summary(latest[0].record if latest else b"")
        self._count("notified")
        for endpoint in endpoints:
            if endpoint.device not in devices:  # the device was removed
                self._spawn(self._forget_gone, user, endpoint)
                continue
            body: dict[str, Any] = {"type": "message", "user": user, "count": count}
            body.update({k: v for k, v in summary.items() if k != "text"})
            if endpoint.include_text and "text" in summary:
                body["text"] = summary["text"]
            self._enqueue(user, endpoint, body)

    def _summary(self, record: bytes) -> dict[str, Any]:
        try:
            item = cbor2.loads(record)
            env = decode_envelope(SignedUnit.from_wire(item["unit"]).env)
        except Exception:
            return {"kind": "event"}
        sender = env.sender
        out: dict[str, Any] = {
            "from": f"{sender.user}@{self._node_label(sender.node) or sender.node}"
        }
        if env.group is not None:
            host = self._node_label(env.group.host) or env.group.host
            out["group"] = f"#{env.group.name}@{host}"
        if env.kind != "text":
            out["kind"] = env.kind  # an edit or a reaction (issue 17)
        text = env.text
        if text is not None:
            cut = text.encode("utf-8")[:MAX_PUSH_TEXT_BYTES].decode("utf-8", "ignore")
            out["text"] = cut if cut == text else cut + "…"
        return out

    # ---------------------------------------------------------- deliveries
    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception:  # a bug in one delivery must not stop the node
                log.exception("push task failed")

        assert self._nursery is not None
        self._nursery.start_soon(guarded)

    async def _forget_gone(self, user: str, endpoint: Endpoint) -> None:
        await self._forget(user, endpoint.device, endpoint.url)
        self._count("forgotten")

    def _enqueue(self, user: str, endpoint: Endpoint, body: dict[str, Any]) -> None:
        """Fold ``body`` into the URL's delivery, or start one.

        Keyed by URL alone: the same URL registered by several devices or
        users gets one POST per notification (the newest body), not one per
        registration.
        """
        delivery = self._deliveries.get(endpoint.url)
        if delivery is not None:
            delivery.body, delivery.user, delivery.fresh = body, user, True
            delivery.owners.add((user, endpoint.device))
            return
        if len(self._deliveries) >= MAX_DELIVERIES:
            self._drop(self._deliveries.pop(next(iter(self._deliveries))))
        delivery = _Delivery(endpoint.url, user, body, {(user, endpoint.device)})
        self._deliveries[endpoint.url] = delivery
        self._wake_stats()
        self._spawn(self._run_delivery, delivery)

    def _drop(self, delivery: _Delivery) -> None:
        delivery.scope.cancel()
        self._count("dropped")

    async def _run_delivery(self, delivery: _Delivery) -> None:
        try:
            with delivery.scope:
                await self._deliver(delivery)
        finally:
            if self._deliveries.get(delivery.url) is delivery:
                del self._deliveries[delivery.url]
                self._wake_stats()

    async def _deliver(self, delivery: _Delivery) -> None:
        """Attempts until the newest body is through, given up, or not needed.

        Failures of the host are paced by its lane (node/push_hosts.py); only
        a name that does not resolve waits here, on its own back-off.
        """
        delay = self._config.push_backoff_min
        attempt = 0
        while delivery.fresh:
            delivery.fresh = False
            attempt += 1
            try:
                status, retry_after = await self._attempt(delivery)
            except _NotNeeded:
                return  # a device came online: it syncs, no need to notify
            except DialError as exc:
                problem, retry, paced, wait = str(exc), exc.retry, exc.paced, None
            else:
                if 200 <= status < 300:
                    self._count("sent")
                    attempt, delay = 0, self._config.push_backoff_min
                    continue  # sends again only if a newer body came meanwhile
                if status in (404, 410):
                    for user, device in sorted(delivery.owners):
                        await self._forget(user, device, delivery.url)
                        self._count("forgotten")
                    return
                # No redirect is followed: a 3xx fails like a 4xx.
                problem, retry = f"HTTP {status}", status >= 500 or status == 429
                paced, wait = True, retry_after
            if not retry or attempt >= MAX_ATTEMPTS:
                self._count("failed")
                # The host only: an endpoint's path often holds its secret token.
                host = urlsplit(delivery.url).hostname or "?"
                log.info(
                    "push notification to %s failed: %s",
                    host,
                    problem,
                    extra=event("push_failed", host=host, reason=problem),
                )
                return
            self._count("retried")
            delivery.fresh = True
            if not paced:
                await trio.sleep(min(self._config.push_backoff_max, wait or delay))
                delay = min(self._config.push_backoff_max, delay * 2)

    async def _attempt(self, delivery: _Delivery) -> tuple[int, float | None]:
        """Resolve, wait for the host's turn, POST; (status, Retry-After)."""
        try:
            parts, port = parse_endpoint(delivery.url)
        except ProtocolError as exc:
            raise DialError(exc.message, retry=False) from exc
        assert parts.hostname is not None
        try:
            with trio.fail_after(RESOLVE_TIMEOUT):
                address = await self._resolve(parts.hostname, port)
        except ProtocolError as exc:  # refused: the name now points inward
            raise DialError(self._refusal(exc), retry=False) from exc
        except (trio.TooSlowError, OSError) as exc:
            raise DialError(f"cannot resolve {parts.hostname[:100]!r}", retry=True) from exc
        async with self._hosts.turn(address, lambda: self._drop(delivery)) as turn:
            if self._hub.is_online(delivery.user):
                raise _NotNeeded
            try:
                async with self._posts:
                    status, retry_after = await self._post(parts, port, address, delivery.body)
            except DialError as exc:
                if exc.retry:
                    turn.failed()
                    exc.paced = True
                raise
            if status >= 500 or status == 429:
                turn.failed(retry_after)
            else:
                turn.succeeded()
            return status, retry_after

    async def _post(
        self, parts: SplitResult, port: int, address: str, body: dict[str, Any]
    ) -> tuple[int, float | None]:
        """One POST to the checked ``address``; (status, Retry-After seconds)."""
        assert parts.hostname is not None
        payload = json.dumps(body).encode()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [
            ("host", parts.netloc),
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("connection", "close"),
            ("ttl", "86400"),
            ("user-agent", "chinwag-push"),
        ]
        try:
            with trio.fail_after(POST_TIMEOUT):
                stream: trio.abc.Stream = await self.open_tcp_stream(address, port)
                if parts.scheme == "https":
                    if self._tls is None:
                        self._tls = ssl.create_default_context()
                    stream = trio.SSLStream(stream, self._tls, server_hostname=parts.hostname)
                async with stream:
                    conn = h11.Connection(h11.CLIENT)
                    data = conn.send(h11.Request(method="POST", target=target, headers=headers))
                    data = (data or b"") + (conn.send(h11.Data(data=payload)) or b"")
                    data += conn.send(h11.EndOfMessage()) or b""
                    await stream.send_all(data)
                    return await _read_status(conn, stream)
        except trio.TooSlowError as exc:
            raise DialError("timed out", retry=True) from exc
        except ssl.SSLCertVerificationError as exc:
            raise DialError(f"TLS: {exc.verify_message}", retry=False) from exc
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            raise DialError(str(exc) or type(exc).__name__, retry=True) from exc


class _NotNeeded(Exception):
    """A device of the user came online while the POST waited: skip it."""


async def _read_status(conn: h11.Connection, stream: trio.abc.Stream) -> tuple[int, float | None]:
    received = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await stream.receive_some(16384)
            received += len(chunk)
            if received > MAX_RESPONSE_BYTES:
                raise DialError("response too large", retry=False)
            conn.receive_data(bytes(chunk))
        elif isinstance(event, h11.Response):
            retry_after = None
            for name, value in event.headers:
                if name == b"retry-after" and value.strip().isdigit():
                    retry_after = float(value.strip())
            return event.status_code, retry_after
        elif isinstance(event, h11.ConnectionClosed):
            raise DialError("closed without an answer", retry=True)
