"""Conversations, read markers and full-text search over each user's queue.

Every queue append (``WriteTxn.append_to_queue``, node/store.py) calls
:func:`index_append` in the same write transaction, so the index can never
disagree with the queue: a message is either in both or in neither. The
queue stays the one copy of every record; the index holds keys and counters.

Layouts (integers fixed-width big-endian, so byte order is numeric order;
``ch`` = 8-byte BLAKE2b of the conversation key, ``th`` = 4-byte BLAKE2b of a
search term):

  conv:        uid(4) | ch(8)            -> last(8) | n(8) | read(8) | nread(8) | kind(1) | conv
  conv_seq:    uid(4) | ch(8) | seq(8)   -> cum(8)      (the conversation's entries)
  postings:    uid(4) | ep(4) | th(4) | seq(8) -> b""   (search postings, ep = seq >> 8)
  index_log:   n(8)                      -> uid(4) | seq(8) | ch(8) | cum(8) | th(4)*
                                            (entries not yet in conv_seq and postings)

``n`` counts the conversation's *countable* entries (messages the user did
not send; group events are not counted), ``cum`` the countable entries up to
and including that seq, ``read`` is the read marker and ``nread`` the
``cum`` at the marker, so ``unread = n - nread`` exactly, with no cap and no
walk over the queue. The conversation list is the user's ``conv`` rows
sorted by ``last`` when it is asked for (schema 6 dropped the ``conv_recent``
table that kept them in order: two more writes on every append, for a list
of a few hundred rows that sorts in well under a millisecond). A term hash
collision only costs a candidate that the search then drops: every hit is
checked against the message's own terms.

Postings are grouped by *epoch* (256 entries of the user's queue) before the
term (schema 7; schema 6's ``terms`` table had ``uid | th | seq``). A merge
puts the postings of a user's newest entries, so they all land in that
user's newest epoch, a range of a few pages, however long the history is:
keyed by term first, they were spread over every page of the user's
postings, and a merge on a store with a long history rewrote most of the
table (on a store of 400,000 entries a merge and its commit took about 2.5
times as long as on an empty one; bench/index_path.py). A search walks the
epochs newest first, one seek per term per epoch at least (a user with
100,000 entries has 391).

Cost on the append path (issue 15 allows the index 10 % of 1:1 throughput):
a commit writes every B-tree page it touched, so the index is costed in
pages as much as in puts. ``conv_seq`` rows land at the end of each
conversation's key range (a page per conversation per commit) and postings
on a page per term (a rare word, a number). So an entry is
written as one ``index_log`` row, keyed by a node-wide counter (every row of
a commit on the same last page, put with MDB_APPEND), next to the ``conv``
row update (a small, hot table). Once ``merge_at`` rows wait, the writer
moves all of them into ``conv_seq`` and ``postings`` in one sorted
``putmulti`` each in that batch's commit (:func:`merge_log`), where many
share a page (postings: in each user's newest epoch, see above), and empties
the log. Readers take both: a merge moves every row, so a user's logged
entries are newer than all of their merged ones, and the log is scanned (at
most about ``merge_at`` rows) before the merged tables. A message is in every
answer the moment it is committed. Conversation keys' and terms' hashes are
cached, and the record is decoded once per message however many queues it
enters.

Nothing is ever removed from a queue except with its user
(``Store.remove_user``), which drops the user's rows here with
:func:`drop_user`.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NamedTuple

import cbor2
import lmdb

from chinwag.protocol.actions import ACTION_KINDS
from chinwag.protocol.addresses import node_id_bytes
from chinwag.protocol.search_terms import index_terms

from .lmdb_rows import delete_prefix

DB_NAMES = ("conv", "conv_seq", "postings", "index_log")
#: Tables of earlier schemas, dropped by their migration (node/migrations.py).
RETIRED_DB_NAMES = ("conv_recent", "terms")

#: A posting's epoch is its seq shifted right by this: 256 queue entries.
EPOCH_BITS = 8

KIND_DM = 0
KIND_GROUP = 1

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_CONV = struct.Struct(">QQQQB")
_LAST_TOTAL = struct.Struct(">QQ")  # the head of a conv row: last, n
_REST = struct.Struct(">QQB")  # the rest: read, nread, kind (then the conv key)
_MAX_U64 = (1 << 64) - 1
#: Decoded records kept while indexing (one 1:1 message is appended to two
#: queues, a group message to every local member's): pure, safe to reuse.
_PARSE_CACHE = 256


class Entry(NamedTuple):
    """What the index needs of one queue record (a tuple: one is made per
    queue entry, and a frozen dataclass costs several times more to build)."""

    conv: str
    kind: int
    #: Counts as unread (a message from someone else; not an event).
    countable: bool
    text: str | None
    sender: str | None
    #: The text's search term hashes, 4 bytes each, concatenated.
    hashes: bytes = b""


@dataclass(frozen=True)
class ConvRow:
    conv: str
    kind: int
    last: int
    total: int
    read_seq: int
    read_count: int

    @property
    def unread(self) -> int:
        return self.total - self.read_count


#: Hashes of recent conversation keys and terms: every append hashes its
#: conversation and a busy conversation repeats itself, as common words do.
#: Cleared when full (cheaper than an LRU, and a miss only costs one hash).
_HASH_CACHE = 4096
_conv_hashes: dict[str, bytes] = {}
_term_hashes: dict[str, bytes] = {}


def _cached_hash(cache: dict[str, bytes], text: str, size: int) -> bytes:
    found = cache.get(text)
    if found is None:
        found = hashlib.blake2b(text.encode("utf-8"), digest_size=size).digest()
        if len(cache) >= _HASH_CACHE:
            cache.clear()
        cache[text] = found
    return found


def conv_hash(conv: str) -> bytes:
    return _cached_hash(_conv_hashes, conv, 8)


def term_hash(term: str) -> bytes:
    return _cached_hash(_term_hashes, term, 4)


def text_hashes(text: str) -> bytes:
    """The hashes of ``text``'s search terms, concatenated (4 bytes each).

    Once per indexed message, so the cache lookup is inlined: a message of
    six words costs six dict lookups, not six calls.
    """
    cache = _term_hashes
    out: list[bytes] = []
    for term in index_terms(text):
        found = cache.get(term)
        if found is None:
            found = _cached_hash(cache, term, 4)
        out.append(found)
    return b"".join(out)


def _u32(value: int) -> bytes:
    return _U32.pack(value)


def _u64(value: int) -> bytes:
    return _U64.pack(value)


def _epoch(seq: int) -> bytes:
    return _U32.pack(seq >> EPOCH_BITS)


def _posting_keys(user: bytes, tail: bytes, hashes: bytes) -> list[bytes]:
    """The ``postings`` keys of the entry at ``tail`` (its seq, 8 bytes) of
    ``user`` (uid, 4 bytes) for ``hashes`` (term hashes, 4 bytes each)."""
    head = user + _epoch(int.from_bytes(tail, "big"))
    return [head + hashes[i : i + 4] + tail for i in range(0, len(hashes), 4)]


# ---------------------------------------------------------------- records


def _address(wire: Any) -> str | None:
    if isinstance(wire, dict) and isinstance(wire.get("u"), str) and isinstance(wire.get("n"), str):
        return f"{wire['u']}@{wire['n']}"
    return None


def _group(wire: Any) -> str | None:
    if (
        isinstance(wire, dict)
        and isinstance(wire.get("name"), str)
        and isinstance(wire.get("host"), str)
    ):
        return f"#{wire['name']}@{wire['host']}"
    return None


class _Parsed(NamedTuple):
    sender: str | None
    to: str | None
    group: str | None
    text: str | None
    is_event: bool
    #: Hashes of the text's search terms, concatenated (computed once per record).
    hashes: bytes = b""


_UNKNOWN = _Parsed(None, None, None, None, True)
_parsed: dict[bytes, _Parsed] = {}


def _parse(record: bytes) -> _Parsed:
    """What the index needs of a queue record, decoded once per record.

    Records were checked when they were stored (signed units verified by
    their origin or by us), so plain CBOR decoding is enough here. One record
    is appended to several queues (both ends of a 1:1 message, each local
    group member), so the result is cached by the record's bytes.
    """
    found = _parsed.get(record)
    if found is not None:
        return found
    try:
        item = cbor2.loads(record)
        if "unit" in item or "plain" in item:
            # "plain": a rewritten record (node/actions_store.py), its envelope a map.
            env = cbor2.loads(item["unit"]["env"]) if "unit" in item else item["plain"]
            if env.get("kind") in ACTION_KINDS:
                raise ValueError("an action record belongs to no conversation page")
            body = env.get("body")
            text = body.get("text") if isinstance(body, dict) else None
            edit = item.get("edit")  # an edited message is found by its current text
            text = edit.get("text") if isinstance(edit, dict) else text
            text = text if isinstance(text, str) and text else None
            parsed = _Parsed(
                _address(env.get("from")),
                _address(env.get("to")),
                _group(env.get("group")),
                text,
                False,
                text_hashes(text) if text else b"",
            )
        else:
            event = item.get("event")
            event = event if isinstance(event, dict) else {}
            parsed = _Parsed(
                None, _address(event.get("to")), _group(event.get("group")), None, True
            )
    except (ValueError, TypeError, KeyError, AttributeError, cbor2.CBORDecodeError):
        parsed = _UNKNOWN
    if len(_parsed) >= _PARSE_CACHE:
        # Cleared, not trimmed: the writer thread and a search's reads both
        # use the cache, and a clear is one atomic step under the GIL.
        _parsed.clear()
    _parsed[record] = parsed
    return parsed


def prime_message(record: bytes, sender: str, to: str, text: str) -> None:
    """Tell the index what ``record`` (a 1:1 message this node just signed,
    from ``sender`` to ``to``, addresses ``user@<node id>``) holds, so its
    queue appends need not decode it again."""
    if record not in _parsed:
        hashes = text_hashes(text) if text else b""
        if len(_parsed) >= _PARSE_CACHE:
            _parsed.clear()
        _parsed[record] = _Parsed(sender, to, None, text or None, False, hashes)


def classify(record: bytes, owner: str) -> Entry | None:
    """Where a record of ``owner``'s queue (``user@<node id>``) belongs; None
    for a record of no conversation (a node notice)."""
    p = _parse(record)
    if p.group is not None:
        own = p.sender == owner
        return Entry(p.group, KIND_GROUP, not p.is_event and not own, p.text, p.sender, p.hashes)
    if p.is_event:
        return None if p.to is None else Entry(p.to, KIND_DM, False, None, None)
    if p.sender is None or p.to is None:
        return None
    if p.sender == owner:
        return Entry(p.to, KIND_DM, False, p.text, p.sender, p.hashes)
    return Entry(p.sender, KIND_DM, True, p.text, p.sender, p.hashes)


# ---------------------------------------------------------------- writing


def _get_conv(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], key: bytes) -> ConvRow | None:
    raw = txn.get(key, db=dbs["conv"])
    if raw is None:
        return None
    return _conv_row(bytes(raw))


def _conv_row(raw: bytes) -> ConvRow:
    last, total, read_seq, read_count, kind = _CONV.unpack_from(raw)
    return ConvRow(raw[_CONV.size :].decode("utf-8"), kind, last, total, read_seq, read_count)


def _put_conv(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], key: bytes, row: ConvRow) -> None:
    value = _CONV.pack(row.last, row.total, row.read_seq, row.read_count, row.kind)
    txn.put(key, value + row.conv.encode("utf-8"), db=dbs["conv"])


def index_append(
    txn: lmdb.Transaction[bytes],
    dbs: dict[str, Any],
    uid: int,
    owner: str,
    seq: int,
    record: bytes,
    log_key: int,
) -> int:
    """Index queue entry ``seq`` of user ``uid`` (address ``owner``) under
    ``index_log`` key ``log_key`` (higher than every key in the log); return
    the number of log rows written (0 or 1: see :func:`merge_log`).

    On every queue append, so kept lean: one get and two puts, the record
    decoded and tokenized once however many queues it enters.
    """
    entry = classify(record, owner)
    if entry is None:
        return 0
    prefix = _U32.pack(uid)
    ch = conv_hash(entry.conv)
    key = prefix + ch
    conv_db = dbs["conv"]
    raw = txn.get(key, db=conv_db)
    if raw is None:
        total = 0
        rest = _REST.pack(0, 0, entry.kind) + entry.conv.encode("utf-8")
    else:
        raw = bytes(raw)
        total = _U64.unpack_from(raw, 8)[0]
        rest = raw[_LAST_TOTAL.size :]
    if entry.countable:
        total += 1
    txn.put(key, _LAST_TOTAL.pack(seq, total) + rest, db=conv_db)
    row = _LOG.pack(uid, seq, ch, total) + entry.hashes
    txn.put(_U64.pack(log_key), row, db=dbs["index_log"], append=True)
    return 1


_LOG = struct.Struct(">IQ8sQ")  # uid, seq, ch, cum (then the term hashes)


class _Logged(NamedTuple):
    seq: int
    ch: bytes
    cum: int
    hashes: bytes


def _logged(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, ch: bytes | None = None
) -> list[_Logged]:
    """User ``uid``'s entries in ``index_log`` (of conversation ``ch`` if
    given), oldest first; all newer than any of the user's merged rows."""
    prefix = _U32.pack(uid)
    out: list[_Logged] = []
    unpack = _LOG.unpack_from
    for value in txn.cursor(db=dbs["index_log"]).iternext(keys=False):
        if value[:4] != prefix or (ch is not None and value[12:20] != ch):
            continue
        value = bytes(value)
        _, seq, row_ch, cum = unpack(value)
        out.append(_Logged(seq, row_ch, cum, value[_LOG.size :]))
    return out


