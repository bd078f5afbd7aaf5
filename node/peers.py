"""Federation state in LMDB: peers and their trust, name pins, outboxes, inbound.

Trust states: ``trusted`` (seed list with pinned id, or approved by an admin),
``pending`` (discovered or gossiped; an admin may approve), ``blocked``.
Only a trusted peer's signed handshake pins its name.

Each peer has a durable outbox: entries carry a per-peer ``oseq``; the peer
acknowledges cumulatively after its own commit, and entries up to the ack
are deleted. The receiving side stores the highest applied ``oseq`` per peer
in the same transaction as the messages, so a resent batch stores nothing
twice, and ``(origin, id)`` dedup catches a replay under a new ``oseq``.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2
import lmdb

from chinwag.protocol.addresses import UserAddress, node_id_bytes, node_id_text
from chinwag.protocol.envelope import (
    CONTEXT_ENVELOPE,
    CONTEXT_GROUP_RECORD,
    Envelope,
    SignedUnit,
    Verified,
    open_unit,
)
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.group_record import open_group_record
from chinwag.protocol.link import entry_field

from . import blob_index
from .blocks import is_blocked
from .store import Store, WriteTxn, event_record, unit_record

TRUSTED = "trusted"
PENDING = "pending"
BLOCKED = "blocked"
STATES = (TRUSTED, PENDING, BLOCKED)

#: Default outbox bounds per peer (NodeConfig.outbox_max_entries and
#: outbox_max_bytes): a send gets ``unavailable`` before any ``ok`` past them.
MAX_OUTBOX_ENTRIES = 200_000
MAX_OUTBOX_BYTES = 256 << 20
MAX_URLS = 8
MAX_URL_CHARS = 300
DEDUP_RETENTION_MS = 7 * 24 * 3600 * 1000
DEDUP_PRUNE_PER_ENTRY = 2
#: At most this many expired outbox entries are removed in one transaction.
OUTBOX_EXPIRE_PER_PASS = 512
MAX_PEERS = 4096
#: Sources whose peers are stored even past MAX_PEERS (an admin decided).
VOUCHED_SOURCES = ("admin", "seed", "invite")

_U64 = struct.Struct(">Q")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerRecord:
    key: bytes
    name: str
    state: str
    urls: tuple[str, ...]
    source: str
    added_ms: int
    #: The URLs known only from gossip (not from a seed, an admin or mDNS):
    #: these are dialled only after the checks of node/dialcheck.py.
    gossip_urls: tuple[str, ...] = ()
    #: This node accepts nodes that this peer introduces (node/introductions.py).
    trust_introductions: bool = False
    #: The introducers that vouched for this peer (signed statements): the
    #: basis of its trust unless ``direct``, and the relays towards it either way.
    introducers: tuple[bytes, ...] = ()
    #: An admin, a seed or mDNS trusted it (not only an introducer): revoking
    #: an introducer leaves it trusted, and it may be introduced onwards.
    direct: bool = False

    @property
    def id(self) -> str:
        return node_id_text(self.key)

    @property
    def first_hand(self) -> bool:
        """Whether this node has a URL for the peer from a seed, an admin or mDNS."""
        return any(url not in self.gossip_urls for url in self.urls)


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox item: ``kind`` ``m`` (1:1 unit), ``gs`` (a member's group
    send to the host), ``gl`` (a member leaving), ``gr`` (a host's group record)."""

    oseq: int
    kind: str
    payload: dict[str, bytes]
    user: str

    def to_wire(self) -> dict[str, Any]:
        return {"o": self.oseq, "k": self.kind, entry_field(self.kind): self.payload}

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.payload.values())


@dataclass
class InboundResult:
    applied: int
    rejected: list[dict[str, Any]] = field(default_factory=list)
    stored: int = 0
    refused: int = 0


def _decode_peer(key: bytes, raw: bytes) -> PeerRecord:
    item = cbor2.loads(raw)
    return PeerRecord(
        key=key,
        name=item.get("name", ""),
        state=item["state"],
        urls=tuple(item.get("urls", ())),
        source=item.get("source", ""),
        added_ms=item.get("added", 0),
        gossip_urls=tuple(item.get("gossip", ())),
        trust_introductions=bool(item.get("intro", False)),
        introducers=tuple(item.get("via", ())),
        # Rows written before "dt": trusted with no introducer was direct trust.
        direct=bool(item.get("dt", item["state"] == TRUSTED and not item.get("via"))),
    )


