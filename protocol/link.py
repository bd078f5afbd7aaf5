"""The frames of a federation link after the handshake, sans-I/O.

Every frame on a link is a sealed CBOR map (see :mod:`.handshake` for the
sealing). This module sees the opened plaintext only: bytes in, a frozen
dataclass or :class:`~.errors.ProtocolError` out; a dataclass in, bytes out.
Nothing here reads a clock, a socket or a store.

One direction of a link is a tiny state machine (:class:`LinkDirection`):
``resume`` comes first and only once, then any other frame; ``push`` oseqs
only go up; ``ack`` never goes back. The table is :data:`_STATES`.

Every frame is checked strictly: exactly the known fields (a missing or an
extra one is refused), exact types (``bool`` is not an ``int``), ranges and
counts. A change of shape comes with a new subprotocol version, never as a
field an old node would silently ignore.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .addresses import GroupAddress, check_user_name, is_node_id_text
from .codec import decode_cbor, encode_cbor
from .errors import ErrorCode, ProtocolError
from .limits import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES

__all__ = [
    "Ack",
    "BlobChunk",
    "BlobRequest",
    "BlobUnavailable",
    "EntryKind",
    "DigestEntry",
    "Gossip",
    "GossipDigest",
    "GossipSummary",
    "GroupSync",
    "IntroRequest",
    "Introductions",
    "LinkDirection",
    "LinkFrame",
    "Ping",
    "Pong",
    "PresenceItem",
    "PresenceUpdate",
    "Push",
    "ReceiptItem",
    "ReceiptUpdate",
    "TypingItem",
    "TypingUpdate",
    "PushEntry",
    "Rejected",
    "Resume",
    "Sub",
    "Unsub",
    "decode_link_frame",
    "encode_link_frame",
    "gossip_summary",
]

#: Entries in one ``push`` frame.
MAX_PUSH_ENTRIES = 256
#: Items in ``ack.rejected``: at most one per entry of a push.
MAX_REJECTED = MAX_PUSH_ENTRIES
#: Address records in one ``gossip`` frame.
MAX_GOSSIP_RECORDS = 64
#: Entries in one ``gdigest`` (the strict decoder's cap on one array).
MAX_DIGEST_ENTRIES = 1024
#: Bytes of a ``gsum`` summary (BLAKE2b-256) and of a node key in a digest.
SUMMARY_BYTES = 32
NODE_KEY_BYTES = 32
#: Users in one ``sub`` / ``unsub``, items in one ``presence``.
MAX_PRESENCE_USERS = 1024
#: Typists in one ``typing`` frame; read positions in one ``receipt`` frame.
MAX_TYPING_ITEMS = 256
MAX_RECEIPT_ITEMS = 512
_TYPING_STATES = ("start", "stop")
#: A display name in a presence item (the profile allows 200 characters).
MAX_DISPLAY_NAME_CHARS = 200
#: A signed gossip record's bytes (``rec``); see address_record.MAX_RECORD_BYTES.
MAX_RECORD_FIELD_BYTES = 4096
#: One field of an entry payload (an envelope, a signature, a group record).
MAX_PAYLOAD_FIELD_BYTES = MAX_MESSAGE_BYTES
#: Statements in one ``intro`` frame, and the bytes of one statement field
#: (see introduction.MAX_STATEMENT_BYTES).
MAX_INTRODUCTIONS = 64
MAX_STATEMENT_FIELD_BYTES = 512
#: Bytes of data in one ``blobchunk`` (a node sends 64 KiB; up to this is accepted).
MAX_BLOB_CHUNK = 256 * 1024
#: Why a blob is not served (``blobnone.code``).
BLOB_REFUSALS = ("pending", "forbidden", "not_found", "busy")
#: oseq, upto, applied, skip and gseq are unsigned and fit in 63 bits.
MAX_COUNTER = (1 << 63) - 1
#: Frames that may exceed MAX_FRAME_BYTES (everything else is small).
_LARGE_FRAMES = frozenset({"push", "gossip", "gdigest", "blobchunk"})
_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_STATUSES = ("online", "offline")


class EntryKind:
    """Kinds of outbox entries; the payload field name and its keys."""

    MESSAGE = "m"  # a 1:1 unit
    GROUP_SEND = "gs"  # a member's group send, to the host
    GROUP_LEAVE = "gl"  # a member leaving, to the host
    GROUP_RECORD = "gr"  # the host's signed group record
    GROUP_INVITE = "gi"  # the host's invitation of a user who must consent
    GROUP_ANSWER = "ga"  # that user's accept or decline, to the host
    RELAY = "rl"  # a 1:1 unit of the sender's, for the relay to pass to ``to``
    RELAYED = "rd"  # a 1:1 unit another node originated, passed on by a relay
    REFUSED = "rf"  # back to the origin: the destination refused a relayed unit


_UNIT_KEYS = frozenset({"env", "sig", "by"})
_RECORD_KEYS = frozenset({"rec", "sig"})
_RELAY_KEYS = _UNIT_KEYS | {"to"}
_REFUSED_KEYS = _RELAY_KEYS | {"code"}
_STATEMENT_KEYS = frozenset({"st", "sig"})
#: kind -> (payload field, its exact keys)
_ENTRY_SHAPES: dict[str, tuple[str, frozenset[str]]] = {
    EntryKind.MESSAGE: ("u", _UNIT_KEYS),
    EntryKind.GROUP_SEND: ("u", _UNIT_KEYS),
    EntryKind.GROUP_LEAVE: ("u", _UNIT_KEYS),
    EntryKind.GROUP_RECORD: ("r", _RECORD_KEYS),
    EntryKind.GROUP_INVITE: ("u", _UNIT_KEYS),
    EntryKind.GROUP_ANSWER: ("u", _UNIT_KEYS),
    EntryKind.RELAY: ("x", _RELAY_KEYS),
    EntryKind.RELAYED: ("u", _UNIT_KEYS),
    EntryKind.REFUSED: ("x", _REFUSED_KEYS),
}


def entry_field(kind: str) -> str:
    """The payload field of an entry of ``kind`` (``u``, ``r`` or ``x``)."""
    return _ENTRY_SHAPES[kind][0]


# ---------------------------------------------------------------- frames
@dataclass(frozen=True)
class Resume:
    """The first frame of each direction: the highest oseq of the peer's
    outbox already committed here; the peer resumes after it."""

    applied: int


@dataclass(frozen=True)
class PushEntry:
    oseq: int
    kind: str
    #: ``{env, sig, by}`` for m/gs/gl, ``{rec, sig}`` for gr: checked in depth
    #: (signatures, origin) by the node, entry by entry.
    payload: Mapping[str, bytes]


@dataclass(frozen=True)
class Push:
    entries: tuple[PushEntry, ...]
    #: The oseq just before the first entry, when the entries up to it were
    #: withdrawn by age at the sender.
    skip: int | None = None


@dataclass(frozen=True)
class Rejected:
    oseq: int
    code: str


@dataclass(frozen=True)
class Ack:
    upto: int
    rejected: tuple[Rejected, ...] = ()


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class Gossip:
    #: Signed address records ``{rec, sig}``; verified by address_record.open_record.
    records: tuple[Mapping[str, bytes], ...]


@dataclass(frozen=True)
class GossipSummary:
    """One gossip round: a hash of the records the sender holds
    (:func:`gossip_summary`). Equal summaries: nothing to exchange."""

    summary: bytes


@dataclass(frozen=True)
class DigestEntry:
    """A record the sender holds: whose (node key) and how new (its ``ts``)."""

    key: bytes
    ts: int


@dataclass(frozen=True)
class GossipDigest:
    """Every record the sender holds, without the records themselves; the
    receiver sends back (``gossip``) what the digest lacks or has older.
    ``reply``: an answer to a digest, which is never answered by a digest again."""

    have: tuple[DigestEntry, ...]
    reply: bool = False


@dataclass(frozen=True)
class Sub:
    users: tuple[str, ...]
    #: True: these users replace the whole subscription set of the peer.
    reset: bool = False


@dataclass(frozen=True)
class Unsub:
    users: tuple[str, ...]


@dataclass(frozen=True)
class PresenceItem:
    user: str
    status: str
    last_active_at: int | None
    #: The user's display name from their profile ("": none set). On the wire
    #: as ``dn`` only when set.
    display_name: str = ""
    #: Users of the receiving node this user blocked: they are shown the
    #: user as offline (node/blocks.py). Absent on the wire when empty.
    hide: tuple[str, ...] = ()


@dataclass(frozen=True)
class PresenceUpdate:
    items: tuple[PresenceItem, ...]


@dataclass(frozen=True)
class TypingItem:
    """``user@node`` started or stopped typing."""

    user: str
    node: str
    state: str


@dataclass(frozen=True)
class TypingUpdate:
    """Typing changes in one conversation, coalesced per (peer node,
    conversation): a 1:1 conversation with local user ``to`` of the receiving
    node, or ``group``. Exactly one of the two is set. Soft state."""

    to: str | None
    group: GroupAddress | None
    items: tuple[TypingItem, ...]


@dataclass(frozen=True)
class ReceiptItem:
    """``reader`` (a user of the sending node) read every message of ``to``
    (a user of the receiving node) in the 1:1 conversation between the two, or
    in ``group``, with an id up to ``read_id``."""

    reader: str
    to: str
    group: GroupAddress | None
    read_id: int


@dataclass(frozen=True)
class ReceiptUpdate:
    items: tuple[ReceiptItem, ...]


@dataclass(frozen=True)
class GroupSync:
    """Ask the group's host for its records after ``after`` (gap recovery)."""

    group: GroupAddress
    after: int


