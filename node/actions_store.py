"""Actions on messages, applied inside queue appends (writer thread).

Every queue append (``WriteTxn.append_to_uid``, node/store.py) calls
:func:`on_append` in the same transaction, whatever path the record took (a
local send, a 1:1 unit from a peer, a group record on the host or on a member
node). So each queue that holds a message also holds its current state:

* a text message is remembered by id in ``msg_ids``;
* an ``edit``/``delete``/``react`` record rewrites the stored target record in
  place (same ``seq``) and is then appended itself, so a device that syncs
  sees the current state at the target's position *and* the action in the
  stream (that is how it learns of changes to what it already showed).

Only the target's own sender may edit or delete it: the action's ``from``
(signed by its origin node) must equal the stored target's ``from``. A
mismatch raises :class:`ActionRefused` before anything is written, is counted
(:class:`ActionStats`) and logged. A target this queue does not hold is no
error: the action is stored and changes nothing.

Stored record forms (queue values, CBOR maps; ``g`` is a group record's gseq):

* ``{unit, g?}`` as sent, plus ``edit: {text, id, ts}`` once edited and
  ``react: [[emoji, u, n], ...]`` once reacted to;
* ``{plain: <the envelope as a map>, by, g?, del?: {id, ts}}``: a record whose
  signed bytes had to go because their text must (a deleted message, whose
  ``plain`` body is then ``{}``; an edit record of a deleted message, body
  ``{target}``). The origin's signature cannot cover changed bytes, so the
  stored copy keeps the decoded fields and the origin id only.

Layouts:

  msg_ids:  uid(4) | id(8) | origin(32)    -> seq(8)   (text messages)
  msg_acts: uid(4) | target(8) | seq(8)    -> b""      (edits of target, replies quoting it)
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import cbor2
import lmdb

from chinwag.protocol.actions import (
    ACTION_KINDS,
    KIND_DELETE,
    KIND_EDIT,
    MAX_REACTIONS_PER_MESSAGE,
    MAX_REACTIONS_PER_USER,
    Action,
    check_message_id,
    parse_action,
    parse_reply_to,
)
from chinwag.protocol.errors import ErrorCode, ProtocolError

from . import blob_index, history_index
from .lmdb_rows import delete_prefix

if TYPE_CHECKING:
    from .store import WriteTxn

log = logging.getLogger(__name__)

DB_NAMES = ("msg_ids", "msg_acts")

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_PARSE_CACHE = 256


class ActionRefused(ProtocolError):
    """An action whose sender is not its target's sender (or is malformed)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.FORBIDDEN, message)


@dataclass(frozen=True)
class ActionStatsView:
    #: Actions applied to a stored target (one per queue).
    applied: int
    #: Actions refused: not from the target's sender, malformed, or (at a
    #: device) for a message that is not the user's to change.
    refused: int


class ActionStats:
    """Counters shared by the writer thread and the trio thread.

    An operation may run twice after a map resize, so a count can be off by
    the few refusals of such a batch; they are statistics, not state.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._applied = 0
        self._refused = 0

    def count(self, *, applied: int = 0, refused: int = 0) -> None:
        with self._lock:
            self._applied += applied
            self._refused += refused

    def view(self) -> ActionStatsView:
        with self._lock:
            return ActionStatsView(self._applied, self._refused)


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Stored:
    """A decoded queue record of a message (signed or plain)."""

    item: dict[str, Any]
    env: dict[str, Any]
    origin: bytes

    @property
    def kind(self) -> str:
        kind = self.env.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def body(self) -> dict[str, Any]:
        body = self.env.get("body")
        return body if isinstance(body, dict) else {}

    @property
    def msg_id(self) -> int:
        value = self.env.get("id")
        return value if isinstance(value, int) else 0

    @property
    def sender(self) -> tuple[str, str] | None:
        return _pair(self.env.get("from"))

    @property
    def deleted(self) -> bool:
        return "del" in self.item

    def current_text(self) -> str | None:
        """The text shown now: the last edit's, else the original; None once deleted."""
        if self.deleted:
            return None
        edit = self.item.get("edit")
        if isinstance(edit, dict) and isinstance(edit.get("text"), str):
            return str(edit["text"])
        text = self.body.get("text")
        return text if isinstance(text, str) else None


