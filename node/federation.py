"""Federation: the registry of live links, inbound link acceptance, peer status.

A link is a WebSocket on ``/federation`` (subprotocol ``chinwag.fed.v1``).
After the handshake (protocol/handshake.py) every frame is sealed and parsed
by protocol/link.py; the parts live in their own modules:

* node/link.py: one link (resume, push/ack, keep-alive) and how it ends;
* node/dialer.py: dialling trusted peers, with back-off;
* node/gossip.py: the signed address records passed between links;
* node/pending.py: link requests from unknown keys, in memory only;
* this module: which link serves which peer (one per pair: the link dialed
  by the lower node key wins), accepting inbound links, and ``status``.

No failure of one link reaches the node: a link ends with a
:class:`~.link.LinkEnd` (counted per peer), and the dialler and the acceptor
catch, log and count anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from chinwag.protocol.address_record import make_record
from chinwag.protocol.addresses import GroupAddress, node_id_bytes, node_id_text
from chinwag.protocol.envelope import check_public_key
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.handshake import LinkKeys, ResponderHandshake
from chinwag.protocol.link import (
    BlobChunk,
    BlobRequest,
    BlobUnavailable,
    Gossip,
    GossipDigest,
    GossipSummary,
    GroupSync,
    Introductions,
    IntroRequest,
    LinkFrame,
)

from .config import NodeConfig
from .dialcheck import Resolver
from .dialer import HEALTHY_AFTER, LINK_MESSAGE_BYTES, Backoff, Dialer, as_bytes, describe
from .gossip import GossipBook, GossipRegistry, GossipStats
from .identity import NodeIdentity
from .link import (
    CLOSE_BAD_FRAME,
    Link,
    LinkClosed,
    LinkRegistry,
    PeerStats,
    PresenceFrames,
    wall_ms,
)
from .logs import event
from .peers import BLOCKED, OUTBOX_EXPIRE_PER_PASS, TRUSTED, PeerRecord
from .pending import PendingRequests

log = logging.getLogger(__name__)

#: Trusts a dialer that presented an invitation (node/invitations.py
#: InvitedPeers.admit): key, secret, its URLs; raises the refusal.
Admit = Callable[[bytes, bytes, tuple[str, ...]], Awaitable[None]]


@dataclass
class _JoinWait:
    """``peers join`` waiting for its link: set when up, or with the reason it ended."""

    done: trio.Event
    error: str | None = None


class GroupResync(Protocol):
    """Group re-sync (node/group_sync.py): answers ``gsync``, names groups to ask about."""

    async def on_gsync_request(
        self, peer: bytes, group: GroupAddress, after: int, now_ms: int
    ) -> bool: ...
    def wants_resync(self, host: bytes, now_ms: int, *, again: bool = False) -> list[GroupSync]: ...


class IntroductionHooks(Protocol):
    """Introductions on links (node/introductions.py)."""

    async def link_up(self, peer: bytes) -> None: ...
    def link_down(self, peer: bytes) -> None: ...
    async def on_frame(self, peer: bytes, frame: IntroRequest | Introductions) -> None: ...


class FederationRegistry(LinkRegistry, GossipRegistry, Protocol):
    """What federation needs from the durable peer state (node/peers.py)."""

    def pinned(self, name: str) -> bytes | None: ...
    async def pin_name(self, key: bytes, name: str) -> None: ...
    def outbox_depth(self, key: bytes) -> int: ...
    def outbox_bytes(self, key: bytes) -> int: ...
    def outbox_oldest_ms(self, key: bytes) -> int | None: ...
    async def expire_outbox(
        self, key: bytes, now_ms: int, max_age_ms: int, limit: int = ...
    ) -> int: ...


class BlobHooks(Protocol):
    """Blob transfer over links (node/blob_fetch.py)."""

    def link_up(self, peer: bytes) -> None: ...
    def link_down(self, peer: bytes) -> None: ...
    def on_frame(self, peer: bytes, frame: BlobRequest | BlobChunk | BlobUnavailable) -> None: ...


class LinkEvents(PresenceFrames, Protocol):
    """What presence (node/presence.py) is told about links."""

    def link_up(self, key: bytes) -> None: ...
    def link_down(self, key: bytes) -> None: ...
    def name_pinned(self, label: str) -> None: ...


@dataclass(frozen=True)
class FederationStatistics:
    links: int
    pending_requests: int
    pending_capacity: int
    pending_evicted: int


class Federation:
    """Owns every link, the dialler, gossip, and inbound link acceptance."""

    def __init__(
        self,
        config: NodeConfig,
        identity: NodeIdentity,
        registry: FederationRegistry,
        *,
        presence: LinkEvents | None = None,
        now_ms: Callable[[], int] = wall_ms,
        getaddrinfo: Resolver | None = None,
        group_sync: GroupResync | None = None,
        admit: Admit | None = None,
        introductions: IntroductionHooks | None = None,
        blobs: BlobHooks | None = None,
    ) -> None:
        """``now_ms`` is the wall clock used to age outbox entries; ``getaddrinfo``
        resolves gossiped URLs (node/dialcheck.py); ``group_sync`` answers a
        peer's ``gsync`` request and names the groups to ask a host about
        (node/group_sync.py; none when None); ``admit`` trusts a dialer that
        presents an invitation (none: invitations are refused); ``introductions``
        asks for and answers introductions on each link (node/introductions.py)."""
        self.config = config
        self.identity = identity
        self.registry = registry
        self._presence = presence
        self._now_ms = now_ms
        self._group_sync = group_sync
        self._admit = admit
        #: Invitation secrets to present when dialling these keys (``peers join``).
        self._joins: dict[bytes, bytes] = {}
        self._join_waits: dict[bytes, _JoinWait] = {}
        self._introductions = introductions
        #: Blob fetches and their answers on each link (node/blob_fetch.py).
        self.blobs = blobs
        self._links: dict[bytes, Link] = {}
        #: Peers that had a link since start (node/relay.py: they have a route).
        self._ever_linked: set[bytes] = set()
        self._stats: dict[bytes, PeerStats] = {}
        self._outbox_events: dict[bytes, trio.Event] = {}
        self._changed = trio.Event()
        self.pending = PendingRequests(config.max_pending_peers)
        self._backoff = Backoff(config.backoff_min, config.backoff_max)
        self._dialer = Dialer(
            config,
            identity,
            registry,
            self,
            self._backoff,
            getaddrinfo=getaddrinfo,
            confirm_extras=self._confirm_extras,
        )
        self._gossip = GossipBook(
            identity, registry, now_ms, learned=self._gossip_learned, forward=self._forward
        )

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
        record = self.registry.get(key)
        link = self._links.get(key)
        if link is not None and (record is None or record.state != TRUSTED):
            link.close()  # blocked or removed: drop the live link too
        self._dialer.poke(key, record)

    async def send_to(self, key: bytes, frame: LinkFrame) -> None:
        """Send a frame on the live link to ``key`` (soft state: dropped if none,
        or if the link has not exchanged ``resume`` yet: link-up resends it all)."""
        link = self._links.get(key)
        if link is not None and link.up.is_set():
            try:
                await link.send(frame)
            except (ConnectionClosed, LinkClosed):
                pass  # the link is ending; its end and the next link-up resend state

    def is_linked(self, key: bytes) -> bool:
        return key in self._links

    def ever_linked(self, key: bytes) -> bool:
        """Whether ``key`` had a link (either direction) since this node started."""
        return key in self._ever_linked

    async def wait_linked(self, key: bytes, linked: bool = True) -> None:
        """Wait until a link to ``key`` is up (or down); callers bound the wait."""
        while (key in self._links) != linked:
            await self._changed.wait()

    def _confirm_extras(self, key: bytes) -> tuple[dict[str, bytes] | None, bytes | None]:
        """What a dial to ``key`` adds to its confirm: our signed address record
        (so a node asked for a link can show and dial our URLs) and a pending
        invitation secret."""
        record = None
        if self.own_urls:
            record = make_record(self.identity.key, self.own_urls, self._now_ms())
        return record, self._joins.get(key)

    async def join(self, key: bytes, secret: bytes, timeout: float) -> str | None:
        """Dial trusted ``key`` presenting an invitation ``secret``; None once
        the link is up, else why not (the refusal, or the last dial error)."""
        wait = self._join_waits[key] = _JoinWait(trio.Event())
        self._joins[key] = secret
        try:
            with trio.move_on_after(timeout):
                self.poke(key)
                await wait.done.wait()
            if wait.done.is_set():
                return wait.error
            return self.stats_for(key).last_error or f"no link within {timeout:g}s"
        finally:
            self._joins.pop(key, None)
            if self._join_waits.get(key) is wait:
                del self._join_waits[key]

    def _join_outcome(self, key: bytes, error: str | None) -> None:
        wait = self._join_waits.get(key)
        if wait is not None and not wait.done.is_set():
            wait.error = error
            wait.done.set()

    def _link_changed(self) -> None:
        event, self._changed = self._changed, trio.Event()
        event.set()

    def statistics(self) -> FederationStatistics:
        pending = self.pending.statistics()
        return FederationStatistics(
            len(self._links), pending.pending, pending.capacity, pending.evicted
        )

    def peer_status(self) -> list[dict[str, Any]]:
        out = []
        now = self._now_ms()
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
                    "link_changed_ms": stats.changed_ms,
                    "retry_in": stats.retry_in,
                    "sent": stats.sent,
                    "received": stats.received,
                    "refused": stats.refused,
                    "bad_frames": stats.bad_frames,
                    "local_failures": stats.local_failures,
                    "internal_errors": stats.internal_errors,
                    "group_records_sent": stats.group_records_sent,
                    "frames_sent": stats.frames_sent,
                    "frames_received": stats.frames_received,
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
        if oldest is None or oldest > self._now_ms() - max_age_ms:
            return 0  # a cheap read: nothing to expire, no write
        total = 0
        while True:
            if unlinked_only and key in self._links:
                return total  # the link expires its own outbox when it starts
            try:
                count = await self.registry.expire_outbox(key, self._now_ms(), max_age_ms)
            except ProtocolError as exc:
                log.info("outbox expiry for %s failed: %s", node_id_text(key)[:12], exc.message)
                return total
            total += count
            if count < OUTBOX_EXPIRE_PER_PASS:
                if total:
                    peer = node_id_text(key)
                    log.info(
                        "withdrew %d message(s) for %s from its outbox: older than %.0f s",
                        total,
                        peer[:12],
                        self.config.outbox_max_age,
                        extra=event("outbox_expired", peer=peer, count=total),
                    )
                return total

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(self.config.outbox_prune_interval)
            try:
                for record in self.registry.all():
                    # A linked peer's outbox is moving; the link expires at its start.
                    await self.expire(record.key, unlinked_only=True)
            except Exception as exc:  # e.g. the store closing: try again next round
                log.warning("outbox expiry pass failed: %s", describe(exc))

    # ------------------------------------------------------------ gossip
    @property
    def own_urls(self) -> list[str]:
        return self._gossip.own_urls

    def advertise(self, urls: list[str]) -> None:
        """Where this node can be reached (known once the listener is up)."""
        self._gossip.advertise(urls)

    def gossip_for(self, peer: bytes) -> Gossip:
        return self._gossip.frame_for(peer)

    def gossip_summary(self) -> GossipSummary:
        return self._gossip.summary_frame()

    def on_gossip_summary(self, frame: GossipSummary) -> list[Gossip | GossipDigest]:
        return self._gossip.on_summary(frame)

    def on_gossip_digest(self, peer: bytes, frame: GossipDigest) -> list[Gossip | GossipDigest]:
        return self._gossip.on_digest(peer, frame)

    def gossip_statistics(self) -> GossipStats:
        return self._gossip.statistics()

    async def learn_gossip(self, frame: Gossip) -> None:
        await self._gossip.learn(frame)

    def _gossip_learned(self, key: bytes) -> None:
        if key not in self._links:
            self.poke(key)

    async def _forward(self, key: bytes, frame: Gossip) -> None:
        """Pass a newly learned trusted node's record to our other links."""
        for peer, link in list(self._links.items()):
            if peer == key:
                continue
            try:
                await link.send(frame)
            except Exception as exc:  # soft: that link ends by itself if it is broken
                log.debug("gossip to %s not sent: %s", node_id_text(peer)[:12], exc)

    async def on_gsync(self, key: bytes, frame: GroupSync) -> None:
        if self._group_sync is not None:
            await self._group_sync.on_gsync_request(key, frame.group, frame.after, self._now_ms())

    def on_blob(self, key: bytes, frame: BlobRequest | BlobChunk | BlobUnavailable) -> None:
        if self.blobs is not None:
            self.blobs.on_frame(key, frame)

    async def on_intro(self, key: bytes, frame: IntroRequest | Introductions) -> None:
        if self._introductions is not None:
            await self._introductions.on_frame(key, frame)

    def resync_frames(self, key: bytes, *, again: bool) -> list[GroupSync]:
        if self._group_sync is None:
            return []
        return self._group_sync.wants_resync(key, self._now_ms(), again=again)

    # ------------------------------------------------------------ running
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._dialer.run)
            for record in self.registry.all():
                if record.state == TRUSTED and record.urls:
                    self.poke(record.key)
            nursery.start_soon(self._expire_loop)
            task_status.started()
            await trio.sleep_forever()

    async def serve_dialled(self, ws: WebSocketConnection, keys: LinkKeys) -> None:
        """Run a link this node dialled (called by the dialler)."""
        await self._after_handshake(keys)
        await self._serve_link(ws, keys, dialer=self.identity.key.public)

    async def accept(
        self, ws: WebSocketConnection, on_authenticated: Callable[[], None] | None = None
    ) -> None:
        """Serve an inbound ``/federation`` WebSocket; never raises but Cancelled.

        ``on_authenticated`` is called once the handshake has proven a trusted
        peer (the listener then stops counting it as unauthenticated).
        """
        try:
            keys = await self._handshake(ws, _remote_address(ws))
            if keys is None:
                return
            ws._max_message_size = LINK_MESSAGE_BYTES  # noqa: SLF001
            await self._after_handshake(keys)
            if on_authenticated is not None:
                on_authenticated()
        except (ProtocolError, trio.TooSlowError, ConnectionClosed) as exc:
            log.info("refused federation link: %s", describe(exc))
            if isinstance(exc, ProtocolError):
                # Say why in the close (e.g. "the dialer wants another node":
                # its pinned key is not ours), so the dialer's admin sees it.
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    await ws.aclose(CLOSE_BAD_FRAME, exc.message[:120])
            return
        except Exception:  # a bug must not end the node: log it, drop this link
            log.exception("accepting a federation link failed")
            return
        await self._serve_link(ws, keys, dialer=keys.peer_key)

    async def _handshake(self, ws: WebSocketConnection, address: str = "") -> LinkKeys | None:
        """The responder's handshake; None if the dialer was refused.

        A blocked key is refused at its hello. An unknown or pending one is
        let through to its signed confirm first: if the confirm presents a
        valid invitation, the dialer is trusted now (node/invitations.py);
        otherwise it is refused and, if unknown, remembered in memory
        (node/pending.py): nothing is stored for a key nobody proved.
        """
        hs = ResponderHandshake(self.identity.key, self.identity.name)
        with trio.fail_after(self.config.handshake_timeout):
            hello = hs.receive_hello(as_bytes(await ws.get_message()))
            check_public_key(hello.key)
            refusal = self._trust_refusal(hello.key, hello.name)
            if refusal is not None:
                peer = node_id_text(hello.key)
                log.info(
                    "refused a link from %s (%s): %s",
                    hello.name,
                    peer[:12],
                    refusal.message,
                    extra=event(
                        "link_refused", peer=peer, peer_name=hello.name, reason=refusal.message
                    ),
                )
                if self.registry.get(hello.key) is not None:
                    # Known keys only: a stranger's refusal must not grow _stats.
                    self.stats_for(hello.key).refused += 1
                await ws.send_message(hs.refuse(refusal.code, refusal.message))
                return None
            await ws.send_message(hs.welcome())
            keys = hs.receive_confirm(as_bytes(await ws.get_message()))
            record = self.registry.get(keys.peer_key)
            if record is None or record.state != TRUSTED:
                refusal = await self._invited(keys)
                if refusal is None:
                    return keys
                # Proven, but not trusted (yet): an admin may approve it.
                if record is None and keys.invitation is None:
                    if self.pending.get(keys.peer_key) is None:
                        peer = node_id_text(keys.peer_key)
                        log.info(
                            "link request from unknown node %s (%s): pending; "
                            "'chinwag peers approve %s' to trust it",
                            keys.peer_name,
                            peer,
                            peer,
                            extra=event("peer_pending", peer=peer, peer_name=keys.peer_name),
                        )
                    urls = keys.record.urls if keys.record is not None else ()
                    self.pending.record(
                        keys.peer_key, keys.peer_name, self._now_ms(), urls=urls, address=address
                    )
                message = refusal.message
                await ws.send_message(hs.refuse(refusal.code, message))
                # A graceful close reads what the dialer sent meanwhile (its
                # first sealed frame): closing on unread data would reset the
                # connection and lose the refusal on its way.
                await ws.aclose(CLOSE_BAD_FRAME, message)
                return None
            return keys

    async def _invited(self, keys: LinkKeys) -> ProtocolError | None:
        """None if ``keys`` presented a valid invitation (now used up, the
        dialer trusted); else the refusal to send."""
        if keys.invitation is None or self._admit is None:
            return ProtocolError(ErrorCode.FORBIDDEN, "unknown node; pending admin approval")
        urls = keys.record.urls if keys.record is not None else ()
        try:
            await self._admit(keys.peer_key, keys.invitation, urls)
        except ProtocolError as exc:
            log.info("refused an invitation from %s: %s", node_id_text(keys.peer_key), exc.message)
            return exc
        self.pending.pop(keys.peer_key)  # an earlier request of it is answered
        log.info("node %s (%s) joined by invitation", keys.peer_name, node_id_text(keys.peer_key))
        return None

    def _trust_refusal(self, key: bytes, name: str) -> ProtocolError | None:
        record = self.registry.get(key)
        pinned = self.registry.pinned(name)
        if pinned is not None and pinned != key:
            return ProtocolError(
                ErrorCode.FORBIDDEN, f"the name {name!r} belongs to another node key"
            )
        if record is None:
            return None  # decided after its confirm
        if record.state == BLOCKED:
            return ProtocolError(ErrorCode.FORBIDDEN, "this node is blocked here")
        return None  # trusted, or pending: decided after its confirm (an invitation?)

    async def _after_handshake(self, keys: LinkKeys) -> None:
        """Pin the trusted peer's name from its signed handshake."""
        record = self.registry.get(keys.peer_key)
        if record is None or record.state != TRUSTED:
            raise ProtocolError(ErrorCode.FORBIDDEN, "peer is not trusted")
        await self.registry.pin_name(keys.peer_key, keys.peer_name)
        if self._presence is not None:
            # Contacts added by this label before it was pinned can be watched now.
            self._presence.name_pinned(keys.peer_name)

    async def _serve_link(self, ws: WebSocketConnection, keys: LinkKeys, dialer: bytes) -> None:
        link = Link(
            ws,
            keys,
            dialer,
            config=self.config,
            registry=self.registry,
            services=self,
            presence=self._presence,
            now_ms=self._now_ms,
        )
        existing = self._links.get(link.peer)
        if existing is not None:
            # One link per pair: the lower dialer key wins; an equal one is a
            # redial after a half-open link, so the newer wins.
            if link.dialer > existing.dialer:
                return
            existing.close()
        self._links[link.peer] = link
        self._ever_linked.add(link.peer)
        self._link_changed()
        self.poke(link.peer)
        started = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._announce_up, link)
                end = await link.run()
                nursery.cancel_scope.cancel()
            self._join_outcome(link.peer, end.message)
            _log_link_down(link.peer, end.message, str(end.kind), up=link.up.is_set())
            now = trio.current_time()
            if end.is_error:
                self._backoff.failed(link.peer, now, hard=True)
            elif link.healthy.is_set() or now - started > HEALTHY_AFTER:
                self._backoff.succeeded(link.peer)
            else:
                self._backoff.failed(link.peer, now, hard=False)
        finally:
            if self._links.get(link.peer) is link:
                del self._links[link.peer]
                self._link_changed()
                if self._presence is not None:
                    try:
                        self._presence.link_down(link.peer)
                    except Exception:  # soft state: never let it end the node
                        log.exception("presence link_down failed")
                self.stats_for(link.peer).link = "idle"
                if self._introductions is not None:
                    self._introductions.link_down(link.peer)
                if self.blobs is not None:
                    self.blobs.link_down(link.peer)
                self.poke(link.peer)

    async def _announce_up(self, link: Link) -> None:
        """Tell presence once the link is up (its resume exchanged)."""
        await link.up.wait()
        self._join_outcome(link.peer, None)
        peer = node_id_text(link.peer)
        record = self.registry.get(link.peer)
        name = record.name if record is not None else ""
        how = "dialled" if link.dialer == self.identity.key.public else "accepted"
        log.info(
            "link to %s (%s) up (%s)",
            name or "?",
            peer[:12],
            how,
            extra=event("link_up", peer=peer, peer_name=name, direction=how),
        )
        if self._presence is not None and self._links.get(link.peer) is link:
            try:
                self._presence.link_up(link.peer)
            except Exception:  # presence is soft state: never end the link for it
                log.exception("presence link_up failed")
        if self.blobs is not None and self._links.get(link.peer) is link:
            self.blobs.link_up(link.peer)  # wanted blobs from this peer: fetch now
        if self._introductions is not None and self._links.get(link.peer) is link:
            try:
                await self._introductions.link_up(link.peer)
            except Exception as exc:  # soft: asked again on the next link
                log.info("introductions at link-up failed: %s", describe(exc))


def _remote_address(ws: WebSocketConnection) -> str:
    """The address a connection came from (shown with a pending request)."""
    remote = getattr(ws, "remote", None)
    return str(getattr(remote, "address", "") or "")


def _log_link_down(key: bytes, reason: str, kind: str, *, up: bool) -> None:
    peer = node_id_text(key)
    log.info(
        "link to %s %s: %s",
        peer[:12],
        "down" if up else "ended before it was up",
        reason,
        extra=event("link_down" if up else "link_failed", peer=peer, reason=reason, kind=kind),
    )


__all__ = ["Federation", "FederationRegistry", "LinkEvents", "PeerRecord", "PeerStats"]
