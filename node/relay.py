"""One relay hop: 1:1 messages between trusted nodes that cannot link.

A node that cannot link to a destination (no URL of its own from a seed, an
admin or mDNS, and no live link: e.g. it is behind a NAT, or only known by a
gossiped loopback address) sends through an *introducer* of that destination
that it trusts: the relay. Store-and-forward, durable at each hop:

* the sender queues an ``rl`` entry ``{env, sig, by, to}`` in the relay's
  outbox, in the same transaction as the sender's own copy (as for a direct
  send), and the sender's ``ok`` comes after that commit;
* the relay checks only what it must: the unit is the linked peer's own
  (``by``), its signature verifies, ``to`` is a node it trusts; then it
  queues an ``rd`` entry (the unit, unchanged) in ``to``'s outbox in the
  same transaction that records the inbound ``oseq``, and acks after it.
  It never decodes the envelope;
* the destination verifies the origin's signature over the exact bytes,
  that the origin is a node it trusts and that it is the addressee, and
  drops duplicates by ``(origin, id)``;
* a refusal at the destination (its ``ack`` rejects the ``rd``: no such
  user, an origin it does not trust, ...) or an ``rd`` withdrawn by age goes
  back to the origin node as an ``rf`` entry ``{env, sig, by, to, code}``
  (the unit unchanged, the destination, the code), and becomes the sender's
  ``delivery_failed`` there: the origin takes it only for its own unit (its
  own signature) and from a relay of that destination.

Order per origin holds while the route stays the same (two FIFO outboxes).
A message to a node with no route at all (no link now, none ever, no URL of
its own, no relay) is queued in that node's own outbox and withdrawn after
``route_timeout`` as ``delivery_failed`` code ``no_route``, unless a link
comes up first (:meth:`Relay.run`). A node that has linked before keeps the
full ``outbox_max_age``: it dials in from behind its NAT.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from chinwag.protocol.addresses import node_id_bytes, node_id_text
from chinwag.protocol.envelope import CONTEXT_ENVELOPE, SignedUnit, open_unit, verify
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.link import EntryKind

from .config import NodeConfig
from .peers import TRUSTED, PeerRegistry, deliver_unit, peer_in, report_failed
from .store import WriteTxn

log = logging.getLogger(__name__)

_UNIT_KEYS = ("env", "sig", "by")
#: An error code as docs/protocol.md writes them (``ack`` rejections).
_CODE_RE = re.compile(rb"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class RelayStatistics:
    #: Units this node sent through a relay.
    sent_via_relay: int
    #: Units this node passed on for a peer (as the relay).
    relayed: int
    #: Relayed units delivered here (as the destination).
    delivered: int
    #: Outbox entries withdrawn as ``no_route``.
    no_route: int
    #: Refusals of relayed units sent back to their origin (as the relay).
    refusals_returned: int
    #: Refusals of this node's relayed units that came back (as the origin).
    refused_back: int


class Relay:
    """Route choice (a RemoteSink for the store), both relay roles, no-route expiry."""

    def __init__(
        self,
        config: NodeConfig,
        registry: PeerRegistry,
        own_key: bytes,
        *,
        linked: Callable[[bytes], bool],
        ever_linked: Callable[[bytes], bool],
        now_ms: Callable[[], int],
    ) -> None:
        """``linked(key)``: whether a link to ``key`` is up now;
        ``ever_linked(key)``: whether it had one since start (federation)."""
        self._config = config
        self._registry = registry
        self._own = own_key
        self._own_id = node_id_text(own_key)
        self._linked = linked
        self._ever_linked = ever_linked
        self._now_ms = now_ms
        self._sent = self._relayed = self._delivered = self._no_route = 0
        self._returned = self._refused_back = 0

    def statistics(self) -> RelayStatistics:
        return RelayStatistics(
            self._sent,
            self._relayed,
            self._delivered,
            self._no_route,
            self._returned,
            self._refused_back,
        )

    # ------------------------------------------------------------ sender (RemoteSink)
    def route(self, w: WriteTxn, key: bytes) -> bytes | None:
        """The relay to reach ``key`` through, or None to queue for it directly."""
        if self._linked(key):
            return None
        record = peer_in(w, key)
        if record is None or record.first_hand:
            return None
        for introducer in record.introducers:
            relay = peer_in(w, introducer)
            if relay is not None and relay.state == TRUSTED:
                return introducer
        return None

    def check(self, w: WriteTxn, node_id: str) -> None:
        self._registry.check(w, node_id)
        relay = self.route(w, node_id_bytes(node_id))
        if relay is not None:
            self._registry.check(w, node_id_text(relay))

    def append(self, w: WriteTxn, node_id: str, unit: SignedUnit, sender: str, now_ms: int) -> None:
        key = node_id_bytes(node_id)
        relay = self.route(w, key)
        if relay is None:
            self._registry.append(w, node_id, unit, sender, now_ms)
            return
        payload = {**unit.to_wire(), "to": key}
        self._registry.append_item(w, node_id_text(relay), EntryKind.RELAY, payload, sender, now_ms)
        self._sent += 1

    # ------------------------------------------------------------ relay and destination
    def inbound(self, w: WriteTxn, peer: bytes, kind: str, payload: Any, now_ms: int) -> None:
        """Apply an ``rl`` (pass on), ``rd`` (deliver) or ``rf`` (a refusal of
        our own relayed unit) entry from ``peer``."""
        if kind == EntryKind.RELAY:
            self._pass_on(w, peer, payload, now_ms)
        elif kind == EntryKind.REFUSED:
            self._refused_here(w, peer, payload)
        else:
            self._deliver(w, payload, now_ms)

    def _pass_on(self, w: WriteTxn, peer: bytes, payload: Any, now_ms: int) -> None:
        if not self._config.relay:
            raise ProtocolError(ErrorCode.NO_ROUTE, "this node does not relay")
        to = payload["to"]
        unit = SignedUnit.from_wire({k: payload[k] for k in _UNIT_KEYS})
        if unit.by != peer:
            raise ProtocolError(ErrorCode.FORBIDDEN, "a relay passes on only its sender's units")
        if len(to) != 32 or to in (self._own, peer):
            raise ProtocolError(ErrorCode.BAD_FRAME, "a relayed unit's 'to' is a third node")
        # Checked here so that no garbage travels on; the envelope stays unread.
        verify(CONTEXT_ENVELOPE, unit.by, unit.env, unit.sig)
        destination = peer_in(w, to)
        if destination is None or destination.state != TRUSTED:
            raise ProtocolError(ErrorCode.NO_ROUTE, "the relay does not know the destination")
        self._registry.append_item(
            w, node_id_text(to), EntryKind.RELAYED, unit.to_wire(), "", now_ms
        )
        self._relayed += 1

    def _deliver(self, w: WriteTxn, payload: Any, now_ms: int) -> None:
        unit = SignedUnit.from_wire(payload)
        origin = peer_in(w, unit.by)
        if origin is None or origin.state != TRUSTED:
            raise ProtocolError(ErrorCode.FORBIDDEN, "the origin is not trusted here")
        env = open_unit(unit)  # the origin's signature over the exact bytes
        deliver_unit(w, unit, env, self._own_id, now_ms)
        self._delivered += 1

    # ------------------------------------------------------------ refusals
    def refused(self, w: WriteTxn, payload: Any, code: str, to: bytes, now_ms: int) -> None:
        """A unit this node relayed did not reach ``to`` (refused there, or
        withdrawn by age): queue the refusal back to its origin node."""
        unit = {k: payload[k] for k in _UNIT_KEYS}
        back = {**unit, "to": to, "code": code.encode()}
        try:
            with w.nested() as child:
                self._registry.append_item(
                    child, node_id_text(unit["by"]), EntryKind.REFUSED, back, "", now_ms
                )
        except ProtocolError as exc:  # the origin is gone or blocked, its outbox full
            log.info("refusal not returned to %s: %s", node_id_text(unit["by"])[:12], exc.message)
            return
        self._returned += 1

    def _refused_here(self, w: WriteTxn, peer: bytes, payload: Any) -> None:
        unit = SignedUnit.from_wire({k: payload[k] for k in _UNIT_KEYS})
        to, code = payload["to"], payload["code"]
        if _CODE_RE.fullmatch(code) is None or len(to) != 32:
            raise ProtocolError(ErrorCode.BAD_FRAME, "a refusal is a node key and a code")
        if unit.by != self._own:
            raise ProtocolError(ErrorCode.FORBIDDEN, "a refusal comes back to its origin only")
        destination = peer_in(w, to)
        if destination is None or peer not in destination.introducers:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only a relay towards it reports a refusal")
        env = open_unit(unit)  # our own signature: a unit this node sent
        if env.sender.node != self._own_id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "not a unit of this node")
        report_failed(w, env.sender.user, unit, code.decode(), to)
        self._refused_back += 1

    # ------------------------------------------------------------ no route
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Withdraw messages that found no route within ``route_timeout``."""
        interval = min(max(self._config.route_timeout / 4, 0.05), 30.0)
        task_status.started()
        while True:
            await trio.sleep(interval)
            try:
                await self.expire_unroutable()
            except Exception as exc:  # e.g. the store closing: try again next round
                log.warning("no-route pass failed: %s", exc)

    async def expire_unroutable(self) -> int:
        """One pass over the peers without a route; returns entries withdrawn."""
        max_age_ms = int(self._config.route_timeout * 1000)
        total = 0
        for record in self._registry.all():
            if record.state != TRUSTED or record.first_hand or self._has_linked(record.key):
                continue
            oldest = self._registry.outbox_oldest_ms(record.key)
            if oldest is None or oldest > self._now_ms() - max_age_ms:
                continue
            count = await self._registry.expire_outbox(
                record.key, self._now_ms(), max_age_ms, code=str(ErrorCode.NO_ROUTE)
            )
            self._no_route += count
            total += count
        return total

    def _has_linked(self, key: bytes) -> bool:
        """Whether ``key`` has ever been reachable: linked now or since start,
        or it acknowledged or sent entries (so it dials in, e.g. from behind
        a NAT, and its messages wait the full ``outbox_max_age``)."""
        return (
            self._ever_linked(key)
            or self._registry.acked(key) > 0
            or self._registry.applied_from(key) > 0
        )