@dataclass(frozen=True)
class IntroRequest:
    """Sent to say "I take your introductions", by a node that turned them on for
    this peer (at link-up and when turned on); the peer answers with
    :class:`Introductions` now and whenever it trusts a new node."""


@dataclass(frozen=True)
class Introductions:
    #: Signed statements ``{st, sig}`` by the sending node, each vouching for
    #: one node it trusts; verified by introduction.open_statement.
    statements: tuple[Mapping[str, bytes], ...]


@dataclass(frozen=True)
class BlobRequest:
    """Ask the peer for a blob's bytes from ``offset`` (a window of chunks
    follows, see node/blob_fetch.py); only for a blob the peer was sent a
    message about."""

    sha256: bytes
    offset: int


@dataclass(frozen=True)
class BlobChunk:
    """``data`` of the blob at ``offset``; ``total`` is the blob's size."""

    sha256: bytes
    offset: int
    data: bytes
    total: int


@dataclass(frozen=True)
class BlobUnavailable:
    """The peer does not serve the blob now: ``pending`` (it is fetching it
    itself), ``busy`` (ask later), ``forbidden`` or ``not_found``."""

    sha256: bytes
    code: str


LinkFrame = (
    Resume
    | Push
    | Ack
    | Ping
    | Pong
    | Gossip
    | GossipSummary
    | GossipDigest
    | Sub
    | Unsub
    | PresenceUpdate
    | TypingUpdate
    | ReceiptUpdate
    | GroupSync
    | IntroRequest
    | Introductions
    | BlobRequest
    | BlobChunk
    | BlobUnavailable
)


