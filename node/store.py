"""The node's durable state: one LMDB environment, one writer thread.

Reads are synchronous and short: each opens a read transaction on the trio
thread, copies what it needs out and closes it (LMDB readers never wait for
the writer). Writes are *operations*, plain functions of a :class:`WriteTxn`,
sent to one dedicated writer thread through a bounded inbox. The writer
drains whatever is waiting (up to ``batch_max``) and runs it in one write
transaction, each operation in a nested child transaction so that one that
fails rolls back alone (group commit). After the durable commit the results go
back to trio in one ``run_sync_soon`` call, which also reports the effects of
the committed operations (collected in their :class:`WriteTxn`): the users
whose queues grew (``on_commit``), the peers whose outbox grew
(``on_outbox``) and the session tokens revoked (``on_revoked``). Nothing is
reported for an operation that rolled back, and nothing before its commit.
The event loop never waits on an fsync and no transaction is ever held
across an ``await``.

Backpressure: at most ``max_pending`` operations are in flight; a caller past
that waits in :meth:`Store.transact` rather than growing a queue.

Device acks are soft cursors, not operations: :meth:`Store.note_ack` keeps
the highest ``seq`` per device in memory (one entry per device that acked,
so bounded by the devices), and the writer writes them with the next batch
it commits anyway, or on its own after ``ack_flush_delay`` when no batch
comes. An ack thus never costs a commit (and an fsync) of its own while
messages flow; after a crash a device may be offered again what it acked in
the last ``ack_flush_delay`` and drops it by ``seq``. Reads of the cursor
(:meth:`Store.list_devices`) see the noted value at once.

Map size: on ``MapFullError`` the batch is aborted, the map doubled (with no
transaction open anywhere: reads take a lock the writer holds while resizing)
and the batch run again. Operations may therefore run more than once and must
only change the transaction, never Python state outside it (the store's own
per-batch index state, WriteTxn.flush_index, is reset by every attempt).

Ownership: :meth:`Store.run` first takes an exclusive ``flock`` on
``data_dir/store.lock``; a second store (another node, or the CLI while the
node runs) gets :class:`StoreLocked`.

Schema: opening reads ``meta: schema`` first, refuses a newer store and
migrates an older one after backing it up (node/migrations.py).
:meth:`Store.copy_snapshot` is the online backup's copy (node/backup.py).
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import queue
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import cbor2
import lmdb
import trio

from chinwag.protocol.addresses import UserAddress, check_user_name
from chinwag.protocol.attachments import Attachment
from chinwag.protocol.envelope import Envelope, NodeKey, SignedUnit, sign_envelope
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.ids import IdGenerator
from chinwag.protocol.limits import check_text

from . import actions_store, blob_index, history_index
from .backup import BackupError, pre_migration_dir, write_backup
from .blocks import is_blocked
from .latency import LatencyHistogram
from .lmdb_rows import delete_prefix
from .logs import event
from .migrations import (
    SCHEMA_VERSION,
    MigrationFailed,
    check_supported,
    plan,
    read_schema,
    stamp,
)
from .quota import DiskReserve, QuotaPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")

# Named databases and their layouts. Integers are fixed-width big-endian, so
# LMDB's byte order is numeric order and prefix ranges select one user.
#
#   users:         name (utf-8)                      -> cbor {uid, pw, c, dn, st}
#   uid_user:      uid(4)                            -> name (utf-8)
#   sessions:      token_hash(32)                    -> cbor {u, uid, d, c}
#   user_sessions: uid(4) | created_ms(8) | token_hash(32) -> b""  (oldest first)
#   devices:       uid(4) | device (ascii)           -> cbor {a: acked seq, c: created_ms}
#   queue:         uid(4) | seq(8)                   -> record (cbor {unit} | {event})
#   queue_head:    uid(4)                            -> seq(8)
#   cids:          uid(4) | len(1) | device | cid (utf-8) -> id(8) | seq(8) | ts(8)
#   cid_times:     stored_ms(8) | cids key           -> b""  (age index for pruning)
#   contacts:      uid(4) | address (utf-8)          -> b""
#   presence:      uid(4)                            -> cbor {s: status, l: last_active_at ms}
#   groups:        name (utf-8)                      -> cbor {title, owner, members, gseq} (hosted)
#   group_views:   host(32) | name (utf-8)           -> cbor {members, gseq, title} (member node)
#   group_invites: uid(4) | host(32) | name (utf-8)  -> cbor {s, by, title, ms} (group_invites.py)
#   push_endpoints: uid(4) | device | 0x00 | sha256(url)[:16] -> cbor {url, text: include text?}
#   quota:         uid(4)                            -> level(8) | at_ms(8)  (node/quota.py)
#   meta:          b"schema" -> version(4); b"last_id" -> id(8); b"next_uid" -> uid(4);
#                  b"writer" -> chinwag version (utf-8)  (node/migrations.py)
#
# Federation (layouts and operations in node/peers.py):
#   peers:         node_key(32)                      -> cbor {name, state, urls, ...}
#   peer_names:    name (utf-8)                      -> node_key(32)  (pins)
#   outbox:        node_key(32) | oseq(8)            -> cbor {unit, user, ms}
#   outbox_meta:   node_key(32)                      -> cbor {next, acked}
#   inbound:       node_key(32)                      -> applied oseq(8)
#   dedup:         origin(32) | id(8)                -> stored_ms(8)
#   dedup_times:   stored_ms(8) | origin(32) | id(8) -> b""  (age index for pruning)
#
# Invitations (node/invitations.py):
#   invites:       sha256(secret)(32)                -> cbor {k, c, exp, used}
#
# Conversations, read markers, search (layouts in node/history_index.py):
#   conv, conv_seq, epoch_terms, index_log: written in each write batch's
#   transaction (queue appends staged, WriteTxn.flush_index), index_log
#   entries merged into conv_seq and epoch_terms in batches by Store._attempt.
#
# Blobs (layouts in node/blob_index.py): blobs, blob_refs, blob_uploads,
#   blob_grants, blob_wanted, blob_quota: references kept in each queue
#   append's transaction, grants in each outbox append's.
# Actions on messages (layouts in node/actions_store.py):
#   msg_ids, msg_acts: kept in each queue append's transaction.
#
# Blocks and receipts (issue 17; layouts in node/blocks.py, node/receipts.py):
#   blocks:        uid(4) | "user@<node id>"         -> b""
#   receipts:      uid(4) | conv (utf-8)             -> cbor {member: [delivered_id, read_id]}
#
# uids are never reused, so rows a removed user leaves behind (cid_times
# entries, pruned by age) can never be mistaken for a new user's.
DB_NAMES = (
    "users",
    "uid_user",
    "sessions",
    "user_sessions",
    "devices",
    "queue",
    "queue_head",
    "cids",
    "cid_times",
    "contacts",
    "presence",
    "groups",
    "group_views",
    "group_invites",
    "push_endpoints",
    "quota",
    "meta",
    "peers",
    "peer_names",
    "outbox",
    "outbox_meta",
    "inbound",
    "dedup",
    "dedup_times",
    "invites",
    "blocks",
    "receipts",
    *history_index.DB_NAMES,
    *blob_index.DB_NAMES,
    *actions_store.DB_NAMES,
)
MAX_DBS = 64

#: The cid table keeps send results for 24 hours (by the sender's commit
#: time): a client retries within seconds, never a day later. Each send with
#: a cid deletes up to CID_PRUNE_PER_SEND expired entries, more than it adds,
#: so the table holds at most about one day of sends.
CID_RETENTION_MS = 24 * 3600 * 1000
CID_PRUNE_PER_SEND = 4
MAX_CID_CHARS = 64
#: Oldest sessions and devices of a user are dropped beyond these (defaults
#: of ``Store(max_sessions_per_user=, max_devices_per_user=)``, set from NodeConfig).
MAX_SESSIONS_PER_USER = 256
MAX_DEVICES_PER_USER = 256
MAX_CONTACTS_PER_USER = 1000
MAX_CONTACT_BYTES = 256
MAX_PROFILE_CHARS = 1024
#: A read_queue page never returns more than this many entries.
MAX_READ_PAGE = 4096
#: The map never grows past this (1 TiB); past it a write gets ``unavailable``.
MAX_MAP_SIZE = 1 << 40
#: ``conv`` rows the writer keeps a copy of (about 200 bytes each with
#: Python's overhead); past it the copy starts again from empty.
CONV_ROWS_KEPT = 8192

_DEVICE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_CID_VALUE = struct.Struct(">QQQ")
_MAX_U64 = (1 << 64) - 1


class StoreLocked(Exception):
    """Another process (or another Store in this one) owns the data directory."""


@dataclass(frozen=True)
class UserRecord:
    name: str
    uid: int
    pw_hash: str
    created_ms: int
    display_name: str
    status_text: str


@dataclass(frozen=True)
class SessionRecord:
    user: str
    device: str
    created_ms: int


@dataclass(frozen=True)
class DeviceRecord:
    device: str
    acked: int
    created_ms: int


@dataclass(frozen=True)
class SendResult:
    """The outcome of a send; ``seq`` is the position in the *sender's* queue."""

    id: int
    seq: int
    ts: int
    duplicate: bool