def _encode_peer(record: PeerRecord) -> bytes:
    return cbor2.dumps(
        {
            "name": record.name,
            "state": record.state,
            "urls": list(record.urls),
            "source": record.source,
            "added": record.added_ms,
            "gossip": list(record.gossip_urls),
            "intro": record.trust_introductions,
            "via": list(record.introducers),
            "dt": record.direct,
        }
    )


def peer_in(w: WriteTxn, key: bytes) -> PeerRecord | None:
    """``key``'s peer row, read inside the caller's write transaction."""
    raw = w.txn.get(key, db=w.db("peers"))
    return None if raw is None else _decode_peer(key, raw)


def put_peer(w: WriteTxn, record: PeerRecord) -> None:
    """Write ``record`` inside the caller's write transaction."""
    w.txn.put(record.key, _encode_peer(record), db=w.db("peers"))


def all_peers_in(w: WriteTxn) -> list[PeerRecord]:
    return [_decode_peer(bytes(k), v) for k, v in w.txn.cursor(db=w.db("peers"))]


def merge_urls(
    old: PeerRecord | None, urls: tuple[str, ...], *, gossip: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A peer's URL list after learning ``urls``: (all URLs, the gossip-only ones).

    URLs from a seed, an admin or mDNS (first-hand) come first and are never
    evicted by gossip: of the :data:`MAX_URLS` places, gossip only fills what
    first-hand URLs leave, newest first, and evicts only older gossip URLs.
    A first-hand source vouches for a URL that gossip brought before.
    """
    old_gossip = old.gossip_urls if old else ()
    old_first = tuple(url for url in (old.urls if old else ()) if url not in old_gossip)
    if gossip:
        first = old_first
        fresh = tuple(url for url in urls if url not in old_first)
    else:
        first = tuple(dict.fromkeys((*urls, *old_first)))[:MAX_URLS]
        fresh = ()
    rest = tuple(url for url in dict.fromkeys((*fresh, *old_gossip)) if url not in first)
    rest = rest[: MAX_URLS - len(first)]
    return first + rest, rest


def check_url(url: str) -> str:
    if (
        not isinstance(url, str)
        or not url.startswith(("http://", "https://"))
        or len(url) > MAX_URL_CHARS
    ):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not a node URL: {str(url)[:80]!r}")
    return url.rstrip("/")


class PeerRegistry:
    """Peers, pins, outboxes and inbound state, on top of the node's store."""

    def __init__(
        self,
        store: Store,
        on_outbox: Callable[[bytes], None] | None = None,
        *,
        outbox_max_entries: int = MAX_OUTBOX_ENTRIES,
        outbox_max_bytes: int = MAX_OUTBOX_BYTES,
    ) -> None:
        self._store = store
        self._on_outbox = on_outbox
        self._max_entries = outbox_max_entries
        self._max_bytes = outbox_max_bytes
        #: Applies group items (``gs``, ``gl``, ``gr``) inside the inbound
        #: transaction (the last argument: signatures checked before).
        self.group_inbound: (
            Callable[[WriteTxn, bytes, str, Any, int, Verified | None], None] | None
        ) = None
        #: Applies relay items (``rl`` at the relay, ``rd`` at the destination,
        #: ``rf`` back at the origin) inside the inbound transaction (node/relay.py).
        self.relay_inbound: Callable[[WriteTxn, bytes, str, Any, int], None] | None = None
        #: Told of a relayed unit (``rd``) refused by, or withdrawn by age
        #: towards, peer ``key``: ``(w, unit, code, key, now_ms)``, in the same
        #: transaction; node/relay.py returns the refusal to the origin node.
        self.relay_refused: Callable[[WriteTxn, Any, str, bytes, int], None] | None = None
        #: Told of the host's group records withdrawn by age from one peer's
        #: outbox, in the same transaction (node/groups.py reports them and
        #: queues a fresh snapshot for the peer).
        self.group_withdrawn: Callable[[WriteTxn, bytes, list[Any], int], None] | None = None
        #: Told after an ack's commit of the 1:1 messages it acknowledged:
        #: (local sender, recipient, newest id) per pair (node/receipts.py).
        self.on_delivered: Callable[[list[tuple[str, UserAddress, int]]], None] | None = None

    # ------------------------------------------------------------ reads
    def get(self, key: bytes) -> PeerRecord | None:
        def fn(view: Any) -> PeerRecord | None:
            raw = view.txn.get(key, db=view.db("peers"))
            return None if raw is None else _decode_peer(key, raw)

        return self._store.read(fn)

    def all(self) -> list[PeerRecord]:
        def fn(view: Any) -> list[PeerRecord]:
            return [_decode_peer(k, v) for k, v in view.txn.cursor(db=view.db("peers"))]

        return self._store.read(fn)

    def pinned(self, name: str) -> bytes | None:
        def fn(view: Any) -> bytes | None:
            raw = view.txn.get(name.encode(), db=view.db("peer_names"))
            return None if raw is None else bytes(raw)

        return self._store.read(fn)

    def outbox_depth(self, key: bytes) -> int:
        meta = self._meta(key)
        return meta["next"] - 1 - meta["acked"]

    def outbox_bytes(self, key: bytes) -> int:
        """The bytes of ``key``'s unacknowledged entries, as stored."""
        return max(0, self._meta(key).get("bytes", 0))

    def outbox_appended(self, key: bytes) -> int:
        """How many entries were ever queued for ``key`` (the last oseq used)."""
        return self._meta(key)["next"] - 1

    def _meta(self, key: bytes) -> dict[str, int]:
        def fn(view: Any) -> dict[str, int]:
            raw = view.txn.get(key, db=view.db("outbox_meta"))
            return {"next": 1, "acked": 0} if raw is None else cbor2.loads(raw)

        return self._store.read(fn)

    def acked(self, key: bytes) -> int:
        return self._meta(key)["acked"]

    def outbox_oldest_ms(self, key: bytes) -> int | None:
        """When the oldest unacknowledged entry for ``key`` was queued (None: empty)."""

        def fn(view: Any) -> int | None:
            raw = view.txn.get(key, db=view.db("outbox_meta"))
            acked = 0 if raw is None else cbor2.loads(raw)["acked"]
            cursor = view.txn.cursor(db=view.db("outbox"))
            if not cursor.set_range(key + _U64.pack(acked + 1)) or not cursor.key().startswith(key):
                return None
            ms = cbor2.loads(cursor.value()).get("ms")
            return ms if isinstance(ms, int) else 0

        return self._store.read(fn)

    def read_outbox(self, key: bytes, after: int, limit: int) -> list[OutboxEntry]:
        def fn(view: Any) -> list[OutboxEntry]:
            out: list[OutboxEntry] = []
            cursor = view.txn.cursor(db=view.db("outbox"))
            if not cursor.set_range(key + _U64.pack(after + 1)):
                return out
            for k, v in cursor:
                if not k.startswith(key) or len(out) >= limit:
                    break
                item = cbor2.loads(v)
                out.append(
                    OutboxEntry(_U64.unpack(k[32:])[0], item["k"], item["p"], item.get("user", ""))
                )
            return out

        return self._store.read(fn)

    def applied_from(self, key: bytes) -> int:
        def fn(view: Any) -> int:
            raw = view.txn.get(key, db=view.db("inbound"))
            return 0 if raw is None else _U64.unpack(raw)[0]

        return self._store.read(fn)

    # ------------------------------------------------------------ peer admin
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
        also: Callable[[WriteTxn], object] | None = None,
    ) -> PeerRecord:
        """Add or update a peer; URLs are merged; a blocked peer stays blocked.

        ``also`` runs first in the same transaction (an invitation used up
        together with the trust it grants, node/invitations.py)."""
        for url in urls:
            check_url(url)

        def op(w: WriteTxn) -> PeerRecord:
            if also is not None:
                also(w)
            db = w.db("peers")
            raw = w.txn.get(key, db=db)
            old = None if raw is None else _decode_peer(key, raw)
            # The cap is for rows nobody vouched for (gossip, mDNS): an admin's
            # or a seed's peer always gets its row.
            vouched = source in VOUCHED_SOURCES
            if old is None and not vouched and w.txn.stat(db)["entries"] >= MAX_PEERS:
                raise ProtocolError(ErrorCode.TOO_LARGE, "too many peers")
            new_state = state or (old.state if old else PENDING)
            if old is not None and old.state == BLOCKED and keep_blocked:
                new_state = BLOCKED
            merged, gossip = merge_urls(old, urls, gossip=source == "gossip")
            # An explicit "trusted" (admin, seed, mDNS auto-trust) is direct
            # trust: it no longer rests on any introducer. The introducers
            # stay, as the relays towards a peer that may have no URL.
            direct = new_state == TRUSTED and (state == TRUSTED or (old is not None and old.direct))
            record = PeerRecord(
                key=key,
                name=name if name is not None else (old.name if old else ""),
                state=new_state,
                urls=merged,
                source=old.source if old and old.source else source,
                added_ms=old.added_ms if old else now_ms,
                gossip_urls=gossip,
                trust_introductions=old.trust_introductions if old else False,
                introducers=old.introducers if old is not None else (),
                direct=direct,
            )
            w.txn.put(key, _encode_peer(record), db=db)
            return record

        return await self._store.transact(op)

    async def learn_gossiped(
        self, items: list[tuple[bytes, tuple[str, ...]]], now_ms: int
    ) -> list[bytes]:
        """Merge gossiped URLs of several nodes in one transaction (one commit).

        Only rows that change are written, and when none would, no transaction
        is opened at all: gossip that repeats what is known costs no commit.
        Returns the keys whose rows exist afterwards (a stranger past
        :data:`MAX_PEERS` gets none); a bad URL or a full table skips that
        node alone.
        """
        wanted: list[tuple[bytes, tuple[str, ...]]] = []
        for key, urls in items:
            try:
                clean = tuple(check_url(url) for url in urls)
            except ProtocolError:
                continue
            old = self.get(key)
            if old is None or merge_urls(old, clean, gossip=True) != (old.urls, old.gossip_urls):
                wanted.append((key, clean))
        known = [key for key, _ in items if key not in {k for k, _ in wanted}]
        known = [key for key in known if self.get(key) is not None]
        if not wanted:
            return known

        def op(w: WriteTxn) -> list[bytes]:
            db = w.db("peers")
            written: list[bytes] = []
            for key, urls in wanted:
                raw = w.txn.get(key, db=db)
                old = None if raw is None else _decode_peer(key, raw)
                if old is None and w.txn.stat(db)["entries"] >= MAX_PEERS:
                    continue  # the cap is for rows nobody vouched for
                merged, gossip = merge_urls(old, urls, gossip=True)
                if old is not None and (merged, gossip) == (old.urls, old.gossip_urls):
                    written.append(key)
                    continue
                if old is not None:
                    # Only the URLs change: trust, name and introducers stay.
                    record = dataclasses.replace(old, urls=merged, gossip_urls=gossip)
                else:
                    record = PeerRecord(
                        key=key,
                        name="",
                        state=PENDING,
                        urls=merged,
                        source="gossip",
                        added_ms=now_ms,
                        gossip_urls=gossip,
                    )
                w.txn.put(key, _encode_peer(record), db=db)
                written.append(key)
            return written

        return known + await self._store.transact(op)

    async def set_state(self, key: bytes, state: str) -> PeerRecord:
        if state not in STATES:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown state {state!r}")
        if self.get(key) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such peer")
        return await self.upsert(key, state=state, keep_blocked=False)

    async def remove(self, key: bytes) -> None:
        def op(w: WriteTxn) -> None:
            raw = w.txn.get(key, db=w.db("peers"))
            if raw is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, "no such peer")
            record = _decode_peer(key, raw)
            w.txn.delete(key, db=w.db("peers"))
            if record.name and w.txn.get(record.name.encode(), db=w.db("peer_names")) == key:
                w.txn.delete(record.name.encode(), db=w.db("peer_names"))

        await self._store.transact(op)

    async def pin_name(self, key: bytes, name: str) -> None:
        """Pin ``name`` to ``key`` (from a trusted peer's signed handshake).

        Raises ``conflict`` if the name is already pinned to another key.
        """

        def op(w: WriteTxn) -> None:
            names = w.db("peer_names")
            current = w.txn.get(name.encode(), db=names)
            if current is not None and bytes(current) != key:
                raise ProtocolError(
                    ErrorCode.CONFLICT, f"name {name!r} is pinned to another node key"
                )
            w.txn.put(name.encode(), key, db=names)
            raw = w.txn.get(key, db=w.db("peers"))
            if raw is not None:
                old = _decode_peer(key, raw)
                if old.name != name:
                    if old.name and w.txn.get(old.name.encode(), db=names) == key:
                        w.txn.delete(old.name.encode(), db=names)
                    w.txn.put(key, _encode_peer(_replace_name(old, name)), db=w.db("peers"))

        await self._store.transact(op)

    # ------------------------------------------------------------ outbox (RemoteSink)
    def check(self, w: WriteTxn, node_id: str) -> None:
        """Refuse a send towards ``node_id`` before anything is written: an
        unknown node (``no_such_node``), one not trusted (``forbidden``: pending
        or blocked; nothing is queued for it), or a full outbox (``unavailable``).
        :meth:`append_item` checks the bound again with the entry's size."""
        key = node_id_bytes(node_id)
        self._require_trusted(w, key, node_id)
        self._require_room(self._txn_meta(w, key), 0, node_id)

    def is_trusted(self, w: WriteTxn, node_id: str) -> bool:
        """Whether ``node_id`` is a trusted peer (group fan-out skips others)."""
        raw = w.txn.get(node_id_bytes(node_id), db=w.db("peers"))
        return raw is not None and cbor2.loads(raw).get("state") == TRUSTED

    def _require_trusted(self, w: WriteTxn, key: bytes, node_id: str) -> None:
        raw = w.txn.get(key, db=w.db("peers"))
        if raw is None:
            raise ProtocolError(ErrorCode.NO_SUCH_NODE, f"unknown node {node_id[:12]}")
        state = _decode_peer(key, raw).state
        if state == BLOCKED:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"node {node_id[:12]} is blocked")
        if state != TRUSTED:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"node {node_id[:12]} is not trusted (pending approval)"
            )

    def _require_room(self, meta: dict[str, int], size: int, node_id: str) -> None:
        """The one outbox bound, in entries and in bytes, for every writer."""
        entries = meta["next"] - 1 - meta["acked"]
        stored = max(0, meta.get("bytes", 0))
        if entries + 1 > self._max_entries or (
            stored + size > self._max_bytes if size else stored >= self._max_bytes
        ):
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, f"the outbox to {node_id[:12]} is full; try later"
            )

    def append(self, w: WriteTxn, node_id: str, unit: SignedUnit, sender: str, now_ms: int) -> None:
        self.append_item(w, node_id, "m", unit.to_wire(), sender, now_ms)

    def append_item(
        self,
        w: WriteTxn,
        node_id: str,
        kind: str,
        payload: dict[str, bytes],
        sender: str,
        now_ms: int,
    ) -> None:
        """Queue one item for ``node_id`` in the same transaction as the caller's.

        Raises (before writing anything) if the peer is not trusted or the
        item would take its outbox past the bound in entries or bytes.
        """
        key = node_id_bytes(node_id)
        self._require_trusted(w, key, node_id)
        meta = self._txn_meta(w, key)
        value = cbor2.dumps({"k": kind, "p": payload, "user": sender, "ms": now_ms})
        self._require_room(meta, len(value), node_id)
        oseq = meta["next"]
        w.txn.put(key + _U64.pack(oseq), value, db=w.db("outbox"))
        # The peer is sent these blobs' hashes: it may fetch them (node/blob_index.py).
        blob_index.grant_payload(w.txn, w.dbs(blob_index.DB_NAMES), key, payload)
        meta["next"] = oseq + 1
        meta["bytes"] = max(0, meta.get("bytes", 0)) + len(value)
        w.txn.put(key, cbor2.dumps(meta), db=w.db("outbox_meta"))
        # The link is woken after the commit (Store.on_outbox), never before:
        # a sender that read the outbox early would miss this entry.
        w.outbox_grew(node_id)

    def _txn_meta(self, w: WriteTxn, key: bytes) -> dict[str, int]:
        raw = w.txn.get(key, db=w.db("outbox_meta"))
        return {"next": 1, "acked": 0} if raw is None else cbor2.loads(raw)

    async def outbox_ack(
        self, key: bytes, upto: int, rejected: list[tuple[int, str]], now_ms: int
    ) -> int:
        """Drop entries up to ``upto``; rejected entries become ``delivery_failed`` events."""
        rejected_codes = dict(rejected)
        delivered: dict[tuple[str, UserAddress], int] = {}
        want_delivered = self.on_delivered is not None

        def op(w: WriteTxn) -> int:
            delivered.clear()  # the op may run again after a map resize
            relayed: list[tuple[Any, str]] = []
            meta = self._txn_meta(w, key)
            top = min(upto, meta["next"] - 1)
            if top <= meta["acked"]:
                return meta["acked"]
            outbox = w.db("outbox")
            cursor = w.txn.cursor(db=outbox)
            if cursor.set_range(key + _U64.pack(meta["acked"] + 1)):
                while True:
                    k = cursor.key()
                    if not k.startswith(key) or _U64.unpack(k[32:])[0] > top:
                        break
                    oseq = _U64.unpack(k[32:])[0]
                    if oseq in rejected_codes:
                        item = cbor2.loads(cursor.value())
                        _delivery_failed(w, item, rejected_codes[oseq], key)
                        if item.get("k") == "rd":
                            relayed.append((item["p"], rejected_codes[oseq]))
                    elif want_delivered:
                        _note_delivered(delivered, cursor.value())
                    _forget_bytes(meta, len(cursor.value()))
                    if not cursor.delete():
                        break
            meta["acked"] = top
            w.txn.put(key, cbor2.dumps(meta), db=w.db("outbox_meta"))
            cursor.close()
            self._relay_refused(w, relayed, key, now_ms)
            return top

        acked = await self._store.transact(op)
        if delivered and self.on_delivered is not None:
            self.on_delivered([(u, to, i) for (u, to), i in delivered.items()])
        return acked

    async def expire_outbox(
        self,
        key: bytes,
        now_ms: int,
        max_age_ms: int,
        limit: int = OUTBOX_EXPIRE_PER_PASS,
        code: str = str(ErrorCode.TIMEOUT),
    ) -> int:
        """Withdraw up to ``limit`` entries queued more than ``max_age_ms`` ago.

        Entries go oldest first, from the front of the outbox, and stop at the
        first younger one. Each withdrawn 1:1 or group send becomes a
        ``delivery_failed`` event (``code``: ``timeout``, or ``no_route`` from
        node/relay.py) in its sender's queue, in
        the same transaction that deletes it, so it is reported exactly once;
        withdrawn group records go to :attr:`group_withdrawn`.
        The withdrawn entries count as acknowledged here; the next ``push``
        tells the peer to skip them. Returns how many were withdrawn.
        """
        horizon = now_ms - max_age_ms

        def op(w: WriteTxn) -> int:
            meta = self._txn_meta(w, key)
            cursor = w.txn.cursor(db=w.db("outbox"))
            if not cursor.set_range(key + _U64.pack(meta["acked"] + 1)):
                return 0
            count = 0
            top = meta["acked"]
            records: list[Any] = []
            relayed: list[tuple[Any, str]] = []
            while count < limit:
                k = cursor.key()
                if not k.startswith(key):
                    break
                item = cbor2.loads(cursor.value())
                ms = item.get("ms")
                if isinstance(ms, int) and ms > horizon:
                    break
                top = _U64.unpack(k[32:])[0]
                if item.get("k") == "gr":
                    records.append(item["p"])
                elif item.get("k") == "rd":
                    relayed.append((item["p"], code))
                else:
                    _delivery_failed(w, item, code, key)
                _forget_bytes(meta, len(cursor.value()))
                count += 1
                if not cursor.delete():
                    break
            if count:
                meta["acked"] = top
                w.txn.put(key, cbor2.dumps(meta), db=w.db("outbox_meta"))
            if records and self.group_withdrawn is not None:
                # After the meta is written: the hook may queue a snapshot.
                self.group_withdrawn(w, key, records, now_ms)
            cursor.close()
            self._relay_refused(w, relayed, key, now_ms)
            return count

        return await self._store.transact(op)

    def _relay_refused(
        self, w: WriteTxn, relayed: list[tuple[Any, str]], key: bytes, now_ms: int
    ) -> None:
        """Hand relayed units that did not reach ``key`` to the relay, after
        the outbox cursor is done (the hook queues into another outbox)."""
        if self.relay_refused is None:
            return
        for unit, code in relayed:
            self.relay_refused(w, unit, code, key, now_ms)

    # ------------------------------------------------------------ inbound
    async def apply_inbound(
        self,
        peer: bytes,
        entries: list[tuple[int, str, Any]],
        now_ms: int,
        skip: int | None = None,
        verified: Verified | None = None,
    ) -> InboundResult:
        """Verify and commit a batch from ``peer`` in one transaction.

        ``verified`` holds signatures already checked over the exact bytes
        (:func:`check_signatures`, run in a worker thread): those are not
        checked again; every other step is.

        Entries at or below the applied ``oseq`` are skipped (a resent batch);
        a refused entry (forged, mis-attributed, replayed, unknown user) is
        reported in ``rejected`` and never stored. ``skip`` (the oseq just
        before the first entry) says the peer withdrew every entry up to it
        (expired by age): the applied ``oseq`` moves up to it.
        """
        our_id = self._store.node_key.id

        def op(w: WriteTxn) -> InboundResult:
            inbound = w.db("inbound")
            raw = w.txn.get(peer, db=inbound)
            applied = 0 if raw is None else _U64.unpack(raw)[0]
            if skip is not None and entries and skip == entries[0][0] - 1 and skip > applied:
                applied = skip
            result = InboundResult(applied=applied)
            for oseq, kind, payload in entries:
                if oseq <= applied:
                    continue
                if oseq != applied + 1:
                    break  # a gap: stop here, the peer resends from our ack
                applied = oseq
                try:
                    # Each entry in its own child transaction: a refused entry
                    # leaves nothing behind (no dedup row, no queue entry).
                    with w.nested() as child:
                        self._apply_entry(child, peer, kind, payload, our_id, now_ms, verified)
                    result.stored += 1
                except ProtocolError as exc:
                    if exc.code is not ErrorCode.NO_SUCH_USER:
                        result.refused += 1
                    result.rejected.append({"oseq": oseq, "code": str(exc.code)})
                except lmdb.Error:
                    raise  # map full (the batch is retried) or storage trouble
                except Exception:
                    # A bug on one entry must not wedge the link: refuse it alone.
                    log.exception("inbound entry %d from %s failed", oseq, node_id_text(peer))
                    result.refused += 1
                    result.rejected.append({"oseq": oseq, "code": str(ErrorCode.INTERNAL)})
            w.txn.put(peer, _U64.pack(applied), db=inbound)
            result.applied = applied
            return result

        return await self._store.transact(op)

    def _apply_entry(
        self,
        w: WriteTxn,
        peer: bytes,
        kind: str,
        payload: Any,
        our_id: str,
        now_ms: int,
        verified: Verified | None = None,
    ) -> None:
        """Verify and store one inbound entry; raise ProtocolError to refuse it."""
        if kind in ("rl", "rd", "rf"):
            if self.relay_inbound is None:
                raise ProtocolError(ErrorCode.FORBIDDEN, "this node does not relay")
            self.relay_inbound(w, peer, kind, payload, now_ms)
            return
        if kind != "m":
            if self.group_inbound is None:
                raise ProtocolError(ErrorCode.BAD_FRAME, "groups are not served here")
            self.group_inbound(w, peer, kind, payload, now_ms, verified)
            return
        unit = SignedUnit.from_wire(payload)
        deliver_unit(
            w, unit, open_unit(unit, expected_origin=peer, verified=verified), our_id, now_ms
        )