def _pair(wire: Any) -> tuple[str, str] | None:
    if isinstance(wire, dict) and isinstance(wire.get("u"), str) and isinstance(wire.get("n"), str):
        return (wire["u"], wire["n"])
    return None


_parsed: dict[bytes, Stored | None] = {}


def load(record: bytes, *, cached: bool = True) -> Stored | None:
    """A queue record as :class:`Stored`; None for events and the unreadable.

    Cached by the record's bytes (a 1:1 message enters two queues, a group
    message every local member's): callers must not mutate the result. The
    cache belongs to the writer thread; readers elsewhere pass ``cached=False``.
    """
    if cached and record in _parsed:
        return _parsed[record]
    found: Stored | None = None
    try:
        item = cbor2.loads(record)
        if isinstance(item, dict):
            if "unit" in item:
                unit = item["unit"]
                env = cbor2.loads(unit["env"])
                if isinstance(env, dict):
                    found = Stored(item, env, bytes(unit["by"]))
            elif "plain" in item and isinstance(item["plain"], dict):
                found = Stored(item, item["plain"], bytes(item["by"]))
    except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError):
        found = None
    if not cached:
        return found
    if len(_parsed) >= _PARSE_CACHE:
        _parsed.pop(next(iter(_parsed)))
    _parsed[record] = found
    return found


def _conv_of(stored: Stored) -> tuple[str, Any]:
    """The conversation of a message: ("g", group) or ("d", frozenset of both ends)."""
    group = stored.env.get("group")
    if isinstance(group, dict):
        return ("g", (group.get("host"), group.get("name")))
    return ("d", frozenset({stored.sender, _pair(stored.env.get("to"))}))


# ---------------------------------------------------------------- lookups


def _queue_key(uid: int, seq: int) -> bytes:
    return _U32.pack(uid) + _U64.pack(seq)


def find_target(
    txn: lmdb.Transaction[bytes],
    db: Any,
    queue_db: Any,
    uid: int,
    msg_id: int,
    origin: bytes | None = None,
) -> tuple[int, bytes] | None:
    """The (seq, record) of message ``msg_id`` in user ``uid``'s queue.

    ``origin`` (32 bytes) narrows it to one origin node; without it the
    first match wins (ids are unique per origin, and two origins minting the
    same id for messages in one user's queue is a freak that costs a
    reaction its target, nothing else).
    """
    prefix = _U32.pack(uid) + _U64.pack(msg_id)
    if origin is not None:
        raw = txn.get(prefix + origin, db=db)
    else:
        cursor = txn.cursor(db=db)
        raw = None
        if cursor.set_range(prefix) and cursor.key().startswith(prefix):
            raw = cursor.value()
    if raw is None:
        return None
    seq = _U64.unpack(bytes(raw))[0]
    record = txn.get(_queue_key(uid, seq), db=queue_db)
    return None if record is None else (seq, bytes(record))


def any_origin_holds(txn: lmdb.Transaction[bytes], db: Any, uid: int, msg_id: int) -> bool:
    prefix = _U32.pack(uid) + _U64.pack(msg_id)
    cursor = txn.cursor(db=db)
    return bool(cursor.set_range(prefix) and cursor.key().startswith(prefix))


# ---------------------------------------------------------------- the hook


#: Plain texts (no reply) this node just signed: record -> (id, origin), so
#: their queue appends index them without decoding the record (writer thread).
_signed_texts: dict[bytes, tuple[int, bytes]] = {}


def note_signed_text(record: bytes, msg_id: int, origin: bytes) -> None:
    """``record`` is a text without ``reply_to`` this node signed as ``msg_id``."""
    if len(_signed_texts) >= _PARSE_CACHE:
        _signed_texts.clear()
    _signed_texts[record] = (msg_id, origin)