@dataclass(frozen=True)
class QueueEntry:
    seq: int
    record: bytes


@dataclass(frozen=True)
class StoreStats:
    users: int
    commits: int
    ops: int
    largest_batch: int
    pending: int
    map_size: int
    #: Device acks noted; cursors written (a device's acks noted between two
    #: flushes are written once); commits made only to write cursors.
    acks: int = 0
    acks_written: int = 0
    ack_commits: int = 0


# ---------------------------------------------------------------- encoding


def _u32(value: int) -> bytes:
    return _U32.pack(value)


def _u64(value: int) -> bytes:
    return _U64.pack(value)


def _name_key(name: str) -> bytes | None:
    """The users key for a valid local name; None for anything else."""
    try:
        check_user_name(name)
    except ProtocolError:
        return None
    return name.encode("ascii")


def _cid_key(uid: int, device: str, cid: str) -> bytes:
    dev = device.encode("utf-8", "surrogatepass")
    return _u32(uid) + bytes([len(dev)]) + dev + cid.encode("utf-8", "surrogatepass")


def unit_record(unit: SignedUnit) -> bytes:
    """The queue record of a signed unit (a message)."""
    return cbor2.dumps({"unit": unit.to_wire()})


def event_record(event: dict[str, Any]) -> bytes:
    """The queue record of a node event (e.g. ``delivery_failed``)."""
    return cbor2.dumps({"event": event})


def check_send(device: str, cid: str | None, text: str) -> None:
    """Validate the fields of a send (1:1 or group) before it reaches the writer."""
    if not isinstance(device, str) or _DEVICE_RE.fullmatch(device) is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a device id is 1-64 of A-Z a-z 0-9 . _ -")
    if cid is not None and (not isinstance(cid, str) or not 0 < len(cid) <= MAX_CID_CHARS):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"a cid is 1-{MAX_CID_CHARS} characters")
    check_text(text)


def message_body(text: str, attachments: tuple[Attachment, ...] = ()) -> dict[str, Any]:
    """The envelope body of a text message (docs/protocol.md §9.1)."""
    if not attachments:
        return {"text": text}
    return {"text": text, "attachments": [a.to_wire() for a in attachments]}


def _decode_user(name: str, raw: bytes) -> UserRecord:
    item = cbor2.loads(raw)
    return UserRecord(
        name=name,
        uid=item["uid"],
        pw_hash=item["pw"],
        created_ms=item["c"],
        display_name=item["dn"],
        status_text=item["st"],
    )


def _encode_user(record: UserRecord) -> bytes:
    return cbor2.dumps(
        {
            "uid": record.uid,
            "pw": record.pw_hash,
            "c": record.created_ms,
            "dn": record.display_name,
            "st": record.status_text,
        }
    )


def _prefix_keys(txn: lmdb.Transaction[bytes], db: Any, prefix: bytes) -> Iterator[bytes]:
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            return
        yield key