def _note_delivered(delivered: dict[tuple[str, UserAddress], int], raw: bytes) -> None:
    """Keep the newest id per (sender, recipient) of an acknowledged 1:1 entry."""
    item = cbor2.loads(raw)
    if item.get("k") != "m" or not item.get("user"):
        return
    env = cbor2.loads(item["p"]["env"])
    to = env.get("to")
    if not isinstance(to, dict):
        return
    pair = (item["user"], UserAddress(to["u"], to["n"]))
    delivered[pair] = max(delivered.get(pair, 0), int(env["id"]))


def deliver_unit(w: WriteTxn, unit: SignedUnit, env: Envelope, our_id: str, now_ms: int) -> None:
    """Store a verified 1:1 unit in its local recipient's queue, exactly once."""
    if env.to is None or env.to.node != our_id:
        raise ProtocolError(ErrorCode.FORBIDDEN, "not addressed to this node")
    record_dedup(w, unit.by, env.id, now_ms)  # a replay is refused here
    recipient = w.get_user(env.to.user)
    if recipient is None:
        raise ProtocolError(ErrorCode.NO_SUCH_USER, f"no user {env.to.user} on this node")
    if is_blocked(w, recipient.uid, env.sender):
        return  # accepted and acknowledged, never queued: the sender is not told
    w.append_to_uid(recipient.uid, recipient.name, unit_record(unit))


