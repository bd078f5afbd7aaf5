"""One authenticated, sealed federation link: resume, push/ack, keep-alive.

Frames are parsed by :mod:`chinwag.protocol.link` (one
:class:`~chinwag.protocol.link.LinkDirection` per direction); this module does
the I/O around it. How a link ends is a fact of the link (:class:`LinkEnd`),
never an exception that leaves it:

* ``peer``: the peer sent a malformed, unknown or out-of-place frame, or one
  that did not open. Counted as ``bad_frames``; the WebSocket closes with 1008.
* ``local``: this node failed (a commit: disk full, map full, store closing).
  Not the peer's fault; counted as ``local_failures``; closes with 1011 so
  the peer resends from the last acknowledgement after a back-off.
* ``internal``: a bug while handling a frame; logged with its traceback,
  counted as ``internal_errors``; closes with 1011.
* ``remote``: the peer closed with 1008/1011/1013 (it refused us or failed).
* ``closed``: the connection went away or fell silent.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from chinwag.protocol.addresses import node_id_text
from chinwag.protocol.envelope import Verified
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.handshake import LinkCipher, LinkKeys, decode_refusal
from chinwag.protocol.link import (
    MAX_PUSH_ENTRIES,
    MAX_REJECTED,
    Ack,
    BlobChunk,
    BlobRequest,
    BlobUnavailable,
    EntryKind,
    Gossip,
    GossipDigest,
    GossipSummary,
    GroupSync,
    Introductions,
    IntroRequest,
    LinkDirection,
    LinkFrame,
    Ping,
    Pong,
    PresenceUpdate,
    Push,
    PushEntry,
    ReceiptUpdate,
    Rejected,
    Resume,
    Sub,
    TypingUpdate,
    Unsub,
)

from .config import NodeConfig
from .logs import event
from .peers import InboundResult, OutboxEntry, check_signatures
from .ratelimit import TokenBucket

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Unacknowledged outbox entries in flight on one link (several push frames:
#: the receiver checks the signatures of one while it commits another).
WINDOW = 4096
#: Entries per push frame, and the byte budget of one push message.
PUSH_ENTRIES = MAX_PUSH_ENTRIES
PUSH_BYTES = 900 * 1024

#: Pushes of at least this many entries have their signatures checked in a
#: worker thread ahead of the commit; a smaller one (live traffic, a few
#: entries) is checked in the commit itself: the thread hop would cost about
#: as much as it spares the writer.
CHECK_AHEAD_MIN = 8

#: WebSocket close codes a link ends with (RFC 6455).
CLOSE_BAD_FRAME = 1008  # policy violation: the peer broke the protocol
CLOSE_LOCAL = 1011  # internal error here: resend later
CLOSE_TRY_LATER = 1013  # try again later: we are backing off from this peer
_ERROR_CLOSES = (CLOSE_BAD_FRAME, CLOSE_LOCAL, CLOSE_TRY_LATER)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class EndKind(enum.StrEnum):
    CLOSED = "closed"
    PEER = "peer"
    LOCAL = "local"
    INTERNAL = "internal"
    REMOTE = "remote"


@dataclass(frozen=True)
class LinkEnd:
    kind: EndKind
    message: str

    @property
    def is_error(self) -> bool:
        """An end that calls for a back-off before the next link."""
        return self.kind is not EndKind.CLOSED


@dataclass
class PeerStats:
    """Counters shown by ``chinwag status`` for one peer."""

    #: linked | connecting | backing_off | idle (the ``link`` property).
    _link: str = "idle"
    last_error: str = ""
    sent: int = 0
    received: int = 0
    refused: int = 0
    retry_in: float = 0.0
    group_records_sent: int = 0
    #: Frames from this peer that were malformed, unknown or out of place.
    bad_frames: int = 0
    #: Links to this peer ended by a failure of this node (e.g. a commit).
    local_failures: int = 0
    #: Links to this peer ended by a bug here while handling its frames.
    internal_errors: int = 0
    #: Link frames (each WebSocket message on the link) sent and received.
    frames_sent: int = 0
    frames_received: int = 0
    #: Wall time (Unix ms) the link last went up or down; 0: not since start.
    changed_ms: int = 0

    @property
    def link(self) -> str:
        return self._link

    @link.setter
    def link(self, value: str) -> None:
        # Stamped on every crossing between "linked" and the rest, so status
        # can say "up since" / "down since" without every writer of ``link``
        # keeping the time (a property: the counters stay plain attributes).
        if (value == "linked") != (self._link == "linked"):
            self.changed_ms = wall_ms()
        self._link = value


class LinkRegistry(Protocol):
    """What a link needs from the durable peer state (node/peers.py)."""

    def applied_from(self, key: bytes) -> int: ...
    def acked(self, key: bytes) -> int: ...
    def read_outbox(self, key: bytes, after: int, limit: int) -> list[OutboxEntry]: ...
    async def outbox_ack(
        self, key: bytes, upto: int, rejected: list[tuple[int, str]], now_ms: int
    ) -> int: ...
    async def apply_inbound(
        self,
        peer: bytes,
        entries: list[tuple[int, str, object]],
        now_ms: int,
        skip: int | None = None,
        verified: Verified | None = None,
    ) -> InboundResult: ...


class PresenceFrames(Protocol):
    """Where a link hands soft-state frames (node/signals.py SoftLinks:
    presence, typing, receipts)."""

    def on_frame(
        self, key: bytes, frame: Sub | Unsub | PresenceUpdate | TypingUpdate | ReceiptUpdate
    ) -> None: ...


class LinkServices(Protocol):
    """What a link needs from the federation that owns it."""

    def stats_for(self, key: bytes) -> PeerStats: ...
    def outbox_event(self, key: bytes) -> trio.Event: ...
    async def expire(self, key: bytes) -> int: ...
    def gossip_summary(self) -> GossipSummary: ...
    def on_gossip_summary(self, frame: GossipSummary) -> list[Gossip | GossipDigest]: ...
    def on_gossip_digest(self, peer: bytes, frame: GossipDigest) -> list[Gossip | GossipDigest]: ...
    async def learn_gossip(self, frame: Gossip) -> None: ...
    async def on_gsync(self, key: bytes, frame: GroupSync) -> None: ...
    def resync_frames(self, key: bytes, *, again: bool) -> list[GroupSync]: ...
    async def on_intro(self, key: bytes, frame: IntroRequest | Introductions) -> None: ...
    def on_blob(self, key: bytes, frame: BlobRequest | BlobChunk | BlobUnavailable) -> None: ...


class _PeerFault(Exception):
    """The peer broke the protocol (wraps the ProtocolError)."""

    def __init__(self, error: ProtocolError) -> None:
        super().__init__(error.message)
        self.error = error


class _LocalFailure(Exception):
    """This node failed to do its part (wraps the cause)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class LinkClosed(Exception):
    """The link ended while a frame was being sent (peer gone or not reading)."""