def gossip_summary(held: Iterable[DigestEntry]) -> bytes:
    """The ``gsum`` of a set of records: BLAKE2b-256 over the entries sorted by
    key, so two nodes holding the same records get the same bytes."""
    h = hashlib.blake2b(digest_size=SUMMARY_BYTES, person=b"chinwag-gsum-v1")
    for entry in sorted(held, key=lambda e: e.key):
        h.update(entry.key)
        h.update(entry.ts.to_bytes(8, "big"))
    return h.digest()


# ---------------------------------------------------------------- checks
def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


def _fields(item: dict[str, Any], kind: str, required: set[str], optional: set[str]) -> None:
    keys = set(item) - {"t"}
    missing = required - keys
    if missing:
        raise _bad(f"{kind}: missing {sorted(missing)[0]!r}")
    extra = keys - required - optional
    if extra:
        raise _bad(f"{kind}: unknown field {sorted(extra)[0][:30]!r}")


def _counter(value: object, what: str, *, low: int = 0) -> int:
    # bool is an int in Python (True == 1): refuse it explicitly.
    if type(value) is not int or not low <= value <= MAX_COUNTER:
        raise _bad(f"{what} is an integer in {low}..2^63-1")
    return value


def _list(value: object, what: str, low: int, high: int) -> list[Any]:
    if type(value) is not list or not low <= len(value) <= high:
        raise _bad(f"{what} is a list of {low}-{high} items")
    return value