def check_signatures(peer: bytes, entries: list[tuple[int, str, Any]]) -> Verified:
    """Check the signatures of pushed entries from ``peer``, ahead of their commit.

    Thread-safe and pure, for a worker thread: Ed25519 in ``cryptography``
    releases the GIL, so a link's next batch is checked while the store's
    writer commits the last one. The result only spares work: the commit
    opens every entry (shape, origin, attribution, dedup) as before, and a
    signature missing here (bad, or of an entry that did not parse) is
    checked there again and refused with its usual error.
    """
    verified = Verified()
    for _oseq, kind, payload in entries:
        try:
            if kind == "gr":
                if not verified.check(CONTEXT_GROUP_RECORD, peer, payload["rec"], payload["sig"]):
                    continue
                inner = open_group_record(payload, peer, verified).unit
                if inner is None:
                    continue  # a membership record: the host's signature only
                unit = inner
            else:
                unit = SignedUnit.from_wire(payload)
            verified.check(CONTEXT_ENVELOPE, unit.by, unit.env, unit.sig)
        except Exception:  # noqa: BLE001 - a hint only: the commit refuses it properly
            continue
    return verified


def _forget_bytes(meta: dict[str, int], size: int) -> None:
    # Outboxes written before the byte count existed have no "bytes": never below 0.
    meta["bytes"] = max(0, meta.get("bytes", 0) - size)


