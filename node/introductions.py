"""Introductions: trust that grows with the community, not with N² approvals.

An admin may turn on, per trusted peer and off by default, "trust the nodes
this peer introduces" (``chinwag peers trust-introductions ID``). This node
then sends that peer an ``introreq`` on every link; the peer (the
*introducer*) answers with signed statements (protocol/introduction.py) about
every node it trusts directly and whose name it knows, and sends new ones as
further nodes link to it. Each statement that verifies makes its node trusted
here, with the introducer recorded as the basis (``PeerRecord.introducers``),
and pins its name, so ``bob@leaf7`` resolves.

Rules (docs/architecture.md, "Introductions"):

* one level only: an introducer introduces the nodes *it* trusts directly
  (admin, seed, mDNS), never nodes it trusts by introduction;
* blocking wins: a blocked node is never trusted by introduction;
* a name already pinned to another key refuses the statement;
* turning introductions off for an introducer, blocking it or removing it
  revokes the trust it granted that has no other basis: such a node goes
  back to ``pending`` (its row and pin stay, so an admin can approve it);
* direct trust (``peers approve``/``add``) makes the trust the node's own
  (``PeerRecord.direct``): revocation leaves it, and the introducers stay
  recorded as the relays towards it (node/relay.py), as does a statement
  about a node already trusted directly.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chinwag.protocol.addresses import node_id_text
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.introduction import Introduction, make_statement, open_statement
from chinwag.protocol.link import MAX_INTRODUCTIONS, Introductions, IntroRequest, LinkFrame

from .identity import NodeIdentity
from .peers import (
    BLOCKED,
    MAX_PEERS,
    PENDING,
    TRUSTED,
    PeerRecord,
    PeerRegistry,
    all_peers_in,
    peer_in,
    put_peer,
)
from .store import Store, WriteTxn

log = logging.getLogger(__name__)

#: Introducers remembered per introduced node (the basis of its trust).
MAX_INTRODUCERS = 8


#: Bound of the signed-statement cache (the peer table's own bound is 4,096).
MAX_CACHED_STATEMENTS = 4096


@dataclass(frozen=True)
class IntroductionStatistics:
    #: Nodes trusted here by an introducer's statement (since start).
    accepted: int
    #: Statements refused: bad signature or shape, blocked node, name clash.
    refused: int
    #: Statements ignored: their sender is not trusted to introduce.
    ignored: int
    #: Statements this node sent as an introducer.
    sent: int
    #: Statements it signed (each once per node and name, then reused).
    signed: int


async def set_trust_introductions(store: Store, key: bytes, on: bool) -> list[bytes]:
    """Turn introductions from ``key`` on or off; returns the nodes whose
    trust was revoked (off: every node that rested on ``key`` alone)."""

    def op(w: WriteTxn) -> list[bytes]:
        record = peer_in(w, key)
        if record is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such peer")
        if on and record.state != TRUSTED:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "only a trusted peer's introductions can be trusted"
            )
        put_peer(w, dataclasses.replace(record, trust_introductions=on))
        return [] if on else _revoke(w, key)

    return await store.transact(op)


async def revoke_introductions(store: Store, introducer: bytes) -> list[bytes]:
    """Withdraw the trust ``introducer`` granted (it was blocked or removed)."""
    return await store.transact(lambda w: _revoke(w, introducer))


def _revoke(w: WriteTxn, introducer: bytes) -> list[bytes]:
    revoked = []
    for record in all_peers_in(w):
        if introducer not in record.introducers:
            continue
        rest = tuple(k for k in record.introducers if k != introducer)
        state = record.state
        if not rest and state == TRUSTED and not record.direct:
            state = PENDING  # no other basis: back to the admin's decision
            revoked.append(record.key)
        put_peer(w, dataclasses.replace(record, introducers=rest, state=state))
    return revoked


class IntroductionService:
    """Both sides of introductions on a running node's links."""

    def __init__(
        self,
        identity: NodeIdentity,
        store: Store,
        registry: PeerRegistry,
        now_ms: Callable[[], int],
        *,
        send: Callable[[bytes, LinkFrame], Awaitable[None]],
        changed: Callable[[bytes, str], None],
    ) -> None:
        """``send(peer, frame)``: on the live link to ``peer``, if any;
        ``changed(key, name)``: ``key`` became trusted (dial it, watch it)."""
        self._identity = identity
        self._store = store
        self._registry = registry
        self._now_ms = now_ms
        self._send = send
        self._changed = changed
        #: Peers that asked for our introductions on their current link.
        self._askers: set[bytes] = set()
        self._accepted = self._refused = self._ignored = self._sent = 0
        self._signed = 0
        #: Signed statements by introduced key, with the name they carry: a
        #: peer asking again (every link-up, or in a loop) costs no signing.
        self._statements: dict[bytes, tuple[str, dict[str, bytes]]] = {}

    def statistics(self) -> IntroductionStatistics:
        return IntroductionStatistics(
            self._accepted, self._refused, self._ignored, self._sent, self._signed
        )

    def _record(self, key: bytes) -> PeerRecord | None:
        return self._registry.get(key)

    # ------------------------------------------------------------ links
    async def link_up(self, peer: bytes) -> None:
        """A link is up: ask for introductions if we take them from ``peer``,
        and introduce ``peer`` (its name now pinned) to those who asked."""
        record = self._record(peer)
        if record is None or record.state != TRUSTED:
            return
        if record.trust_introductions:
            await self._send(peer, IntroRequest())
        if record.direct and record.name:
            statement = self._statement(record)
            for asker in list(self._askers):
                if asker == peer:
                    continue
                try:
                    await self._send(asker, Introductions((statement,)))
                    self._sent += 1
                except Exception as exc:  # that link ends by itself; the others go on
                    log.debug("introduction to %s not sent: %s", node_id_text(asker)[:12], exc)

    def link_down(self, peer: bytes) -> None:
        self._askers.discard(peer)

    async def request(self, peer: bytes) -> None:
        """Introductions from ``peer`` were just turned on: ask now."""
        await self._send(peer, IntroRequest())

    async def on_frame(self, peer: bytes, frame: IntroRequest | Introductions) -> None:
        if isinstance(frame, IntroRequest):
            await self._introduce_all(peer)
        else:
            await self._accept(peer, frame)

    def _known(self, introducer: bytes, intro: Introduction) -> bool:
        record = self._registry.get(intro.key)
        return (
            record is not None
            and record.state == TRUSTED
            and (
                introducer in record.introducers
                or (record.direct and len(record.introducers) >= MAX_INTRODUCERS)
            )
        )

    # ------------------------------------------------------------ introducer
    def _statement(self, record: PeerRecord) -> dict[str, bytes]:
        cached = self._statements.get(record.key)
        if cached is not None and cached[0] == record.name:
            return cached[1]
        if len(self._statements) >= MAX_CACHED_STATEMENTS:
            self._statements.clear()
        statement = make_statement(self._identity.key, record.key, record.name, self._now_ms())
        self._statements[record.key] = (record.name, statement)
        self._signed += 1
        return statement

    async def _introduce_all(self, peer: bytes) -> None:
        """``peer`` takes our introductions: every node we trust directly."""
        self._askers.add(peer)
        statements = [
            self._statement(record)
            for record in self._registry.all()
            if record.state == TRUSTED and record.direct and record.name and record.key != peer
        ]
        for start in range(0, len(statements), MAX_INTRODUCTIONS):
            batch = tuple(statements[start : start + MAX_INTRODUCTIONS])
            await self._send(peer, Introductions(batch))
            self._sent += len(batch)

    # ------------------------------------------------------------ receiver
    async def _accept(self, peer: bytes, frame: Introductions) -> None:
        introducer = self._registry.get(peer)
        if introducer is None or introducer.state != TRUSTED or not introducer.trust_introductions:
            self._ignored += len(frame.statements)  # not even verified: no work for them
            return
        verified: list[Introduction] = []
        for item in frame.statements:
            try:
                verified.append(open_statement(dict(item), peer))
            except ProtocolError as exc:
                self._refused += 1
                log.info("introduction from %s refused: %s", node_id_text(peer)[:12], exc.message)
        own = self._identity.key.public
        # Statements that change nothing (a repeat at every link-up) write nothing.
        verified = [i for i in verified if i.key != own and not self._known(peer, i)]
        if not verified:
            return
        now = self._now_ms()

        def op(w: WriteTxn) -> tuple[list[tuple[bytes, str]], int, int]:
            introducer = peer_in(w, peer)
            if introducer is None or introducer.state != TRUSTED:
                return [], 0, len(verified)
            if not introducer.trust_introductions:
                return [], 0, len(verified)
            trusted: list[tuple[bytes, str]] = []
            refused = 0
            for intro in verified:
                outcome = _trust(w, peer, intro, now)
                if outcome is None:
                    refused += 1
                elif outcome:
                    trusted.append((intro.key, intro.name))
            return trusted, refused, 0

        trusted, refused, ignored = await self._store.transact(op)
        self._refused += refused
        self._ignored += ignored
        self._accepted += len(trusted)
        for key, name in trusted:
            self._changed(key, name)


