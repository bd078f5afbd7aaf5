"""The one listener: plain HTTP (the stateless API) and WebSocket on one port.

Each TCP connection starts as HTTP, parsed by h11. A first request that asks
to upgrade to WebSocket on ``/ws`` (devices) or ``/federation`` (peer nodes)
is handed, with the bytes already read, to trio-websocket; anything else is
answered by :class:`~chinwag.node.http_api.HttpApi`, with keep-alive.

Every connection is admitted as *unauthenticated* (node/admission.py) until
the WebSocket handler reports that it authenticated; the oldest idle ones are
dropped when there are more than ``max_unauthenticated``. A request head is
bounded at 16 KiB however it arrives, a declared body over ``max_http_body``
is refused before it is read, and every ``429`` carries ``Retry-After``.
"""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
import trio
from trio_websocket import WebSocketConnection

from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import WireFormat
from chinwag.protocol.handshake import FED_SUBPROTOCOL
from chinwag.protocol.limits import MAX_PREAUTH_MESSAGE_BYTES

from .admission import Admission, AdmissionStats, Ticket
from .config import NodeConfig
from .http_api import HttpApi, HttpRequest, HttpResponse, json_error_response
from .websocket import wrap_server_stream

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
WS_PATHS = ("/ws", "/federation")
#: How long, and how many bytes, a refused upload's remaining body is
#: drained (and dropped) before its connection closes (see _linger).
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 << 20
#: Retry-After (s) of a 429 that names no time of its own (connection caps):
#: a slot frees whenever another connection ends.
DEFAULT_RETRY_AFTER = 1

#: Serves one upgraded WebSocket; calls ``ticket.authenticated()`` once the
#: peer has proven who it is (device ``auth``, federation handshake).
WebSocketHandler = Callable[[WebSocketConnection, WireFormat | None, str, Ticket], Awaitable[None]]


def tls_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The server-side TLS context from ``--tls-cert``/``--tls-key``, if set."""
    if config.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


class _ReplayStream(trio.abc.Stream):
    """A stream that first yields bytes we already read, then the socket's."""

    def __init__(self, prefix: bytes, inner: trio.abc.Stream) -> None:
        self._prefix = prefix
        self._inner = inner
        # Every WebSocket message passes here: once the prefix is out, and for
        # sending always, calls go straight to the socket's stream, with no
        # extra coroutine per call.
        self.send_all = inner.send_all  # type: ignore[method-assign]
        # (A socket gives bytes; other streams, e.g. TLS, go through bytes() below.)
        self._direct = isinstance(inner, trio.SocketStream)
        if not prefix and self._direct:
            self.receive_some = inner.receive_some  # type: ignore[method-assign,assignment]

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            if not self._prefix and self._direct:
                self.receive_some = self._inner.receive_some  # type: ignore[method-assign,assignment]
            return chunk
        return bytes(await self._inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        send_eof = getattr(self._inner, "send_eof", None)
        if send_eof is not None:
            await send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True)
class ServerStats:
    connections: int
    websocket_connections: int
    #: Connections not yet authenticated, and how many were dropped for room.
    admission: AdmissionStats