def _bytes_map(value: object, keys: frozenset[str], what: str, cap: int) -> dict[str, bytes]:
    if type(value) is not dict or set(value) != keys:
        raise _bad(f"{what} is a map {{{', '.join(sorted(keys))}}}")
    for key, field in value.items():
        if type(field) is not bytes or len(field) > cap:
            raise _bad(f"{what}.{key} is at most {cap} bytes")
    return value


def _users(value: object, what: str) -> tuple[str, ...]:
    users = _list(value, what, 0, MAX_PRESENCE_USERS)
    out = []
    for user in users:
        try:
            out.append(check_user_name(user))
        except ProtocolError as exc:
            raise _bad(f"{what}: not a user name") from exc
    return tuple(out)


def _parse_resume(item: dict[str, Any]) -> Resume:
    _fields(item, "resume", {"applied"}, set())
    return Resume(_counter(item["applied"], "resume.applied"))


def _parse_push(item: dict[str, Any]) -> Push:
    _fields(item, "push", {"entries"}, {"skip"})
    raw = _list(item["entries"], "push.entries", 1, MAX_PUSH_ENTRIES)
    entries: list[PushEntry] = []
    for one in raw:
        if type(one) is not dict:
            raise _bad("a push entry is a map {o, k, u | r}")
        kind = one.get("k")
        shape = _ENTRY_SHAPES.get(kind) if type(kind) is str else None
        if shape is None:
            raise _bad("push entry: unknown kind")
        field, keys = shape
        assert isinstance(kind, str)  # a known kind is a str
        if set(one) != {"o", "k", field}:
            raise _bad(f"push entry of kind {kind} is {{o, k, {field}}}")
        oseq = _counter(one["o"], "push entry oseq", low=1)
        if entries and oseq <= entries[-1].oseq:
            raise _bad("push entries go up by oseq")
        payload = _bytes_map(one[field], keys, f"push entry {field}", MAX_PAYLOAD_FIELD_BYTES)
        entries.append(PushEntry(oseq, kind, payload))
    skip = None
    if "skip" in item:
        skip = _counter(item["skip"], "push.skip")
        if skip != entries[0].oseq - 1:
            raise _bad("push.skip is the oseq just before the first entry")
    return Push(tuple(entries), skip)


def _parse_ack(item: dict[str, Any]) -> Ack:
    _fields(item, "ack", {"upto", "rejected"}, set())
    upto = _counter(item["upto"], "ack.upto")
    rejected: list[Rejected] = []
    for one in _list(item["rejected"], "ack.rejected", 0, MAX_REJECTED):
        if type(one) is not dict or set(one) != {"oseq", "code"}:
            raise _bad("ack.rejected items are {oseq, code}")
        oseq = _counter(one["oseq"], "ack.rejected oseq", low=1)
        code = one["code"]
        if type(code) is not str or _CODE_RE.fullmatch(code) is None:
            raise _bad("ack.rejected code is a short snake_case string")
        if oseq > upto:
            raise _bad("ack.rejected names an oseq above upto")
        rejected.append(Rejected(oseq, code))
    return Ack(upto, tuple(rejected))


def _parse_ping(item: dict[str, Any]) -> Ping:
    _fields(item, "ping", set(), set())
    return Ping()