def _prefix_items(
    txn: lmdb.Transaction[bytes], db: Any, prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield key, value


class _View:
    """Helpers shared by read and write transactions."""

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> None:
        self.txn = txn
        self._dbs = dbs

    def db(self, name: str) -> Any:
        """The handle of a named database (see ``DB_NAMES`` and ``extra_dbs``)."""
        return self._dbs[name]

    def dbs(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The named databases ``names`` (for a module's own table functions)."""
        return {name: self._dbs[name] for name in names}

    def get_user(self, name: str) -> UserRecord | None:
        key = _name_key(name)
        if key is None:
            return None
        raw = self.txn.get(key, db=self._dbs["users"])
        return None if raw is None else _decode_user(name, raw)

    def require_user(self, name: str) -> UserRecord:
        record = self.get_user(name)
        if record is None:
            raise ProtocolError(ErrorCode.NO_SUCH_USER, f"no user {name[:40]!r} on this node")
        return record

    def has_contact(self, user: str, addresses: set[str]) -> bool:
        """Whether local ``user`` has any of ``addresses`` (text forms) as a contact."""
        record = self.get_user(user)
        if record is None:
            return False
        prefix = _u32(record.uid)
        contacts = self._dbs["contacts"]
        return any(
            self.txn.get(prefix + address.encode("utf-8"), db=contacts) is not None
            for address in addresses
        )

    def head_of(self, uid: int) -> int:
        raw = self.txn.get(_u32(uid), db=self._dbs["queue_head"])
        return 0 if raw is None else _U64.unpack(raw)[0]


def _take_index_entries(holder: Store | WriteTxn) -> list[history_index.Staged]:
    """The index entries waiting in ``holder`` (the batch or an operation's
    transaction), which keeps none."""
    if isinstance(holder, Store):
        waiting, holder._index_pending = holder._index_pending, []  # noqa: SLF001
    else:
        waiting, holder.index_entries = holder.index_entries, []
    return waiting


def _give_index_entries(holder: Store | WriteTxn, waiting: list[history_index.Staged]) -> None:
    """Put flushed entries back in front of what ``holder`` has since."""
    if isinstance(holder, Store):
        holder._index_pending = waiting + holder._index_pending  # noqa: SLF001
    else:
        holder.index_entries = waiting + holder.index_entries


class WriteTxn(_View):
    """What an operation run by the writer thread gets.

    ``txn`` is the operation's own (nested) write transaction. Use the
    helpers, or ``txn`` with :meth:`db`, and touch nothing outside the
    transaction: after a map resize the operation runs again.
    """

    def __init__(
        self, store: Store, txn: lmdb.Transaction[bytes], parent: WriteTxn | None = None
    ) -> None:
        super().__init__(txn, store._dbs)  # noqa: SLF001
        self._store = store
        #: The operation's transaction this one is nested in (:meth:`nested`).
        self._parent = parent
        self.node_key: NodeKey = store.node_key
        #: Effects reported after the commit (kept only if this transaction
        #: commits): users whose queues grew, session token hashes revoked,
        #: and peers (node ids) whose outbox grew.
        self.touched: set[str] = set()
        self.revoked: set[bytes] = set()
        self.outboxes: set[str] = set()
        #: Blobs to fetch from other nodes were recorded (node/blob_fetch.py).
        self.blobs_wanted = False
        #: The local user who pays for what this operation writes (see
        #: :meth:`bill`), and the bytes charged so far.
        self.payer: str | None = None
        #: The payer's uid when the caller looked it up already (else None).
        self.payer_uid: int | None = None
        self.bill_ms = 0
        self.billed = 0
        #: Counts applied and refused actions on messages (node/actions_store.py).
        self.action_stats = store.action_stats
        #: Entries this operation wrote to ``index_log`` (by flush_index).
        self.staged = 0
        #: Queue entries this operation appended, for the index: written with
        #: the batch's (Store._attempt) unless a reader flushes them sooner.
        self.index_entries: list[history_index.Staged] = []
        #: Entries this transaction wrote by flushing them, with where they
        #: waited (the batch, or a transaction this one is nested in): given
        #: back there if it aborts (see :meth:`flush_index`).
        self.index_taken: list[tuple[Store | WriteTxn, list[history_index.Staged]]] = []

    @property
    def node_id(self) -> str:
        return self.node_key.id

    def next_id(self, now_ms: int) -> int:
        """The next message id of this node (persisted with the commit)."""
        return self._store._ids.next_id(now_ms)  # noqa: SLF001

    def append_to_queue(self, user: str, record: bytes) -> int:
        """Append ``record`` to ``user``'s queue; return its ``seq``."""
        return self.append_to_uid(self.require_user(user).uid, user, record)

    def append_to_uid(self, uid: int, user: str, record: bytes) -> int:
        """:meth:`append_to_queue` for a user already looked up (``uid``)."""
        seq = self.head_of(uid) + 1
        # An action rewrites its target first (or refuses, writing nothing).
        actions_store.on_append(self, uid, seq, record)
        key = _u32(uid)
        self.txn.put(key + _u64(seq), record, db=self._dbs["queue"])
        self.txn.put(key, _u64(seq), db=self._dbs["queue_head"])
        # Conversations and search index: staged, written in this batch's
        # transaction before it commits (flush_index), never out of step.
        staged = history_index.stage(uid, f"{user}@{self.node_id}", seq, record)
        if staged is not None:
            self.index_entries.append(staged)
        # Blob references: counted with the message that makes them.
        now_ms = self.bill_ms or time.time_ns() // 1_000_000
        if blob_index.index_append(self.txn, self._dbs, uid, record, self.node_id, now_ms):
            self.blobs_wanted = True
        self.touched.add(user)
        self.charge(12 + len(record))
        return seq

    def bill(self, user: str, now_ms: int, uid: int | None = None) -> None:
        """Charge what this operation writes to local ``user``'s storage quota.

        Call before writing: it refuses at once (``unavailable``) while the
        disk is below the free-space reserve. Queue appends are counted by
        :meth:`append_to_queue`; other writes (outbox entries) by
        :meth:`charge`. The total is settled against the quota when the
        operation returns, in its transaction (``quota_exceeded`` rolls the
        whole operation back).
        """
        self.payer, self.bill_ms, self.payer_uid = user, now_ms, uid
        reserve = self._store._reserve  # noqa: SLF001
        if reserve is not None:
            reserve.check()

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` written on the payer's account (no-op without one)."""
        if self.payer is not None:
            self.billed += nbytes

    def flush_index(self) -> None:
        """Write the batch's staged index entries (earlier operations', the
        operation's this transaction is nested in, and this one's) into this
        transaction: call before reading or writing
        the index here (a read marker, an edit's postings, a user's
        removal), so the reader sees every entry of the batch so far (and
        the writer stops trusting its copy of the ``conv`` rows)."""
        store = self._store
        store._index_touched = True  # noqa: SLF001
        holders: list[Store | WriteTxn] = [store]
        outer = self._parent
        while outer is not None:
            holders.insert(1, outer)  # the operation's own transaction first
            outer = outer._parent  # noqa: SLF001
        entries: list[history_index.Staged] = []
        for holder in holders:
            waiting = _take_index_entries(holder)
            if waiting:
                self.index_taken.append((holder, waiting))
                entries += waiting
        entries += self.index_entries
        self.index_entries = []
        if entries:
            self.staged += history_index.write_staged(self.txn, self._dbs, entries, store.log_key)

    def give_back_index(self) -> None:
        """This transaction is rolled back: the entries its flushes wrote
        wait again where they waited."""
        for holder, waiting in reversed(self.index_taken):
            _give_index_entries(holder, waiting)
        self.index_taken = []

    def settle(self) -> None:
        """Add the charged bytes to the payer's quota row; raise when over."""
        policy = self._store._quota  # noqa: SLF001
        if self.payer is None or not self.billed or policy is None:
            return
        uid = self.payer_uid
        if uid is None:
            record = self.get_user(self.payer)
            if record is None:
                return
            uid = record.uid
        key, db = _u32(uid), self._dbs["quota"]
        row = self.txn.get(key, db=db)
        self.txn.put(key, policy.charge(row, self.billed, self.bill_ms), db=db)
        self.billed = 0

    def check_attachments(self, uid: int, attachments: tuple[Attachment, ...]) -> None:
        """Refuse a send whose blobs are not here or not ``uid``'s to send."""
        blob_index.check_sendable(self.txn, self._dbs, uid, attachments)

    def mark_touched(self, user: str) -> None:
        """Wake ``user``'s sessions after the commit."""
        self.touched.add(user)

    def outbox_grew(self, node_id: str) -> None:
        """Wake the link to ``node_id`` after the commit (its outbox grew)."""
        self.outboxes.add(node_id)

    def _absorb(self, child: WriteTxn) -> None:
        self.index_entries += child.index_entries
        self.index_taken += child.index_taken
        self.billed += child.billed
        self.touched |= child.touched
        self.revoked |= child.revoked
        self.outboxes |= child.outboxes
        self.blobs_wanted |= child.blobs_wanted
        self.staged += child.staged

    @contextmanager
    def nested(self) -> Iterator[WriteTxn]:
        """A child transaction: everything written in it, or nothing.

        If the block raises, the child's writes (and effects) are rolled back
        and the exception propagates; the parent stays usable. Do not touch
        the parent inside the block.
        """
        env = self._store._env  # noqa: SLF001
        assert env is not None
        child_txn = env.begin(write=True, parent=self.txn)
        child = WriteTxn(self._store, child_txn, parent=self)
        child.payer, child.bill_ms, child.payer_uid = self.payer, self.bill_ms, self.payer_uid
        try:
            yield child
        except BaseException:
            child_txn.abort()
            child.give_back_index()
            raise
        child_txn.commit()
        self._absorb(child)

    def cid_result(self, uid: int, device: str, cid: str | None) -> SendResult | None:
        """The recorded result of an earlier send with this cid (a retry), if any."""
        if cid is None:
            return None
        hit = self.txn.get(_cid_key(uid, device, cid), db=self._dbs["cids"])
        if hit is None:
            return None
        msg_id, seq, ts = _CID_VALUE.unpack(hit)
        return SendResult(msg_id, seq, ts, duplicate=True)

    def remember_cid(
        self, uid: int, device: str, cid: str | None, result: SendResult, now_ms: int
    ) -> None:
        """Record a send's result under its cid (and prune a few expired ones)."""
        if cid is None:
            return
        key = _cid_key(uid, device, cid)
        self.txn.put(key, _CID_VALUE.pack(result.id, result.seq, result.ts), db=self._dbs["cids"])
        self.txn.put(_u64(now_ms) + key, b"", db=self._dbs["cid_times"])
        _prune_cids(self, now_ms)


#: Called on the trio thread with an operation's outcome: (result, None)
#: once durable, or (None, error). Must not raise.
Callback = Callable[[Any, "ProtocolError | None"], None]


class _Op(Generic[T]):
    """One write operation; answered by ``done`` or, if given, ``callback``.

    (A plain class with slots: a send makes one, so no dataclass, and no
    trio.Event when a callback answers.)
    """

    __slots__ = ("fn", "done", "callback", "result", "error")

    def __init__(self, fn: Callable[[WriteTxn], T], callback: Callback | None = None) -> None:
        self.fn = fn
        self.callback = callback
        self.done: trio.Event | None = None if callback is not None else trio.Event()
        self.result: T | None = None
        self.error: ProtocolError | None = None


_Outcome = tuple[Any, ProtocolError | None]

#: Put in the writer's inbox when acks start waiting (wakes an idle writer).
_ACKS: Any = object()


@dataclass
class _Effects:
    """What a committed batch reports back to trio (see WriteTxn)."""

    touched: set[str] = field(default_factory=set)
    revoked: set[bytes] = field(default_factory=set)
    outboxes: set[str] = field(default_factory=set)
    blobs_wanted: bool = False


def _take_lock(data_dir: Path) -> int:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(data_dir / "store.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(f"{data_dir} is in use by another chinwag process") from None
    # The holder's PID, for the message another process shows when it finds
    # the lock taken (the lock itself is the flock, not this content).
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextmanager
def locked_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's store lock (:class:`StoreLocked` if taken)."""
    fd = _take_lock(data_dir)
    try:
        yield
    finally:
        os.close(fd)


class RemoteSink(Protocol):
    """Where messages for other nodes go (federation's durable outboxes)."""

    def check(self, w: WriteTxn, node_id: str) -> None: ...

    def append(
        self, w: WriteTxn, node_id: str, unit: SignedUnit, sender: str, now_ms: int
    ) -> None: ...


class Store:
    """LMDB-backed users, sessions, devices, contacts and sync queues."""

    def __init__(
        self,
        data_dir: Path,
        node_key: NodeKey,
        *,
        map_size: int = 64 << 20,
        max_pending: int = 10_000,
        batch_max: int = 1024,
        on_commit: Callable[[frozenset[str]], None] | None = None,
        extra_dbs: tuple[str, ...] = (),
        max_sessions_per_user: int = MAX_SESSIONS_PER_USER,
        max_devices_per_user: int = MAX_DEVICES_PER_USER,
        quota: QuotaPolicy | None = None,
        min_free_bytes: int = 0,
        ack_flush_delay: float = 1.0,
        search_stage_max: int = 2048,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._max_sessions = max(1, max_sessions_per_user)
        self._max_devices = max(1, max_devices_per_user)
        # Per-user storage quota and node-wide free-space reserve (node/quota.py).
        self._quota = quota if quota is not None and quota.bytes_per_window > 0 else None
        self._reserve = DiskReserve(self.data_dir, min_free_bytes) if min_free_bytes > 0 else None
        self.node_key = node_key
        self._map_size = map_size
        self._max_pending = max_pending
        self._batch_max = max(1, batch_max)
        #: ``index_log`` entries that trigger a merge into ``conv_seq`` and
        #: ``epoch_terms`` (node/history_index.py), the entries waiting, and
        #: the next key.
        self._merge_at = max(1, search_stage_max)
        self._staged = 0
        #: Index entries of the running batch's committed operations (see
        #: WriteTxn.flush_index), written just before its commit.
        self._index_pending: list[history_index.Staged] = []
        #: An operation of the running batch read or wrote the index itself.
        self._index_touched = False
        #: ``conv`` rows as of the last commit that wrote them, so a batch's
        #: index write reads only rows it has not seen (history_index.write_staged).
        self._conv_rows: dict[bytes, bytes] = {}
        self._log_next = 1
        self._on_commit = on_commit
        #: Called on the trio thread after a commit that grew a peer's outbox
        #: (with its node id), and after one that revoked sessions (with their
        #: token hashes). Set by the app.
        self.on_outbox: Callable[[str], None] | None = None
        self.on_revoked: Callable[[frozenset[bytes]], None] | None = None
        self.remote_sink: RemoteSink | None = None
        #: Called after a commit that recorded blobs to fetch from other nodes.
        self.on_blobs_wanted: Callable[[], None] | None = None
        #: Seconds per committed batch, written by the writer thread (/metrics).
        self.commit_times = LatencyHistogram()
        #: Actions on messages applied and refused (node/actions_store.py).
        self.action_stats = actions_store.ActionStats()
        self._db_names = DB_NAMES + tuple(n for n in extra_dbs if n not in DB_NAMES)
        self._env: lmdb.Environment | None = None
        self._dbs: dict[str, Any] = {}
        # Held by every read and by the writer while it resizes the map:
        # mdb_env_set_mapsize needs no transaction open in the process.
        self._resize_lock = threading.Lock()
        # Held by a backup's copy (one long read transaction in a worker
        # thread) and by whatever must not run under it: a map resize, close.
        self._copy_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[_Op[Any] | None] = queue.SimpleQueue()
        self._slots: trio.Semaphore | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._ids = IdGenerator()
        self._persisted_last_id = 0
        self._pending = 0
        self._commits = 0
        self._ops = 0
        self._largest_batch = 0
        # Device ack cursors not yet written: (uid, device) -> highest seq.
        # Filled on the trio thread, taken by the writer, hence the lock.
        self._ack_flush_delay = max(0.0, ack_flush_delay)
        self._acks: dict[tuple[int, str], int] = {}
        self._acks_lock = threading.Lock()
        self._acks_noted = 0
        self._acks_written = 0
        self._ack_commits = 0

    # ------------------------------------------------------------ lifetime
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Lock the data dir, open LMDB, start the writer; run until cancelled."""
        lock_fd = _take_lock(self.data_dir)
        try:
            self._closing = False
            await trio.to_thread.run_sync(self._open)
            self._token = trio.lowlevel.current_trio_token()
            self._slots = trio.Semaphore(self._max_pending)
            self._thread = threading.Thread(
                target=self._writer, name="chinwag-store-writer", daemon=True
            )
            self._thread.start()
            task_status.started()
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self._shutdown()
            os.close(lock_fd)

    def _open(self) -> None:
        db_dir = self.data_dir / "db"
        db_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(db_dir, 0o700)
        # Default durability (sync, metasync): a commit survives kill -9.
        env = lmdb.open(
            str(db_dir), map_size=self._map_size, max_dbs=MAX_DBS, mode=0o600, subdir=True
        )
        try:
            # Read before any write: a newer store is refused untouched.
            schema = read_schema(env)
            check_supported(schema)
            if schema.version is not None and schema.version < SCHEMA_VERSION:
                self._backup_before_migration(env, schema.version)
            with env.begin(write=True) as txn:
                dbs = {name: env.open_db(name.encode(), txn=txn) for name in self._db_names}
            steps = plan(schema.version or SCHEMA_VERSION)
            if steps:
                # Tables a step drops: open the ones this file has, for it only.
                with env.begin(write=True) as txn:
                    for name in history_index.RETIRED_DB_NAMES:
                        with suppress(lmdb.NotFoundError):
                            dbs[name] = env.open_db(name.encode(), txn=txn, create=False)
            for step in steps:
                with env.begin(write=True) as txn:
                    step.apply(txn, dbs, self.node_key.id)
                    stamp(txn, dbs["meta"], step.from_version + 1)
                log.info("store migrated to schema %d: %s", step.from_version + 1, step.summary)
            with env.begin(write=True) as txn:
                stamp(txn, dbs["meta"], SCHEMA_VERSION)
                self._staged, self._log_next = history_index.log_state(txn, dbs)
                raw = txn.get(b"last_id", db=dbs["meta"])
                last_id = 0 if raw is None else _U64.unpack(raw)[0]
        except BaseException:
            env.close()
            raise
        self._env, self._dbs = env, dbs
        self._ids = IdGenerator(last_id)
        self._persisted_last_id = last_id

    def _backup_before_migration(self, env: lmdb.Environment, version: int) -> None:
        """Copy the data directory as it is into ``DATA/backups/`` (before migrating)."""
        dest = pre_migration_dir(self.data_dir, version, time.time_ns() // 1_000_000)

        def copy_db(directory: Path) -> int:
            env.copy(str(directory), compact=True)
            return version

        try:
            dest.parent.mkdir(mode=0o700, exist_ok=True)
            write_backup(dest, self.data_dir, copy_db, self.node_key.id, online=False)
        except (OSError, lmdb.Error, BackupError) as exc:
            raise MigrationFailed(
                f"{self.data_dir} needs its store upgraded from schema {version} to "
                f"{SCHEMA_VERSION}, but the backup taken first failed ({exc}); nothing was "
                "changed. Free some space (the backup is about the size of db/data.mdb) "
                "or make the data directory writable, and start again."
            ) from exc
        log.warning(
            "store schema %d is older than %d: backed up to %s", version, SCHEMA_VERSION, dest
        )

    def copy_snapshot(self, directory: Path) -> int:
        """Write a compacted copy of the store into ``directory``; return its schema.

        Blocking: call it from a worker thread. The copy is one read
        transaction, so it is the store as of one commit, and writers go on;
        only a map resize (and closing the store) waits for it to finish.
        """
        with self._copy_lock:
            env = self._env
            if env is None or self._closing:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "the store is not open")
            with env.begin() as txn:
                raw = txn.get(b"schema", db=self._dbs["meta"])
                env.copy(str(directory), compact=True, txn=txn)
        return SCHEMA_VERSION if raw is None else _U32.unpack(raw)[0]

    async def _shutdown(self) -> None:
        self._closing = True
        if self._thread is not None:
            self._inbox.put(None)
            await trio.to_thread.run_sync(self._thread.join)
            self._thread = None
        if self._env is not None:
            # A backup's copy may be running in a worker thread: let it end.
            await trio.to_thread.run_sync(self._copy_lock.acquire)
            try:
                with self._resize_lock:
                    env, self._env = self._env, None
                env.close()
            finally:
                self._copy_lock.release()

    # ------------------------------------------------------------ reads
    def log_key(self) -> int:
        """The next ``index_log`` key (writer thread only; gaps are harmless)."""
        key = self._log_next
        self._log_next = key + 1
        return key

    def _read(self) -> _ReadTxn:
        """A short read transaction: ``with store._read() as view: ...``."""
        return _ReadTxn(self)

    def read(self, fn: Callable[[_View], T]) -> T:
        """Run ``fn`` in a short read transaction (extension point for reads)."""
        with self._read() as view:
            return fn(view)

    def get_user(self, name: str) -> UserRecord | None:
        with self._read() as view:
            return view.get_user(name)

    def list_users(self) -> list[UserRecord]:
        with self._read() as view:
            return [
                _decode_user(key.decode("ascii"), value)
                for key, value in view.txn.cursor(db=view.db("users"))
            ]

    def get_session(self, token_hash: bytes) -> SessionRecord | None:
        if not isinstance(token_hash, bytes) or len(token_hash) != 32:
            return None
        with self._read() as view:
            raw = view.txn.get(token_hash, db=view.db("sessions"))
        if raw is None:
            return None
        item = cbor2.loads(raw)
        return SessionRecord(user=item["u"], device=item["d"], created_ms=item["c"])

    def queue_head(self, user: str) -> int:
        """The highest ``seq`` in ``user``'s queue, 0 if empty or unknown."""
        with self._read() as view:
            record = view.get_user(user)
            return 0 if record is None else view.head_of(record.uid)

    def read_queue(self, user: str, after: int, limit: int) -> list[QueueEntry]:
        """Up to ``limit`` entries with ``seq > after``, ascending."""
        limit = min(limit, MAX_READ_PAGE)
        if limit <= 0 or after >= _MAX_U64:
            return []
        with self._read() as view:
            record = view.get_user(user)
            if record is None:
                return []
            return _read_queue(view, record.uid, after, limit)

    def read_queue_uid(self, uid: int, after: int, limit: int) -> list[QueueEntry]:
        """:meth:`read_queue` by uid (a live session's, looked up at its auth).

        uids are never reused: a removed user's queue reads as empty.
        """
        limit = min(limit, MAX_READ_PAGE)
        if limit <= 0 or after >= _MAX_U64:
            return []
        with self._read() as view:
            return _read_queue(view, uid, after, limit)

    def list_devices(self, user: str) -> list[DeviceRecord]:
        with self._read() as view:
            record = view.get_user(user)
            if record is None:
                return []
            head = view.head_of(record.uid)
            devices = []
            for key, value in _prefix_items(view.txn, view.db("devices"), _u32(record.uid)):
                item = cbor2.loads(value)
                device = key[4:].decode("ascii")
                # An ack noted but not yet written counts already.
                with self._acks_lock:
                    noted = self._acks.get((record.uid, device), 0)
                acked = max(item["a"], min(noted, head))
                devices.append(DeviceRecord(device, acked, item["c"]))
            return devices

    def list_contacts(self, user: str) -> list[str]:
        with self._read() as view:
            record = view.get_user(user)
            if record is None:
                return []
            prefix = _u32(record.uid)
            return [
                key[4:].decode("utf-8")
                for key in _prefix_keys(view.txn, view.db("contacts"), prefix)
            ]

    def statistics(self) -> StoreStats:
        with self._read() as view:
            users = view.txn.stat(view.db("users"))["entries"]
            assert self._env is not None
            map_size = self._env.info()["map_size"]
        return StoreStats(
            users=users,
            commits=self._commits,
            ops=self._ops,
            largest_batch=self._largest_batch,
            pending=self._pending,
            map_size=map_size,
            acks=self._acks_noted,
            acks_written=self._acks_written,
            ack_commits=self._ack_commits,
        )

    # ------------------------------------------------------------ writes
    async def transact(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in the writer thread; return its result once durable.

        ``fn`` runs in its own nested transaction: a :class:`ProtocolError`
        it raises rolls back only its changes and is raised here; any other
        exception becomes ``internal``. ``fn`` may run more than once (after
        a map resize) and must change nothing but the transaction. If the
        caller is cancelled while waiting, the operation may still commit.
        """
        if self._closing or self._slots is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the store is not open")
        await self._slots.acquire()
        if self._closing:
            self._slots.release()
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the store is closing")
        op: _Op[T] = _Op(fn)
        self._pending += 1
        self._inbox.put(op)
        assert op.done is not None
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    async def submit(self, fn: Callable[[WriteTxn], Any], callback: Callback) -> None:
        """Like :meth:`transact`, but return once queued; ``callback`` gets the outcome.

        No task, no event and (while slots are free) no checkpoint per
        operation: the hot path of sends. Waits only for a slot when
        ``max_pending`` operations are in flight. ``callback`` runs on the
        trio thread after the commit, in commit order, and must not raise.
        """
        if self._closing or self._slots is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the store is not open")
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        if self._closing:
            self._slots.release()
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the store is closing")
        self._pending += 1
        self._inbox.put(_Op(fn, callback))

    async def create_user(
        self,
        name: str,
        pw_hash: str,
        now_ms: int,
        also: Callable[[WriteTxn], object] | None = None,
    ) -> UserRecord:
        """Create a user; ``also`` runs in the same transaction (an invitation
        is used up only if the user is created, node/invitations.py)."""
        key = check_user_name(name).encode("ascii")

        def op(w: WriteTxn) -> UserRecord:
            if w.txn.get(key, db=w.db("users")) is not None:
                raise ProtocolError(ErrorCode.USER_EXISTS, f"{name} is taken")
            if also is not None:
                also(w)
            meta = w.db("meta")
            raw = w.txn.get(b"next_uid", db=meta)
            uid = 1 if raw is None else _U32.unpack(raw)[0]
            w.txn.put(b"next_uid", _u32(uid + 1), db=meta)
            record = UserRecord(name, uid, pw_hash, now_ms, "", "")
            w.txn.put(key, _encode_user(record), db=w.db("users"))
            w.txn.put(_u32(uid), key, db=w.db("uid_user"))
            return record

        return await self.transact(op)

    async def remove_user(self, name: str) -> None:
        def op(w: WriteTxn) -> None:
            record = w.require_user(name)
            prefix = _u32(record.uid)
            _revoke_all_sessions(w, record.uid)
            for db in (
                "queue",
                "devices",
                "cids",
                "contacts",
                "push_endpoints",
                "group_invites",
                "blocks",
                "receipts",
            ):
                delete_prefix(w.txn, w.db(db), prefix)
            for db in ("queue_head", "presence", "uid_user", "quota"):
                w.txn.delete(prefix, db=w.db(db))
            w.txn.delete(name.encode("ascii"), db=w.db("users"))
            dbs = {n: w.db(n) for n in history_index.DB_NAMES}
            w.flush_index()  # then drop the user's rows with the rest
            history_index.drop_user(w.txn, dbs, record.uid)
            blob_index.drop_user(w.txn, {n: w.db(n) for n in blob_index.DB_NAMES}, record.uid)
            actions_store.drop_user(w.txn, {n: w.db(n) for n in actions_store.DB_NAMES}, record.uid)

        await self.transact(op)

    async def set_password(self, name: str, pw_hash: str) -> None:
        """Replace the password hash and revoke every session of the user."""

        def op(w: WriteTxn) -> None:
            record = w.require_user(name)
            updated = UserRecord(
                name,
                record.uid,
                pw_hash,
                record.created_ms,
                record.display_name,
                record.status_text,
            )
            w.txn.put(name.encode("ascii"), _encode_user(updated), db=w.db("users"))
            _revoke_all_sessions(w, record.uid)

        await self.transact(op)

    async def create_session(
        self, name: str, device: str | None, token_hash: bytes, now_ms: int
    ) -> str:
        """Store a session; return its device id (``device``, or a new one)."""
        if device is not None and (
            not isinstance(device, str) or _DEVICE_RE.fullmatch(device) is None
        ):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "a device id is 1-64 characters of A-Z a-z 0-9 . _ -"
            )
        if not isinstance(token_hash, bytes) or len(token_hash) != 32:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "a token hash is 32 bytes")

        def op(w: WriteTxn) -> str:
            record = w.require_user(name)
            prefix = _u32(record.uid)
            devices = w.db("devices")
            dev = device
            while dev is None or (device is None and w.txn.get(prefix + dev.encode(), db=devices)):
                dev = "d-" + secrets.token_urlsafe(9)  # 12 base64url characters
            if w.txn.get(prefix + dev.encode(), db=devices) is None:
                _evict_oldest_device(w, record.uid, self._max_devices)
                w.txn.put(prefix + dev.encode(), cbor2.dumps({"a": 0, "c": now_ms}), db=devices)
            sessions = w.db("sessions")
            if w.txn.get(token_hash, db=sessions) is not None:
                raise ProtocolError(ErrorCode.CONFLICT, "token already in use")
            index = list(_prefix_keys(w.txn, w.db("user_sessions"), prefix))
            for old in index[: max(0, len(index) - self._max_sessions + 1)]:
                _revoke(w, old[12:])
            item = {"u": name, "uid": record.uid, "d": dev, "c": now_ms}
            w.txn.put(token_hash, cbor2.dumps(item), db=sessions)
            w.txn.put(prefix + _u64(now_ms) + token_hash, b"", db=w.db("user_sessions"))
            return dev

        return await self.transact(op)

    async def revoke_session(self, token_hash: bytes) -> None:
        """Forget a session; unknown tokens are ignored."""
        if not isinstance(token_hash, bytes) or len(token_hash) != 32:
            return

        def op(w: WriteTxn) -> None:
            _revoke(w, token_hash)

        await self.transact(op)

    async def set_profile(
        self, name: str, display_name: str | None, status_text: str | None
    ) -> UserRecord:
        """Update the given profile fields (None leaves one unchanged)."""
        for value in (display_name, status_text):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_PROFILE_CHARS):
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"profile fields are strings of at most {MAX_PROFILE_CHARS} characters",
                )

        def op(w: WriteTxn) -> UserRecord:
            record = w.require_user(name)
            updated = UserRecord(
                name,
                record.uid,
                record.pw_hash,
                record.created_ms,
                record.display_name if display_name is None else display_name,
                record.status_text if status_text is None else status_text,
            )
            w.txn.put(name.encode("ascii"), _encode_user(updated), db=w.db("users"))
            return updated

        return await self.transact(op)

    async def add_contact(self, name: str, address: str) -> None:
        """Add ``address`` (text, e.g. ``bob@kitchen``) to the contacts; idempotent."""
        encoded = _contact_bytes(address)

        def op(w: WriteTxn) -> None:
            prefix = _u32(w.require_user(name).uid)
            contacts = w.db("contacts")
            if w.txn.get(prefix + encoded, db=contacts) is not None:
                return
            count = sum(1 for _ in _prefix_keys(w.txn, contacts, prefix))
            if count >= MAX_CONTACTS_PER_USER:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"at most {MAX_CONTACTS_PER_USER} contacts"
                )
            w.txn.put(prefix + encoded, b"", db=contacts)

        await self.transact(op)

    async def remove_contact(self, name: str, address: str) -> None:
        """Remove a contact; removing an absent one is not an error."""
        encoded = _contact_bytes(address)

        def op(w: WriteTxn) -> None:
            prefix = _u32(w.require_user(name).uid)
            w.txn.delete(prefix + encoded, db=w.db("contacts"))

        await self.transact(op)

    async def ack(self, name: str, device: str, seq: int) -> None:
        """Cumulative ack by user name (see :meth:`note_ack`); unknown users are ignored."""
        record = self.get_user(name)
        if record is not None:
            self.note_ack(record.uid, device, seq)

    def note_ack(self, uid: int, device: str, seq: int) -> None:
        """Cumulative ack: the device's acked becomes max(old, min(seq, head)).

        Kept in memory and written with the writer's next batch, or within
        ``ack_flush_delay`` (see the module docstring): no await, no commit
        of its own. Unknown users and devices are ignored when written.
        """
        if not isinstance(seq, int) or seq <= 0 or self._closing or self._thread is None:
            return
        key = (uid, device)
        with self._acks_lock:
            first = not self._acks
            if seq > self._acks.get(key, 0):
                self._acks[key] = seq
            self._acks_noted += 1
        if first:
            # Wakes the writer to start the flush delay (it may be idle).
            self._inbox.put(_ACKS)

    async def send_direct(
        self,
        sender: str,
        device: str,
        cid: str | None,
        to: UserAddress,
        text: str,
        now_ms: int,
        attachments: tuple[Attachment, ...] = (),
        *,
        kind: str = "text",
        body: dict[str, Any] | None = None,
    ) -> SendResult:
        """Commit a 1:1 message into the recipient's and the sender's queues.

        A repeat of ``(sender, device, cid)`` within the cid retention gets the
        original result (``duplicate=True``) and writes nothing. ``kind`` and
        ``body`` (default ``{"text": text}``) make other envelopes travel the
        same way (actions on messages, node/actions.py).
        """
        op = self._direct_op(
            sender, device, cid, to, text, now_ms, attachments, kind=kind, body=body
        )
        return await self.transact(op)

    async def submit_direct(
        self,
        sender: str,
        device: str,
        cid: str | None,
        to: UserAddress,
        text: str,
        now_ms: int,
        callback: Callback,
        attachments: tuple[Attachment, ...] = (),
    ) -> None:
        """:meth:`send_direct` answered through ``callback`` (see :meth:`submit`)."""
        await self.submit(
            self._direct_op(sender, device, cid, to, text, now_ms, attachments), callback
        )

    def _direct_op(
        self,
        sender: str,
        device: str,
        cid: str | None,
        to: UserAddress,
        text: str,
        now_ms: int,
        attachments: tuple[Attachment, ...] = (),
        kind: str = "text",
        body: dict[str, Any] | None = None,
    ) -> Callable[[WriteTxn], SendResult]:
        check_send(device, cid, text)
        env_body = message_body(text, attachments) if body is None else body

        def op(w: WriteTxn) -> SendResult:
            sender_record = w.require_user(sender)
            retry = w.cid_result(sender_record.uid, device, cid)
            if retry is not None:
                return retry
            w.bill(sender, now_ms, sender_record.uid)
            if attachments:
                w.check_attachments(sender_record.uid, attachments)
            remote = to.node != w.node_id
            recipient: UserRecord | None = None
            if remote:
                if self.remote_sink is None:
                    raise ProtocolError(ErrorCode.NO_SUCH_NODE, f"unknown node {to.node[:12]}")
                # Refuses an unknown node or a full outbox before any id is used.
                self.remote_sink.check(w, to.node)
            else:
                recipient = w.require_user(to.user)
            msg_id = w.next_id(now_ms)
            env = Envelope(
                id=msg_id,
                sender=UserAddress(sender, w.node_id),
                to=to,
                group=None,
                ts=now_ms,
                kind=kind,
                body=env_body,
            )
            unit = sign_envelope(w.node_key, env)
            record = unit_record(unit)
            if kind == "text":
                # What prime_message assumes: a text, in the conversation's
                # pages; an action (no page entry) is parsed from the record.
                history_index.prime_message(
                    record, f"{sender}@{w.node_id}", f"{to.user}@{to.node}", text
                )
                if "reply_to" not in env_body:
                    actions_store.note_signed_text(record, msg_id, unit.by)
            if recipient is None:
                assert self.remote_sink is not None
                self.remote_sink.append(w, to.node, unit, sender, now_ms)
                w.charge(40 + len(record))  # the outbox entry: key and about the record
                seq = w.append_to_uid(sender_record.uid, sender, record)
            elif recipient.uid == sender_record.uid:
                seq = w.append_to_uid(recipient.uid, recipient.name, record)
            else:
                # A recipient who blocked the sender never gets it; the
                # sender sees it stored like any other (node/blocks.py).
                if not is_blocked(w, recipient.uid, env.sender):
                    w.append_to_uid(recipient.uid, recipient.name, record)
                seq = w.append_to_uid(sender_record.uid, sender, record)
            result = SendResult(msg_id, seq, now_ms, duplicate=False)
            w.remember_cid(sender_record.uid, device, cid, result, now_ms)
            return result

        return op

    # ------------------------------------------------------------ writer thread
    def _writer(self) -> None:
        # When acks wait with no batch to carry them: write them alone then.
        # (Invariant: while acks wait, an _ACKS mark is in the inbox or the
        # deadline is set; note_ack marks when it fills an empty table.)
        ack_deadline: float | None = None
        stop = False
        while not stop:
            try:
                if ack_deadline is None:
                    first = self._inbox.get()
                else:
                    first = self._inbox.get(timeout=max(0.0, ack_deadline - time.monotonic()))
            except queue.Empty:
                ack_deadline = None
                if not self._flush_acks_alone():
                    ack_deadline = time.monotonic() + self._ack_flush_delay
                continue
            if first is None:
                self._flush_acks_alone()
                return
            if first is _ACKS:
                if ack_deadline is None:
                    ack_deadline = time.monotonic() + self._ack_flush_delay
                continue
            batch: list[_Op[Any]] = [first]
            while len(batch) < self._batch_max:
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if more is _ACKS:
                    continue  # this batch carries the acks
                batch.append(more)
            acks = self._take_acks()
            ack_deadline = None
            try:
                outcomes, effects, written = self._run_batch(batch, acks)
            except Exception:  # never let the writer die
                log.exception("store batch failed")
                error = ProtocolError(ErrorCode.INTERNAL, "internal store error")
                outcomes, effects, written = [(None, error)] * len(batch), _Effects(), False
            if not written and acks:
                self._return_acks(acks)
                ack_deadline = time.monotonic() + self._ack_flush_delay
            assert self._token is not None
            try:
                self._token.run_sync_soon(self._deliver, batch, outcomes, effects)
            except trio.RunFinishedError:
                self._flush_acks_alone()
                return
        self._flush_acks_alone()

    def _take_acks(self) -> dict[tuple[int, str], int]:
        with self._acks_lock:
            acks, self._acks = self._acks, {}
        return acks

    def _return_acks(self, acks: dict[tuple[int, str], int]) -> None:
        """Put back acks a failed commit did not write (newer ones win)."""
        if not acks:
            return
        with self._acks_lock:
            for key, seq in acks.items():
                if seq > self._acks.get(key, 0):
                    self._acks[key] = seq

    def _flush_acks_alone(self) -> bool:
        """Write the waiting acks in a commit of their own; False if it failed."""
        acks = self._take_acks()
        if not acks:
            return True
        try:
            _, _, written = self._run_batch([], acks)
        except Exception:
            log.exception("writing device acks failed")
            written = False
        if not written:
            self._return_acks(acks)
            return False
        self._ack_commits += 1
        return True

    def _run_batch(
        self, batch: list[_Op[Any]], acks: dict[tuple[int, str], int]
    ) -> tuple[list[_Outcome], _Effects, bool]:
        """Run and commit a batch; the flag says whether it committed."""
        ids_before = copy.copy(self._ids)
        while True:
            try:
                outcomes, effects = self._attempt(batch, acks)
                return outcomes, effects, True
            except lmdb.MapFullError:
                self._ids = copy.copy(ids_before)
                if not self._grow():
                    error = ProtocolError(ErrorCode.UNAVAILABLE, "the store is full")
                    return [(None, error)] * len(batch), _Effects(), False
            except lmdb.Error:
                # Disk full or I/O error at commit: nothing of the batch is
                # durable, so nothing is acknowledged.
                log.exception("store commit failed", extra=event("storage_error"))
                self._ids = ids_before
                error = ProtocolError(ErrorCode.UNAVAILABLE, "storage unavailable")
                return [(None, error)] * len(batch), _Effects(), False

    def _attempt(
        self, batch: list[_Op[Any]], acks: dict[tuple[int, str], int]
    ) -> tuple[list[_Outcome], _Effects]:
        assert self._env is not None
        env = self._env
        outcomes: list[_Outcome] = []
        effects = _Effects()
        staged = 0
        merged = False
        started = time.perf_counter()
        # Index entries of the operations committed so far (WriteTxn.flush_index).
        self._index_pending = []
        self._index_touched = False
        conv_rows: dict[bytes, bytes] = {}
        with env.begin(write=True) as txn:
            for op in batch:
                child = env.begin(write=True, parent=txn)
                view = WriteTxn(self, child)
                try:
                    value = op.fn(view)
                    view.settle()
                except lmdb.MapFullError:
                    child.abort()
                    raise
                except ProtocolError as exc:
                    self._abort(child, view)
                    outcomes.append((None, exc))
                    continue
                except Exception:
                    self._abort(child, view)
                    log.exception("store operation failed")
                    outcomes.append((None, ProtocolError(ErrorCode.INTERNAL, "internal error")))
                    continue
                child.commit()
                self._index_pending += view.index_entries
                effects.touched |= view.touched
                effects.revoked |= view.revoked
                effects.outboxes |= view.outboxes
                effects.blobs_wanted |= view.blobs_wanted
                staged += view.staged
                outcomes.append((value, None))
            if self._index_pending:
                # Each conversation's row once for the whole batch, read from
                # LMDB only if the writer has no copy it can trust.
                known = None if self._index_touched else self._conv_rows
                staged += history_index.write_staged(
                    txn, self._dbs, self._index_pending, self.log_key, known, conv_rows
                )
                self._index_pending = []
            if staged and self._staged + staged >= self._merge_at:
                # Enough index rows logged: move them all in this commit,
                # sorted, where many share a page (node/history_index.py).
                history_index.merge_log(txn, self._dbs)
                merged = True
            if acks:
                # In a child of their own: a bad device row loses the acks, not the batch.
                child = env.begin(write=True, parent=txn)
                try:
                    _write_acks(child, self._dbs, acks)
                except lmdb.MapFullError:
                    child.abort()
                    raise
                except Exception:
                    child.abort()
                    log.exception("writing device acks failed")
                else:
                    child.commit()
            last_id = self._ids.last
            if last_id != self._persisted_last_id:
                txn.put(b"last_id", _u64(last_id), db=self._dbs["meta"])
        # Leaving the block committed (durably: sync is on).
        if self._index_touched or len(self._conv_rows) + len(conv_rows) > CONV_ROWS_KEPT:
            self._conv_rows.clear()  # an operation changed rows behind the copy
        if len(conv_rows) <= CONV_ROWS_KEPT:
            self._conv_rows.update(conv_rows)
        self._staged = 0 if merged else self._staged + staged
        self._persisted_last_id = last_id
        self._commits += 1
        self.commit_times.observe(time.perf_counter() - started)
        self._ops += len(batch)
        self._acks_written += len(acks)
        self._largest_batch = max(self._largest_batch, len(batch))
        return outcomes, effects

    def _abort(self, child: lmdb.Transaction[bytes], view: WriteTxn) -> None:
        """Roll back one operation; the batch's index entries it had flushed
        into its transaction wait again for the batch's write."""
        child.abort()
        view.give_back_index()

    def _grow(self) -> bool:
        assert self._env is not None
        size = self._env.info()["map_size"] * 2
        if size > MAX_MAP_SIZE:
            log.error(
                "store map cannot grow past %d bytes",
                MAX_MAP_SIZE,
                extra=event("storage_error", reason="store full"),
            )
            return False
        # A running backup copy holds a read transaction: wait for it.
        with self._copy_lock, self._resize_lock:
            self._env.set_mapsize(size)
        log.info("store map grown to %d bytes", size)
        return True

    def _deliver(self, batch: list[_Op[Any]], outcomes: list[_Outcome], effects: _Effects) -> None:
        # Runs on the trio thread; must never raise.
        assert self._slots is not None
        for op, (value, error) in zip(batch, outcomes, strict=True):
            self._pending -= 1
            self._slots.release()
            if op.callback is not None:
                try:
                    op.callback(value, error)
                except Exception:
                    log.exception("store callback failed")
            else:
                assert op.done is not None
                op.result, op.error = value, error
                op.done.set()
        if effects.touched and self._on_commit is not None:
            try:
                self._on_commit(frozenset(effects.touched))
            except Exception:
                log.exception("on_commit callback failed")
        if effects.outboxes and self.on_outbox is not None:
            for node_id in sorted(effects.outboxes):
                try:
                    self.on_outbox(node_id)
                except Exception:
                    log.exception("on_outbox callback failed")
        if effects.revoked and self.on_revoked is not None:
            try:
                self.on_revoked(frozenset(effects.revoked))
            except Exception:
                log.exception("on_revoked callback failed")
        if effects.blobs_wanted and self.on_blobs_wanted is not None:
            try:
                self.on_blobs_wanted()
            except Exception:
                log.exception("on_blobs_wanted callback failed")


# ---------------------------------------------------------------- op helpers


class _ReadTxn:
    """The context of :meth:`Store._read` (a class, not a generator: every
    live delivery reads the queue, so contextlib's overhead counted)."""

    __slots__ = ("_store", "_txn")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._txn: lmdb.Transaction[bytes] | None = None

    def __enter__(self) -> _View:
        store = self._store
        # Held by every read: the writer resizes the map only with no
        # transaction open in the process.
        store._resize_lock.acquire()  # noqa: SLF001
        try:
            env = store._env  # noqa: SLF001
            if env is None:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "the store is not open")
            self._txn = env.begin()
        except BaseException:
            store._resize_lock.release()  # noqa: SLF001
            raise
        return _View(self._txn, store._dbs)  # noqa: SLF001

    def __exit__(self, *exc: object) -> None:
        try:
            if self._txn is not None:
                self._txn.abort()  # a read transaction: nothing to commit
                self._txn = None
        finally:
            self._store._resize_lock.release()  # noqa: SLF001


def _read_queue(view: _View, uid: int, after: int, limit: int) -> list[QueueEntry]:
    prefix = _u32(uid)
    cursor = view.txn.cursor(db=view.db("queue"))
    entries: list[QueueEntry] = []
    if not cursor.set_range(prefix + _u64(max(after, 0) + 1)):
        return entries
    for key, value in cursor:
        if not key.startswith(prefix):
            break
        entries.append(QueueEntry(_U64.unpack(key[4:])[0], value))
        if len(entries) >= limit:
            break
    return entries


def _write_acks(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], acks: dict[tuple[int, str], int]
) -> None:
    """Raise each device's acked cursor to max(old, min(seq, head)).

    A device (or user) gone meanwhile is skipped: uids are never reused.
    """
    devices, heads = dbs["devices"], dbs["queue_head"]
    for (uid, device), seq in acks.items():
        key = _u32(uid) + device.encode("utf-8", "surrogatepass")
        raw = txn.get(key, db=devices)
        if raw is None:
            continue
        item = cbor2.loads(raw)
        head_raw = txn.get(_u32(uid), db=heads)
        head = 0 if head_raw is None else _U64.unpack(head_raw)[0]
        acked = max(item["a"], min(seq, head))
        if acked != item["a"]:
            item["a"] = acked
            txn.put(key, cbor2.dumps(item), db=devices)


def _contact_bytes(address: str) -> bytes:
    try:
        encoded = address.encode("utf-8") if isinstance(address, str) else b""
    except UnicodeEncodeError:
        encoded = b""
    if not 0 < len(encoded) <= MAX_CONTACT_BYTES:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"a contact address is 1-{MAX_CONTACT_BYTES} bytes of UTF-8"
        )
    return encoded


def _revoke(w: WriteTxn, token_hash: bytes) -> None:
    sessions = w.db("sessions")
    raw = w.txn.get(token_hash, db=sessions)
    if raw is None:
        return
    item = cbor2.loads(raw)
    w.txn.delete(_u32(item["uid"]) + _u64(item["c"]) + token_hash, db=w.db("user_sessions"))
    w.txn.delete(token_hash, db=sessions)
    w.revoked.add(token_hash)


def _revoke_all_sessions(w: WriteTxn, uid: int, device: str | None = None) -> None:
    """Revoke a user's sessions (only those of ``device`` if given)."""
    sessions = w.db("sessions")
    for key in list(_prefix_keys(w.txn, w.db("user_sessions"), _u32(uid))):
        token_hash = key[12:]
        if device is not None:
            raw = w.txn.get(token_hash, db=sessions)
            if raw is not None and cbor2.loads(raw)["d"] != device:
                continue
        w.txn.delete(token_hash, db=sessions)
        w.txn.delete(key, db=w.db("user_sessions"))
        w.revoked.add(token_hash)


def _evict_oldest_device(w: WriteTxn, uid: int, limit: int) -> None:
    """Make room for one more device: drop the oldest and its sessions."""
    devices = list(_prefix_items(w.txn, w.db("devices"), _u32(uid)))
    if len(devices) < limit:
        return
    key, _ = min(devices, key=lambda kv: cbor2.loads(kv[1])["c"])
    w.txn.delete(key, db=w.db("devices"))
    _revoke_all_sessions(w, uid, key[4:].decode("ascii"))


def _prune_cids(w: WriteTxn, now_ms: int) -> None:
    horizon = now_ms - CID_RETENTION_MS
    cids = w.db("cids")
    cursor = w.txn.cursor(db=w.db("cid_times"))
    if not cursor.first():
        return
    for _ in range(CID_PRUNE_PER_SEND):
        key = cursor.key()
        if not key or _U64.unpack(key[:8])[0] >= horizon:
            return
        w.txn.delete(key[8:], db=cids)
        if not cursor.delete():
            return
