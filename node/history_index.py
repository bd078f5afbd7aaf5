"""Conversations, read markers and full-text search over each user's queue.

Every queue append (``WriteTxn.append_to_queue``, node/store.py) is
indexed in the same write transaction: staged with :func:`stage` (in the
operation's transaction, or a transaction nested in it, whose entries go
with it) and written with :func:`write_staged` before the batch commits,
so the index can never disagree with the queue: a message is either in both
or in neither. The queue stays the one copy of every record; the index
holds keys and counters.

Layouts (integers fixed-width big-endian, so byte order is numeric order;
``ch`` = 8-byte BLAKE2b of the conversation key, ``th`` = 4-byte BLAKE2b of a
search term):

  conv:        uid(4) | ch(8)            -> last(8) | n(8) | read(8) | nread(8) | kind(1) | conv
  conv_seq:    uid(4) | ch(8) | seq(8)   -> cum(8)      (the conversation's entries)
  epoch_terms: uid(4) | ep(4)             -> (th(4) | seq & 0xFF(1))*
                                            (search postings of 256 entries, ep = seq >> 8)
  index_log:   n(8)                      -> (uid(4) | seq(8) | ch(8) | cum(8) | k(2) | th(4)*k)*
                                            (entries not yet in conv_seq and epoch_terms)

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

Postings are grouped by *epoch* (256 entries of the user's queue), one
``epoch_terms`` row (a *block*) per user and epoch holding a 5-byte record
per posting (schema 8; schema 7 had a key per posting, ``uid | ep | th |
seq``, and schema 6 ``uid | th | seq``). A merge appends the records of a
user's newest entries to that user's newest block or two: one get and one
put per user and epoch, however many terms, where a key per posting cost
one ``putmulti`` item each, and each item is an LMDB call that releases the
GIL and waits to take it back from the event loop's thread. Keyed by term
first (schema 6), postings were spread over every page of the user's
postings, and a merge on a store with a long history rewrote most of the
table (on a store of 400,000 entries a merge and its commit took about 2.5
times as long as on an empty one; bench/index_path.py). A search reads the
blocks newest first and finds each term's records in one with
``bytes.find`` (a user with 100,000 entries has 391 blocks).

Cost on the append path (issue 15 allows the index 10 % of 1:1 throughput):
a commit writes every B-tree page it touched, so the index is costed in
pages as much as in puts. ``conv_seq`` rows land at the end of each
conversation's key range (a page per conversation per commit) and a key
per posting on a page per term (a rare word, a number). So a write batch
puts one ``index_log`` row holding all its entries, keyed by a node-wide
counter (put with MDB_APPEND), next to one ``conv`` row update per
conversation (a small, hot table). Once ``merge_at`` entries wait, the
writer moves all of them into ``conv_seq`` (one sorted ``putmulti``, where
many share a page) and ``epoch_terms`` (see above) in that batch's commit
(:func:`merge_log`), and empties the log. Readers take both: a merge moves
every entry, so a user's logged entries are newer than all of their merged
ones, and the log is scanned (at most about ``merge_at`` entries) before
the merged tables. A message is in every answer the moment it is committed.
Conversation keys' and terms' hashes are cached, and the record is decoded
once per message however many queues it enters.

Nothing is ever removed from a queue except with its user
(``Store.remove_user``), which drops the user's rows here with
:func:`drop_user`.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import cbor2
import lmdb

from chinwag.protocol.actions import ACTION_KINDS
from chinwag.protocol.addresses import node_id_bytes
from chinwag.protocol.search_terms import index_terms

from .lmdb_rows import delete_prefix

DB_NAMES = ("conv", "conv_seq", "epoch_terms", "index_log")
#: Tables of earlier schemas, dropped by their migration (node/migrations.py).
RETIRED_DB_NAMES = ("conv_recent", "terms", "postings")

#: A posting's epoch is its seq shifted right by this: 256 queue entries.
EPOCH_BITS = 8
#: A search's budget counts a block once more for every this many bytes.
BLOCK_UNIT = 16_384

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


#: A record of an ``epoch_terms`` block: term hash(4) | seq & 0xFF (1).
_RECORD = 5


def _records(seq: int, hashes: bytes) -> bytes:
    """The block records of the entry at ``seq`` for ``hashes`` (4 bytes each)."""
    if not hashes:
        return b""  # not one stray byte: it would shift every later record
    off = bytes((seq & 0xFF,))
    return off.join([hashes[i : i + 4] for i in range(0, len(hashes), 4)]) + off


def _block_key(user: bytes, seq: int) -> bytes:
    """The ``epoch_terms`` key of ``user``'s (uid, 4 bytes) epoch holding ``seq``."""
    return user + _epoch(seq)


