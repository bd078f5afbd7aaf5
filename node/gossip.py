"""Address gossip: the signed address records this node knows and passes on.

Addresses spread, trust does not: a node learned by gossip is only
``pending`` (node/peers.py). A record is signed by the node it describes
(protocol/address_record.py); only a newer record (by ``ts``) replaces one
already held, and records are passed on only for trusted nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from chinwag.protocol.address_record import make_record, open_record
from chinwag.protocol.errors import ProtocolError
from chinwag.protocol.link import MAX_GOSSIP_RECORDS, Gossip

from .identity import NodeIdentity
from .peers import TRUSTED, PeerRecord

log = logging.getLogger(__name__)

MAX_GOSSIP = MAX_GOSSIP_RECORDS
#: Records kept in memory (one per node, the newest).
MAX_KNOWN_RECORDS = 4096


class GossipRegistry(Protocol):
    """What gossip needs from the peer table (node/peers.py)."""

    def get(self, key: bytes) -> PeerRecord | None: ...
    def all(self) -> list[PeerRecord]: ...
    async def upsert(
        self,
        key: bytes,
        *,
        state: str | None = None,
        urls: tuple[str, ...] = (),
        source: str = "",
        name: str | None = None,
        now_ms: int = 0,
        keep_blocked: bool = True,
    ) -> PeerRecord: ...


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
        self.own_urls: list[str] = []

    def advertise(self, urls: list[str]) -> None:
        """Where this node can be reached (known once the listener is up)."""
        self.own_urls = list(urls)

    def frame_for(self, peer: bytes) -> Gossip:
        """Our own signed address record, and those of the trusted peers we know."""
        records: list[Mapping[str, bytes]] = []
        if self.own_urls:
            records.append(make_record(self._identity.key, self.own_urls, self._now_ms()))
        trusted = {p.key for p in self._registry.all() if p.state == TRUSTED}
        for key, record in self._records.items():
            if key != peer and key in trusted and len(records) < MAX_GOSSIP:
                records.append(record)
        return Gossip(tuple(records))

    async def learn(self, frame: Gossip) -> None:
        """Take in a peer's records; one bad record does not spoil the others."""
        for item in frame.records:
            try:
                record = open_record(dict(item))
            except ProtocolError:
                continue
            if record.key == self._identity.key.public or not record.urls:
                continue
            fresh = record.key not in self._records
            known_ts = self._record_ts.get(record.key)
            if known_ts is not None and record.ts <= known_ts:
                continue  # an older (or the same) record never replaces a newer one
            if len(self._records) < MAX_KNOWN_RECORDS or not fresh:
                self._records[record.key] = item
                self._record_ts[record.key] = record.ts
            try:
                await self._registry.upsert(
                    record.key,
                    state=None,
                    urls=record.urls,
                    source="gossip",
                    now_ms=self._now_ms(),
                )
            except ProtocolError as exc:
                log.debug("gossiped node not recorded: %s", exc.message)
                continue
            self._learned(record.key)
            peer = self._registry.get(record.key)
            if fresh and peer is not None and peer.state == TRUSTED:
                await self._forward(record.key, Gossip((item,)))
