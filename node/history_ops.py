"""Answers ``convs``, ``history``, ``read`` and ``search`` (issue 15).

Reads run in one LMDB read transaction each (index and queue seen at the same
instant, so a page never holds half of a commit); a ``read`` is a store write
whose new marker goes at once to the user's other live sessions as a soft
``read`` frame. Every request first takes a token from its device session's
bucket (``history_rate``/``history_burst``).

Reply frames must stay below the frame limit a client enforces
(``MAX_FRAME_BYTES``): a page stops early when its messages would pass
``PAGE_BYTES`` and says where to go on with ``next``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import trio

from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import (
    Convs,
    History,
    HistoryRequest,
    Read,
    Search,
    WireFormat,
    encode_frame,
    read_frame,
)
from chinwag.protocol.search_terms import MAX_QUERY_TERMS, matches, query_terms

from . import history_index as index
from .config import NodeConfig
from .hub import Hub, LiveSession
from .ratelimit import TokenBucket
from .router import Router
from .store import Store, WriteTxn

#: At most this many bytes of encoded messages per reply (measured as JSON,
#: the larger of the two encodings), so the reply stays below the 64 KiB
#: frame limit a client enforces.
PAGE_BYTES = 56 * 1024
#: Index blocks (a user's postings of 256 queue entries; one more per 16 KiB
#: of a big block) one search may read before it answers with what it found
#: and a ``next`` to go on from (a query over a huge queue stays bounded:
#: about a million entries, at most about 64 MB of postings, per answer).
SEARCH_BLOCKS = 4_000


def _size(frame: dict[str, Any]) -> int:
    encoded = encode_frame(frame, WireFormat.JSON)
    return len(encoded.encode("utf-8") if isinstance(encoded, str) else encoded)


class HistoryOps:
    """The node's answers to the history requests; one per node."""

    def __init__(
        self,
        config: NodeConfig,
        store: Store,
        router: Router,
        hub: Hub,
        node_id: str,
        clock: Callable[[], float] = trio.current_time,
        on_read: Callable[[str, str, int], None] | None = None,
    ) -> None:
        #: Told of each read marker move (user, conv, read_seq): read receipts.
        self._on_read = on_read
        self._config = config
        self._store = store
        self._router = router
        self._hub = hub
        self._node_id = node_id
        self._clock = clock
        self._buckets: weakref.WeakKeyDictionary[Any, TokenBucket] = weakref.WeakKeyDictionary()

    async def handle(
        self, user: str, session: LiveSession, request: HistoryRequest
    ) -> dict[str, Any]:
        """The ``ok`` fields answering ``request`` from ``session`` of ``user``."""
        self._take(session)
        if isinstance(request, Convs):
            return self._convs(user, request)
        if isinstance(request, History):
            return self._history(user, request)
        if isinstance(request, Read):
            return await self._read(user, session, request)
        return self._search(user, request)

    def _take(self, session: LiveSession) -> None:
        now = self._clock()
        bucket = self._buckets.get(session)
        if bucket is None:
            bucket = TokenBucket(self._config.history_rate, self._config.history_burst, now)
            self._buckets[session] = bucket
        wait = bucket.take(now)
        if wait > 0:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                "too many history requests; slow down",
                retry_after_ms=max(1, int(wait * 1000)),
            )

    def canonical(self, conv: str) -> str:
        """The conversation key of ``conv`` as given (node names resolved)."""
        if conv.startswith("#"):
            group = self._router.resolve_group(conv)
            return f"#{group.name}@{group.host}"
        address = self._router.resolve_user(conv)
        return f"{address.user}@{address.node}"

    # Reads collect raw records inside the read transaction and render them
    # after it: rendering may read the store itself (node labels), and a read
    # inside a read would wait on the store's resize lock forever.

    # ------------------------------------------------------------ convs
    def _convs(self, user: str, request: Convs) -> dict[str, Any]:
        def read(view: Any) -> tuple[list[tuple[index.ConvRow, bytes, str | None]], bool]:
            uid = view.require_user(user).uid
            dbs = _dbs(view)
            if request.before is not None and request.before > view.head_of(uid) + 1:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "bad cursor: before is past the head")
            rows, more = index.recent_convs(view.txn, dbs, uid, request.before, request.limit)
            queue = view.db("queue")
            found = []
            for row in rows:
                record = bytes(view.txn.get(_queue_key(uid, row.last), db=queue))
                title = None
                if row.kind == index.KIND_GROUP:
                    title = index.group_title(view.txn, dbs, row.conv, self._node_id)
                found.append((row, record, title))
            return found, more

        found, more = self._store.read(read)
        convs: list[dict[str, Any]] = []
        size = 0
        for row, record, title in found:
            item: dict[str, Any] = {
                "conv": row.conv,
                "kind": "group" if row.kind == index.KIND_GROUP else "dm",
                "last": self._router.render(row.last, record),
                "unread": row.unread,
                "read_seq": row.read_seq,
            }
            if title:
                item["title"] = title
            size += _size(item)
            if convs and size > PAGE_BYTES:
                more = True
                break
            convs.append(item)
        out: dict[str, Any] = {"convs": convs}
        if more and convs:
            out["next"] = convs[-1]["last"]["seq"]
        return out

    # ------------------------------------------------------------ history
    def _history(self, user: str, request: History) -> dict[str, Any]:
        conv = self.canonical(request.conv)
        limit = request.limit
        cursor = request.before or request.after or request.around

        def read(view: Any) -> tuple[list[tuple[int, bytes]], bool, bool]:
            uid = view.require_user(user).uid
            dbs = _dbs(view)
            if index.get_conv(view.txn, dbs, uid, conv) is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no conversation {conv[:80]!r}")
            if cursor is not None and cursor > view.head_of(uid) + 1:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "bad cursor: past the head")
            # Newer (oldest first) and older (newest first) seqs of the page,
            # one more each way than it holds, to tell whether more remain.
            newer: list[int] = []
            start = request.after if request.after is not None else request.around
            if start is not None:
                for seq in index.conv_seqs_after(view.txn, dbs, uid, conv, start):
                    newer.append(seq)
                    if len(newer) > limit:
                        break
            older: list[int] = []
            if request.after is None:
                # ``around``: the message itself belongs to the older side.
                below = request.before if request.around is None else request.around + 1
                for seq in index.conv_seqs(view.txn, dbs, uid, conv, below):
                    older.append(seq)
                    if len(older) > limit:
                        break
            if request.after is not None:
                take_new = min(len(newer), limit)
                oldest = newer[0] if newer else request.after + 1
                more_older = any(True for _ in index.conv_seqs(view.txn, dbs, uid, conv, oldest))
                take_old = 0
            else:
                # ``around``: about half newer, the rest older; a page near
                # either end of the conversation fills up from the other side.
                take_new = min(len(newer), (limit - 1) // 2)
                take_old = min(len(older), limit - take_new)
                take_new = min(len(newer), limit - take_old)
                more_older = len(older) > take_old
            more_newer = len(newer) > take_new
            page_new, page_old = newer[:take_new], older[:take_old]
            seqs = page_new[::-1] + page_old
            queue = view.db("queue")
            found = [(seq, bytes(view.txn.get(_queue_key(uid, seq), db=queue))) for seq in seqs]
            return found, more_older, more_newer

        found, more, more_newer = self._store.read(read)
        msgs = [self._router.render(seq, record) for seq, record in found]
        sizes = [_size(msg) for msg in msgs]
        total = sum(sizes)
        # Too big for one frame: drop messages from the far end of the page
        # (the oldest; for ``around``, whichever side is longer, keeping the
        # message asked for), and say where to go on.
        centre = 0
        if request.around is not None:
            centre = next((i for i, m in enumerate(msgs) if m["seq"] <= request.around), 0)
        lo, hi = 0, len(msgs)
        while hi - lo > 1 and total > PAGE_BYTES:
            if request.after is not None or (
                request.around is not None and centre - lo > hi - 1 - centre
            ):
                total -= sizes[lo]
                lo += 1
                more_newer = True
            else:
                hi -= 1
                total -= sizes[hi]
                more = True
        msgs = msgs[lo:hi]
        out: dict[str, Any] = {"conv": conv, "msgs": msgs}
        if more and msgs:
            out["next"] = msgs[-1]["seq"]
        if more_newer and msgs:
            out["newer"] = msgs[0]["seq"]
        return out

    # ------------------------------------------------------------ read
    async def _read(self, user: str, session: LiveSession, request: Read) -> dict[str, Any]:
        conv = self.canonical(request.conv)

        def op(w: WriteTxn) -> index.ConvRow:
            uid = w.require_user(user).uid
            w.flush_index()  # the batch's entries so far count for the marker
            row = index.mark_read(w.txn, _dbs(w), uid, conv, request.seq)
            if row is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no conversation {conv[:80]!r}")
            return row

        row = await self._store.transact(op)
        self._hub.offer(user, read_frame(conv, row.read_seq, row.unread), exclude=session)
        if self._on_read is not None:
            self._on_read(user, conv, row.read_seq)
        return {"conv": conv, "read_seq": row.read_seq, "unread": row.unread}

    # ------------------------------------------------------------ search
    def _search(self, user: str, request: Search) -> dict[str, Any]:
        terms = query_terms(request.q)
        if not terms:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the query has no words to search for")
        if len(terms) > MAX_QUERY_TERMS:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"at most {MAX_QUERY_TERMS} query terms")
        conv = self.canonical(request.conv) if request.conv is not None else None
        owner = f"{user}@{self._node_id}"

        def read(view: Any) -> tuple[list[tuple[int, bytes, str]], int | None]:
            uid = view.require_user(user).uid
            dbs = _dbs(view)
            if conv is not None and index.get_conv(view.txn, dbs, uid, conv) is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no conversation {conv[:80]!r}")
            if request.before is not None and request.before > view.head_of(uid) + 1:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "bad cursor: before is past the head")
            queue = view.db("queue")
            found: list[tuple[int, bytes, str]] = []
            seqs = index.search_seqs(view.txn, dbs, uid, terms, conv, request.before, SEARCH_BLOCKS)
            for seq in seqs:
                if seq <= 0:
                    return found, -seq + 1  # out of budget: go on below here
                if len(found) == request.limit:
                    return found, found[-1][0]
                record = bytes(view.txn.get(_queue_key(uid, seq), db=queue))
                entry = index.classify(record, owner)
                # A term-hash collision or a conv-hash one is caught here.
                if entry is None or entry.text is None or not matches(entry.text, terms):
                    continue
                if conv is not None and entry.conv != conv:
                    continue
                found.append((seq, record, entry.conv))
            return found, None

        found, resume = self._store.read(read)
        hits: list[dict[str, Any]] = []
        size = 0
        for seq, record, hit_conv in found:
            hit = {"conv": hit_conv, "msg": self._router.render(seq, record)}
            size += _size(hit)
            if hits and size > PAGE_BYTES:
                resume = hits[-1]["msg"]["seq"]
                break
            hits.append(hit)
        out: dict[str, Any] = {"hits": hits}
        if resume is not None and resume > 1:
            out["next"] = resume
        return out


def _dbs(view: Any) -> dict[str, Any]:
    return {name: view.db(name) for name in index.DB_NAMES + ("groups", "group_views")}


def _queue_key(uid: int, seq: int) -> bytes:
    return uid.to_bytes(4, "big") + seq.to_bytes(8, "big")