def on_append(w: WriteTxn, uid: int, seq: int, record: bytes) -> None:
    """Index a message by id, or apply an action to its target (see the module doc).

    Raises :class:`ActionRefused` before writing anything when the action is
    not its sender's to make.
    """
    known = _signed_texts.get(record)
    if known is not None:
        key = _U32.pack(uid) + _U64.pack(known[0]) + known[1]
        w.txn.put(key, _U64.pack(seq), db=w.db("msg_ids"))
        return
    stored = load(record)
    if stored is None:
        return
    kind = stored.kind
    if kind not in ACTION_KINDS:
        if kind == "text":
            key = _U32.pack(uid) + _U64.pack(stored.msg_id) + stored.origin
            w.txn.put(key, _U64.pack(seq), db=w.db("msg_ids"))
            if "reply_to" in stored.body:
                try:
                    quoted = check_message_id(parse_reply_to(stored.body["reply_to"])["id"])
                except ProtocolError as exc:
                    _refuse(w, stored, f"malformed reply_to: {exc.message}")
                # Its excerpt goes when the quoted message is deleted.
                _remember_act(w, uid, quoted, seq)
        return
    try:
        action = parse_action(kind, stored.body)
    except ProtocolError as exc:
        _refuse(w, stored, f"malformed {kind}: {exc.message}")
    same_origin = kind in (KIND_EDIT, KIND_DELETE)
    ids_db, queue_db = w.db("msg_ids"), w.db("queue")
    found = find_target(
        w.txn, ids_db, queue_db, uid, action.target, stored.origin if same_origin else None
    )
    if found is None:
        if same_origin and any_origin_holds(w.txn, ids_db, uid, action.target):
            _refuse(w, stored, f"{kind} of a message from another node")
        return  # a target this queue does not hold: nothing to change
    target_seq, target_record = found
    target = load(target_record)
    if target is None:
        return
    if same_origin and target.sender != stored.sender:
        _refuse(w, stored, f"{kind} of another user's message")
    if _conv_of(target) != _conv_of(stored):
        _refuse(w, stored, f"{kind} of a message in another conversation")
    # Every check is done: from here on only writes.
    changed = _apply(w, uid, seq, target_seq, target, stored, action)
    if changed:
        w.action_stats.count(applied=1)


def _refuse(w: WriteTxn, stored: Stored, why: str) -> NoReturn:
    w.action_stats.count(refused=1)
    sender = stored.sender
    log.warning(
        "refused %s %d from %s@%s: %s",
        stored.kind,
        stored.msg_id,
        sender[0] if sender else "?",
        (sender[1] if sender else "?")[:12],
        why,
    )
    raise ActionRefused(why)


def _apply(
    w: WriteTxn,
    uid: int,
    seq: int,
    target_seq: int,
    target: Stored,
    action_record: Stored,
    action: Action,
) -> bool:
    if target.deleted:
        return False
    queue_db = w.db("queue")
    item = dict(target.item)
    if action.kind == KIND_EDIT:
        last = item.get("edit")
        if isinstance(last, dict) and isinstance(last.get("id"), int):
            if last["id"] >= action_record.msg_id:
                return False  # an older edit arriving late
        old = target.current_text()
        item["edit"] = {
            "text": action.text,
            "id": action_record.msg_id,
            "ts": action_record.env.get("ts"),
        }
        _reindex(w, uid, target_seq, old, action.text)
        _remember_act(w, uid, action.target, seq)
    elif action.kind == KIND_DELETE:
        _reindex(w, uid, target_seq, target.current_text(), None)
        raw = w.txn.get(_queue_key(uid, target_seq), db=queue_db)
        if raw is not None:  # its files go with it (reclaimed once nothing else refers)
            now_ms = int(time.time() * 1000)
            blob_index.release_record(w.txn, w.dbs(blob_index.DB_NAMES), uid, bytes(raw), now_ms)
        item = _tombstone(target, {**target.env, "body": {}})
        item["del"] = {"id": action_record.msg_id, "ts": action_record.env.get("ts")}
        _scrub_edits(w, uid, action.target, queue_db)
    else:
        me = action_record.sender
        if me is None or action.emoji is None:
            return False
        entry = [action.emoji, me[0], me[1]]
        reactions = [list(r) for r in item.get("react", []) if isinstance(r, list)]
        if action.remove:
            if entry not in reactions:
                return False
            reactions.remove(entry)
        else:
            if entry in reactions:
                return False
            mine = sum(1 for r in reactions if r[1:] == entry[1:])
            if mine >= MAX_REACTIONS_PER_USER or len(reactions) >= MAX_REACTIONS_PER_MESSAGE:
                return False
            reactions.append(entry)
        if reactions:
            item["react"] = reactions
        else:
            item.pop("react", None)
    w.txn.put(_queue_key(uid, target_seq), cbor2.dumps(item), db=queue_db)
    return True