def _replace_name(record: PeerRecord, name: str) -> PeerRecord:
    return dataclasses.replace(record, name=name)


def _delivery_failed(w: WriteTxn, item: dict[str, Any], code: str, peer: bytes) -> None:
    user = item.get("user")
    if not isinstance(user, str) or item.get("k") == "gr":
        return
    payload = item["p"]
    if item.get("k") == "rl":  # a unit for a relay to pass on: the unit, not its "to"
        payload = {k: v for k, v in payload.items() if k != "to"}
    report_failed(w, user, SignedUnit.from_wire(payload), code, peer)


def report_failed(w: WriteTxn, user: str, unit: SignedUnit, code: str, peer: bytes) -> None:
    """A ``delivery_failed`` event for ``unit`` in local ``user``'s queue:
    it did not reach ``peer`` (code as in docs/protocol.md)."""
    if w.get_user(user) is None:
        return
    try:
        env = open_unit(unit)
    except ProtocolError:
        return
    to: UserAddress | None = env.to
    w.append_to_queue(
        user,
        event_record(
            {
                "type": "delivery_failed",
                "id": env.id,
                "to": to.to_wire() if to else None,
                "group": env.group.to_wire() if env.group else None,
                "code": code,
                "node": node_id_text(peer),
            }
        ),
    )


def record_dedup(w: WriteTxn, origin: bytes, msg_id: int, now_ms: int) -> None:
    """Remember ``(origin, id)`` for the dedup retention, or refuse a replay.

    Every row gets its age-index entry, so :func:`_prune_dedup` can drop it
    later; each call prunes a few expired rows.
    """
    key = origin + _U64.pack(msg_id)
    if w.txn.get(key, db=w.db("dedup")) is not None:
        raise ProtocolError(ErrorCode.CONFLICT, "replayed envelope")
    w.txn.put(key, _U64.pack(now_ms), db=w.db("dedup"))
    w.txn.put(_U64.pack(now_ms) + key, b"", db=w.db("dedup_times"))
    _prune_dedup(w, now_ms)


def _prune_dedup(w: WriteTxn, now_ms: int) -> None:
    times = w.db("dedup_times")
    cursor = w.txn.cursor(db=times)
    if not cursor.first():
        return
    for _ in range(DEDUP_PRUNE_PER_ENTRY):
        key = cursor.key()
        if not key or _U64.unpack(key[:8])[0] > now_ms - DEDUP_RETENTION_MS:
            return
        w.txn.delete(key[8:], db=w.db("dedup"))
        if not cursor.delete():
            return