def _add_blocks(txn: lmdb.Transaction[bytes], db: Any, blocks: dict[bytes, list[bytes]]) -> None:
    """Append records to ``epoch_terms`` blocks, one get and one put per block."""
    for key in sorted(blocks):
        old = txn.get(key, db=db)
        added = b"".join(blocks[key])
        txn.put(key, added if old is None else bytes(old) + added, db=db)


def _drop_records(txn: lmdb.Transaction[bytes], db: Any, uid: int, seq: int, hashes: bytes) -> None:
    """Remove the records of ``hashes`` at ``seq`` from user ``uid``'s block."""
    key = _block_key(_u32(uid), seq)
    raw = txn.get(key, db=db)
    if raw is None:
        return
    raw = bytes(raw)
    gone = {hashes[i : i + 4] for i in range(0, len(hashes), 4)}
    off = seq & 0xFF
    kept = b"".join(
        raw[i : i + _RECORD]
        for i in range(0, len(raw), _RECORD)
        if raw[i + 4] != off or raw[i : i + 4] not in gone
    )
    if kept:
        txn.put(key, kept, db=db)
    else:
        txn.delete(key, db=db)


def _aligned(block: bytes, needle: bytes) -> Iterator[int]:
    """Where ``needle`` starts in ``block`` on a record boundary.

    ``bytes.find`` scans at C speed; a match off a boundary is bytes of two
    records and is skipped.
    """
    find = block.find
    at = find(needle)
    while at >= 0:
        if at % _RECORD == 0:
            yield at
            at = find(needle, at + _RECORD)
        else:
            at = find(needle, at + 1)


def _has_record(block: bytes, record: bytes) -> bool:
    """Whether ``block`` holds ``record`` (on a record boundary)."""
    return next(_aligned(block, record), None) is not None


def _offsets(block: bytes, th: bytes) -> set[int]:
    """The seqs (low byte) of ``block``'s records for term hash ``th``."""
    return {block[at + 4] for at in _aligned(block, th)}


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


class Staged(NamedTuple):
    """A queue entry waiting to be written into the index (see :func:`write_staged`)."""

    uid: int
    seq: int
    entry: Entry


def stage(uid: int, owner: str, seq: int, record: bytes) -> Staged | None:
    """What queue entry ``seq`` of user ``uid`` (address ``owner``) adds to
    the index; None for a record of no conversation. Nothing is written."""
    entry = classify(record, owner)
    return None if entry is None else Staged(uid, seq, entry)


def write_staged(
    txn: lmdb.Transaction[bytes],
    dbs: dict[str, Any],
    staged: list[Staged],
    log_key: Callable[[], int],
    known: dict[bytes, bytes] | None = None,
    written: dict[bytes, bytes] | None = None,
) -> int:
    """Write staged entries (in queue order per user): one ``conv`` put per
    conversation however many of its entries, and one ``index_log`` row
    holding all the entries under a key from ``log_key`` (higher than every
    key in the log); return the number of entries logged (see
    :func:`merge_log`).

    ``known`` holds ``conv`` rows as ``txn`` has them (the writer's rows as
    of its last commit, when nothing since changed them), read instead of
    ``txn``; ``written`` gets every ``conv`` row written here.

    The writer stages a batch's queue appends and writes them here once,
    before its commit (node/store.py): a busy conversation's row is written
    once per batch instead of once per message, and read from LMDB only when
    the writer does not have it, and every LMDB call saved is a GIL
    hand-over saved.
    """
    conv_db = dbs["conv"]
    rows: dict[bytes, list[Any]] = {}  # key -> [last, total, rest of the row]
    logs: list[bytes] = []
    pack_entry = _ENTRY.pack
    for uid, seq, entry in staged:
        ch = conv_hash(entry.conv)
        key = _U32.pack(uid) + ch
        row = rows.get(key)
        if row is None:
            raw = known.get(key) if known is not None else None
            if raw is None:
                found = txn.get(key, db=conv_db)
                raw = None if found is None else bytes(found)
            if raw is None:
                row = [0, 0, _REST.pack(0, 0, entry.kind) + entry.conv.encode("utf-8")]
            else:
                row = [0, _U64.unpack_from(raw, 8)[0], raw[_LAST_TOTAL.size :]]
            rows[key] = row
        if entry.countable:
            row[1] += 1
        row[0] = seq
        hashes = entry.hashes
        logs.append(pack_entry(uid, seq, ch, row[1], len(hashes) >> 2) + hashes)
    for key, (last, total, rest) in rows.items():
        value = _LAST_TOTAL.pack(last, total) + rest
        txn.put(key, value, db=conv_db)
        if written is not None:
            written[key] = value
    if logs:
        txn.put(_U64.pack(log_key()), b"".join(logs), db=dbs["index_log"], append=True)
    return len(logs)