def _remember_act(w: WriteTxn, uid: int, target: int, seq: int) -> None:
    w.txn.put(_U32.pack(uid) + _U64.pack(target) + _U64.pack(seq), b"", db=w.db("msg_acts"))


def _tombstone(stored: Stored, env: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"plain": env, "by": stored.origin}
    if "g" in stored.item:
        item["g"] = stored.item["g"]
    return item


def _scrub_edits(w: WriteTxn, uid: int, target: int, queue_db: Any) -> None:
    """Drop the text of a deleted message from the records that hold it: its
    edit records, and the excerpt in replies quoting it."""
    acts = w.db("msg_acts")
    prefix = _U32.pack(uid) + _U64.pack(target)
    cursor = w.txn.cursor(db=acts)
    seqs: list[int] = []
    if cursor.set_range(prefix):
        for key, _ in cursor:
            if not key.startswith(prefix):
                break
            seqs.append(_U64.unpack_from(key, 12)[0])
    for edit_seq in seqs:
        w.txn.delete(prefix + _U64.pack(edit_seq), db=acts)
        raw = w.txn.get(_queue_key(uid, edit_seq), db=queue_db)
        found = load(bytes(raw)) if raw is not None else None
        if found is None or found.deleted:
            continue
        if found.kind == KIND_EDIT:
            item = _tombstone(found, {**found.env, "body": {"target": target}})
            item["del"] = {"id": 0, "ts": 0}
        else:
            quoted = found.body.get("reply_to")
            if not isinstance(quoted, dict) or quoted.get("id") != target:
                continue
            shown = {**quoted, "excerpt": "", "deleted": True}
            env = {**found.env, "body": {**found.body, "reply_to": shown}}
            item = {**found.item, **_tombstone(found, env)}
            item.pop("unit", None)
        w.txn.put(_queue_key(uid, edit_seq), cbor2.dumps(item), db=queue_db)


def _reindex(w: WriteTxn, uid: int, seq: int, old: str | None, new: str | None) -> None:
    w.flush_index()  # the target may have been appended earlier in this batch
    dbs = {name: w.db(name) for name in history_index.DB_NAMES}
    if old:
        history_index.unindex_message(w.txn, dbs, uid, seq, old)
    if new:
        history_index.index_message_text(w.txn, dbs, uid, seq, new)


def rebuild_all(txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> int:
    """Index every text message of every queue by id (the 3 -> 4 migration);
    return the number indexed. Stores before schema 5 hold no actions."""
    for name in DB_NAMES:
        txn.drop(dbs[name], delete=False)
    count = 0
    for key, value in txn.cursor(db=dbs["queue"]):
        stored = load(bytes(value))
        if stored is None or stored.kind != "text":
            continue
        uid = key[:4]
        txn.put(uid + _U64.pack(stored.msg_id) + stored.origin, key[4:12], db=dbs["msg_ids"])
        count += 1
    return count


def drop_user(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int) -> None:
    """Remove every row of user ``uid`` (the user is being removed)."""
    prefix = _U32.pack(uid)
    for name in DB_NAMES:
        delete_prefix(txn, dbs[name], prefix)