def _parse_pong(item: dict[str, Any]) -> Pong:
    _fields(item, "pong", set(), set())
    return Pong()


def _parse_gossip(item: dict[str, Any]) -> Gossip:
    _fields(item, "gossip", {"records"}, set())
    raw = _list(item["records"], "gossip.records", 0, MAX_GOSSIP_RECORDS)
    return Gossip(
        tuple(_bytes_map(r, _RECORD_KEYS, "gossip record", MAX_RECORD_FIELD_BYTES) for r in raw)
    )


def _parse_gsum(item: dict[str, Any]) -> GossipSummary:
    _fields(item, "gsum", {"sum"}, set())
    summary = item["sum"]
    if type(summary) is not bytes or len(summary) != SUMMARY_BYTES:
        raise _bad(f"gsum.sum is {SUMMARY_BYTES} bytes")
    return GossipSummary(summary)


def _parse_gdigest(item: dict[str, Any]) -> GossipDigest:
    _fields(item, "gdigest", {"have", "reply"}, set())
    reply = item["reply"]
    if type(reply) is not bool:
        raise _bad("gdigest.reply is a bool")
    have: list[DigestEntry] = []
    seen: set[bytes] = set()
    for one in _list(item["have"], "gdigest.have", 0, MAX_DIGEST_ENTRIES):
        if type(one) is not dict or set(one) != {"n", "ts"}:
            raise _bad("gdigest.have items are {n, ts}")
        key = one["n"]
        if type(key) is not bytes or len(key) != NODE_KEY_BYTES:
            raise _bad(f"gdigest.have n is a {NODE_KEY_BYTES}-byte node key")
        if key in seen:
            raise _bad("gdigest.have names a node twice")
        seen.add(key)
        have.append(DigestEntry(key, _counter(one["ts"], "gdigest.have ts")))
    return GossipDigest(tuple(have), reply)


def _parse_sub(item: dict[str, Any]) -> Sub:
    _fields(item, "sub", {"users"}, {"reset"})
    reset = item.get("reset", False)
    if type(reset) is not bool:
        raise _bad("sub.reset is a bool")
    return Sub(_users(item["users"], "sub.users"), reset)


def _parse_unsub(item: dict[str, Any]) -> Unsub:
    _fields(item, "unsub", {"users"}, set())
    return Unsub(_users(item["users"], "unsub.users"))


def _parse_presence(item: dict[str, Any]) -> PresenceUpdate:
    _fields(item, "presence", {"items"}, set())
    items: list[PresenceItem] = []
    for one in _list(item["items"], "presence.items", 0, MAX_PRESENCE_USERS):
        if type(one) is not dict or not {"u", "status", "last_active_at"} <= set(one) <= {
            "u",
            "status",
            "last_active_at",
            "dn",
            "hide",
        }:
            raise _bad("presence items are {u, status, last_active_at, dn?, hide?}")
        try:
            user = check_user_name(one["u"])
        except ProtocolError as exc:
            raise _bad("presence item: not a user name") from exc
        status = one["status"]
        if type(status) is not str or status not in _STATUSES:
            raise _bad("presence status is online or offline")
        last = one["last_active_at"]
        if last is not None:
            last = _counter(last, "presence last_active_at")
        display = one.get("dn", "")
        if type(display) is not str or len(display) > MAX_DISPLAY_NAME_CHARS:
            raise _bad(f"presence dn is a string of at most {MAX_DISPLAY_NAME_CHARS} characters")
        hide = _users(one["hide"], "presence hide") if "hide" in one else ()
        items.append(PresenceItem(user, status, last, display, hide))
    return PresenceUpdate(tuple(items))


def _user(value: object, what: str) -> str:
    try:
        return check_user_name(value)  # type: ignore[arg-type]
    except ProtocolError as exc:
        raise _bad(f"{what} is not a user name") from exc


def _group(value: object, what: str) -> GroupAddress:
    try:
        return GroupAddress.from_wire(value)
    except ProtocolError as exc:
        raise _bad(f"{what} is {{host, name}}") from exc


