"""The server side of trio-websocket, with a bound on fragments per message.

trio-websocket assembles a message from however many WebSocket frames the
peer splits it into, and bounds only the assembled size. Every frame costs an
event, a handler call and a list append, so a 1 MiB message sent as a million
one-byte fragments kept the event loop busy for seconds while staying under
the size cap. :class:`BoundedWebSocket` counts the frames of the message being
assembled and closes the connection with 1009 (message too big) as soon as
they pass ``max_fragments``, before reading any further. It also counts every
data frame received, so a session can charge the peer for them.

This leans on trio-websocket's internals (``_handle_message_event``, the same
close path it takes for an oversized message); tests/node/test_abuse.py holds
it to that.
"""

from __future__ import annotations

import trio
from trio_websocket import CloseReason, WebSocketConnection, WebSocketRequest
from wsproto import ConnectionType, WSConnection
from wsproto.events import BytesMessage, CloseConnection, TextMessage

CLOSE_TOO_BIG = 1009


class BoundedWebSocket(WebSocketConnection):
    """A server connection that refuses messages in too many fragments."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        message_queue_size: int,
        max_message_size: int,
        max_fragments: int,
    ) -> None:
        super().__init__(
            stream,
            WSConnection(ConnectionType.SERVER),
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
        )
        self.max_fragments = max_fragments
        #: Data frames (fragments) received so far, over the connection's life.
        self.frames_received = 0
        self._fragments = 0

    async def _handle_message_event(self, event: BytesMessage | TextMessage) -> None:
        # wsproto reports a frame in pieces as bytes arrive; count it once, at
        # its end, so a large single-frame message is one fragment.
        if event.frame_finished:
            self.frames_received += 1
            self._fragments += 1
            if self._fragments > self.max_fragments:
                await self._refuse_fragments()
                return
            if event.message_finished:
                self._fragments = 0
        await super()._handle_message_event(event)

    async def _refuse_fragments(self) -> None:
        reason = f"more than {self.max_fragments} fragments in one message"
        self._message_size = 0
        self._message_parts = []
        self._close_reason = CloseReason(CLOSE_TOO_BIG, reason)
        await self._send(CloseConnection(code=CLOSE_TOO_BIG, reason=reason))
        await self._recv_channel.aclose()
        self._reader_running = False


async def wrap_server_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    *,
    message_queue_size: int,
    max_message_size: int,
    max_fragments: int,
) -> WebSocketRequest:
    """trio-websocket's ``wrap_server_stream``, building a :class:`BoundedWebSocket`."""
    connection = BoundedWebSocket(
        stream,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        max_fragments=max_fragments,
    )
    nursery.start_soon(connection._reader_task)  # noqa: SLF001
    return await connection._get_request()  # noqa: SLF001