def index_append(
    txn: lmdb.Transaction[bytes],
    dbs: dict[str, Any],
    uid: int,
    owner: str,
    seq: int,
    record: bytes,
    log_key: int,
) -> int:
    """Index queue entry ``seq`` of user ``uid`` (address ``owner``) at once,
    under ``index_log`` key ``log_key`` (higher than every key in the log);
    return the number of log rows written (0 or 1). For a rebuild; the
    writer stages (:func:`stage`, :func:`write_staged`)."""
    staged = stage(uid, owner, seq, record)
    if staged is None:
        return 0
    return write_staged(txn, dbs, [staged], lambda: log_key)


#: An ``index_log`` entry: uid, seq, ch, cum, then that many term hashes.
#: A row holds the entries of one write, one after another.
_ENTRY = struct.Struct(">IQ8sQH")
_HEAD = 30  # _ENTRY.size: the entry's term hashes start here


def _entries(row: bytes) -> list[bytes]:
    """The entries of an ``index_log`` row, each its head and term hashes."""
    out: list[bytes] = []
    at, end = 0, len(row)
    while at < end:
        stop = at + _HEAD + 4 * int.from_bytes(row[at + 28 : at + _HEAD], "big")
        out.append(row[at:stop])
        at = stop
    return out


def _with_hashes(entry: bytes, hashes: bytes) -> bytes:
    """``entry`` with its term hashes replaced by ``hashes``."""
    return entry[:28] + (len(hashes) >> 2).to_bytes(2, "big") + hashes


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
    unpack = _ENTRY.unpack_from
    for row in txn.cursor(db=dbs["index_log"]).iternext(keys=False):
        row = bytes(row)
        if prefix not in row:  # a quick no: most rows hold other users' entries
            continue
        for entry in _entries(row):
            if entry[:4] != prefix or (ch is not None and entry[12:20] != ch):
                continue
            _, seq, entry_ch, cum, _ = unpack(entry)
            out.append(_Logged(seq, entry_ch, cum, entry[_HEAD:]))
    return out