def merge_log(txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> int:
    """Move every ``index_log`` row into ``conv_seq`` and ``postings``, in
    key order (neighbouring rows share pages), and empty the log; return the
    number of rows moved."""
    log = dbs["index_log"]
    seqs: list[tuple[bytes, bytes]] = []
    postings: list[bytes] = []
    size = _LOG.size
    # Sliced, not unpacked: the fields are already the keys' big-endian bytes.
    for value in txn.cursor(db=log).iternext(keys=False):
        value = bytes(value)
        prefix, tail = value[:4], value[4:12]
        seqs.append((prefix + value[12:20] + tail, value[20:size]))
        if len(value) > size:
            postings += _posting_keys(prefix, tail, value[size:])
    if not seqs:
        return 0
    seqs.sort()
    postings.sort()
    with txn.cursor(db=dbs["conv_seq"]) as cursor:
        cursor.putmulti(seqs)
    with txn.cursor(db=dbs["postings"]) as cursor:
        cursor.putmulti(zip(postings, repeat(b"")))
    txn.drop(log, delete=False)
    return len(seqs)


def log_state(txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> tuple[int, int]:
    """``(rows, next key)`` of ``index_log`` (read when the store opens)."""
    log = dbs["index_log"]
    rows: int = txn.stat(log)["entries"]
    cursor = txn.cursor(db=log)
    following = _U64.unpack(cursor.key())[0] + 1 if cursor.last() else 1
    return rows, following


def _log_row(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, seq: int
) -> tuple[bytes, bytes] | None:
    """The ``index_log`` row of queue entry ``seq`` of ``uid``, if not merged yet."""
    head = _U32.pack(uid) + _U64.pack(seq)
    for key, value in txn.cursor(db=dbs["index_log"]):
        if value[:12] == head:
            return bytes(key), bytes(value)
    return None


def unindex_message(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, seq: int, text: str
) -> None:
    """Drop the search postings of ``text`` at queue entry ``seq`` (a message
    deleted or edited, node/actions_store.py), merged or still in the log."""
    logged = _log_row(txn, dbs, uid, seq)
    if logged is not None:
        key, value = logged
        txn.put(key, value[: _LOG.size], db=dbs["index_log"])  # no hashes left to merge
        return
    for key in _posting_keys(_U32.pack(uid), _U64.pack(seq), text_hashes(text)):
        txn.delete(key, db=dbs["postings"])


def index_message_text(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, seq: int, text: str
) -> None:
    """Add the search postings of ``text`` at queue entry ``seq`` (an edit's
    new text): into its log row while it waits there, else into ``postings``."""
    hashes = text_hashes(text)
    logged = _log_row(txn, dbs, uid, seq)
    if logged is not None:
        key, value = logged
        txn.put(key, value + hashes, db=dbs["index_log"])
        return
    for posting in _posting_keys(_U32.pack(uid), _U64.pack(seq), hashes):
        txn.put(posting, b"", db=dbs["postings"])


def mark_read(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, conv: str, seq: int
) -> ConvRow | None:
    """Move the marker of ``conv`` forward to ``seq`` (never back, never past
    its last entry); None if the user has no such conversation."""
    ch = conv_hash(conv)
    key = _u32(uid) + ch
    row = _get_conv(txn, dbs, key)
    if row is None or row.conv != conv:
        return None
    target = min(seq, row.last)
    if target <= row.read_seq:
        return row
    # The entry at or just before ``target``: its cum is what the marker covers.
    read_count = row.read_count
    covered = [item.cum for item in _logged(txn, dbs, uid, ch) if item.seq <= target]
    if covered:
        read_count = covered[-1]
    else:
        cursor = txn.cursor(db=dbs["conv_seq"])
        if cursor.set_range(key + _u64(target + 1)):
            moved = cursor.prev()
        else:
            moved = cursor.last()
        if moved and cursor.key()[:12] == key:
            read_count = _U64.unpack_from(cursor.value())[0]
    updated = ConvRow(row.conv, row.kind, row.last, row.total, target, read_count)
    _put_conv(txn, dbs, key, updated)
    return updated


def drop_user(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int) -> None:
    """Remove every index row of user ``uid`` (the user is being removed)."""
    prefix = _u32(uid)
    for name in ("conv", "conv_seq", "postings"):
        delete_prefix(txn, dbs[name], prefix)
    cursor = txn.cursor(db=dbs["index_log"])
    moved = cursor.first()
    while moved:
        if cursor.value()[:4] == prefix:
            moved = cursor.delete()
        else:
            moved = cursor.next()


def move_terms_to_postings(
    txn: lmdb.Transaction[bytes], terms_db: Any, postings_db: Any, chunk: int = 65_536
) -> int:
    """Copy schema 6's ``terms`` rows (uid | th | seq) into ``postings``
    (uid | epoch | th | seq), ``chunk`` at a time (sorted, so each chunk
    fills pages in order); return the number of postings copied."""
    copied = 0
    pending: list[bytes] = []

    def flush() -> None:
        pending.sort()
        with txn.cursor(db=postings_db) as cursor:
            cursor.putmulti(zip(pending, repeat(b"")))
        pending.clear()

    for key in txn.cursor(db=terms_db).iternext(values=False):
        if len(key) != 16:
            continue  # not a schema 6 posting
        key = bytes(key)
        pending += _posting_keys(key[:4], key[8:], key[4:8])
        copied += 1
        if len(pending) >= chunk:
            flush()
    if pending:
        flush()
    return copied


def rebuild_all(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], node_id: str) -> int:
    """Index every queue of the store from scratch (the 2 -> 3 migration);
    return the number of entries indexed."""
    for name in DB_NAMES:
        txn.drop(dbs[name], delete=False)
    owners: dict[int, str] = {}
    for key, value in txn.cursor(db=dbs["uid_user"]):
        owners[_U32.unpack(key)[0]] = f"{bytes(value).decode('utf-8')}@{node_id}"
    count = 0
    for key, record in txn.cursor(db=dbs["queue"]):
        uid = _U32.unpack_from(key)[0]
        owner = owners.get(uid)
        if owner is None:
            continue
        index_append(txn, dbs, uid, owner, _U64.unpack_from(key, 4)[0], bytes(record), count + 1)
        count += 1
    merge_log(txn, dbs)
    return count


# ---------------------------------------------------------------- reading


def get_conv(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, conv: str
) -> ConvRow | None:
    row = _get_conv(txn, dbs, _u32(uid) + conv_hash(conv))
    return row if row is not None and row.conv == conv else None


def recent_convs(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, before: int | None, limit: int
) -> tuple[list[ConvRow], bool]:
    """Up to ``limit`` conversations whose last seq is below ``before``, newest
    first, and whether older ones remain.

    Reads all of the user's ``conv`` rows (about 60 bytes each) and keeps the
    newest: a user in a thousand conversations costs about a millisecond here,
    where keeping them sorted cost two writes on every queue append.
    """
    prefix = _u32(uid)
    bound = _MAX_U64 if before is None else before
    cursor = txn.cursor(db=dbs["conv"])
    found: list[tuple[int, bytes]] = []
    if cursor.set_range(prefix):
        unpack = _U64.unpack_from
        for key, value in cursor:
            if key[:4] != prefix:
                break
            last = unpack(value)[0]
            if last < bound:
                found.append((last, bytes(value)))
    newest = heapq.nlargest(limit + 1, found, key=lambda item: item[0])
    rows = [_conv_row(value) for _, value in newest[:limit]]
    return rows, len(newest) > limit


def conv_seqs(
    txn: lmdb.Transaction[bytes],
    dbs: dict[str, Any],
    uid: int,
    conv: str,
    before: int | None,
) -> Iterator[int]:
    """The conversation's seqs below ``before``, newest first."""
    ch = conv_hash(conv)
    bound = _MAX_U64 if before is None else before
    for item in reversed(_logged(txn, dbs, uid, ch)):
        if item.seq < bound:
            yield item.seq
    key = _u32(uid) + ch
    cursor = txn.cursor(db=dbs["conv_seq"])
    start = key + _u64(_MAX_U64 if before is None else before)
    if cursor.set_range(start):
        moved = cursor.prev()
    else:
        moved = cursor.last()
    while moved:
        found = cursor.key()
        if found[:12] != key:
            return
        yield _U64.unpack_from(found, 12)[0]
        moved = cursor.prev()


def conv_seqs_after(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, conv: str, after: int
) -> Iterator[int]:
    """The conversation's seqs above ``after``, oldest first."""
    ch = conv_hash(conv)
    logged = _logged(txn, dbs, uid, ch)  # before the cursor: both from one snapshot
    key = _u32(uid) + ch
    cursor = txn.cursor(db=dbs["conv_seq"])
    if cursor.set_range(key + _u64(min(after + 1, _MAX_U64))):
        for found in cursor.iternext(values=False):
            if found[:12] != key:
                break
            yield _U64.unpack_from(found, 12)[0]
    for item in logged:
        if item.seq > after:
            yield item.seq


def conv_postings(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, conv: str
) -> _Postings:
    """A conversation's seqs as one more posting list (a search's ``conv`` filter)."""
    return _Postings(txn.cursor(db=dbs["conv_seq"]), _u32(uid) + conv_hash(conv))


class _Postings:
    """A backward cursor over one sorted list of ``prefix | seq(8)`` keys
    (``prefix`` may be changed to another of the same length: a term's list
    in another epoch)."""

    def __init__(self, cursor: lmdb.Cursor[bytes], prefix: bytes) -> None:
        self._cursor = cursor
        self.prefix = prefix
        self._size = len(prefix)

    def seek_at_or_below(self, seq: int) -> int | None:
        """The highest seq <= ``seq`` in the list."""
        cursor = self._cursor
        found = cursor.set_range(self.prefix + _u64(min(seq + 1, _MAX_U64)))
        moved = cursor.prev() if found else cursor.last()
        if not moved:
            return None
        key = cursor.key()
        if key[: self._size] != self.prefix:
            return None
        found_seq: int = _U64.unpack_from(key, self._size)[0]
        return found_seq


def _newest_epoch(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int) -> int | None:
    """The epoch of user ``uid``'s newest posting (None: the user has none)."""
    cursor = txn.cursor(db=dbs["postings"])
    following = uid + 1 < 1 << 32 and cursor.set_range(_u32(uid + 1))
    moved = cursor.prev() if following else cursor.last()
    if not moved or cursor.key()[:4] != _u32(uid):
        return None
    epoch: int = _U32.unpack_from(cursor.key(), 4)[0]
    return epoch


def search_seqs(
    txn: lmdb.Transaction[bytes],
    dbs: dict[str, Any],
    uid: int,
    terms: list[str],
    conv: str | None,
    before: int | None,
    budget: int,
) -> Iterator[int]:
    """Seqs (newest first, below ``before``) whose entry has every term's hash,
    within ``conv`` if given; stops after ``budget`` cursor seeks (entries
    still in ``index_log`` are read first, outside the budget: there are at
    most about ``merge_at`` of them).

    A zig-zag join: each list's cursor leaps to the highest seq at or below
    the current candidate, so rare terms make common ones skip ahead. The
    ``conv`` filter is one more list (the conversation's seqs), so a search
    in a small conversation is as fast as its rarest term allows. A term's
    list is read one epoch at a time, newest first: a term with nothing at or
    below the candidate in this epoch moves the candidate to the end of the
    epoch below.
    A seq <= 0 is yielded last when the budget ran out: resume below ``-value + 1``.
    """
    candidate = (before - 1) if before is not None else _MAX_U64 - 1
    seeks = 0
    # Logged entries first: newer than every posting of the user, and at
    # most about merge_at of them.
    hashes = [term_hash(term) for term in terms]
    ch = conv_hash(conv) if conv is not None else None
    for item in reversed(_logged(txn, dbs, uid, ch)):
        # A hash found across two terms' bytes is a false candidate at
        # worst: every hit is checked against the message itself.
        if item.seq <= candidate and all(h in item.hashes for h in hashes):
            yield item.seq
    newest = _newest_epoch(txn, dbs, uid)
    if newest is None:
        return
    candidate = min(candidate, ((newest + 1) << EPOCH_BITS) - 1)
    user = _u32(uid)
    term_lists = [_Postings(txn.cursor(db=dbs["postings"]), user + _epoch(0) + h) for h in hashes]
    conv_list = conv_postings(txn, dbs, uid, conv) if conv is not None else None
    lists: list[_Postings] = term_lists + ([conv_list] if conv_list is not None else [])
    epoch = -1
    turn = agreed = 0
    # Round robin over the lists until all agree on one seq: each seek
    # either confirms the candidate or lowers it (restarting the count).
    while candidate >= 1:
        if candidate >> EPOCH_BITS != epoch:
            epoch = candidate >> EPOCH_BITS
            head = user + _U32.pack(epoch)
            for plist, th in zip(term_lists, hashes, strict=True):
                plist.prefix = head + th
        if agreed == len(lists):
            yield candidate
            candidate, agreed = candidate - 1, 0
            continue
        if seeks >= budget:
            yield -candidate
            return
        seeks += 1
        plist = lists[turn]
        turn = (turn + 1) % len(lists)
        seq = plist.seek_at_or_below(candidate)
        if seq is None:
            if plist is conv_list:
                return
            # Nothing of this term in this epoch at or below the candidate.
            candidate, agreed = (epoch << EPOCH_BITS) - 1, 0
        elif seq == candidate:
            agreed += 1
        else:
            candidate, agreed = seq, 1


def group_title(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], conv: str, node_id: str
) -> str | None:
    """A group conversation's title, from the hosted group or this node's view."""
    name, _, host = conv[1:].partition("@")
    try:
        if host == node_id:
            raw = txn.get(name.encode("utf-8"), db=dbs["groups"])
        else:
            raw = txn.get(node_id_bytes(host) + name.encode("utf-8"), db=dbs["group_views"])
    except (ValueError, UnicodeEncodeError):
        return None
    if raw is None:
        return None
    try:
        title = cbor2.loads(bytes(raw)).get("title")
    except (ValueError, cbor2.CBORDecodeError, AttributeError):
        return None
    return title if isinstance(title, str) else None