class _Refused(Exception):
    """The peer refused the link after our confirm (protocol/handshake.py)."""

    def __init__(self, error: ProtocolError) -> None:
        super().__init__(error.message)
        self.error = error


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProtocolError):
        return f"{exc.code}: {exc.message}"
    return str(exc) or type(exc).__name__


def describe_close(exc: ConnectionClosed) -> LinkEnd:
    """How a link closed by the peer ended."""
    reason = exc.reason
    code = getattr(reason, "code", None)
    text = (getattr(reason, "reason", None) or "")[:200]
    if code in _ERROR_CLOSES:
        return LinkEnd(EndKind.REMOTE, f"peer closed the link ({code}): {text}")
    return LinkEnd(EndKind.CLOSED, f"link closed ({_CLOSE_WORDS.get(code, code)})")


#: Close codes of a link that ended without an error, in words (RFC 6455).
_CLOSE_WORDS = {
    1000: "closed normally",
    1001: "the peer is going away",
    1006: "connection lost",
    None: "no close code",
}


class Link:
    """One authenticated, sealed link to a peer."""

    def __init__(
        self,
        ws: WebSocketConnection,
        keys: LinkKeys,
        dialer: bytes,
        *,
        config: NodeConfig,
        registry: LinkRegistry,
        services: LinkServices,
        presence: PresenceFrames | None,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.ws = ws
        self.peer = keys.peer_key
        self.dialer = dialer
        self._cipher: LinkCipher = keys.cipher
        self._config = config
        self._registry = registry
        self._fed = services
        self._presence = presence
        self._now_ms = now_ms
        self._stats = services.stats_for(self.peer)
        self._in = LinkDirection()
        self._out = LinkDirection()
        self._send_lock = trio.Lock()
        self._acked = 0
        #: The highest oseq the peer said it had applied (its ``resume``).
        self._peer_applied = 0
        self._ack_event = trio.Event()
        #: Messages received on this link (the pinger skips a ping after one).
        self._frames_in = 0
        self._cancel = trio.CancelScope()
        #: Set once the link made progress (an ack either way): resets the back-off.
        self.healthy = trio.Event()
        #: Set when the link is up (resume exchanged).
        self.up = trio.Event()
        self.ended: LinkEnd | None = None
        self._bucket = TokenBucket(config.peer_rate, config.peer_burst, trio.current_time())
        # Inbound pushes flow reader -> checker -> committer, in order: the
        # checker verifies one frame's signatures in a worker thread while
        # the committer commits the frames before it. Bounded: past these
        # the reader stops reading and the peer's window fills.
        depth = max(1, config.link_inbound_frames)
        self._to_check, self._checking = trio.open_memory_channel[Push](max(0, depth // 4))
        self._to_commit, self._committing = trio.open_memory_channel[tuple[Push, Verified]](depth)

    def close(self) -> None:
        self._cancel.cancel()

    # ------------------------------------------------------------ I/O
    async def send(self, frame: LinkFrame) -> None:
        """Send one frame; raises LinkClosed if the peer stopped reading."""
        async with self._send_lock:
            data = self._cipher.seal(self._out.send(frame))
            with trio.move_on_after(self._config.send_timeout) as scope:
                await self.ws.send_message(data)
            if scope.cancelled_caught:
                raise LinkClosed("peer stopped reading")
            self._stats.frames_sent += 1

    async def _receive(self) -> LinkFrame:
        with trio.move_on_after(self._config.link_deadline) as scope:
            data = await self.ws.get_message()
        if scope.cancelled_caught:
            raise LinkClosed("link silent past the deadline")
        self._stats.frames_received += 1
        self._frames_in += 1
        try:
            if not isinstance(data, bytes):
                raise ProtocolError(ErrorCode.BAD_FRAME, "text message on a federation link")
            plain = self._cipher.open(data)
        except ProtocolError as exc:
            # A responder may refuse after our confirm, unsealed, in place of
            # its resume: it had to see our proof before deciding (unknown key).
            refusal = None
            if isinstance(data, bytes) and self._in.state == "awaiting_resume":
                refusal = decode_refusal(data)
            if refusal is not None:
                raise _Refused(refusal) from exc
            raise _PeerFault(exc) from exc
        try:
            return self._in.receive(plain)
        except ProtocolError as exc:
            raise _PeerFault(exc) from exc

    async def _local(self, work: Awaitable[T]) -> T:
        """Run this node's part (a commit); its failure is ours, not the peer's."""
        try:
            return await work
        except (ProtocolError, OSError, RuntimeError) as exc:
            raise _LocalFailure(exc) from exc

    # ------------------------------------------------------------ lifetime
    async def run(self) -> LinkEnd:
        """Serve the link until it ends; never raises but Cancelled."""
        with self._cancel:
            try:
                await self._start()
                async with trio.open_nursery() as nursery:
                    tasks = (self._sender, self._receiver, self._pinger, self._checker)
                    for task in (*tasks, self._committer):
                        nursery.start_soon(self._guard, task, nursery.cancel_scope)
            except Exception as exc:  # every end of a link is recorded
                self._record(exc)
        if self.ended is None:
            self.ended = LinkEnd(EndKind.CLOSED, "link closed here")
        await self._close_ws()
        return self.ended

    async def _start(self) -> None:
        await self.send(Resume(self._registry.applied_from(self.peer)))
        first = await self._receive()
        assert isinstance(first, Resume)  # LinkDirection allows nothing else first
        self._peer_applied = first.applied
        if first.applied > self._registry.acked(self.peer):
            await self._local(
                self._registry.outbox_ack(self.peer, first.applied, [], self._now_ms())
            )
        # Expire what is too old before the sender reads the outbox (the
        # store's writer is FIFO, so a periodic pass submitted earlier has
        # committed too by then): nothing withdrawn is ever pushed.
        await self._local(self._fed.expire(self.peer))
        self._acked = self._registry.acked(self.peer)
        # last_error stays: the most recent failure is still worth seeing
        # (e.g. "local: unavailable: ..." after the link recovered).
        self._stats.link = "linked"
        # A gossip round: records follow only if the two sides hold different ones.
        await self.send(self._fed.gossip_summary())
        # Groups whose records showed a gap ask their host for a snapshot on
        # every new link (an earlier answer may have been lost).
        await self._request_resyncs(again=True)
        self.up.set()

    async def _request_resyncs(self, *, again: bool = False) -> None:
        for frame in self._fed.resync_frames(self.peer, again=again):
            await self.send(frame)

    async def _on_gsync(self, frame: GroupSync) -> None:
        try:
            await self._fed.on_gsync(self.peer, frame)
        except ProtocolError as exc:
            if exc.code in (ErrorCode.FORBIDDEN, ErrorCode.BAD_FRAME, ErrorCode.NOT_FOUND):
                raise _PeerFault(exc) from exc  # asked about a group not hosted here
            raise _LocalFailure(exc) from exc
        except (OSError, RuntimeError) as exc:
            raise _LocalFailure(exc) from exc

    async def _guard(self, fn: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
        try:
            await fn()
        except Exception as exc:  # noqa: BLE001 - every end of a link is recorded
            self._record(exc)
        finally:
            scope.cancel()

    def _record(self, exc: BaseException) -> None:
        """Turn what ended the link into a LinkEnd and count it (first one wins)."""
        if self.ended is not None:
            return
        stats = self._stats
        if isinstance(exc, _PeerFault):
            stats.bad_frames += 1
            end = LinkEnd(EndKind.PEER, f"peer: {_describe(exc.error)}")
        elif isinstance(exc, _LocalFailure):
            stats.local_failures += 1
            end = LinkEnd(EndKind.LOCAL, f"local: {_describe(exc.cause)}")
            log.warning("link to %s reset after a local failure: %s", self._label(), end.message)
        elif isinstance(exc, _Refused):
            end = LinkEnd(EndKind.REMOTE, _describe(exc.error))
        elif isinstance(exc, ConnectionClosed):
            end = describe_close(exc)
        elif isinstance(exc, LinkClosed | trio.BrokenResourceError | trio.ClosedResourceError):
            end = LinkEnd(EndKind.CLOSED, _describe(exc))
        elif isinstance(exc, ExceptionGroup):
            for inner in exc.exceptions:
                self._record(inner)
            return
        else:
            stats.internal_errors += 1
            end = LinkEnd(EndKind.INTERNAL, f"internal: {_describe(exc)}")
            log.error("link to %s failed", self._label(), exc_info=exc)
        self.ended = end
        stats.last_error = end.message

    async def _close_ws(self) -> None:
        assert self.ended is not None
        code = {
            EndKind.PEER: CLOSE_BAD_FRAME,
            EndKind.LOCAL: CLOSE_LOCAL,
            EndKind.INTERNAL: CLOSE_LOCAL,
        }.get(self.ended.kind, 1000)
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self.ws.aclose(code, self.ended.message[:120])

    def _log_refused(self, rejected: list[dict[str, object]]) -> None:
        """Refused entries (forged, mis-attributed, replayed): worth an admin's look."""
        refused = [str(r["code"]) for r in rejected if r["code"] != ErrorCode.NO_SUCH_USER]
        codes = ",".join(sorted(set(refused)))
        peer = node_id_text(self.peer)
        log.warning(
            "refused %d message(s) from %s: %s",
            len(refused),
            self._label(),
            codes,
            extra=event("envelopes_refused", peer=peer, count=len(refused), codes=codes),
        )

    def _label(self) -> str:
        return node_id_text(self.peer)[:12]

    # ------------------------------------------------------------ tasks
    async def _pinger(self) -> None:
        # A side pings only when it heard nothing since its last tick: on an
        # idle link the two sides then take turns, one ping and one pong per
        # interval instead of two of each (an idle full mesh pays that N-1
        # times per node). Each side still pings on its own interval, so a
        # peer with a shorter deadline than ours is never left silent: its
        # longest silence is two intervals, under the three of the deadline.
        interval = self._config.link_interval
        gossip_every = self._config.gossip_interval
        dialled = self.dialer != self.peer
        since_gossip = 0.0
        heard = self._frames_in
        while True:
            await trio.sleep(interval)
            if self._frames_in == heard:
                await self.send(Ping())
            heard = self._frames_in
            since_gossip += interval
            if dialled and since_gossip >= gossip_every:
                # Periodic gossip covers records a link missed (e.g. while a
                # duplicate link was being dropped); idle, it is one hash.
                # The dialling side starts the rounds: one side suffices.
                since_gossip = 0.0
                await self.send(self._fed.gossip_summary())

    async def _sender(self) -> None:
        sent = self._acked
        # What the peer holds contiguously; a hole after it (entries withdrawn
        # by age) is announced with ``skip``.
        pushed = self._peer_applied
        while True:
            wake = self._fed.outbox_event(self.peer)
            if sent - self._acked >= WINDOW:
                await self._ack_event.wait()
                continue
            limit = min(PUSH_ENTRIES, WINDOW - (sent - self._acked))
            entries = self._registry.read_outbox(self.peer, sent, limit)
            if not entries:
                await wake.wait()
                continue
            batch: list[PushEntry] = []
            size = 0
            for entry in entries:
                size += entry.size + 200
                if batch and size > PUSH_BYTES:
                    break
                batch.append(PushEntry(entry.oseq, entry.kind, entry.payload))
                if entry.kind == "gr":
                    self._stats.group_records_sent += 1
            skip = batch[0].oseq - 1 if batch[0].oseq > pushed + 1 else None
            await self.send(Push(tuple(batch), skip))
            sent = pushed = batch[-1].oseq
            self._stats.sent += len(batch)

    async def _receiver(self) -> None:
        while True:
            frame = await self._receive()
            match frame:
                case Push():
                    await self._to_check.send(frame)
                case Ack():
                    await self._on_ack(frame)
                case Ping():
                    await self.send(Pong())
                case Pong():
                    pass
                case Sub() | Unsub() | PresenceUpdate() | TypingUpdate() | ReceiptUpdate():
                    if self._presence is not None:
                        self._presence.on_frame(self.peer, frame)
                case Gossip():
                    await self._fed.learn_gossip(frame)
                case GossipSummary():
                    for reply in self._fed.on_gossip_summary(frame):
                        await self.send(reply)
                case GossipDigest():
                    for reply in self._fed.on_gossip_digest(self.peer, frame):
                        await self.send(reply)
                case GroupSync():
                    await self._on_gsync(frame)
                case IntroRequest() | Introductions():
                    await self._local(self._fed.on_intro(self.peer, frame))
                case BlobRequest() | BlobChunk() | BlobUnavailable():
                    # Handed on without waiting: serving and fetching run in
                    # their own tasks (node/blob_fetch.py).
                    self._fed.on_blob(self.peer, frame)
                case Resume():  # pragma: no cover - LinkDirection refuses a second one
                    raise _PeerFault(ProtocolError(ErrorCode.BAD_FRAME, "resume only once"))

    async def _on_ack(self, frame: Ack) -> None:
        pairs = [(r.oseq, r.code) for r in frame.rejected]
        self._acked = await self._local(
            self._registry.outbox_ack(self.peer, frame.upto, pairs, self._now_ms())
        )
        event, self._ack_event = self._ack_event, trio.Event()
        event.set()
        self.healthy.set()

    async def _checker(self) -> None:
        """Rate-limit each push, then verify its signatures off the event loop."""
        async for frame in self._checking:
            # The per-peer rate limit: a flooding peer is slowed, not served
            # first. The entries' tokens are taken now (into debt if need
            # be), so the wait pays for exactly these and nothing passes twice.
            wait = self._bucket.reserve(trio.current_time(), len(frame.entries))
            if wait > 0:
                await trio.sleep(wait)
            verified = Verified()
            if len(frame.entries) >= CHECK_AHEAD_MIN:
                # Ed25519 releases the GIL: this runs beside the loop and the
                # store's writer. What passes here is only a hint: the commit
                # opens every entry as before and checks anything not in the set.
                entries = [(e.oseq, e.kind, e.payload) for e in frame.entries]
                verified = await trio.to_thread.run_sync(check_signatures, self.peer, entries)
            await self._to_commit.send((frame, verified))

    async def _committer(self) -> None:
        """Commit checked pushes in order, the waiting ones in one transaction."""
        while True:
            frames = [await self._committing.receive()]
            count = len(frames[0][0].entries)
            while count < WINDOW:
                try:
                    nxt = self._committing.receive_nowait()
                except trio.WouldBlock:
                    break
                frames.append(nxt)
                count += len(nxt[0].entries)
                if nxt[0].skip is not None:
                    break  # a skip only opens a batch: commit this one alone next
            if len(frames) > 1 and frames[-1][0].skip is not None:
                await self._commit(frames[:-1])
                frames = frames[-1:]
            await self._commit(frames)

    async def _commit(self, frames: list[tuple[Push, Verified]]) -> None:
        entries: list[tuple[int, str, object]] = []
        verified = Verified() if len(frames) > 1 else frames[0][1]
        for frame, checked in frames:
            entries.extend((e.oseq, e.kind, dict(e.payload)) for e in frame.entries)
            if checked is not verified:
                verified.merge(checked)
        # A failed commit ends the link (nothing was applied, nothing is
        # acked): the peer resends from its last acknowledgement on the next
        # link, after a back-off, instead of pushing into a gap here forever.
        result = await self._local(
            self._registry.apply_inbound(
                self.peer, entries, self._now_ms(), frames[0][0].skip, verified=verified
            )
        )
        self._stats.received += result.stored
        self._stats.refused += result.refused
        if result.refused:
            self._log_refused(result.rejected)
        rejected = [Rejected(int(r["oseq"]), str(r["code"])) for r in result.rejected]
        # One ack names at most MAX_REJECTED refusals: more go in acks before
        # it, each up to its last refused oseq (everything there is applied).
        while len(rejected) > MAX_REJECTED:
            part, rejected = rejected[:MAX_REJECTED], rejected[MAX_REJECTED:]
            await self.send(Ack(part[-1].oseq, tuple(part)))
        await self.send(Ack(result.applied, tuple(rejected)))
        self.healthy.set()
        if any(e.kind == EntryKind.GROUP_RECORD for f, _ in frames for e in f.entries):
            await self._request_resyncs()