def _parse_typing(item: dict[str, Any]) -> TypingUpdate:
    _fields(item, "typing", {"items"}, {"to", "group"})
    if ("to" in item) == ("group" in item):
        raise _bad("typing names either 'to' or 'group'")
    to = _user(item["to"], "typing.to") if "to" in item else None
    group = _group(item["group"], "typing.group") if "group" in item else None
    items: list[TypingItem] = []
    for one in _list(item["items"], "typing.items", 1, MAX_TYPING_ITEMS):
        if type(one) is not dict or set(one) != {"u", "n", "s"}:
            raise _bad("typing items are {u, n, s}")
        node = one["n"]
        if type(node) is not str or not is_node_id_text(node):
            raise _bad("typing item n is a node id")
        if one["s"] not in _TYPING_STATES:
            raise _bad("typing item s is start or stop")
        items.append(TypingItem(_user(one["u"], "typing item u"), node, one["s"]))
    return TypingUpdate(to, group, tuple(items))


def _parse_receipt(item: dict[str, Any]) -> ReceiptUpdate:
    _fields(item, "receipt", {"items"}, set())
    items: list[ReceiptItem] = []
    for one in _list(item["items"], "receipt.items", 1, MAX_RECEIPT_ITEMS):
        if type(one) is not dict or set(one) - {"g"} != {"r", "u", "id"}:
            raise _bad("receipt items are {r, u, id, g?}")
        group = _group(one["g"], "receipt item g") if "g" in one else None
        items.append(
            ReceiptItem(
                _user(one["r"], "receipt item r"),
                _user(one["u"], "receipt item u"),
                group,
                _counter(one["id"], "receipt item id"),
            )
        )
    return ReceiptUpdate(tuple(items))


def _parse_gsync(item: dict[str, Any]) -> GroupSync:
    _fields(item, "gsync", {"group", "after"}, set())
    try:
        group = GroupAddress.from_wire(item["group"])
    except ProtocolError as exc:
        raise _bad("gsync.group is {host, name}") from exc
    return GroupSync(group, _counter(item["after"], "gsync.after"))


def _parse_intro_req(item: dict[str, Any]) -> IntroRequest:
    _fields(item, "introreq", set(), set())
    return IntroRequest()


def _parse_intro(item: dict[str, Any]) -> Introductions:
    _fields(item, "intro", {"statements"}, set())
    raw = _list(item["statements"], "intro.statements", 1, MAX_INTRODUCTIONS)
    return Introductions(
        tuple(
            _bytes_map(s, _STATEMENT_KEYS, "introduction", MAX_STATEMENT_FIELD_BYTES) for s in raw
        )
    )


def _sha(value: object, what: str) -> bytes:
    if type(value) is not bytes or len(value) != 32:
        raise _bad(f"{what} is the 32 bytes of a SHA-256")
    return value


def _parse_blobreq(item: dict[str, Any]) -> BlobRequest:
    _fields(item, "blobreq", {"sha256", "offset"}, set())
    return BlobRequest(_sha(item["sha256"], "blobreq.sha256"), _counter(item["offset"], "offset"))


def _parse_blobchunk(item: dict[str, Any]) -> BlobChunk:
    _fields(item, "blobchunk", {"sha256", "offset", "data", "total"}, set())
    data = item["data"]
    if type(data) is not bytes or len(data) > MAX_BLOB_CHUNK:
        raise _bad(f"blobchunk.data is at most {MAX_BLOB_CHUNK} bytes")
    offset = _counter(item["offset"], "blobchunk.offset")
    total = _counter(item["total"], "blobchunk.total")
    if offset + len(data) > total:
        raise _bad("blobchunk goes past the blob's total")
    return BlobChunk(_sha(item["sha256"], "blobchunk.sha256"), offset, data, total)


def _parse_blobnone(item: dict[str, Any]) -> BlobUnavailable:
    _fields(item, "blobnone", {"sha256", "code"}, set())
    code = item["code"]
    if type(code) is not str or code not in BLOB_REFUSALS:
        raise _bad(f"blobnone.code is one of {', '.join(BLOB_REFUSALS)}")
    return BlobUnavailable(_sha(item["sha256"], "blobnone.sha256"), code)


