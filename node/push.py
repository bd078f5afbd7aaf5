"""Push to offline devices: UnifiedPush-style HTTP(S) endpoints per device.

When a message lands for a user none of whose devices is online, each of the
user's endpoints gets one POST (JSON: type, user, count, from or group; the
text only if that endpoint opted in). A burst is coalesced into one POST per
window; failures are retried with capped exponential back-off; endpoints
answering 404/410 are forgotten. Dialling out resolves at each attempt,
refuses non-global addresses unless the admin allowed them, connects to the
checked address, follows no redirects, and bounds time and response size.
Push runs in its own tasks: delivery never waits for it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import cbor2
import h11
import trio

from chinwag.protocol.envelope import SignedUnit, decode_envelope
from chinwag.protocol.errors import ErrorCode, ProtocolError

from .config import NodeConfig
from .http_api import HttpApi, HttpRequest, HttpResponse, json_response
from .hub import Hub
from .store import Store, WriteTxn

log = logging.getLogger(__name__)

MAX_URL_CHARS = 512
MAX_ENDPOINTS_PER_DEVICE = 4
MAX_ENDPOINTS_PER_USER = 32
MAX_PENDING_USERS = 10_000
MAX_RESPONSE_BYTES = 64 * 1024
MAX_ATTEMPTS = 5
MAX_RETRY_DELAY = 30.0
POST_TIMEOUT = 10.0
CONCURRENT_POSTS = 16


@dataclass(frozen=True)
class Endpoint:
    device: str
    url: str
    include_text: bool


@dataclass
class PushStats:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0
    forgotten: int = 0


def _prefix(uid: int) -> bytes:
    return uid.to_bytes(4, "big")


def _key(uid: int, device: str, url: str) -> bytes:
    return _prefix(uid) + device.encode() + b"\x00" + url.encode()


class PushError(Exception):
    """A delivery attempt failed; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, retry: bool, status: int = 0) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status


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
        self._pending: dict[str, int] = {}  # user -> highest seq any device acknowledged
        self._nursery: trio.Nursery | None = None
        self._posts = trio.CapacityLimiter(CONCURRENT_POSTS)
        self._api: HttpApi | None = None
        self.stats = PushStats()

    def _session(self, request: HttpRequest) -> Any:
        assert self._api is not None
        return self._api.authorized(request)

    def register_routes(self, api: HttpApi) -> None:
        self._api = api
        api.add_route("GET", "/api/push", self.list_endpoints)
        api.add_route("POST", "/api/push", self.add_endpoint)
        api.add_route("DELETE", "/api/push", self.remove_endpoint)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._hub.observe_commits(self._queues_grew)
            task_status.started()
            await trio.sleep_forever()

    # ------------------------------------------------------------ endpoints
    def endpoints(self, user: str) -> list[Endpoint]:
        def fn(view: Any) -> list[Endpoint]:
            record = view.get_user(user)
            if record is None:
                return []
            out = []
            cursor = view.txn.cursor(db=view.db("push_endpoints"))
            prefix = _prefix(record.uid)
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    device, _, url = bytes(key[4:]).partition(b"\x00")
                    item = cbor2.loads(value)
                    out.append(Endpoint(device.decode(), url.decode(), bool(item.get("text"))))
            return out

        return self._store.read(fn)

    async def check_url(self, url: object) -> str:
        if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "an endpoint is an http(s) URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "an endpoint is an http(s) URL")
        await self._resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        return url

    async def _resolve(self, host: str, port: int) -> str:
        """The address to connect to, refusing non-global ones unless allowed."""
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"cannot resolve {host!r}") from exc
        for info in infos:
            address = str(info[4][0])
            if self._config.push_allow_private or ipaddress.ip_address(address).is_global:
                return address
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"{host!r} is a loopback/private address; the admin must allow it "
            "(chinwag run --push-allow-private)",
        )

    async def add_endpoint(self, request: HttpRequest) -> HttpResponse:
        session = self._session(request)
        body = HttpApi.json_body(request)
        url = await self.check_url(body.get("endpoint"))
        include_text = body.get("include_text", False) is True

        def op(w: WriteTxn) -> None:
            uid = w.require_user(session.user).uid
            db = w.db("push_endpoints")
            count = device_count = 0
            cursor = w.txn.cursor(db=db)
            if cursor.set_range(_prefix(uid)):
                for key in cursor.iternext(keys=True, values=False):
                    if not key.startswith(_prefix(uid)):
                        break
                    count += 1
                    device_count += key[4:].startswith(session.device.encode() + b"\x00")
            key = _key(uid, session.device, url)
            if w.txn.get(key, db=db) is None and (
                count >= MAX_ENDPOINTS_PER_USER or device_count >= MAX_ENDPOINTS_PER_DEVICE
            ):
                raise ProtocolError(ErrorCode.TOO_LARGE, "too many push endpoints")
            w.txn.put(key, cbor2.dumps({"text": include_text}), db=db)

        await self._store.transact(op)
        return json_response(
            201, {"endpoint": url, "device": session.device, "include_text": include_text}
        )

    async def remove_endpoint(self, request: HttpRequest) -> HttpResponse:
        session = self._session(request)
        url = HttpApi.json_body(request).get("endpoint")
        if not isinstance(url, str):
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
        def op(w: WriteTxn) -> None:
            record = w.get_user(user)
            if record is not None:
                w.txn.delete(_key(record.uid, device, url), db=w.db("push_endpoints"))

        await self._store.transact(op)

    # ------------------------------------------------------------ notifying
    def _queues_grew(self, users: frozenset[str]) -> None:
        for user in users:
            if user in self._pending or self._hub.is_online(user):
                continue
            if len(self._pending) >= MAX_PENDING_USERS:
                self.stats.dropped += 1
                continue
            if self._nursery is None or not self.endpoints(user):
                continue
            # Count what no device of the user has acknowledged yet.
            acked = max((d.acked for d in self._store.list_devices(user)), default=0)
            self._pending[user] = acked
            self._nursery.start_soon(self._notify_after_window, user)

    async def _notify_after_window(self, user: str) -> None:
        try:
            await trio.sleep(self._config.push_coalesce)
        finally:
            base = self._pending.pop(user, 0)
        if self._hub.is_online(user):
            return
        head = self._store.queue_head(user)
        count = head - base
        if count <= 0:
            return
        latest = self._store.read_queue(user, head - 1, 1)
        summary = self._summary(latest[0].record if latest else b"")
        for endpoint in self.endpoints(user):
            body: dict[str, Any] = {"type": "message", "user": user, "count": count}
            body.update({k: v for k, v in summary.items() if k != "text"})
            if endpoint.include_text and "text" in summary:
                body["text"] = summary["text"]
            assert self._nursery is not None
            self._nursery.start_soon(self._deliver, user, endpoint, body)

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
        if env.text is not None:
            out["text"] = env.text
        return out

    async def _deliver(self, user: str, endpoint: Endpoint, body: dict[str, Any]) -> None:
        delay = 0.5
        for attempt in range(MAX_ATTEMPTS):
            try:
                async with self._posts:
                    await self._post(endpoint.url, body)
                self.stats.sent += 1
                return
            except PushError as exc:
                if exc.status in (404, 410):
                    self.stats.forgotten += 1
                    await self._forget(user, endpoint.device, endpoint.url)
                    return
                if not exc.retry or attempt == MAX_ATTEMPTS - 1:
                    self.stats.failed += 1
                    log.info("push to %s failed: %s", endpoint.url[:80], exc)
                    return
            self.stats.retried += 1
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(MAX_RETRY_DELAY, delay * 2)

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        payload = json.dumps(body).encode()
        try:
            with trio.fail_after(POST_TIMEOUT):
                try:
                    address = await self._resolve(parts.hostname, port)
                except ProtocolError as exc:
                    raise PushError(exc.message, retry=False) from exc
                stream: trio.abc.Stream = await trio.open_tcp_stream(address, port)
                if tls:
                    import ssl

                    stream = trio.SSLStream(
                        stream, ssl.create_default_context(), server_hostname=parts.hostname
                    )
                async with stream:
                    conn = h11.Connection(h11.CLIENT)
                    target = parts.path or "/"
                    if parts.query:
                        target += "?" + parts.query
                    headers = [
                        ("host", parts.netloc),
                        ("content-type", "application/json"),
                        ("content-length", str(len(payload))),
                        ("connection", "close"),
                        ("ttl", "86400"),
                    ]
                    data = conn.send(h11.Request(method="POST", target=target, headers=headers))
                    data = (data or b"") + (conn.send(h11.Data(data=payload)) or b"")
                    data += conn.send(h11.EndOfMessage()) or b""
                    await stream.send_all(data)
                    received = 0
                    while True:
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            chunk = await stream.receive_some(16384)
                            received += len(chunk)
                            if received > MAX_RESPONSE_BYTES:
                                raise PushError("response too large", retry=False)
                            conn.receive_data(bytes(chunk))
                            continue
                        if isinstance(event, h11.Response):
                            status = event.status_code
                            break
                        if isinstance(event, h11.ConnectionClosed):
                            raise PushError("closed without an answer", retry=True)
        except trio.TooSlowError as exc:
            raise PushError("timed out", retry=True) from exc
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            raise PushError(str(exc) or type(exc).__name__, retry=True) from exc
        if 200 <= status < 300:
            return
        # No redirect is followed: a 3xx is a failure like any other 4xx.
        raise PushError(f"HTTP {status}", retry=status >= 500 or status == 429, status=status)