class Server:
    """Accepts connections and routes each to HTTP or WebSocket."""

    def __init__(self, config: NodeConfig, api: HttpApi, on_websocket: WebSocketHandler) -> None:
        self._config = config
        self._api = api
        self._on_websocket = on_websocket
        self._per_address: Counter[str] = Counter()
        self._connections = 0
        self._websockets = 0
        self._admission = Admission(config.max_unauthenticated)
        self.port: int = 0

    def statistics(self) -> ServerStats:
        return ServerStats(self._connections, self._websockets, self._admission.statistics())

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        tcp = await trio.open_tcp_listeners(self._config.port, host=self._config.host)
        self.port = tcp[0].socket.getsockname()[1]
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp)
        context = tls_context(self._config)
        if context is not None:
            # The TLS handshake runs lazily, on the first read, so it falls
            # under the same handshake_timeout as a slow HTTP head.
            listeners = [trio.SSLListener(t, context, https_compatible=True) for t in tcp]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        if not isinstance(transport, trio.SocketStream):
            return
        try:
            peer = transport.socket.getpeername()[0]
        except OSError:
            return
        self._per_address[peer] += 1
        self._connections += 1
        counted = True

        def uncount() -> None:
            # An authenticated federation link: no longer one of its
            # address's connections (node/admission.py).
            nonlocal counted
            if counted:
                counted = False
                self._release_address(peer)

        try:
            # Cancelled by the admission when this connection is dropped for room.
            with trio.CancelScope() as scope:
                ticket = self._admission.admit(scope)
                ticket.on_link = uncount
                try:
                    await self._serve(stream, peer, ticket)
                finally:
                    self._admission.release(ticket)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError):
            pass  # includes a TLS handshake that failed (plain HTTP to a TLS port)
        except Exception:  # a bug in one connection must not take the node down
            log.exception("connection from %s failed", peer)
        finally:
            self._connections -= 1
            uncount()
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await stream.aclose()

    def _release_address(self, peer: str) -> None:
        self._per_address[peer] -= 1
        if self._per_address[peer] <= 0:
            del self._per_address[peer]

    async def _serve(self, stream: trio.abc.Stream, peer: str, ticket: Ticket) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        first = True
        raw = b""
        over_cap = (
            self._per_address[peer] > self._config.max_connections_per_address
            or self._connections > self._config.max_connections
        )
        while True:
            ticket.busy = False
            # Bytes of the next head already buffered (a pipelined request).
            buffered = len(conn.trailing_data[0])
            with trio.move_on_after(
                self._config.handshake_timeout if first else self._config.http_idle_timeout
            ) as scope:
                event = await self._next_event(conn, stream, raw_sink := bytearray())
            raw += bytes(raw_sink)
            if scope.cancelled_caught or event is None:
                return
            if isinstance(event, h11.Request):
                request = event
            else:
                return
            ticket.busy = True
            # h11 bounds a head only while it is incomplete: one that arrived
            # whole in a single read is measured here.
            if buffered + len(raw_sink) - len(conn.trailing_data[0]) > MAX_HEAD_BYTES:
                await self._respond(
                    conn, stream, json_error_response(431, "too_large", "request head too large")
                )
                return
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
            target = request.target.decode("latin-1")
            path = target.split("?", 1)[0]
            if over_cap:
                await self._respond(
                    conn,
                    stream,
                    json_error_response(
                        429, "rate_limited", "too many connections from your address"
                    ),
                )
                return
            if headers.get("upgrade", "").lower() == "websocket":
                if first and path in WS_PATHS:
                    ticket.busy = False  # until auth, as idle as any waiting connection
                    replay = _ReplayStream(raw, stream)
                    offered = headers.get("sec-websocket-protocol", "")
                    # A WebSocket session lasts for hours: nothing of the HTTP
                    # exchange (h11 state, head, headers) stays alive in this
                    # frame meanwhile (memory per idle connection).
                    del conn, request, event, headers, raw, raw_sink, target
                    await self._upgrade(replay, offered, path, ticket)
                else:
                    await self._respond(
                        conn, stream, json_error_response(404, "not_found", "no WebSocket here")
                    )
                return
            upload = self._api.upload_handler(request.method.decode("ascii", "replace"), path)
            if upload is not None:
                # An upload streams its body to disk (node/blobs.py): it is
                # never read whole here, and its handler refuses it by its
                # Content-Length before reading any of it.
                reader = _BodyReader(self, conn, stream)
                response = await self._api.handle_upload(
                    upload,
                    HttpRequest(
                        method=request.method.decode("ascii", "replace"),
                        path=path,
                        query=target.partition("?")[2],
                        headers=headers,
                        body=b"",
                        peer=peer,
                    ),
                    reader,
                )
                if reader.broken:
                    return
                await self._respond(conn, stream, response)
                # A body left unread (a refusal) cannot be skipped: h11 then
                # refuses the next cycle and the connection closes.
                if conn.their_state is not h11.DONE:
                    await _linger(stream)
                    return
                if conn.our_state is h11.MUST_CLOSE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
                first = False
                raw = b""
                continue
            if _declared_length(headers) > self._config.max_http_body:
                # Refused before reading any of it; h11 cannot skip the body,
                # so the connection closes after the answer.
                await self._respond(
                    conn, stream, json_error_response(413, "too_large", "request body too large")
                )
                return
            # The body gets the same bound as a first request's head, as a
            # whole: a client that stalls or trickles it is cut off.
            with trio.move_on_after(self._config.handshake_timeout) as scope:
                body = await self._read_body(conn, stream)
            if scope.cancelled_caught:
                log.info("closing a connection from %s: request body too slow", peer)
                return
            if body is None:
                await self._respond(
                    conn, stream, json_error_response(413, "too_large", "request body too large")
                )
                return
            response = await self._api.handle(
                HttpRequest(
                    method=request.method.decode("ascii", "replace"),
                    path=path,
                    query=target.partition("?")[2],
                    headers=headers,
                    body=body,
                    peer=peer,
                )
            )
            await self._respond(conn, stream, response)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return
            first = False
            raw = b""

    async def _next_event(
        self, conn: h11.Connection, stream: trio.abc.Stream, raw: bytearray
    ) -> h11.Event | None:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:  # an incomplete head over the cap
                    answer = json_error_response(431, "too_large", "request head too large")
                else:
                    answer = json_error_response(400, "bad_request", "malformed HTTP request")
                await self._respond(conn, stream, answer)
                return None
            if event is h11.NEED_DATA:
                data = bytes(await stream.receive_some(65536))
                raw += data
                if len(raw) > MAX_HEAD_BYTES + self._config.max_http_body:
                    return None
                conn.receive_data(data)
                if not data:
                    return None
                continue
            if event is h11.PAUSED:
                return None
            return event  # type: ignore[return-value]

    async def _read_body(self, conn: h11.Connection, stream: trio.abc.Stream) -> bytes | None:
        body = bytearray()
        while True:
            event = await self._next_event(conn, stream, bytearray())
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._config.max_http_body:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                return None

    async def _respond(
        self, conn: h11.Connection, stream: trio.abc.Stream, response: HttpResponse
    ) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
        ]
        headers.extend(response.headers)
        if response.status == 429 and not any(k.lower() == "retry-after" for k, _ in headers):
            headers.append(("retry-after", str(DEFAULT_RETRY_AFTER)))
        if response.stream is not None:
            await self._respond_stream(conn, stream, response, headers)
            return
        try:
            data = conn.send(h11.Response(status_code=response.status, headers=headers))
            data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return
        with trio.move_on_after(self._config.send_timeout):
            await stream.send_all(data)

    async def _respond_stream(
        self,
        conn: h11.Connection,
        stream: trio.abc.Stream,
        response: HttpResponse,
        headers: list[tuple[str, str]],
    ) -> None:
        """Send ``response.length`` bytes of ``response.stream()`` as they are read;
        each write gets ``send_timeout``, and a stalled reader ends the connection."""
        assert response.stream is not None
        headers[1] = ("content-length", str(response.length))
        try:
            head = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
        except h11.LocalProtocolError:
            return
        await self._send_or_close(stream, head)
        async for chunk in response.stream():
            await self._send_or_close(stream, conn.send(h11.Data(data=chunk)) or b"")
        await self._send_or_close(stream, conn.send(h11.EndOfMessage()) or b"")

    async def _send_or_close(self, stream: trio.abc.Stream, data: bytes) -> None:
        with trio.move_on_after(self._config.send_timeout) as scope:
            await stream.send_all(data)
        if scope.cancelled_caught:
            raise trio.ClosedResourceError("the client stopped reading")

    async def _upgrade(
        self,
        stream: _ReplayStream,
        offered_header: str,
        path: str,
        ticket: Ticket,
    ) -> None:
        offered = [p.strip() for p in offered_header.split(",")]
        fmt: WireFormat | None = None
        subprotocol: str | None = None
        if path == "/federation":
            subprotocol = FED_SUBPROTOCOL if FED_SUBPROTOCOL in offered else None
        else:
            fmt = next(
                (f for name in offered if (f := WireFormat.from_subprotocol(name)) is not None),
                None,
            )
            subprotocol = fmt.value if fmt is not None else None
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(self._config.handshake_timeout) as scope:
                request = await wrap_server_stream(
                    nursery,
                    stream,
                    message_queue_size=4,
                    max_message_size=MAX_PREAUTH_MESSAGE_BYTES,
                    max_fragments=self._config.max_message_fragments,
                )
                if subprotocol is None:
                    refusal = json_error_response(
                        400,
                        "bad_request",
                        "offer subprotocol chinwag.cbor.v1 or chinwag.json.v1 "
                        "(chinwag.fed.v1 on /federation)",
                    )
                    await request.reject(
                        400,
                        extra_headers=[(b"content-type", b"application/json")],
                        body=refusal.body,
                    )
                    nursery.cancel_scope.cancel()
                    return
                ws = await request.accept(subprotocol=subprotocol)
                del request, offered  # not kept for the session's life
            if scope.cancelled_caught:
                nursery.cancel_scope.cancel()
                return
            self._websockets += 1
            try:
                await self._on_websocket(ws, fmt, path, ticket)
            finally:
                self._websockets -= 1
                nursery.cancel_scope.cancel()