_PARSERS: dict[str, Callable[[dict[str, Any]], LinkFrame]] = {
    "resume": _parse_resume,
    "push": _parse_push,
    "ack": _parse_ack,
    "ping": _parse_ping,
    "pong": _parse_pong,
    "gossip": _parse_gossip,
    "gsum": _parse_gsum,
    "gdigest": _parse_gdigest,
    "sub": _parse_sub,
    "unsub": _parse_unsub,
    "presence": _parse_presence,
    "typing": _parse_typing,
    "receipt": _parse_receipt,
    "gsync": _parse_gsync,
    "introreq": _parse_intro_req,
    "intro": _parse_intro,
    "blobreq": _parse_blobreq,
    "blobchunk": _parse_blobchunk,
    "blobnone": _parse_blobnone,
}


def decode_link_frame(data: bytes) -> LinkFrame:
    """Parse one opened link frame; raise only ProtocolError.

    ``too_large`` for more than 1 MiB (``push``, ``gossip``, ``gdigest``) or 64 KiB (any
    other frame); ``bad_frame`` for anything else that is not a well-formed
    frame of a known type.
    """
    if not isinstance(data, bytes | bytearray):
        raise _bad("a link frame is bytes")
    item = decode_cbor(bytes(data), max_bytes=MAX_MESSAGE_BYTES)
    if type(item) is not dict or type(item.get("t")) is not str:
        raise _bad("a link frame is a map with 't'")
    kind = item["t"]
    parser = _PARSERS.get(kind)
    if parser is None:
        raise _bad(f"unknown link frame {kind[:30]!r}")
    _check_size(kind, len(data))
    return parser(item)


def _check_size(kind: str, size: int) -> None:
    limit = MAX_MESSAGE_BYTES if kind in _LARGE_FRAMES else MAX_FRAME_BYTES
    if size > limit:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"a {kind} frame is at most {limit} bytes")


# ---------------------------------------------------------------- encoding
def _to_wire(frame: LinkFrame) -> dict[str, Any]:
    match frame:
        case Resume(applied):
            return {"t": "resume", "applied": applied}
        case Push(entries, skip):
            out: dict[str, Any] = {
                "t": "push",
                "entries": [
                    {"o": e.oseq, "k": e.kind, _ENTRY_SHAPES[e.kind][0]: dict(e.payload)}
                    for e in entries
                ],
            }
            if skip is not None:
                out["skip"] = skip
            return out
        case Ack(upto, rejected):
            return {
                "t": "ack",
                "upto": upto,
                "rejected": [{"oseq": r.oseq, "code": r.code} for r in rejected],
            }
        case Ping():
            return {"t": "ping"}
        case Pong():
            return {"t": "pong"}
        case Gossip(records):
            return {"t": "gossip", "records": [dict(r) for r in records]}
        case GossipSummary(summary):
            return {"t": "gsum", "sum": summary}
        case GossipDigest(have, reply):
            return {
                "t": "gdigest",
                "have": [{"n": e.key, "ts": e.ts} for e in have],
                "reply": reply,
            }
        case Sub(users, reset):
            return {"t": "sub", "users": list(users), "reset": reset}
        case Unsub(users):
            return {"t": "unsub", "users": list(users)}
        case PresenceUpdate(items):
            return {
                "t": "presence",
                "items": [_presence_item_wire(i) for i in items],
            }
        case TypingUpdate(to, group, typists):
            wire: dict[str, Any] = {
                "t": "typing",
                "items": [{"u": i.user, "n": i.node, "s": i.state} for i in typists],
            }
            if to is not None:
                wire["to"] = to
            if group is not None:
                wire["group"] = group.to_wire()
            return wire
        case ReceiptUpdate(receipts):
            return {"t": "receipt", "items": [_receipt_item(i) for i in receipts]}
        case GroupSync(group, after):
            return {"t": "gsync", "group": group.to_wire(), "after": after}
        case IntroRequest():
            return {"t": "introreq"}
        case Introductions(statements):
            return {"t": "intro", "statements": [dict(s) for s in statements]}
        case BlobRequest(sha, offset):
            return {"t": "blobreq", "sha256": sha, "offset": offset}
        case BlobChunk(sha, offset, data, total):
            return {"t": "blobchunk", "sha256": sha, "offset": offset, "data": data, "total": total}
        case BlobUnavailable(sha, code):
            return {"t": "blobnone", "sha256": sha, "code": code}
    raise ProtocolError(ErrorCode.INTERNAL, f"not a link frame: {type(frame).__name__}")


