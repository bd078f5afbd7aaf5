"""The chinwag client library: the HTTP API and the device WebSocket protocol.

Used by the CLI, the tests, the benchmarks and bots. One ``ChatClient`` is
one device connection: it authenticates, heartbeats on the node's interval,
matches replies to requests by ``rid``, and hands ``msg`` frames out through
a bounded channel (dropping ``seq`` at or below what it already handed out).
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import (
    WireFormat,
    decode_message,
    encode_message,
    error_from_frame,
)
from chinwag.protocol.limits import MAX_MESSAGE_BYTES

DEFAULT_TIMEOUT = 15.0
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class ClientError(Exception):
    """A request failed: ``code`` as in the protocol, plus a human message."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_ms: int | None = None

    @classmethod
    def from_protocol(cls, error: ProtocolError) -> ClientError:
        exc = cls(str(error.code), error.message)
        exc.retry_after_ms = error.retry_after_ms
        return exc


class NodeUnreachable(ClientError):
    """The node did not answer at all (refused, timed out, not HTTP, TLS failed)."""


def split_url(url: str) -> tuple[str, int, bool]:
    """The host, port and TLS flag of a node URL (``http(s)://host[:port]``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError("bad_request", f"not a node URL (http://host:port): {url!r}")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError as exc:
        raise ClientError("bad_request", f"bad port in {url!r}") from exc
    return parts.hostname, port, tls


async def http_json(
    url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[int, dict[str, Any]]:
    """One JSON request to a node; returns (status, decoded body)."""
    host, port, tls = split_url(url)
    payload = json.dumps(body).encode() if body is not None else b""
    headers = [("host", f"{host}:{port}"), ("connection", "close"), ("accept", "application/json")]
    if body is not None:
        headers += [("content-type", "application/json"), ("content-length", str(len(payload)))]
    else:
        headers.append(("content-length", "0"))
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    try:
        with trio.fail_after(timeout):
            stream: trio.abc.Stream
            if tls:
                stream = await trio.open_ssl_over_tcp_stream(host, port)
            else:
                stream = await trio.open_tcp_stream(host, port)
            async with stream:
                conn = h11.Connection(h11.CLIENT)
                out = conn.send(h11.Request(method=method, target=path, headers=headers)) or b""
                out += conn.send(h11.Data(data=payload)) if payload else b""
                out += conn.send(h11.EndOfMessage()) or b""
                await stream.send_all(out)
                status, data = 0, bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        chunk = await stream.receive_some(65536)
                        conn.receive_data(bytes(chunk))
                        continue
                    if isinstance(event, h11.Response):
                        status = event.status_code
                    elif isinstance(event, h11.Data):
                        data += event.data
                        if len(data) > MAX_RESPONSE_BYTES:
                            raise ClientError("too_large", "response too large")
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
    except trio.TooSlowError as exc:
        raise NodeUnreachable("timeout", f"no answer from {url} in {timeout:g}s") from exc
    except OSError as exc:
        raise NodeUnreachable("unavailable", f"cannot reach {url}: {exc.strerror or exc}") from exc
    except h11.ProtocolError as exc:
        raise NodeUnreachable("unavailable", f"{url} did not answer HTTP: {exc}") from exc
    except trio.BrokenResourceError as exc:
        # Over https this is the TLS handshake: most often an untrusted certificate.
        reason = exc.__cause__ or "connection broken"
        raise NodeUnreachable("unavailable", f"TLS with {url} failed: {reason}") from exc
    try:
        decoded = json.loads(data or b"{}")
    except ValueError:
        decoded = {}
    if not isinstance(decoded, dict):
        decoded = {}
    return status, decoded


async def api_call(
    url: str, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
) -> dict[str, Any]:
    """Like :func:`http_json` but raises :class:`ClientError` on an error answer."""
    status, data = await http_json(url, method, path, body, token)
    if status >= 400:
        found = data.get("error")
        err: dict[str, Any] = found if isinstance(found, dict) else {}
        raise ClientError(
            str(err.get("code", "error")), str(err.get("message", f"HTTP {status}")), status
        )
    return data


@dataclass(frozen=True)
class LoginResult:
    token: str
    device: str
    user: str
    node_id: str
    node_name: str


async def signup(url: str, user: str, password: str) -> dict[str, Any]:
    return await api_call(url, "POST", "/api/signup", {"user": user, "password": password})


async def login(url: str, user: str, password: str, device: str | None = None) -> LoginResult:
    body: dict[str, Any] = {"user": user, "password": password}
    if device:
        body["device"] = device
    data = await api_call(url, "POST", "/api/login", body)
    return LoginResult(
        token=data["token"],
        device=data["device"],
        user=data["user"],
        node_id=data["node_id"],
        node_name=data["node_name"],
    )


@dataclass(frozen=True)
class SendAck:
    id: int
    seq: int
    ts: int


@dataclass(frozen=True)
class AuthInfo:
    user: str
    device: str
    node_id: str
    node_name: str
    heartbeat_ms: int
    head: int


def ws_url(url: str) -> str:
    host, port, tls = split_url(url)
    shown = f"[{host}]" if ":" in host else host
    return f"{'wss' if tls else 'ws'}://{shown}:{port}/ws"


class ChatClient:
    """One device connection. Use :func:`connect`."""

    def __init__(self, ws: Any, fmt: WireFormat, message_buffer: int) -> None:
        self._ws = ws
        self._fmt = fmt
        self._rids = itertools.count(1)
        self._waiting: dict[Any, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self._msg_send, self.messages = trio.open_memory_channel[dict[str, Any]](message_buffer)
        self.info: AuthInfo | None = None
        #: The session token this connection authenticated with (for the
        #: HTTP endpoints of the same user, e.g. blob uploads).
        self.token = ""
        self.cursor = 0
        self.closed_reason: ProtocolError | None = None
        #: Latest ``presence`` frame per contact (``user@node``).
        self.presence: dict[str, dict[str, Any]] = {}
        self._presence_changed = trio.Event()
        #: Latest ``read`` frame per conversation (another device of ours read it).
        self.reads: dict[str, dict[str, Any]] = {}
        self._read_changed = trio.Event()
        #: Latest ``typing`` frame per (conversation, ``user@node id``), and
        #: merged ``receipt`` state per (conversation, ``user@node id``).
        self.typing_states: dict[tuple[str, str], dict[str, Any]] = {}
        self.receipt_states: dict[tuple[str, str], dict[str, Any]] = {}
        self._signal_changed = trio.Event()
        #: Also called with each ``typing``/``receipt`` frame (on the trio thread).
        self.on_signal: Callable[[dict[str, Any]], None] | None = None
        self._closed = trio.Event()

    # -- requests -----------------------------------------------------------
    async def call_many(
        self, frames: list[dict[str, Any]], timeout: float = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]]:
        """Send frames in one WebSocket message; return their replies, in order."""
        slots = []
        for frame in frames:
            rid = next(self._rids)
            frame["rid"] = rid
            slot: tuple[trio.Event, list[dict[str, Any]]] = (trio.Event(), [])
            self._waiting[rid] = slot
            slots.append((rid, slot))
        try:
            with trio.fail_after(timeout):
                await self._ws.send_message(encode_message(frames, self._fmt))
                replies = []
                for _rid, (event, box) in slots:
                    if not event.is_set():
                        await _wait_either(event, self._closed)
                    if not box:
                        raise self._connection_error()
                    replies.append(box[0])
                return replies
        except trio.TooSlowError as exc:
            raise ClientError("timeout", "no reply from the node in time") from exc
        except ConnectionClosed as exc:
            raise self._connection_error() from exc
        finally:
            for rid, _ in slots:
                self._waiting.pop(rid, None)

    async def call(self, frame: dict[str, Any], timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Send one request; return its ``ok`` frame or raise :class:`ClientError`."""
        (reply,) = await self.call_many([frame], timeout)
        return _check(reply)

    def _connection_error(self) -> ClientError:
        if self.closed_reason is not None:
            return ClientError.from_protocol(self.closed_reason)
        return ClientError("unavailable", "connection to the node closed")

    async def send(
        self,
        to: str,
        text: str,
        cid: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
        reply_to: int | None = None,
    ) -> SendAck:
        """Send a message; returns once the node has made it durable.

        A ``rate_limited`` answer is not an error here: the client waits the
        ``retry_after_ms`` it carries and resends with the same ``cid`` (so a
        lost ``ok`` never duplicates), as often as the node asks. Any other
        error raises :class:`ClientError`.
        """
        frame: dict[str, Any] = {
            "t": "send",
            "to": to,
            "text": text,
            "cid": cid or secrets.token_hex(8),
        }
        if attachments:
            # As the upload answered them (node/blob_client.py upload_file).
            frame["attachments"] = attachments
        if reply_to is not None:
            frame["reply_to"] = reply_to
        while True:
            try:
                reply = await self.call(dict(frame))
            except ClientError as exc:
                if exc.code != ErrorCode.RATE_LIMITED:
                    raise
                await trio.sleep(retry_delay(exc))
                continue
            return SendAck(int(reply["id"]), int(reply["seq"]), int(reply["ts"]))

    async def send_in_order(
        self, to: str, texts: Iterable[str]
    ) -> AsyncIterator[tuple[int, SendAck | ClientError]]:
        """Send ``texts`` to ``to`` one after another; yield ``(index, outcome)``.

        Order is kept under the node's rate limit: exactly one send is in
        flight, and a ``rate_limited`` one is waited out and resent (same
        ``cid``) before the next is sent. Pipelining several would not keep
        it: after one send is refused, a later one already on the wire can be
        accepted once the node's bucket refills, and land first. A send that
        fails otherwise (``too_large``, ``no_such_user``, ...) is yielded as
        its error and the next text goes on.
        """
        for index, text in enumerate(texts):
            try:
                yield index, await self.send(to, text)
            except ClientError as exc:
                if exc.code in (ErrorCode.UNAVAILABLE, "timeout") and self.is_closed:
                    raise  # the connection is gone: nothing after this can go either
                yield index, exc

    async def send_many(
        self, items: list[tuple[str, str, str | None]]
    ) -> list[SendAck | ClientError]:
        """Pipeline several sends ``(to, text, cid)`` in one WebSocket message."""
        frames: list[dict[str, Any]] = []
        for to, text, cid in items:
            frame = {"t": "send", "to": to, "text": text}
            if cid is not None:
                frame["cid"] = cid
            frames.append(frame)
        out: list[SendAck | ClientError] = []
        for reply in await self.call_many(frames):
            try:
                ok = _check(reply)
                out.append(SendAck(int(ok["id"]), int(ok["seq"]), int(ok["ts"])))
            except ClientError as exc:
                out.append(exc)
        return out

    async def edit(self, msg_id: int, text: str) -> SendAck:
        """Replace the text of the user's own message ``msg_id`` everywhere."""
        return _action_ack(await self.call({"t": "edit", "id": msg_id, "text": text}))

    async def delete(self, msg_id: int) -> SendAck:
        """Delete the user's own message ``msg_id`` for everyone."""
        return _action_ack(await self.call({"t": "delete", "id": msg_id}))

    async def react(self, msg_id: int, emoji: str, remove: bool = False) -> SendAck:
        """Add (or ``remove``) a reaction to message ``msg_id``."""
        frame: dict[str, Any] = {"t": "react", "id": msg_id, "emoji": emoji}
        if remove:
            frame["remove"] = True
        return _action_ack(await self.call(frame))

    async def group(self, op: str, **fields: Any) -> dict[str, Any]:
        """A ``group`` request: create, add, remove, leave, rename, list, members."""
        return await self.call({"t": "group", "op": op, **fields})

    async def convs(self, limit: int | None = None, before: int | None = None) -> dict[str, Any]:
        """One page of conversations, newest first: ``{convs: [...], next?}``."""
        return await self.call(_paged({"t": "convs"}, limit, before))

    async def history(
        self,
        conv: str,
        limit: int | None = None,
        before: int | None = None,
        *,
        after: int | None = None,
        around: int | None = None,
    ) -> dict[str, Any]:
        """One page of ``conv``'s messages, newest first: ``{conv, msgs, next?,
        newer?}`` (``after``/``around``: the page above or centred on a seq)."""
        frame = _paged({"t": "history", "conv": conv}, limit, before)
        if after is not None:
            frame["after"] = after
        if around is not None:
            frame["around"] = around
        return await self.call(frame)

    async def read(self, conv: str, seq: int) -> dict[str, Any]:
        """Move the read marker of ``conv`` to ``seq``: ``{conv, read_seq, unread}``."""
        return await self.call({"t": "read", "conv": conv, "seq": seq})

    async def search(
        self,
        q: str,
        conv: str | None = None,
        limit: int | None = None,
        before: int | None = None,
    ) -> dict[str, Any]:
        """Messages holding every word of ``q``, newest first: ``{hits: [{conv, msg}], next?}``."""
        frame: dict[str, Any] = {"t": "search", "q": q}
        if conv is not None:
            frame["conv"] = conv
        return await self.call(_paged(frame, limit, before))

    async def typing(self, conv: str, state: str) -> None:
        """Say the user is typing in ``conv`` (``start``) or stopped; no reply."""
        frame = {"t": "typing", "conv": conv, "state": state}
        await self._ws.send_message(encode_message([frame], self._fmt))

    async def receipts(self, conv: str) -> dict[str, Any]:
        """The receipt state of ``conv``: ``{conv, read_receipts, receipts: [...]}``."""
        return await self.call({"t": "receipts", "conv": conv})

    async def wait_signal(
        self, check: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Wait until ``check()`` holds, re-checked at each ``typing``/``receipt`` frame."""
        with trio.fail_after(timeout):
            while not check():
                await self._signal_changed.wait()

    async def wait_read(
        self, conv: str, read_seq: int, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Wait until a ``read`` frame says ``conv`` is read up to ``read_seq`` (or past)."""
        with trio.fail_after(timeout):
            while self.reads.get(conv, {}).get("read_seq", -1) < read_seq:
                await self._read_changed.wait()
            return self.reads[conv]

    async def sync(self, after: int) -> int:
        """Start the stream after ``after``; returns the queue head at that moment."""
        self.cursor = max(self.cursor, after)
        reply = await self.call({"t": "sync", "after": after})
        return int(reply["head"])

    async def ack(self, seq: int) -> None:
        await self._ws.send_message(encode_message([{"t": "ack", "seq": seq}], self._fmt))

    async def wait_presence(
        self, address: str, status: str, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Wait until a ``presence`` frame says ``address`` has ``status``."""
        with trio.fail_after(timeout):
            while self.presence.get(address, {}).get("status") != status:
                await self._presence_changed.wait()
            return self.presence[address]

    def presence_changed(self) -> trio.Event:
        """An event set by the next ``presence`` frame (read :attr:`presence` after)."""
        return self._presence_changed

    def read_changed(self) -> trio.Event:
        """An event set by the next ``read`` frame (read :attr:`reads` after)."""
        return self._read_changed

    @property
    def is_closed(self) -> bool:
        """True once the connection has ended."""
        return self._closed.is_set()

    async def next_message(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        with trio.fail_after(timeout):
            return await self.messages.receive()

    # -- background ---------------------------------------------------------
    async def _reader(self) -> None:
        try:
            while True:
                data = await self._ws.get_message()
                for frame in decode_message(data, self._fmt, max_bytes=MAX_MESSAGE_BYTES):
                    await self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            self._closed.set()
            await self._msg_send.aclose()

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("t")
        if kind == "msg":
            seq = frame.get("seq")
            if isinstance(seq, int) and seq > self.cursor:
                self.cursor = seq
                await self._msg_send.send(frame)
        elif kind in ("ok", "err"):
            slot = self._waiting.get(frame.get("rid"))
            if slot is not None:
                slot[1].append(frame)
                slot[0].set()
        elif kind == "presence":
            user = frame.get("user")
            if isinstance(user, dict):
                self.presence[f"{user.get('u')}@{user.get('name') or user.get('n')}"] = frame
                event, self._presence_changed = self._presence_changed, trio.Event()
                event.set()
        elif kind == "read":
            conv = frame.get("conv")
            if isinstance(conv, str):
                self.reads[conv] = frame
                event, self._read_changed = self._read_changed, trio.Event()
                event.set()
        elif kind in ("typing", "receipt"):
            self._on_signal(frame)
        elif kind == "bye":
            self.closed_reason = error_from_frame(frame)

    def _on_signal(self, frame: dict[str, Any]) -> None:
        conv, user = frame.get("conv"), frame.get("user")
        if not isinstance(conv, str) or not isinstance(user, dict):
            return
        key = (conv, f"{user.get('u')}@{user.get('n')}")
        if frame["t"] == "typing":
            self.typing_states[key] = frame
        else:
            merged = self.receipt_states.setdefault(key, {})
            for field in ("delivered_id", "read_id"):
                value = frame.get(field)
                if isinstance(value, int) and value > merged.get(field, 0):
                    merged[field] = value
        event, self._signal_changed = self._signal_changed, trio.Event()
        event.set()
        if self.on_signal is not None:
            self.on_signal(frame)

    async def _heartbeat(self, interval: float) -> None:
        frame = encode_message([{"t": "heartbeat"}], self._fmt)
        while True:
            await trio.sleep(interval)
            try:
                await self._ws.send_message(frame)
            except ConnectionClosed:
                return


#: Waited when a ``rate_limited`` answer carries no ``retry_after_ms``.
DEFAULT_RETRY_MS = 100


def _action_ack(reply: dict[str, Any]) -> SendAck:
    return SendAck(int(reply["id"]), int(reply["seq"]), int(reply["ts"]))


def retry_delay(error: ClientError) -> float:
    """Seconds to wait before resending after ``rate_limited``."""
    return max(1, error.retry_after_ms or DEFAULT_RETRY_MS) / 1000


def _paged(frame: dict[str, Any], limit: int | None, before: int | None) -> dict[str, Any]:
    if limit is not None:
        frame["limit"] = limit
    if before is not None:
        frame["before"] = before
    return frame


def _check(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("t") == "err":
        raise ClientError.from_protocol(error_from_frame(reply))
    return reply


async def _wait_either(a: trio.Event, b: trio.Event) -> None:
    async with _single_errors(), trio.open_nursery() as nursery:

        async def waiter(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(waiter, a)
        nursery.start_soon(waiter, b)


@asynccontextmanager
async def open_ws(url: str, **kwargs: Any) -> AsyncIterator[Any]:
    """``open_websocket_url`` that always releases its socket.

    trio-websocket's client leaves the TCP stream open when the *server*
    ends the close handshake first (it waits for a TCP close it then never
    performs), so we close the stream ourselves on the way out.
    """
    ws = None
    try:
        async with open_websocket_url(url, **kwargs) as ws:
            yield ws
    finally:
        if ws is not None:
            await trio.aclose_forcefully(ws._stream)  # noqa: SLF001


@asynccontextmanager
async def _single_errors() -> AsyncIterator[None]:
    """Re-raise a nursery's lone exception bare, so callers can catch it by type."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = leaf_exceptions(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def leaf_exceptions(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The non-group exceptions inside a (nested) exception group."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(leaf_exceptions(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@asynccontextmanager
async def connect(
    url: str,
    token: str,
    *,
    fmt: WireFormat = WireFormat.CBOR,
    heartbeat: bool = True,
    message_buffer: int = 4096,
    timeout: float = DEFAULT_TIMEOUT,
) -> AsyncIterator[ChatClient]:
    """Open and authenticate a device connection."""
    try:
        async with open_ws(
            ws_url(url),
            subprotocols=[fmt.value],
            max_message_size=MAX_MESSAGE_BYTES + 1024,
            connect_timeout=timeout,
            disconnect_timeout=2,
            message_queue_size=64,
        ) as ws:
            client = ChatClient(ws, fmt, message_buffer)
            client.token = token
            async with _single_errors(), trio.open_nursery() as nursery:
                nursery.start_soon(client._reader)
                reply = await client.call({"t": "auth", "token": token}, timeout)
                client.info = AuthInfo(
                    user=reply["user"],
                    device=reply["device"],
                    node_id=reply["node_id"],
                    node_name=reply["node_name"],
                    heartbeat_ms=int(reply["heartbeat_ms"]),
                    head=int(reply["head"]),
                )
                if heartbeat:
                    nursery.start_soon(client._heartbeat, client.info.heartbeat_ms / 1000)
                yield client
                nursery.cancel_scope.cancel()
    except HandshakeError as exc:
        raise NodeUnreachable(
            "unavailable", f"WebSocket handshake with {url} failed: {exc}"
        ) from exc
    except OSError as exc:
        raise NodeUnreachable("unavailable", f"cannot reach {url}: {exc.strerror or exc}") from exc


__all__ = [
    "ChatClient",
    "ClientError",
    "NodeUnreachable",
    "ErrorCode",
    "LoginResult",
    "SendAck",
    "api_call",
    "connect",
    "http_json",
    "login",
    "signup",
]
