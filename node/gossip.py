"""Address gossip: the signed address records this node knows and passes on.

Addresses spread, trust does not: a node learned by gossip is only
``pending`` (node/peers.py). A record is signed by the node it describes
(protocol/address_record.py); only a newer record (by ``ts``) replaces one
already held, and records are passed on only for trusted nodes.

Gossip costs nothing when nothing changes:

* this node signs its own record once, when its addresses change, not per
  frame (its ``ts`` only moves then);
* a record whose signature bytes equal those of a record already held is
  dropped before any decoding or verification;
* a round is a ``gsum`` (a hash of what each side holds); only when the hashes
  differ do the two sides exchange ``gdigest`` (node key -> ``ts`` of every
  record held) and then send each other the records the other lacks;
* new or changed records of one frame are written in one transaction, and
  only the peer rows that change: an unchanged record is never written.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from chinwag.protocol.address_record import AddressRecord, make_record, open_record
from chinwag.protocol.errors import ProtocolError
from chinwag.protocol.link import (
    MAX_DIGEST_ENTRIES,
    MAX_GOSSIP_RECORDS,
    DigestEntry,
    Gossip,
    GossipDigest,
    GossipSummary,
    gossip_summary,
)

from .identity import NodeIdentity
from .peers import TRUSTED, PeerRecord

log = logging.getLogger(__name__)

MAX_GOSSIP = MAX_GOSSIP_RECORDS
#: Records kept in memory (one per node, the newest).
MAX_KNOWN_RECORDS = 4096

#: What one gossip message answers with: frames to send back on that link.
Replies = list[Gossip | GossipDigest]


class GossipRegistry(Protocol):
    """What gossip needs from the peer table (node/peers.py)."""

    def get(self, key: bytes) -> PeerRecord | None: ...
    def all(self) -> list[PeerRecord]: ...
    async def learn_gossiped(
        self, items: list[tuple[bytes, tuple[str, ...]]], now_ms: int
    ) -> list[bytes]: ...


@dataclass(frozen=True)
class GossipStats:
    #: Gossip rounds started here (``gsum`` frames sent).
    rounds: int
    #: ``gsum`` frames received, and how many of them matched ours (idle rounds).
    summaries: int
    summaries_matched: int
    #: ``gdigest`` frames sent.
    digests_sent: int
    #: Records sent in ``gossip`` frames.
    records_sent: int
    #: Records whose signature was checked, and records dropped unchecked
    #: because the same signature bytes were already held.
    records_verified: int
    records_skipped: int
    #: Records that were new or newer here (each written at most once).
    records_learned: int


class GossipBook:
    """The newest signed address record of each node this node heard of."""

    def __init__(
        self,
        identity: NodeIdentity,
        registry: GossipRegistry,
        now_ms: Callable[[], int],
        *,
        learned: Callable[[bytes], None],
        forward: Callable[[bytes, Gossip], Awaitable[None]],
    ) -> None:
        """``learned(key)``: a node's URLs were learned (dial it if it may be);
        ``forward(key, frame)``: pass a new trusted node's record to the other links."""
        self._identity = identity
        self._registry = registry
        self._now_ms = now_ms
        self._learned = learned
        self._forward = forward
        self._records: dict[bytes, Mapping[str, bytes]] = {}
        #: The ``ts`` of each record in ``_records``: only a newer one replaces it.
        self._record_ts: dict[bytes, int] = {}
        #: Signatures of the records held (and of our own): a copy of one of
        #: these is dropped before any work.
        self._held_sigs: set[bytes] = set()
        self._own: Mapping[str, bytes] | None = None
        self._own_ts = 0
        #: The hash of ``_held()``, dropped whenever a record changes.
        self._summary: bytes | None = None
        self.own_urls: list[str] = []
        self._rounds = 0
        self._summaries = 0
        self._matched = 0
        self._digests_sent = 0
        self._records_sent = 0
        self._verified = 0
        self._skipped = 0
        self._learned_count = 0

    def statistics(self) -> GossipStats:
        return GossipStats(
            self._rounds,
            self._summaries,
            self._matched,
            self._digests_sent,
            self._records_sent,
            self._verified,
            self._skipped,
            self._learned_count,
        )

    def advertise(self, urls: list[str]) -> None:
        """Where this node can be reached (known once the listener is up).

        The record is signed here, once per change of address, never per frame.
        """
        if self._own is not None and list(urls) == self.own_urls:
            return
        self.own_urls = list(urls)
        self._summary = None
        if self._own is not None:
            self._held_sigs.discard(self._own["sig"])
        if not self.own_urls:
            self._own = None
            return
        # Strictly newer than the last one, even if the wall clock went back.
        self._own_ts = max(self._now_ms(), self._own_ts + 1)
        self._own = make_record(self._identity.key, self.own_urls, self._own_ts)
        self._held_sigs.add(self._own["sig"])

    # ------------------------------------------------------------ what we hold
    def _held(self) -> list[DigestEntry]:
        """Every record held (trusted or not) and our own: what digests describe.

        Untrusted records count too, so two neighbours that hold the same
        records agree whatever each of them trusts.
        """
        held = [DigestEntry(key, ts) for key, ts in self._record_ts.items()]
        if self._own is not None:
            held.append(DigestEntry(self._identity.key.public, self._own_ts))
        # Past one frame's worth, the records left out are simply sent again
        # by the peer, and dropped here unverified (same signature).
        return sorted(held, key=lambda e: e.key)[:MAX_DIGEST_ENTRIES]

    def _offered(self) -> dict[bytes, tuple[int, Mapping[str, bytes]]]:
        """The records this node passes on: its own and those of trusted nodes."""
        out: dict[bytes, tuple[int, Mapping[str, bytes]]] = {}
        if self._own is not None:
            out[self._identity.key.public] = (self._own_ts, self._own)
        trusted = {p.key for p in self._registry.all() if p.state == TRUSTED}
        for key, record in self._records.items():
            if key in trusted:
                out[key] = (self._record_ts[key], record)
        return out

    def summary_frame(self) -> GossipSummary:
        """One gossip round on a link: a hash of what this node holds."""
        self._rounds += 1
        if self._summary is None:
            self._summary = gossip_summary(self._held())
        return GossipSummary(self._summary)

    def frame_for(self, peer: bytes) -> Gossip:
        """Our own signed address record, and those of the trusted peers we know
        (at most one frame's worth: digests fill in the rest)."""
        records = [record for key, (_, record) in self._offered().items() if key != peer][
            :MAX_GOSSIP
        ]
        self._records_sent += len(records)
        return Gossip(tuple(records))

    # ------------------------------------------------------------ rounds
    def on_summary(self, frame: GossipSummary) -> Replies:
        """A peer's round: answer with our digest only if we hold something else."""
        self._summaries += 1
        if self._summary is None:
            self._summary = gossip_summary(self._held())
        if frame.summary == self._summary:
            self._matched += 1
            return []
        self._digests_sent += 1
        return [GossipDigest(tuple(self._held()))]

    def on_digest(self, peer: bytes, frame: GossipDigest) -> Replies:
        """Send what the peer's digest lacks or has older; ask for what it has
        newer with our own digest (unless this one was already an answer)."""
        theirs = {e.key: e.ts for e in frame.have}
        offered = self._offered()
        missing = [
            record
            for key, (ts, record) in offered.items()
            if key != peer and theirs.get(key, -1) < ts
        ]
        replies: Replies = [
            Gossip(tuple(missing[i : i + MAX_GOSSIP])) for i in range(0, len(missing), MAX_GOSSIP)
        ]
        self._records_sent += len(missing)
        own = self._identity.key.public
        wants = any(key != own and ts > self._record_ts.get(key, -1) for key, ts in theirs.items())
        if wants and not frame.reply:
            self._digests_sent += 1
            replies.append(GossipDigest(tuple(self._held()), reply=True))
        return replies

    async def learn(self, frame: Gossip) -> None:
        """Take in a peer's records; one bad record does not spoil the others."""
        changed: list[tuple[AddressRecord, Mapping[str, bytes], bool]] = []
        for item in frame.records:
            if item["sig"] in self._held_sigs:
                self._skipped += 1  # a record we hold: no decode, no verify, no write
                continue
            try:
                record = open_record(dict(item))
            except ProtocolError:
                continue
            self._verified += 1
            if record.key == self._identity.key.public or not record.urls:
                continue
            fresh = record.key not in self._records
            known_ts = self._record_ts.get(record.key)
            if known_ts is not None and record.ts <= known_ts:
                continue  # an older (or the same) record never replaces a newer one
            if len(self._records) >= MAX_KNOWN_RECORDS and fresh:
                continue
            old = self._records.get(record.key)
            if old is not None:
                self._held_sigs.discard(old["sig"])
            self._records[record.key] = item
            self._record_ts[record.key] = record.ts
            self._held_sigs.add(item["sig"])
            self._summary = None
            changed.append((record, item, fresh))
        if not changed:
            return
        self._learned_count += len(changed)
        try:
            stored = set(
                await self._registry.learn_gossiped(
                    [(r.key, r.urls) for r, _, _ in changed], self._now_ms()
                )
            )
        except ProtocolError as exc:
            log.debug("gossiped nodes not recorded: %s", exc.message)
            return
        for record, item, fresh in changed:
            if record.key not in stored:
                continue
            self._learned(record.key)
            peer = self._registry.get(record.key)
            if fresh and peer is not None and peer.state == TRUSTED:
                await self._forward(record.key, Gossip((item,)))