def _receipt_item(item: ReceiptItem) -> dict[str, Any]:
    out: dict[str, Any] = {"r": item.reader, "u": item.to, "id": item.read_id}
    if item.group is not None:
        out["g"] = item.group.to_wire()
    return out


def _presence_item_wire(item: PresenceItem) -> dict[str, Any]:
    out: dict[str, Any] = {"u": item.user, "status": item.status}
    out["last_active_at"] = item.last_active_at
    if item.display_name:
        out["dn"] = item.display_name
    if item.hide:
        out["hide"] = list(item.hide)
    return out


def encode_link_frame(frame: LinkFrame) -> bytes:
    """The plaintext of ``frame``; it decodes back to an equal frame.

    A frame this module would refuse is refused here too (``bad_frame``,
    ``too_large``), so a node never sends what its peer must drop the link for.
    The check runs the parser over the wire map, not over decoded bytes: a
    900 KiB push is not decoded again on its way out.
    """
    wire = _to_wire(frame)
    if _PARSERS[wire["t"]](wire) != frame:
        raise _bad(f"{type(frame).__name__} does not survive a round trip")
    data = encode_cbor(wire)
    _check_size(wire["t"], len(data))
    return data


# ---------------------------------------------------------------- state
#: One direction of a link: state -> frame types allowed -> next state.
_STATES: dict[str, dict[type, str]] = {
    "awaiting_resume": {Resume: "open"},
    "open": {
        Push: "open",
        Ack: "open",
        Ping: "open",
        Pong: "open",
        Gossip: "open",
        GossipSummary: "open",
        GossipDigest: "open",
        Sub: "open",
        Unsub: "open",
        PresenceUpdate: "open",
        TypingUpdate: "open",
        ReceiptUpdate: "open",
        GroupSync: "open",
        IntroRequest: "open",
        Introductions: "open",
        BlobRequest: "open",
        BlobChunk: "open",
        BlobUnavailable: "open",
    },
}


class LinkDirection:
    """The rules of one direction of a link (what we receive, or what we send).

    ``receive(bytes)`` parses and checks order; ``send(frame)`` checks order
    and encodes. Either raises ProtocolError (``bad_frame``) for a frame out of
    place: anything before ``resume``, a second ``resume``, a ``push`` whose
    oseqs do not go past the last one, an ``ack`` below the last one.
    """

    def __init__(self) -> None:
        self.state = "awaiting_resume"
        self._last_pushed = 0
        self._last_ack = 0

    def _step(self, frame: LinkFrame) -> None:
        nxt = _STATES[self.state].get(type(frame))
        if nxt is None:
            name = type(frame).__name__.lower()
            raise _bad(f"link: {name} not allowed in state {self.state}")
        if isinstance(frame, Push):
            if frame.entries[0].oseq <= self._last_pushed:
                raise _bad("push: oseq went back on this link")
            self._last_pushed = frame.entries[-1].oseq
        elif isinstance(frame, Ack):
            if frame.upto < self._last_ack:
                raise _bad("ack: upto went back on this link")
            self._last_ack = frame.upto
        self.state = nxt

    def receive(self, data: bytes) -> LinkFrame:
        frame = decode_link_frame(data)
        self._step(frame)
        return frame

    def send(self, frame: LinkFrame) -> bytes:
        data = encode_link_frame(frame)
        self._step(frame)
        return data
