"""Dialling trusted peers, with back-off.

One dial loop runs per trusted peer with a URL. It waits while a link is up,
dials each URL in turn otherwise, and waits between rounds:

* after a failed dial: exponential back-off with jitter
  (``backoff_min`` .. ``backoff_max``), cut short by a poke (discovery saw the
  peer, an admin approved it, a message was queued for it);
* after a link that ended in an error (a bad frame, a local failure, the peer
  closing with an error): the same back-off, which a poke does **not** cut
  short, so a failing commit or a misbehaving peer is retried at a
  growing interval rather than in a tight loop;
* after a healthy link (one that made progress, or lived
  :data:`HEALTHY_AFTER`): at once.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from chinwag.protocol.addresses import node_id_text
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.handshake import FED_SUBPROTOCOL, DialerHandshake, LinkKeys
from chinwag.protocol.limits import MAX_MESSAGE_BYTES

from .config import NodeConfig
from .dialcheck import Resolver, open_ws_at, resolve_for_dial, split_url
from .identity import NodeIdentity
from .link import PeerStats
from .logs import event, plain_reason
from .peers import TRUSTED, PeerRecord

log = logging.getLogger(__name__)

#: TLS towards a peer on https is not verified: peers use self-signed
#: certificates on a LAN, and the link handshake already proves the peer's
#: pinned key and seals every frame (see protocol/handshake.py).
LINK_TLS = ssl.create_default_context()
LINK_TLS.check_hostname = False
LINK_TLS.verify_mode = ssl.CERT_NONE

#: A link that lived this long (or made progress) resets the back-off.
HEALTHY_AFTER = 10.0
#: The largest WebSocket message on a link: a sealed 1 MiB frame and its tag.
LINK_MESSAGE_BYTES = MAX_MESSAGE_BYTES + 4096


@dataclass
class _Retry:
    backoff: float = 0.0
    until: float = 0.0
    #: An error hold: pokes do not cut it short.
    hard: bool = False


class Backoff:
    """Per-peer retry delays (trio's clock); pure bookkeeping, no waiting."""

    def __init__(
        self, low: float, high: float, jitter: Callable[[float, float], float] = random.uniform
    ) -> None:
        self._low = low
        self._high = high
        self._jitter = jitter
        self._peers: dict[bytes, _Retry] = {}

    def failed(self, key: bytes, now: float, *, hard: bool) -> float:
        """Double the back-off; return the delay before the next dial."""
        retry = self._peers.setdefault(key, _Retry())
        retry.backoff = min(self._high, max(self._low, retry.backoff * 2))
        delay = retry.backoff * self._jitter(0.5, 1.0)
        retry.until = now + delay
        retry.hard = hard or (retry.hard and retry.until > now)
        return delay

    def succeeded(self, key: bytes) -> None:
        self._peers.pop(key, None)

    def remaining(self, key: bytes, now: float) -> float:
        retry = self._peers.get(key)
        return 0.0 if retry is None else max(0.0, retry.until - now)

    def hold(self, key: bytes, now: float) -> float:
        """What is left of an error hold (0 if none)."""
        retry = self._peers.get(key)
        return self.remaining(key, now) if retry is not None and retry.hard else 0.0


class DialRegistry(Protocol):
    def get(self, key: bytes) -> PeerRecord | None: ...


class DialTarget(Protocol):
    """What the dialler needs from the federation that owns the links."""

    def stats_for(self, key: bytes) -> PeerStats: ...
    def is_linked(self, key: bytes) -> bool: ...
    async def expire(self, key: bytes, *, unlinked_only: bool = False) -> int: ...
    async def serve_dialled(self, ws: WebSocketConnection, keys: LinkKeys) -> None: ...


ConfirmExtras = Callable[[bytes], tuple[dict[str, bytes] | None, bytes | None]]


class Dialer:
    """Runs one dial loop per trusted peer that has a URL."""

    def __init__(
        self,
        config: NodeConfig,
        identity: NodeIdentity,
        registry: DialRegistry,
        target: DialTarget,
        backoff: Backoff,
        *,
        getaddrinfo: Resolver | None = None,
        confirm_extras: ConfirmExtras | None = None,
    ) -> None:
        """``confirm_extras(key)``: our signed address record and an invitation
        secret to put in the handshake's confirm to ``key``."""
        self._extras = confirm_extras
        self._config = config
        self._identity = identity
        self._registry = registry
        self._target = target
        self._backoff = backoff
        self._getaddrinfo = getaddrinfo
        self._pokes: dict[bytes, trio.Event] = {}
        self._loops: set[bytes] = set()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def poke(self, key: bytes, record: PeerRecord | None) -> None:
        """Dial ``key`` now; start its loop if it has none."""
        event = self._pokes.pop(key, None)
        if event is not None:
            event.set()
        if key not in self._loops and self._nursery is not None:
            if record is not None and record.state == TRUSTED and record.urls:
                self._loops.add(key)
                self._nursery.start_soon(self._dial_loop, key)

    async def _wait_poke(self, key: bytes, delay: float | None) -> None:
        event = self._pokes.get(key)
        if event is None:
            event = self._pokes[key] = trio.Event()
        if delay is None:
            await event.wait()
        else:
            with trio.move_on_after(delay):
                await event.wait()

    async def _dial_loop(self, key: bytes) -> None:
        stats = self._target.stats_for(key)
        try:
            while True:
                try:
                    if not await self._round(key, stats):
                        return
                except Exception as exc:  # e.g. the store closing: never end the node
                    log.warning("dial loop for %s: %s", node_id_text(key)[:12], describe(exc))
                    stats.last_error = f"local: {describe(exc)}"
                    await trio.sleep(self._backoff.failed(key, trio.current_time(), hard=True))
        finally:
            self._loops.discard(key)

    async def _round(self, key: bytes, stats: PeerStats) -> bool:
        """One turn of the dial loop; False when the peer is no longer dialled."""
        record = self._registry.get(key)
        if record is None or record.state != TRUSTED or not record.urls:
            stats.link = "idle"
            return False
        if self._target.is_linked(key):
            # Linked (perhaps by their dial): wait until it goes.
            await self._wait_poke(key, None)
            return True
        hold = self._backoff.hold(key, trio.current_time())
        if hold > 0:
            stats.link = "backing_off"
            stats.retry_in = round(hold, 3)
            await trio.sleep(hold)  # an error hold is not cut short by pokes
            return True
        await self._target.expire(key, unlinked_only=True)
        linked = False
        for url in record.urls:
            stats.link = "connecting"
            linked = await self._attempt(url, key, record, stats)
            if linked:
                break
        now = trio.current_time()
        if linked:  # the link ran and ended; it set the back-off
            delay = self._backoff.remaining(key, now) or 0.05
        else:
            delay = self._backoff.failed(key, now, hard=False)
        stats.link = "backing_off"
        stats.retry_in = round(delay, 3)
        await self._wait_poke(key, delay)
        return True

    async def _attempt(self, url: str, key: bytes, record: PeerRecord, stats: PeerStats) -> bool:
        """One dial; True if a link was made. Never raises but Cancelled."""
        try:
            return await self._dial(url, key, record)
        except (ProtocolError, HandshakeError, OSError, ConnectionClosed) as exc:
            _log_dial_failure(record, url, plain_reason(exc), stats.last_error)
            stats.last_error = plain_reason(exc)
        except trio.TooSlowError:
            _log_dial_failure(record, url, "handshake timed out", stats.last_error)
            stats.last_error = "handshake timed out"
        except Exception as exc:  # a bug here must not end the node: log and count
            log.exception("dialling %s failed", url)
            stats.internal_errors += 1
            stats.last_error = f"internal: {describe(exc)}"
        return False

    def _open(
        self, url: str, record: PeerRecord
    ) -> AbstractAsyncContextManager[WebSocketConnection]:
        """Open the WebSocket for one dial; gossiped URLs are checked first.

        Both go through :func:`~.dialcheck.open_ws_at`, which owns the TCP
        stream and closes it on every way out: trio-websocket's own client
        drops a stream it opened when the server refuses the upgrade (an HTTP
        429 from a peer's connection cap) or the handshake times out, and the
        socket then sat half-closed until the garbage collector found it.
        """
        if url not in record.gossip_urls:
            return open_ws_at(
                url,
                split_url(url)[0],
                "/federation",
                ssl_context=LINK_TLS,
                subprotocols=[FED_SUBPROTOCOL],
                max_message_size=LINK_MESSAGE_BYTES,
                connect_timeout=self._config.handshake_timeout,
                disconnect_timeout=2,
            )
        return self._open_checked(url, record)

    def _private_ok(self, record: PeerRecord) -> bool:
        """May a gossiped URL of ``record`` lead to a private-range address?"""
        return self._config.gossip_allow_private or self._config.trust_lan or record.first_hand

    @asynccontextmanager
    async def _open_checked(
        self, url: str, record: PeerRecord
    ) -> AsyncIterator[WebSocketConnection]:
        """Dial a gossiped URL: resolve, check every address, connect to it."""
        host, port, _ = split_url(url)
        with trio.fail_after(self._config.handshake_timeout):
            address = await resolve_for_dial(
                host, port, allow_private=self._private_ok(record), getaddrinfo=self._getaddrinfo
            )
        async with open_ws_at(
            url,
            address,
            "/federation",
            ssl_context=LINK_TLS,
            subprotocols=[FED_SUBPROTOCOL],
            max_message_size=LINK_MESSAGE_BYTES,
            connect_timeout=self._config.handshake_timeout,
            disconnect_timeout=2,
        ) as ws:
            yield ws

    async def _dial(self, url: str, key: bytes, record: PeerRecord) -> bool:
        async with self._open(url, record) as ws:
            own, invitation = self._extras(key) if self._extras else (None, None)
            hs = DialerHandshake(
                self._identity.key,
                self._identity.name,
                key,
                record=own,
                invitation=invitation,
            )
            with trio.fail_after(self._config.handshake_timeout):
                await ws.send_message(hs.start())
                confirm = hs.receive_welcome(as_bytes(await ws.get_message()))
                await ws.send_message(confirm)
            await self._target.serve_dialled(ws, hs.result())
            return True


def _log_dial_failure(record: PeerRecord, url: str, reason: str, previous: str) -> None:
    """At info when the reason changes, at debug while it repeats each back-off."""
    log.log(
        logging.DEBUG if reason == previous else logging.INFO,
        "cannot link to %s at %s: %s",
        record.name or record.id[:12],
        url,
        reason,
        extra=event("link_failed", peer=record.id, peer_name=record.name, url=url, reason=reason),
    )


def as_bytes(data: bytes | str) -> bytes:
    """A handshake message, which is binary on a federation link."""
    if not isinstance(data, bytes):
        raise ProtocolError(ErrorCode.BAD_FRAME, "federation frames are binary")
    return data


def describe(exc: BaseException) -> str:
    """How a link attempt or link end is shown in ``status`` and the log."""
    if isinstance(exc, ProtocolError):
        return f"{exc.code}: {exc.message}"
    return str(exc) or type(exc).__name__


__all__ = ["LINK_TLS", "Backoff", "Dialer"]
