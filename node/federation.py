"""Federation links: dial trusted peers, accept proven ones, move outboxes across.

A link is a WebSocket on ``/federation`` (subprotocol ``chinwag.fed.v1``).
After the handshake (``chinwag.protocol.handshake``: both node keys proven,
ephemeral X25519, one ChaCha20-Poly1305 key per direction) every frame is a
sealed CBOR map:

* ``resume {applied}``: sent first by both sides: the highest ``oseq`` of the
  peer's outbox already committed here; the peer resumes after it;
* ``push {entries: [{o: oseq, u: unit}], skip?}``: outbox entries, in order,
  with a window of unacknowledged entries; ``skip`` (the oseq just before the
  first entry) tells the peer that the entries up to it were withdrawn here
  (expired by age, see :meth:`PeerRegistry.expire_outbox`);
* ``ack {upto, rejected: [{oseq, code}]}``: cumulative, after the commit;
* ``ping`` / ``pong``: keep-alive; a link silent past the deadline is dropped.

There is one link per pair of nodes: when two exist, the one dialed by the
lower node key wins. Dialing backs off exponentially with jitter (capped)
and starts again at once when poked (discovery saw the peer, an admin
approved it, or a message was queued for it).
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from chinwag.protocol.address_record import make_record, open_record
from chinwag.protocol.addresses import GroupAddress, node_id_bytes, node_id_text
from chinwag.protocol.codec import decode_cbor, encode_cbor
from chinwag.protocol.envelope import check_public_key
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.handshake import (
    FED_SUBPROTOCOL,
    DialerHandshake,
    LinkCipher,
    LinkKeys,
    ResponderHandshake,
)
from chinwag.protocol.limits import MAX_MESSAGE_BYTES

from .client import open_ws
from .config import NodeConfig
from .dialcheck import open_ws_at, resolve_for_dial, split_url
from .group_sync import GroupSync
from .identity import NodeIdentity
from .peers import BLOCKED, OUTBOX_EXPIRE_PER_PASS, TRUSTED, PeerRecord, PeerRegistry
from .ratelimit import TokenBucket

log = logging.getLogger(__name__)

#: TLS towards a peer on https is not verified: peers use self-signed
#: certificates on a LAN, and the link handshake already proves the peer's
#: pinned key and seals every frame (see protocol/handshake.py).
LINK_TLS = ssl.create_default_context()
LINK_TLS.check_hostname = False
LINK_TLS.verify_mode = ssl.CERT_NONE

#: Unacknowledged outbox entries in flight on one link.
WINDOW = 2048
#: Entries per push frame, and the byte budget of one push message.
PUSH_ENTRIES = 256
PUSH_BYTES = 900 * 1024
#: A link that lived this long (or got an ack) resets the back-off.
HEALTHY_AFTER = 10.0
MAX_BAD_FRAMES = 10
MAX_GOSSIP = 64
MAX_KNOWN_RECORDS = 4096


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class PeerStats:
    """Counters shown by ``chinwag status`` for one peer."""

    link: str = "idle"  # linked | connecting | backing_off | idle
    last_error: str = ""
    sent: int = 0
    received: int = 0
    refused: int = 0
    retry_in: float = 0.0
    group_records_sent: int = 0


class _LinkDown(Exception):
    pass


class Link:
    """One authenticated, sealed link to a peer."""

    def __init__(
        self,
        federation: Federation,
        ws: WebSocketConnection,
        keys: LinkKeys,
        dialer: bytes,
    ) -> None:
        self.fed = federation
        self.ws = ws
        self.peer = keys.peer_key
        self.cipher: LinkCipher = keys.cipher
        self.dialer = dialer
        self._send_lock = trio.Lock()
        self._acked = 0
        #: The highest oseq the peer said it had applied (its ``resume``).
        self._peer_applied = 0
        self._ack_event = trio.Event()
        self._cancel = trio.CancelScope()
        self._bad = 0
        self.healthy = trio.Event()
        cfg = federation.config
        self._bucket = TokenBucket(cfg.peer_rate, cfg.peer_burst, trio.current_time())

    def close(self) -> None:
        self._cancel.cancel()

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self._send(frame)

    async def _send(self, frame: dict[str, Any]) -> None:
        async with self._send_lock:
            data = self.cipher.seal(encode_cbor(frame))
            with trio.move_on_after(self.fed.config.send_timeout) as scope:
                await self.ws.send_message(data)
            if scope.cancelled_caught:
                raise _LinkDown("peer stopped reading")

    async def _receive(self) -> dict[str, Any]:
        with trio.move_on_after(self.fed.config.heartbeat_deadline) as scope:
            data = await self.ws.get_message()
        if scope.cancelled_caught:
            raise _LinkDown("link silent past the deadline")
        if not isinstance(data, bytes):
            raise _LinkDown("text message on a federation link")
        frame = decode_cbor(self.cipher.open(data))
        if not isinstance(frame, dict) or not isinstance(frame.get("t"), str):
            raise ProtocolError(ErrorCode.BAD_FRAME, "a link frame is a map with 't'")
        return frame

    async def run(self) -> None:
        stats = self.fed.stats_for(self.peer)
        with self._cancel:
            await self._send({"t": "resume", "applied": self.fed.registry.applied_from(self.peer)})
            first = await self._receive()
            applied = first.get("applied")
            if first.get("t") != "resume" or not isinstance(applied, int) or applied < 0:
                raise ProtocolError(ErrorCode.BAD_FRAME, "a link starts with resume")
            self._peer_applied = applied
            if applied > self.fed.registry.acked(self.peer):
                await self.fed.registry.outbox_ack(self.peer, applied, [], wall_ms())
            # Expire what is too old before the sender reads the outbox (the
            # store's writer is FIFO, so a periodic pass submitted earlier has
            # committed too by then): nothing withdrawn is ever pushed.
            await self.fed.expire(self.peer)
            self._acked = self.fed.registry.acked(self.peer)
            stats.link = "linked"
            stats.last_error = ""
            await self._send({"t": "gossip", "records": self.fed.gossip_for(self.peer)})
            await self._request_resyncs(again=True)
            if self.fed.presence is not None:
                self.fed.presence.link_up(self.peer)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guard, self._sender, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._receiver, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._pinger, nursery.cancel_scope)

    async def _guard(self, fn: Any, scope: trio.CancelScope) -> None:
        try:
            await fn()
        except (_LinkDown, ConnectionClosed, trio.BrokenResourceError) as exc:
            self.fed.stats_for(self.peer).last_error = str(exc) or type(exc).__name__
        except ProtocolError as exc:
            self.fed.stats_for(self.peer).last_error = f"{exc.code}: {exc.message}"
        finally:
            scope.cancel()

    async def _pinger(self) -> None:
        interval = self.fed.config.heartbeat_interval
        gossip_every = self.fed.config.gossip_interval
        since_gossip = 0.0
        while True:
            await trio.sleep(interval)
            await self._send({"t": "ping"})
            since_gossip += interval
            if since_gossip >= gossip_every:
                # Periodic gossip covers records a link missed (e.g. while a
                # duplicate link was being dropped).
                since_gossip = 0.0
                await self._send({"t": "gossip", "records": self.fed.gossip_for(self.peer)})

    async def _sender(self) -> None:
        registry = self.fed.registry
        stats = self.fed.stats_for(self.peer)
        sent = self._acked
        # What the peer holds contiguously; a hole after it (entries withdrawn
        # by age) is announced with ``skip``.
        pushed = self._peer_applied
        while True:
            wake = self.fed.outbox_event(self.peer)
            if sent - self._acked >= WINDOW:
                await self._ack_event.wait()
                continue
            limit = min(PUSH_ENTRIES, WINDOW - (sent - self._acked))
            entries = registry.read_outbox(self.peer, sent, limit)
            if not entries:
                await wake.wait()
                continue
            batch: list[dict[str, Any]] = []
            size = 0
            for entry in entries:
                size += entry.size + 200
                if batch and size > PUSH_BYTES:
                    break
                batch.append(entry.to_wire())
                if entry.kind == "gr":
                    stats.group_records_sent += 1
            frame: dict[str, Any] = {"t": "push", "entries": batch}
            if batch[0]["o"] > pushed + 1:
                frame["skip"] = batch[0]["o"] - 1
            await self._send(frame)
            sent = pushed = batch[-1]["o"]
            stats.sent += len(batch)

    async def _receiver(self) -> None:
        registry = self.fed.registry
        stats = self.fed.stats_for(self.peer)
        while True:
            try:
                frame = await self._receive()
                kind = frame["t"]
                if kind == "push":
                    await self._on_push(frame)
                elif kind == "ack":
                    upto = frame.get("upto")
                    rejected = frame.get("rejected", [])
                    if not isinstance(upto, int) or not isinstance(rejected, list):
                        raise ProtocolError(ErrorCode.BAD_FRAME, "ack {upto, rejected}")
                    pairs = [
                        (r["oseq"], str(r["code"]))
                        for r in rejected
                        if isinstance(r, dict) and isinstance(r.get("oseq"), int)
                    ]
                    self._acked = await registry.outbox_ack(self.peer, upto, pairs, wall_ms())
                    event, self._ack_event = self._ack_event, trio.Event()
                    event.set()
                    self.healthy.set()
                elif kind == "ping":
                    await self._send({"t": "pong"})
                elif kind == "pong":
                    pass
                elif kind in ("sub", "unsub", "presence"):
                    if self.fed.presence is not None:
                        self.fed.presence.on_frame(self.peer, frame)
                elif kind == "gossip":
                    await self.fed.learn_gossip(frame.get("records"))
                elif kind == "gsync":
                    await self._on_gsync(frame)
                elif kind == "resume":
                    raise ProtocolError(ErrorCode.BAD_FRAME, "resume only once")
                else:
                    raise ProtocolError(ErrorCode.BAD_FRAME, f"unknown link frame {kind[:30]!r}")
            except ProtocolError as exc:
                if exc.code is ErrorCode.BAD_SIGNATURE and "counter" in exc.message:
                    raise
                self._bad += 1
                stats.refused += 1
                stats.last_error = f"{exc.code}: {exc.message}"
                if self._bad > MAX_BAD_FRAMES or exc.code is ErrorCode.BAD_SIGNATURE:
                    raise _LinkDown("peer keeps sending bad frames") from exc

    async def _on_push(self, frame: dict[str, Any]) -> None:
        raw = frame.get("entries")
        if not isinstance(raw, list) or not raw or len(raw) > PUSH_ENTRIES:
            raise ProtocolError(ErrorCode.BAD_FRAME, "push carries 1-256 entries")
        skip = frame.get("skip")
        if skip is not None and (not isinstance(skip, int) or skip < 0):
            raise ProtocolError(ErrorCode.BAD_FRAME, "push skip is an oseq")
        entries: list[tuple[int, str, Any]] = []
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("o"), int):
                raise ProtocolError(ErrorCode.BAD_FRAME, "a push entry is {o, k, u|r}")
            kind = item.get("k", "m")
            if kind not in ("m", "gs", "gl", "gr", "gi", "ga"):
                raise ProtocolError(ErrorCode.BAD_FRAME, "unknown push entry kind")
            payload = item.get("r") if kind == "gr" else item.get("u")
            if not isinstance(payload, dict):
                raise ProtocolError(ErrorCode.BAD_FRAME, "a push entry carries a map")
            entries.append((item["o"], kind, payload))
        # The per-peer rate limit: a flooding peer is slowed, not served first.
        # The entries' tokens are taken now (into debt if need be), so the
        # wait pays for exactly these entries and nothing is let through twice.
        wait = self._bucket.reserve(trio.current_time(), len(entries))
        if wait > 0:
            await trio.sleep(wait)
        result = await self.fed.registry.apply_inbound(self.peer, entries, wall_ms(), skip)
        stats = self.fed.stats_for(self.peer)
        stats.received += result.stored
        stats.refused += result.refused
        await self._send({"t": "ack", "upto": result.applied, "rejected": result.rejected})
        if any(kind == "gr" for _, kind, _ in entries):
            await self._request_resyncs()

    # Group re-sync (node/group_sync.py); the gsync frame joins the link-frame
    # parser when it lands.
    async def _request_resyncs(self, *, again: bool = False) -> None:
        sync = self.fed.group_sync
        if sync is not None:
            for frame in sync.wants_resync(self.peer, self.fed.now_ms(), again=again):
                await self._send(frame)

    async def _on_gsync(self, frame: dict[str, Any]) -> None:
        after = frame.get("after")
        if self.fed.group_sync is None or not isinstance(after, int) or isinstance(after, bool):
            raise ProtocolError(ErrorCode.BAD_FRAME, "gsync {group, after}")
        group = GroupAddress.from_wire(frame.get("group"))
        await self.fed.group_sync.on_gsync_request(self.peer, group, after, self.fed.now_ms())


class Federation:
    """Owns every link, the dialers, and inbound link acceptance."""

    def __init__(self, config: NodeConfig, identity: NodeIdentity, registry: PeerRegistry) -> None:
        self.config = config
        self.identity = identity
        self.registry = registry
        self._links: dict[bytes, Link] = {}
        self._stats: dict[bytes, PeerStats] = {}
        self._outbox_events: dict[bytes, trio.Event] = {}
        self._pokes: dict[bytes, trio.Event] = {}
        self._dialers: set[bytes] = set()
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self._records: dict[bytes, dict[str, bytes]] = {}
        #: The ``ts`` of each record in ``_records``: only a newer one replaces it.
        self._record_ts: dict[bytes, int] = {}
        #: Told of link up/down and handed presence frames (node/presence.py).
        self.presence: Any = None
        #: Asks hosts for group snapshots and answers ``gsync`` (node/group_sync.py).
        self.group_sync: GroupSync | None = None
        #: Where this node can be reached (set once the listener is up).
        self.own_urls: list[str] = []
        #: The wall clock (Unix ms) used to age outbox entries; tests inject one.
        self.now_ms: Callable[[], int] = wall_ms
        #: Name resolution for gossiped URLs (node/dialcheck.py); tests inject one.
        self.getaddrinfo: Any = None

    # ------------------------------------------------------------ bookkeeping
    def stats_for(self, key: bytes) -> PeerStats:
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = PeerStats()
        return stats

    def outbox_event(self, key: bytes) -> trio.Event:
        event = self._outbox_events.get(key)
        if event is None:
            event = self._outbox_events[key] = trio.Event()
        return event

    def outbox_grew(self, node_id: str) -> None:
        """A message was committed to ``node_id``'s outbox."""
        key = node_id_bytes(node_id)
        event = self._outbox_events.pop(key, None)
        if event is not None:
            event.set()
        if key not in self._links:
            self.poke(key)

    def poke(self, key: bytes) -> None:
        """Dial ``key`` now (discovery saw it, an admin approved it, ...)."""
        event = self._pokes.pop(key, None)
        if event is not None:
            event.set()
        record = self.registry.get(key)
        link = self._links.get(key)
        if link is not None and (record is None or record.state != TRUSTED):
            link.close()  # blocked or removed: drop the live link too
        if key not in self._dialers and self._nursery is not None:
            if record is not None and record.state == TRUSTED and record.urls:
                self._dialers.add(key)
                self._nursery.start_soon(self._dial_loop, key)

    async def send_to(self, key: bytes, frame: dict[str, Any]) -> None:
        """Send a frame on the live link to ``key`` (soft state: dropped if none)."""
        link = self._links.get(key)
        if link is not None:
            await link.send_frame(frame)

    def is_linked(self, key: bytes) -> bool:
        return key in self._links

    async def wait_linked(self, key: bytes, linked: bool = True) -> None:
        """Wait until a link to ``key`` is up (or down); callers bound the wait."""
        while (key in self._links) != linked:
            await self._changed.wait()

    def _link_changed(self) -> None:
        event, self._changed = self._changed, trio.Event()
        event.set()

    def peer_status(self) -> list[dict[str, Any]]:
        out = []
        now = self.now_ms()
        for record in self.registry.all():
            stats = self.stats_for(record.key)
            if record.state != TRUSTED:
                link = record.state
            else:
                link = "linked" if record.key in self._links else stats.link
            out.append(
                {
                    "node_id": record.id,
                    "name": record.name,
                    "state": record.state,
                    "link": link,
                    "urls": list(record.urls),
                    "last_error": stats.last_error,
                    "sent": stats.sent,
                    "received": stats.received,
                    "refused": stats.refused,
                    "group_records_sent": stats.group_records_sent,
                    "outbox": self.registry.outbox_depth(record.key),
                    "outbox_bytes": self.registry.outbox_bytes(record.key),
                    "outbox_oldest_s": self._oldest_age(record.key, now),
                }
            )
        return out

    def _oldest_age(self, key: bytes, now: int) -> float | None:
        oldest = self.registry.outbox_oldest_ms(key)
        return None if oldest is None else round(max(0, now - oldest) / 1000, 1)

    # ------------------------------------------------------------ outbox age
    async def expire(self, key: bytes, *, unlinked_only: bool = False) -> int:
        """Withdraw ``key``'s outbox entries older than ``outbox_max_age``.

        Runs in bounded passes (one transaction each) until none is left;
        returns how many were withdrawn. Called at every link attempt, at
        link-up and periodically for peers without a link.
        """
        max_age_ms = int(self.config.outbox_max_age * 1000)
        oldest = self.registry.outbox_oldest_ms(key)
        if oldest is None or oldest > self.now_ms() - max_age_ms:
            return 0  # a cheap read: nothing to expire, no write
        total = 0
        while True:
            if unlinked_only and key in self._links:
                return total  # the link expires its own outbox when it starts
            try:
                count = await self.registry.expire_outbox(key, self.now_ms(), max_age_ms)
            except ProtocolError as exc:
                log.info("outbox expiry for %s failed: %s", node_id_text(key)[:12], exc.message)
                return total
            total += count
            if count < OUTBOX_EXPIRE_PER_PASS:
                return total

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(self.config.outbox_prune_interval)
            for record in self.registry.all():
                # A linked peer's outbox is moving; the link expires at its start.
                await self.expire(record.key, unlinked_only=True)

    # ------------------------------------------------------------ gossip
    def gossip_for(self, peer: bytes) -> list[dict[str, bytes]]:
        """Our own signed address record, and those of the trusted peers we know."""
        records = (
            [make_record(self.identity.key, self.own_urls, wall_ms())] if self.own_urls else []
        )
        trusted = {p.key for p in self.registry.all() if p.state == TRUSTED}
        for key, record in self._records.items():
            if key != peer and key in trusted and len(records) < MAX_GOSSIP:
                records.append(record)
        return records

    async def learn_gossip(self, records: object) -> None:
        """Addresses spread, trust does not: new nodes are only ``pending``."""
        if not isinstance(records, list) or len(records) > MAX_GOSSIP:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"gossip carries at most {MAX_GOSSIP}")
        for item in records:
            try:
                record = open_record(item)
            except ProtocolError:
                continue  # one bad record does not spoil the others
            if record.key == self.identity.key.public or not record.urls:
                continue
            assert isinstance(item, dict)
            fresh = record.key not in self._records
            known_ts = self._record_ts.get(record.key)
            if known_ts is not None and record.ts <= known_ts:
                continue  # an older (or the same) record never replaces a newer one
            if len(self._records) < MAX_KNOWN_RECORDS or not fresh:
                self._records[record.key] = item
                self._record_ts[record.key] = record.ts
            try:
                await self.registry.upsert(
                    record.key, state=None, urls=record.urls, source="gossip", now_ms=wall_ms()
                )
            except ProtocolError:
                continue
            if record.key not in self._links:
                self.poke(record.key)
            peer = self.registry.get(record.key)
            if fresh and peer is not None and peer.state == TRUSTED:
                await self._forward(record.key, item)

    async def _forward(self, key: bytes, item: dict[str, bytes]) -> None:
        """Pass a newly learned trusted node's record to our other links."""
        for peer, link in list(self._links.items()):
            if peer == key:
                continue
            try:
                await link.send_frame({"t": "gossip", "records": [item]})
            except (_LinkDown, ConnectionClosed, trio.BrokenResourceError, ProtocolError):
                continue

    # ------------------------------------------------------------ running
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for record in self.registry.all():
                if record.state == TRUSTED and record.urls:
                    self.poke(record.key)
            nursery.start_soon(self._expire_loop)
            task_status.started()
            await trio.sleep_forever()

    async def _dial_loop(self, key: bytes) -> None:
        stats = self.stats_for(key)
        backoff = 0.0
        try:
            while True:
                record = self.registry.get(key)
                if record is None or record.state != TRUSTED or not record.urls:
                    stats.link = "idle"
                    return
                if key in self._links:
                    # Linked (perhaps by their dial): wait until it goes.
                    await self._wait_poke(key, None)
                    continue
                healthy = False
                await self.expire(key, unlinked_only=True)
                for url in record.urls:
                    stats.link = "connecting"
                    try:
                        healthy = await self._dial(url, key, record)
                    except (ProtocolError, HandshakeError, OSError, ConnectionClosed) as exc:
                        stats.last_error = _describe(exc)
                    except trio.TooSlowError:
                        stats.last_error = "handshake timed out"
                    if healthy:
                        break
                backoff = (
                    0.0
                    if healthy
                    else min(self.config.backoff_max, max(self.config.backoff_min, backoff * 2))
                )
                delay = backoff * random.uniform(0.5, 1.0) if backoff else 0.05
                stats.link = "backing_off"
                stats.retry_in = delay
                await self._wait_poke(key, delay)
        finally:
            self._dialers.discard(key)

    async def _wait_poke(self, key: bytes, delay: float | None) -> None:
        event = self._pokes.get(key)
        if event is None:
            event = self._pokes[key] = trio.Event()
        if delay is None:
            await event.wait()
        else:
            with trio.move_on_after(delay):
                await event.wait()

    def _private_ok(self, record: PeerRecord) -> bool:
        """May a gossiped URL of ``record`` lead to a private-range address?"""
        return self.config.gossip_allow_private or self.config.trust_lan or record.first_hand

    def _open(self, url: str, record: PeerRecord) -> Any:
        """Open the WebSocket for one dial; gossiped URLs are checked first."""
        if url not in record.gossip_urls:
            ws_url = url.replace("https://", "wss://").replace("http://", "ws://") + "/federation"
            return open_ws(
                ws_url,
                ssl_context=LINK_TLS if ws_url.startswith("wss://") else None,
                subprotocols=[FED_SUBPROTOCOL],
                max_message_size=MAX_MESSAGE_BYTES + 4096,
                connect_timeout=self.config.handshake_timeout,
                disconnect_timeout=2,
            )
        return self._open_checked(url, record)

    @asynccontextmanager
    async def _open_checked(self, url: str, record: PeerRecord) -> AsyncIterator[Any]:
        """Dial a gossiped URL: resolve, check every address, connect to it."""
        host, port, _ = split_url(url)
        with trio.fail_after(self.config.handshake_timeout):
            address = await resolve_for_dial(
                host, port, allow_private=self._private_ok(record), getaddrinfo=self.getaddrinfo
            )
        async with open_ws_at(
            url,
            address,
            "/federation",
            ssl_context=LINK_TLS,
            subprotocols=[FED_SUBPROTOCOL],
            max_message_size=MAX_MESSAGE_BYTES + 4096,
            connect_timeout=self.config.handshake_timeout,
            disconnect_timeout=2,
        ) as ws:
            yield ws

    async def _dial(self, url: str, key: bytes, record: PeerRecord) -> bool:
        """One connection attempt; returns True if the link was healthy."""
        async with self._open(url, record) as ws:
            hs = DialerHandshake(self.identity.key, self.identity.name, key)
            with trio.fail_after(self.config.handshake_timeout):
                await ws.send_message(hs.start())
                confirm = hs.receive_welcome(_as_bytes(await ws.get_message()))
                await ws.send_message(confirm)
            keys = hs.result()
            await self._after_handshake(keys)
            started = trio.current_time()
            link = Link(self, ws, keys, dialer=self.identity.key.public)
            await self._serve_link(link)
            return link.healthy.is_set() or trio.current_time() - started > HEALTHY_AFTER

    async def accept(
        self, ws: WebSocketConnection, on_authenticated: Callable[[], None] | None = None
    ) -> None:
        """Serve an inbound ``/federation`` WebSocket.

        ``on_authenticated`` is called once the handshake has proven a trusted
        peer (the listener then stops counting it as unauthenticated).
        """
        hs = ResponderHandshake(self.identity.key, self.identity.name)
        try:
            with trio.fail_after(self.config.handshake_timeout):
                hello = hs.receive_hello(_as_bytes(await ws.get_message()))
                refusal = await self._trust_decision(hello.key, hello.name)
                if refusal is not None:
                    self.stats_for(hello.key).refused += 1
                    await ws.send_message(hs.refuse(refusal.code, refusal.message))
                    return
                await ws.send_message(hs.welcome())
                keys = hs.receive_confirm(_as_bytes(await ws.get_message()))
        except (ProtocolError, trio.TooSlowError, ConnectionClosed) as exc:
            log.info("refused federation link: %s", _describe(exc))
            return
        ws._max_message_size = MAX_MESSAGE_BYTES + 4096  # noqa: SLF001
        if on_authenticated is not None:
            on_authenticated()
        await self._after_handshake(keys)
        await self._serve_link(Link(self, ws, keys, dialer=keys.peer_key))

    async def _trust_decision(self, key: bytes, name: str) -> ProtocolError | None:
        check_public_key(key)
        record = self.registry.get(key)
        pinned = self.registry.pinned(name)
        if pinned is not None and pinned != key:
            return ProtocolError(
                ErrorCode.FORBIDDEN, f"the name {name!r} belongs to another node key"
            )
        if record is None:
            # state=None: created pending, but never downgrades a trust
            # an admin granted meanwhile.
            await self.registry.upsert(key, state=None, source="inbound", now_ms=wall_ms())
            return ProtocolError(ErrorCode.FORBIDDEN, "unknown node; pending admin approval")
        if record.state == BLOCKED:
            return ProtocolError(ErrorCode.FORBIDDEN, "this node is blocked here")
        if record.state != TRUSTED:
            return ProtocolError(ErrorCode.FORBIDDEN, "pending admin approval")
        return None

    async def _after_handshake(self, keys: LinkKeys) -> None:
        """Pin the trusted peer's name from its signed handshake."""
        record = self.registry.get(keys.peer_key)
        if record is None or record.state != TRUSTED:
            raise ProtocolError(ErrorCode.FORBIDDEN, "peer is not trusted")
        await self.registry.pin_name(keys.peer_key, keys.peer_name)
        if self.presence is not None:
            # Contacts added by this label before it was pinned can be watched now.
            self.presence.name_pinned(keys.peer_name)

    async def _serve_link(self, link: Link) -> None:
        existing = self._links.get(link.peer)
        if existing is not None:
            # One link per pair: the lower dialer key wins; an equal one is a
            # redial after a half-open link, so the newer wins.
            if link.dialer > existing.dialer:
                return
            existing.close()
        self._links[link.peer] = link
        self._link_changed()
        self.poke(link.peer)
        try:
            await link.run()
        except (ProtocolError, ConnectionClosed, _LinkDown) as exc:
            self.stats_for(link.peer).last_error = _describe(exc)
        finally:
            if self._links.get(link.peer) is link:
                del self._links[link.peer]
                self._link_changed()
                if self.presence is not None:
                    self.presence.link_down(link.peer)
                self.stats_for(link.peer).link = "idle"
                self.poke(link.peer)
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await link.ws.aclose()


def _as_bytes(data: bytes | str) -> bytes:
    if not isinstance(data, bytes):
        raise ProtocolError(ErrorCode.BAD_FRAME, "federation frames are binary")
    return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProtocolError):
        return f"{exc.code}: {exc.message}"
    return str(exc) or type(exc).__name__


__all__ = ["Federation", "Link", "PeerStats", "node_id_text"]
