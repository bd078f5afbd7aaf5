"""One device's WebSocket session: auth, requests, the sync stream, the send queue.

Tasks of a session live in its own nursery:

* the *reader* decodes messages, answers requests, and hands sends to the
  store without waiting for their commit (pipelining). Each message is
  validated into requests at once and its raw frames dropped, so nothing
  decoded outlives the message's own requests across an await (a message
  waiting for its read budget holds no batch). The decoding work is charged to the
  account's read budget (node/readbudget.py); an account in debt is read no
  further until it has paid;
* no task per send and no *replier*: the store's commit callback answers
  each send (``_PendingSend``), in arrival order, on the trio thread;
* queue records are read from the last ``seq`` sent, so sync and live
  delivery are one stream with no gap and no duplicate: by the *streamer*
  task while there is a backlog (it runs from a ``sync`` until caught up,
  then ends), and by :meth:`DeviceSession.queue_grew`, called from the
  commit callback, while the stream is caught up;
* the *writer* drains the bounded outgoing queue, batching whatever is
  waiting into one WebSocket message.

A device that stops reading fills its outgoing queue or stalls a send past
``send_timeout``; it is disconnected with ``slow_consumer`` and catches up by
sync when it returns. A device silent past ``heartbeat_deadline`` is dropped.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import (
    Ack,
    Auth,
    Convs,
    Delete,
    Edit,
    GroupOp,
    Heartbeat,
    History,
    PresenceQuery,
    React,
    Read,
    Receipts,
    Request,
    Rid,
    Search,
    Send,
    Sync,
    Typing,
    WireFormat,
    bye_frame,
    decode_message,
    decode_message_counted,
    encode_frame,
    encode_message,
    err_frame,
    frame_rid,
    join_frames,
    ok_frame,
    parse_request,
)
from chinwag.protocol.limits import (
    MAX_BATCH_FRAMES,
    MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_ITEMS,
    MAX_PREAUTH_MESSAGE_BYTES,
    PROTOCOL_VERSION,
)

from .config import NodeConfig
from .hub import Hub
from .identity import NodeIdentity
from .passwords import token_hash
from .ratelimit import TokenBucket
from .readbudget import ReadBudgets, message_cost
from .router import Router
from .store import SendResult, Store
from .websocket import BoundedWebSocket

log = logging.getLogger(__name__)

#: WebSocket close codes.
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
#: Bad frames tolerated from one device before it is disconnected.
MAX_BAD_FRAMES = 20


class _Disconnect(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: A frame of a message that failed validation: its rid (if any) and why.
_Refused: TypeAlias = tuple[Rid | None, ProtocolError]


class _PendingSend:
    """A send handed to the store; the store's callback (this) answers it.

    Sends are answered in arrival order: the session keeps them in a deque
    and replies for the committed ones at its head. No task and no event per
    send: the writer thread's commit callback does it all on the trio thread.
    """

    __slots__ = ("session", "rid", "done", "result", "error")

    def __init__(self, session: DeviceSession, rid: Any) -> None:
        self.session = session
        self.rid = rid
        self.done = False
        self.result: SendResult | None = None
        self.error: ProtocolError | None = None

    def __call__(self, result: SendResult | None, error: ProtocolError | None) -> None:
        self.result, self.error, self.done = result, error, True
        self.session._answer_sends()  # noqa: SLF001


class DeviceSession:
    """Serves one authenticated (or authenticating) device connection."""

    def __init__(
        self,
        ws: WebSocketConnection,
        fmt: WireFormat,
        config: NodeConfig,
        identity: NodeIdentity,
        store: Store,
        hub: Hub,
        router: Router,
        *,
        budgets: ReadBudgets | None = None,
        on_authenticated: Callable[[], None] | None = None,
    ) -> None:
        self._ws = ws
        self._fmt = fmt
        self._config = config
        self._identity = identity
        self._store = store
        self._hub = hub
        self._router = router
        self.user = ""
        self.device = ""
        self._uid = 0
        #: SHA-256 of the token this session authenticated with (for revocation).
        self.token_hash = b""
        self._out_send, self._out_recv = trio.open_memory_channel[dict[str, Any]](
            config.send_queue_frames
        )
        # The stream may hold at most three quarters of the outgoing queue, so
        # replies always find room: a device catching up on a long backlog and
        # sending a request meanwhile is not taken for a slow consumer.
        # (A count and an event made only while waiting, not a trio.Semaphore:
        # this is per connection, and idle connections should stay small.)
        self._stream_cap = max(1, config.send_queue_frames - max(1, config.send_queue_frames // 4))
        self._stream_queued = 0
        self._stream_room: trio.Event | None = None
        #: Sends awaiting their commit, oldest first (at most max_inflight_sends);
        #: made at the first send (memory per idle connection).
        self._inflight: deque[_PendingSend] | None = None
        #: Made only while the reader waits for room in ``_inflight``.
        self._inflight_room: trio.Event | None = None
        #: Set by each ``sync``: where the streamer (re)starts; None once taken.
        self._stream_from: int | None = None
        #: The last ``seq`` queued to the device, and whether a sync started the stream.
        self._sent = 0
        self._streaming = False
        #: Whether the streamer task runs (only while it has a backlog to page
        #: through: an idle session keeps no task for it).
        self._streamer_running = False
        self._bucket = TokenBucket(config.send_rate, config.send_burst, trio.current_time())
        self._bad_frames = 0
        #: Shared by the account's sessions (the app's); else this session's own.
        self._budgets = budgets or ReadBudgets(config.read_rate, config.read_burst)
        #: Tells the listener this connection no longer counts as unauthenticated.
        self._on_authenticated = on_authenticated
        #: WebSocket frames already charged for.
        self._frames_charged = 0
        self._nursery: trio.Nursery | None = None
        self._reason: _Disconnect | None = None
        #: Answers ``group`` frames (node/group_ops.py), set by the app.
        self.group_ops: Any = None
        #: Answers ``convs``/``history``/``read``/``search`` (node/history_ops.py), set by the app.
        self.history_ops: Any = None
        #: Answers ``edit``/``delete``/``react``, fills replies (node/actions.py); set by the app.
        self.action_ops: Any = None
        #: Answers ``typing``/``receipts`` (node/signals.py), set by the app.
        self.signals: Any = None

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            if self.token_hash:  # set only once the token's session slot was claimed
                self._hub.release_token(self.token_hash)

    async def _serve(self) -> None:
        try:
            with trio.fail_after(self._config.handshake_timeout):
                await self._authenticate()
        except trio.TooSlowError:
            await self._close(ErrorCode.TIMEOUT, "no auth frame in time")
            return
        except _Disconnect as exc:
            await self._close(exc.code, exc.message)
            return
        except ConnectionClosed:
            return
        if self._on_authenticated is not None:
            self._on_authenticated()
        self._budgets.attach(self.user, trio.current_time())
        self._hub.device_online(self.user, self.device, self)
        try:
            # Registered first, checked second: a revocation committed while
            # the auth reply was going out is caught here, a later one by revoke().
            if self._store.get_session(self.token_hash) is None:
                self.revoke()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._reason is not None:
                    nursery.cancel_scope.cancel()
                for task in (self._writer, self._reader):
                    nursery.start_soon(self._guarded, task, nursery.cancel_scope)
        finally:
            self._hub.device_offline(self.user, self.device, self)
            self._budgets.detach(self.user, trio.current_time())
        if self._reason is not None:
            log.info("dropping %s/%s: %s", self.user, self.device, self._reason.message)
            await self._close(self._reason.code, self._reason.message)
        else:
            with trio.move_on_after(1):
                await self._ws.aclose()

    async def _guarded(self, task: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
        """Run one of the session's tasks; when any ends, the session ends."""
        try:
            await task()
        except _Disconnect as exc:
            if self._reason is None:
                self._reason = exc
        except ConnectionClosed:
            pass
        finally:
            scope.cancel()

    def revoke(self) -> None:
        """The token was revoked (logout, password change, user removed): end now.

        The session sends ``bye unauthorized`` and closes with 1008.
        """
        self._end(_Disconnect(ErrorCode.UNAUTHORIZED, "session revoked; log in again"))

    async def _close(self, code: ErrorCode, message: str) -> None:
        """Say why (best effort, bounded), then close."""
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self._ws.send_message(encode_message([bye_frame(code, message)], self._fmt))
                await self._ws.aclose(CLOSE_POLICY, f"{code}: {message}"[:120])
            except ConnectionClosed:
                pass

    # ------------------------------------------------------------------ auth
    async def _authenticate(self) -> None:
        data = await self._ws.get_message()
        try:
            frames = decode_message(
                data,
                self._fmt,
                max_bytes=MAX_PREAUTH_MESSAGE_BYTES,
                max_items=MAX_MESSAGE_ITEMS,
            )
            if len(frames) != 1:
                raise ProtocolError(ErrorCode.BAD_FRAME, "send exactly one auth frame first")
            request = parse_request(frames[0])
            if not isinstance(request, Auth):
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "the first frame must be auth")
        except ProtocolError as exc:
            rid = None
            await self._send_now([err_frame(rid, exc)])
            raise _Disconnect(exc.code, exc.message) from exc
        session = self._store.get_session(token_hash(request.token))
        record = None if session is None else self._store.get_user(session.user)
        if session is None or record is None:
            error = ProtocolError(ErrorCode.UNAUTHORIZED, "unknown or revoked token")
            await self._send_now([err_frame(request.rid, error)])
            raise _Disconnect(error.code, error.message)
        digest = token_hash(request.token)
        # Claimed before the ok goes out (no await between check and count),
        # so simultaneous auths cannot pass the bound together.
        if not self._hub.claim_token(digest, self._config.max_sessions_per_token):
            error = ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"this token already holds {self._config.max_sessions_per_token} live "
                "sessions; close one or log in again for a new token",
                retry_after_ms=int(self._config.heartbeat_deadline * 1000),
            )
            await self._send_now([err_frame(request.rid, error)])
            raise _Disconnect(error.code, error.message)
        self.user, self.device = session.user, session.device
        #: Never reused, so an ack of a removed user can touch nothing.
        self._uid = record.uid
        self.token_hash = digest
        # After auth the full message size applies (4 KiB before it).
        self._ws._max_message_size = MAX_MESSAGE_BYTES  # noqa: SLF001
        await self._send_now(
            [
                ok_frame(
                    request.rid,
                    user=self.user,
                    device=self.device,
                    node_id=self._identity.id,
                    node_name=self._identity.name,
                    protocol=PROTOCOL_VERSION,
                    heartbeat_ms=int(self._config.heartbeat_interval * 1000),
                    head=self._store.queue_head(self.user),
                )
            ]
        )

    async def _send_now(self, frames: list[dict[str, Any]]) -> None:
        with trio.move_on_after(self._config.send_timeout):
            await self._ws.send_message(encode_message(frames, self._fmt))

    # ------------------------------------------------------------------ reader
    async def _reader(self) -> None:
        while True:
            with trio.move_on_after(self._config.heartbeat_deadline) as scope:
                data = await self._ws.get_message()
            if scope.cancelled_caught:
                raise _Disconnect(ErrorCode.TIMEOUT, "no heartbeat within the deadline")
            requests, cost = self._decode(data)
            del data  # not held across the awaits below
            wait = self._budgets.charge(self.user, cost, trio.current_time())
            if wait > 0:
                # Over the account's read budget: pay by waiting, unread, so
                # TCP pushes back on the sender and the loop serves others.
                await trio.sleep(wait)
            for request in requests:
                if isinstance(request, tuple):
                    self._reply(err_frame(*request))
                    self._count_bad()
                else:
                    await self._handle_request(request)

    def _decode(self, data: bytes | str) -> tuple[list[Request | _Refused], int]:
        """Validate one message into requests (or refusals) and its cost units."""
        frames_seen = self._ws.frames_received if isinstance(self._ws, BoundedWebSocket) else 1
        fragments = max(1, frames_seen - self._frames_charged)
        self._frames_charged = frames_seen
        try:
            frames, items = decode_message_counted(data, self._fmt, max_items=MAX_MESSAGE_ITEMS)
        except ProtocolError as exc:
            # The pre-scan may have walked up to the item bound before refusing.
            return [(None, exc)], message_cost(len(data), MAX_MESSAGE_ITEMS, fragments)
        requests: list[Request | _Refused] = []
        for frame in frames:
            try:
                requests.append(parse_request(frame))
            except ProtocolError as exc:
                requests.append((frame_rid(frame), exc))
        return requests, message_cost(len(data), items, fragments)

    def _count_bad(self) -> None:
        self._bad_frames += 1
        if self._bad_frames > MAX_BAD_FRAMES:
            raise _Disconnect(ErrorCode.BAD_FRAME, "too many bad frames")

    async def _handle_request(self, request: Request) -> None:
        try:
            await self._dispatch(request)
        except ProtocolError as exc:
            self._reply(err_frame(request.rid, exc))

    async def _dispatch(self, request: Request) -> None:
        if isinstance(request, Send):
            await self._start_send(request)
        elif isinstance(request, Sync):
            head = self._store.queue_head(self.user)
            # The ok goes out before any msg of the (re)started stream.
            self._reply(ok_frame(request.rid, head=head))
            self._stream_from = min(request.after, head)
            self._start_streamer()
        elif isinstance(request, Ack):
            # A soft cursor, written with the next commit (node/store.py).
            self._store.note_ack(self._uid, self.device, request.seq)
            if request.rid is not None:
                self._reply(ok_frame(request.rid))
        elif isinstance(request, Heartbeat):
            if request.rid is not None:
                self._reply(ok_frame(request.rid))
        elif isinstance(request, GroupOp):
            if self.group_ops is None:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "groups are not enabled")
            self._reply(ok_frame(request.rid, **await self.group_ops.handle(self.user, request)))
        elif isinstance(request, Convs | History | Read | Search):
            if self.history_ops is None:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "history is not served here")
            self._reply(
                ok_frame(request.rid, **await self.history_ops.handle(self.user, self, request))
            )
        elif isinstance(request, PresenceQuery):
            if self.group_ops is None:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "presence is not served here")
            self._reply(ok_frame(request.rid, **self.group_ops.presence_query(self.user, request)))
        elif isinstance(request, Edit | Delete | React):
            if self.action_ops is None:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "actions are not served here")
            self._take_send_token()
            fields = await self.action_ops.handle(self.user, self.device, request)
            self._reply(ok_frame(request.rid, **fields))
        elif isinstance(request, Typing | Receipts):
            if self.signals is None:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "live signals are not served here")
            fields = await self.signals.handle(self.user, self, request)
            if request.rid is not None:
                self._reply(ok_frame(request.rid, **fields))
        elif isinstance(request, Auth):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "already authenticated")

    def _take_send_token(self) -> None:
        wait = self._bucket.take(trio.current_time())
        if wait > 0:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                "too many messages; slow down",
                retry_after_ms=max(1, int(wait * 1000)),
            )

    async def _start_send(self, request: Send) -> None:
        self._take_send_token()
        if self.signals is not None:
            self.signals.message_sent(self.user, request.to)  # ends their typing there
        inflight = self._inflight
        if inflight is None:
            inflight = self._inflight = deque()
        # At most max_inflight_sends awaiting commit: back-pressure.
        while len(inflight) >= self._config.max_inflight_sends:
            self._inflight_room = trio.Event()
            await self._inflight_room.wait()
        pending = _PendingSend(self, request.rid)
        inflight.append(pending)
        if request.reply_to is not None:
            # A reply: its body is filled from the user's queue (node/actions.py),
            # then it goes like a group send, awaited by its own task.
            assert self._nursery is not None
            self._nursery.start_soon(self._group_send, request, pending)
            return
        try:
            handed = await self._router.submit_send(
                self.user,
                self.device,
                request.cid,
                request.to,
                request.text,
                pending,
                request.attachments,
            )
        except ProtocolError as exc:
            pending(None, exc)
            return
        if not handed:  # a group send: the groups service awaits its own commits
            assert self._nursery is not None
            self._nursery.start_soon(self._group_send, request, pending)

    async def _group_send(self, request: Send, pending: _PendingSend) -> None:
        try:
            body = None
            if request.reply_to is not None:
                if self.action_ops is None:
                    raise ProtocolError(ErrorCode.BAD_REQUEST, "replies are not served here")
                body = self.action_ops.reply_body(self.user, request.reply_to, request.text)
                if request.attachments:
                    body["attachments"] = [a.to_wire() for a in request.attachments]
            result = await self._router.send(
                self.user,
                self.device,
                request.cid,
                request.to,
                request.text,
                request.attachments,
                body,
            )
        except ProtocolError as exc:
            pending(None, exc)
        else:
            pending(result, None)

    def _answer_sends(self) -> None:
        """Reply to the committed sends at the head of the line, in order.

        Runs on the trio thread, also from the store's commit callback, so it
        never raises: a full outgoing queue ends the session instead. The
        replies of one commit are queued with no checkpoint between them, so
        the writer sends them in one WebSocket message.
        """
        inflight = self._inflight
        while inflight and inflight[0].done:
            pending = inflight.popleft()
            if pending.error is not None:
                frame = err_frame(pending.rid, pending.error)
            else:
                r = pending.result
                assert r is not None
                frame = ok_frame(pending.rid, id=r.id, seq=r.seq, ts=r.ts)
            try:
                self._out_send.send_nowait(frame)
            except trio.WouldBlock:
                reason = _Disconnect(ErrorCode.SLOW_CONSUMER, "send queue full; reconnect and sync")
                self._end(reason)
                return
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
        room = self._inflight_room
        if room is not None:
            self._inflight_room = None
            room.set()

    def _end(self, reason: _Disconnect) -> None:
        """End the session for ``reason`` (from outside its tasks)."""
        if self._reason is None:
            self._reason = reason
        self._end_quietly()

    def _end_quietly(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def offer(self, frame: dict[str, Any]) -> bool:
        """Queue a soft-state frame (presence); dropped, not fatal, when full."""
        try:
            self._out_send.send_nowait(frame)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def _reply(self, frame: dict[str, Any]) -> None:
        try:
            self._out_send.send_nowait(frame)
        except trio.WouldBlock:
            raise _Disconnect(
                ErrorCode.SLOW_CONSUMER, "send queue full; reconnect and sync"
            ) from None

    # ------------------------------------------------------------------ streamer
    def _start_streamer(self) -> None:
        """Run the streamer task unless it runs already (it ends when caught up)."""
        if self._streamer_running or self._nursery is None:
            return
        self._streamer_running = True
        self._nursery.start_soon(self._stream_task)

    async def _stream_task(self) -> None:
        try:
            await self._streamer()
        except _Disconnect as exc:
            self._end(exc)
        except ConnectionClosed:
            self._end_quietly()
        finally:
            self._streamer_running = False

    async def _streamer(self) -> None:
        """Stream the queue after the last ``sync``'s ``after`` until caught up.

        Each ``sync`` (re)starts the stream: the next frame sent is the first
        entry after its ``after``, and the stream goes on from there. Once
        caught up the task ends, with no checkpoint after its last read; live
        entries are then queued by :meth:`queue_grew` from the commit
        callback, which starts the task again for a backlog.
        """
        page = self._config.sync_page
        while True:
            start = self._stream_from
            if start is not None:
                self._stream_from = None
                self._sent, self._streaming = start, True
            if not self._streaming:
                return
            entries = self._store.read_queue_uid(self._uid, self._sent, page)
            if not entries:
                return
            for entry in entries:
                # No checkpoint per frame: the writer then batches the page.
                if self._stream_queued >= self._stream_cap:
                    # Waiting is fine: the queue is in LMDB, not in memory.
                    self._stream_room = trio.Event()
                    await self._stream_room.wait()
                    if self._stream_from is not None:
                        break  # a sync came while we waited: restart from it
                self._stream_queued += 1
                frame = self._router.render(entry.seq, entry.record)
                try:
                    self._out_send.send_nowait(frame)
                except trio.WouldBlock:
                    # Replies took more than their share; wait for the writer.
                    await self._out_send.send(frame)
                self._sent = entry.seq
            # One checkpoint per page, so a long backlog cannot hog the loop.
            await trio.lowlevel.checkpoint()

    def queue_grew(self) -> None:
        """The user's queue grew (the hub calls this from the commit callback).

        While the stream is caught up (no streamer task), queue the new
        entries here, synchronously: no task wakes per message, and a
        sender's ``ok`` and its own copy (queued in the same callback) leave
        in one WebSocket message. More than fits (the stream's share of the
        queue, or a full page) is left to the streamer task, started for it.
        """
        if self._streamer_running or not self._streaming or self._nursery is None:
            return  # the task reads on, or no sync started the stream yet
        page = self._config.sync_page
        entries = self._store.read_queue_uid(self._uid, self._sent, page)
        for entry in entries:
            if self._stream_queued >= self._stream_cap:
                break
            try:
                self._out_send.send_nowait(self._router.render(entry.seq, entry.record))
            except trio.WouldBlock:
                break
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            self._stream_queued += 1
            self._sent = entry.seq
        else:
            if len(entries) < page:
                return
        self._start_streamer()

    # ------------------------------------------------------------------ writer
    def _took(self, frame: dict[str, Any]) -> None:
        """A frame left the outgoing queue; a ``msg`` gives its slot back."""
        if frame.get("t") == "msg":
            self._stream_queued -= 1
            if self._stream_room is not None:
                self._stream_room.set()
                self._stream_room = None

    async def _writer(self) -> None:
        budget = MAX_MESSAGE_BYTES - 1024
        async for frame in self._out_recv:
            self._took(frame)
            encoded = [encode_frame(frame, self._fmt)]
            size = len(encoded[0])
            while len(encoded) < MAX_BATCH_FRAMES and size < budget - MAX_FRAME_BYTES:
                try:
                    another = self._out_recv.receive_nowait()
                except trio.WouldBlock:
                    break
                self._took(another)
                more = encode_frame(another, self._fmt)
                encoded.append(more)
                size += len(more)
            data = join_frames(encoded, self._fmt)
            with trio.move_on_after(self._config.send_timeout) as scope:
                await self._ws.send_message(data)
            if scope.cancelled_caught:
                raise _Disconnect(
                    ErrorCode.SLOW_CONSUMER, "device stopped reading; reconnect and sync"
                )