def merge_log(txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> int:
    """Move every ``index_log`` entry into ``conv_seq`` (in key order:
    neighbouring rows share pages) and ``epoch_terms`` (one get and one put
    per user and epoch), and empty the log; return the number of entries moved."""
    log = dbs["index_log"]
    seqs: list[tuple[bytes, bytes]] = []
    blocks: dict[bytes, list[bytes]] = {}
    # Sliced, not unpacked: the fields are already the keys' big-endian bytes.
    for row in txn.cursor(db=log).iternext(keys=False):
        for value in _entries(bytes(row)):
            prefix, tail = value[:4], value[4:12]
            seqs.append((prefix + value[12:20] + tail, value[20:28]))
            if len(value) == _HEAD:
                continue
            seq = int.from_bytes(tail, "big")
            key = _block_key(prefix, seq)
            records = _records(seq, value[_HEAD:])
            found = blocks.get(key)
            if found is None:
                blocks[key] = [records]
            else:
                found.append(records)
    if not seqs:
        return 0
    seqs.sort()
    with txn.cursor(db=dbs["conv_seq"]) as cursor:
        cursor.putmulti(seqs)
    _add_blocks(txn, dbs["epoch_terms"], blocks)
    txn.drop(log, delete=False)
    return len(seqs)


def log_state(txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> tuple[int, int]:
    """``(entries, next key)`` of ``index_log`` (read when the store opens)."""
    log = dbs["index_log"]
    count = sum(len(_entries(bytes(row))) for row in txn.cursor(db=log).iternext(keys=False))
    cursor = txn.cursor(db=log)
    following = _U64.unpack(cursor.key())[0] + 1 if cursor.last() else 1
    return count, following


def _rehash_logged(
    txn: lmdb.Transaction[bytes],
    dbs: dict[str, Any],
    uid: int,
    seq: int,
    change: Callable[[bytes], bytes],
) -> bool:
    """Give queue entry ``seq`` of ``uid`` the term hashes ``change(hashes)``
    in its ``index_log`` entry; False if it is not in the log (merged)."""
    head = _U32.pack(uid) + _U64.pack(seq)
    log = dbs["index_log"]
    for key, row in txn.cursor(db=log):
        row = bytes(row)
        if head not in row:
            continue
        entries = _entries(row)
        for i, entry in enumerate(entries):
            if entry[:12] == head:
                entries[i] = _with_hashes(entry, change(entry[_HEAD:]))
                txn.put(bytes(key), b"".join(entries), db=log)
                return True
    return False


def unindex_message(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, seq: int, text: str
) -> None:
    """Drop the search postings of ``text`` at queue entry ``seq`` (a message
    deleted or edited, node/actions_store.py), merged or still in the log."""
    if _rehash_logged(txn, dbs, uid, seq, lambda _: b""):  # no hashes left to merge
        return
    _drop_records(txn, dbs["epoch_terms"], uid, seq, text_hashes(text))


def index_message_text(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, seq: int, text: str
) -> None:
    """Add the search postings of ``text`` at queue entry ``seq`` (an edit's
    new text): into its log row while it waits there, else into its block."""
    hashes = text_hashes(text)
    if _rehash_logged(txn, dbs, uid, seq, lambda old: old + hashes):
        return
    if hashes:
        key = _block_key(_u32(uid), seq)
        _add_blocks(txn, dbs["epoch_terms"], {key: [_records(seq, hashes)]})


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
    for name in ("conv", "conv_seq", "epoch_terms"):
        delete_prefix(txn, dbs[name], prefix)
    log = dbs["index_log"]
    changed: list[tuple[bytes, bytes]] = []
    for key, row in txn.cursor(db=log):
        row = bytes(row)
        if prefix not in row:
            continue
        kept = [entry for entry in _entries(row) if entry[:4] != prefix]
        changed.append((bytes(key), b"".join(kept)))
    for key, row in changed:
        if row:
            txn.put(key, row, db=log)
        else:
            txn.delete(key, db=log)


def upgrade_log_rows(txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> int:
    """Rewrite schema 7's ``index_log`` rows (one entry each, no hash count:
    uid | seq | ch | cum | th*) as schema 8 rows; return how many."""
    log = dbs["index_log"]
    rows = [(bytes(key), bytes(row)) for key, row in txn.cursor(db=log)]
    for key, row in rows:
        txn.put(key, _with_hashes(row[:28] + b"\0\0", row[28:]), db=log)
    return len(rows)


def move_postings_to_blocks(
    txn: lmdb.Transaction[bytes], old_db: Any, blocks_db: Any, schema: int, chunk: int = 65_536
) -> int:
    """Copy the search postings of an older schema into ``epoch_terms``
    blocks: schema 6's ``terms`` (uid | th | seq) or schema 7's ``postings``
    (uid | epoch | th | seq), ``chunk`` records at a time (one get and one
    put per block per chunk); return the number of postings copied."""
    copied = 0
    pending: dict[bytes, list[bytes]] = {}
    held = 0
    for key in txn.cursor(db=old_db).iternext(values=False):
        key = bytes(key)
        if schema == 6 and len(key) == 16:
            user, th, tail = key[:4], key[4:8], key[8:]
        elif schema == 7 and len(key) == 20:
            user, th, tail = key[:4], key[8:12], key[12:]
        else:
            continue  # not a posting of that schema
        seq = int.from_bytes(tail, "big")
        pending.setdefault(_block_key(user, seq), []).append(th + bytes((seq & 0xFF,)))
        copied += 1
        held += 1
        if held >= chunk:
            _add_blocks(txn, blocks_db, pending)
            pending, held = {}, 0
    _add_blocks(txn, blocks_db, pending)
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


def _newest_epoch(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int) -> int | None:
    """The epoch of user ``uid``'s newest block (None: the user has none)."""
    cursor = txn.cursor(db=dbs["epoch_terms"])
    following = uid + 1 < 1 << 32 and cursor.set_range(_u32(uid + 1))
    moved = cursor.prev() if following else cursor.last()
    if not moved or cursor.key()[:4] != _u32(uid):
        return None
    epoch: int = _U32.unpack_from(cursor.key(), 4)[0]
    return epoch


def _conv_at_or_below(cursor: lmdb.Cursor[bytes], key: bytes, seq: int) -> int | None:
    """The conversation's (``uid | ch``) highest merged seq <= ``seq``."""
    found = cursor.set_range(key + _u64(min(seq + 1, _MAX_U64)))
    moved = cursor.prev() if found else cursor.last()
    if not moved or cursor.key()[:12] != key:
        return None
    at: int = _U64.unpack_from(cursor.key(), 12)[0]
    return at


def _conv_offsets(cursor: lmdb.Cursor[bytes], key: bytes, epoch: int) -> set[int]:
    """The conversation's (``uid | ch``) merged seqs in ``epoch`` (low byte)."""
    found: set[int] = set()
    if cursor.set_range(key + _u64(epoch << EPOCH_BITS)):
        for at in cursor.iternext(values=False):
            if at[:12] != key or _U64.unpack_from(at, 12)[0] >> EPOCH_BITS != epoch:
                break
            found.add(at[19])
    return found


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
    within ``conv`` if given; stops after reading ``budget`` blocks, a block
    counting once more per ``BLOCK_UNIT`` bytes (a block of long messages
    can hold 640 KB); entries still in ``index_log`` are read first, outside
    the budget (there are at most about ``merge_at`` of them).

    One epoch at a time, newest first: its block is read once and each
    term's records found in it (:func:`_offsets`); the entries with all of
    them are the hits. With ``conv``, the conversation's own rows pick the
    epochs (one seek to its newest entry below the candidate), so a search in
    a small conversation reads only the blocks of the epochs it spans.
    A seq <= 0 is yielded last when the budget ran out: resume below ``-value + 1``.
    """
    candidate = (before - 1) if before is not None else _MAX_U64 - 1
    # Logged entries first: newer than every merged entry of the user, and
    # at most about merge_at of them.
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
    blocks_db = dbs["epoch_terms"]
    blocks = txn.cursor(db=blocks_db)
    convs = txn.cursor(db=dbs["conv_seq"]) if ch is not None else None
    conv_key = user + ch if ch is not None else b""
    reads = 0
    while candidate >= 1:
        if reads >= budget:
            yield -candidate
            return
        reads += 1
        if convs is not None:
            at = _conv_at_or_below(convs, conv_key, candidate)
            if at is None:
                return
            epoch = at >> EPOCH_BITS
            raw = txn.get(user + _U32.pack(epoch), db=blocks_db)
        else:
            # The user's newest block at or below the candidate's epoch.
            found = blocks.set_range(user + _U32.pack((candidate >> EPOCH_BITS) + 1))
            moved = blocks.prev() if found else blocks.last()
            if not moved or blocks.key()[:4] != user:
                return
            epoch = _U32.unpack_from(blocks.key(), 4)[0]
            raw = blocks.value()
        base = epoch << EPOCH_BITS
        hits: set[int] | None = None
        block = b"" if raw is None else bytes(raw)
        reads += len(block) // BLOCK_UNIT
        # Every term in the block at all (C speed; a hit may still straddle
        # two records) before any term's records are collected in Python.
        if all(th in block for th in hashes):
            # The rarest term's records first; the others only checked at those.
            rarest, *others = sorted(hashes, key=block.count)
            hits = _offsets(block, rarest)
            for th in others:
                hits = {off for off in hits if _has_record(block, th + bytes((off,)))}
                if not hits:
                    break
        if hits and convs is not None:
            hits &= _conv_offsets(convs, conv_key, epoch)
        for off in sorted(hits or (), reverse=True):
            if base | off <= candidate:
                yield base | off
        candidate = base - 1


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