def _trust(w: WriteTxn, introducer: bytes, intro: Introduction, now_ms: int) -> bool | None:
    """Trust ``intro.key`` on ``introducer``'s word: True if newly trusted,
    False if nothing changed, None if refused (blocked, name clash, full)."""
    record = peer_in(w, intro.key)
    if record is not None and record.state == BLOCKED:
        return None  # blocking wins
    if record is not None and record.state == TRUSTED and record.direct:
        # Trusted directly already: that basis is stronger; the introducer is
        # only noted as a relay towards it.
        if introducer not in record.introducers and len(record.introducers) < MAX_INTRODUCERS:
            put_peer(w, dataclasses.replace(record, introducers=(*record.introducers, introducer)))
        return False
    names = w.db("peer_names")
    pinned = w.txn.get(intro.name.encode(), db=names)
    if pinned is not None and bytes(pinned) != intro.key:
        return None  # a second key claiming a known name waits for an admin
    if record is None and w.txn.stat(w.db("peers"))["entries"] >= MAX_PEERS:
        return None
    before = record.introducers if record is not None else ()
    introducers = tuple(dict.fromkeys((*before, introducer)))[:MAX_INTRODUCERS]
    name = record.name if record is not None and record.name else intro.name
    if record is None:
        record = PeerRecord(
            key=intro.key,
            name=name,
            state=TRUSTED,
            urls=(),
            source="introduction",
            added_ms=now_ms,
            introducers=introducers,
        )
        fresh = True
    else:
        fresh = record.state != TRUSTED
        record = dataclasses.replace(record, name=name, state=TRUSTED, introducers=introducers)
    put_peer(w, record)
    if name == intro.name and pinned is None:
        w.txn.put(intro.name.encode(), intro.key, db=names)
    return fresh