class _BodyReader:
    """An upload's body, read from the connection as the handler asks for it.

    Each read waits at most ``http_idle_timeout``; a body that stalls, breaks
    off or is malformed raises ``bad_request`` and marks the connection
    ``broken`` (it closes without an answer: the client is gone or lying).
    """

    def __init__(self, server: Server, conn: h11.Connection, stream: trio.abc.Stream) -> None:
        self._server = server
        self._conn = conn
        self._stream = stream
        self._done = False
        self.broken = False

    async def receive(self) -> bytes:
        if self._done:
            return b""
        conn = self._conn
        if conn.they_are_waiting_for_100_continue:
            # The client holds its body until told to go on (Expect: 100-continue).
            go_on = conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            await self._stream.send_all(go_on)
        with trio.move_on_after(self._server._config.http_idle_timeout) as scope:  # noqa: SLF001
            event = await self._server._next_event(conn, self._stream, bytearray())  # noqa: SLF001
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            self._done = True
            return b""
        self.broken = True
        why = "the upload stalled" if scope.cancelled_caught else "the upload was cut off"
        raise ProtocolError(ErrorCode.BAD_REQUEST, why)


async def _linger(stream: trio.abc.Stream) -> None:
    """After refusing an upload unread: half-close, then drop what the client
    still sends for a moment (bounded in time and bytes, never kept), so that
    it reads the answer rather than a connection reset (browsers send the
    whole body before they look at an early answer)."""
    with trio.move_on_after(LINGER_SECONDS):
        try:
            await stream.send_eof()  # type: ignore[attr-defined]
        except (AttributeError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        dropped = 0
        while dropped < LINGER_BYTES:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                return
            dropped += len(data)


def _declared_length(headers: dict[str, str]) -> int:
    """The request's ``Content-Length`` (h11 has checked its syntax), else 0."""
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else 0
