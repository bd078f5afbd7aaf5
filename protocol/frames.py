"""Frames of the device protocol, their wire formats and validation.

A WebSocket message carries one frame (a map) or a list of frames. Every
frame has ``t`` (its type) and, for requests, ``rid`` (chosen by the
requester, echoed in the reply). ``chinwag.cbor.v1`` carries them as CBOR in
binary messages, ``chinwag.json.v1`` as JSON in text messages, where 64-bit
ids are decimal strings and byte strings are base64url.

Requests from a device are validated into frozen dataclasses right after
decoding; nothing past this module touches a raw dict from the wire.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .actions import check_edit_text, check_emoji
from .attachments import Attachment, parse_attachments
from .codec import decode_cbor_counted, decode_json_counted, encode_cbor, encode_json
from .errors import ErrorCode, ProtocolError
from .limits import (
    MAX_BATCH_FRAMES,
    MAX_DECODE_ITEMS,
    MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES,
    check_text,
)

SUBPROTOCOL_CBOR = "chinwag.cbor.v1"
SUBPROTOCOL_JSON = "chinwag.json.v1"

#: Fields that hold 64-bit ids: decimal strings in JSON.
ID_FIELDS = frozenset({"id", "last_id", "target", "reply_to", "delivered_id", "read_id"})
MAX_CID_CHARS = 64
MAX_RID_CHARS = 64
MAX_TOKEN_CHARS = 256
MAX_ADDRESS_CHARS = 200


class WireFormat(enum.Enum):
    """How frames are carried over one connection."""

    CBOR = SUBPROTOCOL_CBOR
    JSON = SUBPROTOCOL_JSON

    @classmethod
    def from_subprotocol(cls, name: str | None) -> WireFormat | None:
        for fmt in cls:
            if fmt.value == name:
                return fmt
        return None


Rid = int | str


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


# ---------------------------------------------------------------- messages


def decode_message(
    data: bytes | str,
    fmt: WireFormat,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    max_items: int = MAX_DECODE_ITEMS,
) -> list[dict[str, Any]]:
    """Decode one WebSocket message into its frames (maps), strictly."""
    return decode_message_counted(data, fmt, max_bytes=max_bytes, max_items=max_items)[0]


def decode_message_counted(
    data: bytes | str,
    fmt: WireFormat,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    max_items: int = MAX_DECODE_ITEMS,
) -> tuple[list[dict[str, Any]], int]:
    """:func:`decode_message`, also returning the message's data items.

    A message of more than ``max_items`` data items is ``too_large``, refused
    by the codec's pre-scan before any object is built. A node reading a
    device passes :data:`~.limits.MAX_MESSAGE_ITEMS`; the default is the
    generic bound, since what a node sends (batches of ``msg`` frames) holds
    more. The count lets the node charge the sender for the decoding work.
    """
    if fmt is WireFormat.CBOR:
        if not isinstance(data, bytes):
            raise _bad("chinwag.cbor.v1 frames travel in binary messages")
        item, items = decode_cbor_counted(data, max_bytes=max_bytes, max_items=max_items)
    else:
        if not isinstance(data, str):
            raise _bad("chinwag.json.v1 frames travel in text messages")
        item, items = decode_json_counted(data, max_bytes=max_bytes, max_items=max_items)
    if not isinstance(item, list) and len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"a frame is limited to {MAX_FRAME_BYTES} bytes")
    frames = item if isinstance(item, list) else [item]
    if not frames:
        raise _bad("an empty batch")
    if len(frames) > MAX_BATCH_FRAMES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"a batch holds at most {MAX_BATCH_FRAMES} frames")
    out: list[dict[str, Any]] = []
    for frame in frames:
        if not isinstance(frame, dict):
            raise _bad("a frame is a map")
        out.append(_from_json(frame) if fmt is WireFormat.JSON else frame)
    return out, items


def encode_message(frames: Sequence[Mapping[str, Any]], fmt: WireFormat) -> bytes | str:
    """Encode frames as one WebSocket message (a bare frame if only one)."""
    if fmt is WireFormat.CBOR:
        return encode_cbor(frames[0] if len(frames) == 1 else list(frames))
    converted = [_to_json(frame) for frame in frames]
    return encode_json(converted[0] if len(converted) == 1 else converted)


def encode_frame(frame: Mapping[str, Any], fmt: WireFormat) -> bytes | str:
    """Encode one frame; several can then be joined by :func:`join_frames`."""
    if fmt is WireFormat.CBOR:
        return encode_cbor(frame)
    return encode_json(_to_json(frame))


def join_frames(encoded: Sequence[bytes | str], fmt: WireFormat) -> bytes | str:
    """One WebSocket message from frames encoded by :func:`encode_frame`.

    A single frame goes bare; several become an array, built from the encoded
    pieces (a CBOR array is its header followed by its items).
    """
    if len(encoded) == 1:
        return encoded[0]
    if fmt is WireFormat.CBOR:
        count = len(encoded)
        if count < 24:
            header = bytes([0x80 | count])
        elif count < 256:
            header = bytes([0x98, count])
        else:
            header = bytes([0x99]) + count.to_bytes(2, "big")
        return header + b"".join(e for e in encoded if isinstance(e, bytes))
    return "[" + ",".join(e for e in encoded if isinstance(e, str)) + "]"


def _to_json(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _to_json(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, bytes):
        return base64.urlsafe_b64encode(value).decode("ascii").rstrip("=")
    if key in ID_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _from_json(frame: dict[str, Any]) -> dict[str, Any]:
    out = dict(frame)
    for key in ID_FIELDS & out.keys():
        value = out[key]
        if isinstance(value, str):
            if not value.isdigit() or len(value) > 20:
                raise _bad(f"field {key!r} is a decimal id string")
            out[key] = int(value)
    return out


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class Auth:
    rid: Rid
    token: str


@dataclass(frozen=True)
class Send:
    """Send ``text`` to ``to``: ``bob``, ``bob@node`` or ``#group@host``."""

    rid: Rid
    to: str
    text: str
    cid: str | None
    #: Files (blobs uploaded to the user's node first; protocol/attachments.py).
    attachments: tuple[Attachment, ...] = ()
    #: The id of a message in the user's own queue this one replies to.
    reply_to: int | None = None


@dataclass(frozen=True)
class Edit:
    """Replace the text of the user's own message ``id`` (protocol/actions.py)."""

    rid: Rid
    id: int
    text: str


@dataclass(frozen=True)
class Delete:
    """Delete the user's own message ``id`` for everyone."""

    rid: Rid
    id: int


@dataclass(frozen=True)
class React:
    """Add (or with ``remove``, take back) the user's ``emoji`` on message ``id``."""

    rid: Rid
    id: int
    emoji: str
    remove: bool


ActionRequest = Edit | Delete | React


@dataclass(frozen=True)
class Sync:
    """Stream the user's queue from ``after`` (exclusive), then live."""

    rid: Rid
    after: int


@dataclass(frozen=True)
class Ack:
    """Cumulative: the device has seen every ``seq`` up to this one."""

    rid: Rid | None
    seq: int


@dataclass(frozen=True)
class Heartbeat:
    rid: Rid | None


@dataclass(frozen=True)
class GroupOp:
    """Group management: ``op`` is create, add, remove, leave, rename, list or members."""

    rid: Rid
    op: str
    group: str | None
    name: str | None
    members: tuple[str, ...]
    title: str | None


GROUP_OPS = frozenset(
    {
        "create",
        "add",
        "remove",
        "leave",
        "rename",
        "list",
        "members",
        "accept",
        "decline",
        "invites",
    }
)
MAX_GROUP_MEMBERS_PER_OP = 256

#: Bounds of the history requests (issue 15): page sizes and query length.
MAX_CONVS_PAGE = 200
DEFAULT_CONVS_PAGE = 50
MAX_HISTORY_PAGE = 200
DEFAULT_HISTORY_PAGE = 50
MAX_SEARCH_PAGE = 50
DEFAULT_SEARCH_PAGE = 20
MAX_QUERY_CHARS = 200
#: A conversation key: ``bob@<node id>`` (1:1) or ``#name@<host node id>``.
MAX_CONV_CHARS = MAX_ADDRESS_CHARS


@dataclass(frozen=True)
class Convs:
    """One page of the user's conversations, newest first.

    ``before`` is the ``next`` of the previous page (a seq: only
    conversations whose last message is older than it).
    """

    rid: Rid
    limit: int
    before: int | None


@dataclass(frozen=True)
class History:
    """One page of a conversation's messages, newest first: before seq
    ``before`` (or the newest), after seq ``after``, or centred on seq
    ``around`` (a search hit's page); at most one of the three."""

    rid: Rid
    conv: str
    limit: int
    before: int | None
    after: int | None = None
    around: int | None = None


@dataclass(frozen=True)
class Read:
    """Move the user's read marker of ``conv`` forward to ``seq``."""

    rid: Rid
    conv: str
    seq: int


@dataclass(frozen=True)
class Search:
    """Messages of the user's queue holding every term of ``q``, newest first."""

    rid: Rid
    q: str
    conv: str | None
    limit: int
    before: int | None


@dataclass(frozen=True)
class PresenceQuery:
    """Presence and display names of ``users`` (addresses), asked once (a group
    being opened); remote ones are fetched from their nodes on demand."""

    rid: Rid
    users: tuple[str, ...]


HistoryRequest = Convs | History | Read | Search

#: States of a ``typing`` frame (issue 17).
TYPING_STATES = frozenset({"start", "stop"})


@dataclass(frozen=True)
class Typing:
    """The device's user is typing in ``conv`` (``start``) or stopped (soft; rid optional)."""

    rid: Rid | None
    conv: str
    state: str


@dataclass(frozen=True)
class Receipts:
    """The receipt state of ``conv``: who has the user's messages and read them."""

    rid: Rid
    conv: str


SignalRequest = Typing | Receipts
Request = (
    Auth
    | Send
    | Sync
    | Ack
    | Heartbeat
    | GroupOp
    | Convs
    | History
    | Read
    | Search
    | PresenceQuery
    | ActionRequest
    | Typing
    | Receipts
)

_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # type: (required fields, optional fields), ``t`` not counted
    "auth": (frozenset({"rid", "token"}), frozenset()),
    "send": (frozenset({"rid", "to", "text"}), frozenset({"cid", "attachments", "reply_to"})),
    "edit": (frozenset({"rid", "id", "text"}), frozenset()),
    "delete": (frozenset({"rid", "id"}), frozenset()),
    "react": (frozenset({"rid", "id", "emoji"}), frozenset({"remove"})),
    "sync": (frozenset({"rid", "after"}), frozenset()),
    "ack": (frozenset({"seq"}), frozenset({"rid"})),
    "heartbeat": (frozenset(), frozenset({"rid"})),
    "group": (frozenset({"rid", "op"}), frozenset({"group", "name", "members", "title"})),
    "convs": (frozenset({"rid"}), frozenset({"limit", "before"})),
    "history": (frozenset({"rid", "conv"}), frozenset({"limit", "before", "after", "around"})),
    "read": (frozenset({"rid", "conv", "seq"}), frozenset()),
    "search": (frozenset({"rid", "q"}), frozenset({"conv", "limit", "before"})),
    "typing": (frozenset({"conv", "state"}), frozenset({"rid"})),
    "receipts": (frozenset({"rid", "conv"}), frozenset()),
    "presence_query": (frozenset({"rid", "users"}), frozenset()),
}
REQUEST_TYPES = frozenset(_FIELDS)


def frame_rid(frame: Mapping[str, Any]) -> Rid | None:
    """The frame's ``rid`` if it is well-formed, else None (for error replies)."""
    rid = frame.get("rid")
    if isinstance(rid, bool):
        return None
    if isinstance(rid, int) and 0 <= rid < 1 << 53:
        return rid
    if isinstance(rid, str) and 0 < len(rid) <= MAX_RID_CHARS:
        return rid
    return None


def _string(frame: Mapping[str, Any], key: str, max_chars: int) -> str:
    value = frame[key]
    if not isinstance(value, str):
        raise _bad(f"field {key!r} must be a string")
    if not value or len(value) > max_chars:
        raise _bad(f"field {key!r} must be 1-{max_chars} characters")
    return value


def _count(frame: Mapping[str, Any], key: str) -> int:
    value = frame[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise _bad(f"field {key!r} must be a non-negative integer")
    return value


def _limit(frame: Mapping[str, Any], default: int, most: int) -> int:
    if "limit" not in frame:
        return default
    value = frame["limit"]
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise _bad(f"field 'limit' must be an integer 1-{most}")
    return value


def _before(frame: Mapping[str, Any], name: str = "before") -> int | None:
    """A ``before`` cursor: a seq >= 1 (the ``next`` of the previous page);
    also ``after`` and ``around`` of ``history`` (a seq, e.g. ``newer``)."""
    if name not in frame:
        return None
    value = frame[name]
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 1 << 63:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"field {name!r} must be a cursor given as next")
    return value


def _message_id(frame: Mapping[str, Any], key: str) -> int:
    value = frame[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 1 << 63:
        raise _bad(f"field {key!r} must be a message id")
    return value


def _action_request(kind: str, rid: Rid, frame: Mapping[str, Any]) -> ActionRequest:
    msg_id = _message_id(frame, "id")
    if kind == "edit":
        return Edit(rid, msg_id, check_edit_text(frame["text"]))
    if kind == "delete":
        return Delete(rid, msg_id)
    remove = frame.get("remove", False)
    if not isinstance(remove, bool):
        raise _bad("field 'remove' must be a boolean")
    return React(rid, msg_id, check_emoji(frame["emoji"]), remove)


def _history_request(kind: str, rid: Rid, frame: Mapping[str, Any]) -> HistoryRequest:
    if kind == "convs":
        return Convs(rid, _limit(frame, DEFAULT_CONVS_PAGE, MAX_CONVS_PAGE), _before(frame))
    if kind == "history":
        if sum(name in frame for name in ("before", "after", "around")) > 1:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "history takes at most one of before, after and around"
            )
        return History(
            rid,
            _string(frame, "conv", MAX_CONV_CHARS),
            _limit(frame, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE),
            _before(frame),
            _before(frame, "after"),
            _before(frame, "around"),
        )
    if kind == "read":
        return Read(rid, _string(frame, "conv", MAX_CONV_CHARS), _count(frame, "seq"))
    return Search(
        rid,
        _string(frame, "q", MAX_QUERY_CHARS),
        _string(frame, "conv", MAX_CONV_CHARS) if "conv" in frame else None,
        _limit(frame, DEFAULT_SEARCH_PAGE, MAX_SEARCH_PAGE),
        _before(frame),
    )


def parse_request(frame: Mapping[str, Any]) -> Request:
    """Validate a decoded frame from a device into its request type."""
    kind = frame.get("t")
    if not isinstance(kind, str):
        raise _bad("a frame needs a string 't'")
    if kind not in _FIELDS:
        raise _bad(f"unknown frame type {kind[:40]!r}")
    required, optional = _FIELDS[kind]
    keys = frame.keys() - {"t"}
    missing = required - keys
    if missing:
        raise _bad(f"{kind}: missing field(s) {', '.join(sorted(missing))}")
    extra = keys - required - optional
    if extra:
        raise _bad(f"{kind}: unknown field(s) {', '.join(sorted(extra))}")
    rid = frame_rid(frame)
    if "rid" in frame and rid is None:
        raise _bad("rid must be an integer below 2**53 or a string of 1-64 characters")
    if kind == "auth":
        assert rid is not None
        return Auth(rid=rid, token=_string(frame, "token", MAX_TOKEN_CHARS))
    if kind == "send":
        assert rid is not None
        text = frame["text"]
        if not isinstance(text, str):
            raise _bad("field 'text' must be a string")
        check_text(text)
        attachments = parse_attachments(frame["attachments"]) if "attachments" in frame else ()
        if not text and not attachments:
            raise _bad("field 'text' must not be empty")
        cid = _string(frame, "cid", MAX_CID_CHARS) if "cid" in frame else None
        reply_to = _message_id(frame, "reply_to") if "reply_to" in frame else None
        return Send(
            rid=rid,
            to=_string(frame, "to", MAX_ADDRESS_CHARS),
            text=text,
            cid=cid,
            attachments=attachments,
            reply_to=reply_to,
        )
    if kind in ("edit", "delete", "react"):
        assert rid is not None
        return _action_request(kind, rid, frame)
    if kind == "sync":
        assert rid is not None
        return Sync(rid=rid, after=_count(frame, "after"))
    if kind == "ack":
        return Ack(rid=rid, seq=_count(frame, "seq"))
    if kind in ("convs", "history", "read", "search"):
        assert rid is not None
        return _history_request(kind, rid, frame)
    if kind == "typing":
        state = frame["state"]
        if state not in TYPING_STATES:
            raise _bad("field 'state' is 'start' or 'stop'")
        return Typing(rid=rid, conv=_string(frame, "conv", MAX_CONV_CHARS), state=state)
    if kind == "receipts":
        assert rid is not None
        return Receipts(rid=rid, conv=_string(frame, "conv", MAX_CONV_CHARS))
    if kind == "group":
        assert rid is not None
        op = _string(frame, "op", 16)
        if op not in GROUP_OPS:
            raise _bad(f"unknown group op {op!r}")
        members = frame.get("members", [])
        if (
            not isinstance(members, list)
            or len(members) > MAX_GROUP_MEMBERS_PER_OP
            or not all(isinstance(m, str) and 0 < len(m) <= MAX_ADDRESS_CHARS for m in members)
        ):
            raise _bad("members is a list of at most 256 addresses")
        return GroupOp(
            rid=rid,
            op=op,
            group=_string(frame, "group", MAX_ADDRESS_CHARS) if "group" in frame else None,
            name=_string(frame, "name", 32) if "name" in frame else None,
            members=tuple(members),
            title=_string(frame, "title", 100) if "title" in frame else None,
        )
    if kind == "presence_query":
        assert rid is not None
        users = frame["users"]
        if (
            not isinstance(users, list)
            or len(users) > MAX_GROUP_MEMBERS_PER_OP
            or not all(isinstance(u, str) and 0 < len(u) <= MAX_ADDRESS_CHARS for u in users)
        ):
            raise _bad("users is a list of at most 256 addresses")
        return PresenceQuery(rid=rid, users=tuple(users))
    return Heartbeat(rid=rid)


def encode_request(request: Request) -> dict[str, Any]:
    """The wire map of a request (what a client sends)."""
    out: dict[str, Any] = {}
    if isinstance(request, Auth):
        out = {"t": "auth", "token": request.token}
    elif isinstance(request, Send):
        out = {"t": "send", "to": request.to, "text": request.text}
        if request.cid is not None:
            out["cid"] = request.cid
        if request.attachments:
            out["attachments"] = [a.to_wire() for a in request.attachments]
        if request.reply_to is not None:
            out["reply_to"] = request.reply_to
    elif isinstance(request, Edit):
        out = {"t": "edit", "id": request.id, "text": request.text}
    elif isinstance(request, Delete):
        out = {"t": "delete", "id": request.id}
    elif isinstance(request, React):
        out = {"t": "react", "id": request.id, "emoji": request.emoji}
        if request.remove:
            out["remove"] = True
    elif isinstance(request, Sync):
        out = {"t": "sync", "after": request.after}
    elif isinstance(request, Ack):
        out = {"t": "ack", "seq": request.seq}
    elif isinstance(request, GroupOp):
        out = {"t": "group", "op": request.op}
        if request.group is not None:
            out["group"] = request.group
        if request.name is not None:
            out["name"] = request.name
        if request.members:
            out["members"] = list(request.members)
        if request.title is not None:
            out["title"] = request.title
    elif isinstance(request, Convs | History | Read | Search):
        out = _encode_history_request(request)
    elif isinstance(request, Typing):
        out = {"t": "typing", "conv": request.conv, "state": request.state}
    elif isinstance(request, Receipts):
        out = {"t": "receipts", "conv": request.conv}
    elif isinstance(request, PresenceQuery):
        out = {"t": "presence_query", "users": list(request.users)}
    else:
        out = {"t": "heartbeat"}
    if request.rid is not None:
        out["rid"] = request.rid
    return out


def _encode_history_request(request: HistoryRequest) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(request, Convs):
        out = {"t": "convs"}
        if request.limit != DEFAULT_CONVS_PAGE:
            out["limit"] = request.limit
    elif isinstance(request, History):
        out = {"t": "history", "conv": request.conv}
        if request.limit != DEFAULT_HISTORY_PAGE:
            out["limit"] = request.limit
        if request.after is not None:
            out["after"] = request.after
        if request.around is not None:
            out["around"] = request.around
    elif isinstance(request, Read):
        return {"t": "read", "conv": request.conv, "seq": request.seq}
    else:
        out = {"t": "search", "q": request.q}
        if request.conv is not None:
            out["conv"] = request.conv
        if request.limit != DEFAULT_SEARCH_PAGE:
            out["limit"] = request.limit
    if request.before is not None:
        out["before"] = request.before
    return out


def read_frame(conv: str, read_seq: int, unread: int) -> dict[str, Any]:
    """The soft frame telling a user's other devices that ``conv`` was read."""
    return {"t": "read", "conv": conv, "read_seq": read_seq, "unread": unread}


def typing_frame(conv: str, user: Mapping[str, str], state: str) -> dict[str, Any]:
    """The soft frame telling a device that ``user`` is typing in ``conv`` (or stopped)."""
    return {"t": "typing", "conv": conv, "user": dict(user), "state": state}


def receipt_frame(
    conv: str,
    user: Mapping[str, str],
    *,
    delivered_id: int | None = None,
    read_id: int | None = None,
) -> dict[str, Any]:
    """The soft frame telling a sender's devices how far ``user`` has their
    messages of ``conv``: every message of theirs with an id up to
    ``delivered_id`` is on the user's node, up to ``read_id`` read."""
    frame: dict[str, Any] = {"t": "receipt", "conv": conv, "user": dict(user)}
    if delivered_id is not None:
        frame["delivered_id"] = delivered_id
    if read_id is not None:
        frame["read_id"] = read_id
    return frame


# ---------------------------------------------------------------- replies


def ok_frame(rid: Rid | None, **fields: Any) -> dict[str, Any]:
    """A success reply."""
    frame: dict[str, Any] = {"t": "ok"}
    if rid is not None:
        frame["rid"] = rid
    frame.update(fields)
    return frame


def err_frame(rid: Rid | None, error: ProtocolError) -> dict[str, Any]:
    """An error reply with its stable code."""
    frame: dict[str, Any] = {"t": "err", "code": str(error.code), "message": error.message}
    if rid is not None:
        frame["rid"] = rid
    if error.retry_after_ms is not None:
        frame["retry_after_ms"] = error.retry_after_ms
    return frame


def bye_frame(code: ErrorCode, message: str) -> dict[str, Any]:
    """Sent just before the node closes a session, saying why."""
    return {"t": "bye", "code": str(code), "message": message}


def error_from_frame(frame: Mapping[str, Any]) -> ProtocolError:
    """Rebuild the error an ``err``/``bye`` frame carries (client side)."""
    raw_code = frame.get("code")
    try:
        code = ErrorCode(str(raw_code))
    except ValueError:
        code = ErrorCode.INTERNAL
    message = frame.get("message")
    retry = frame.get("retry_after_ms")
    return ProtocolError(
        code,
        message if isinstance(message, str) else str(raw_code),
        retry_after_ms=retry if isinstance(retry, int) and not isinstance(retry, bool) else None,
    )


__all__ = [
    "Ack",
    "ActionRequest",
    "Auth",
    "Convs",
    "Delete",
    "Edit",
    "GroupOp",
    "History",
    "HistoryRequest",
    "Heartbeat",
    "MAX_FRAME_BYTES",
    "React",
    "Read",
    "Request",
    "Search",
    "Send",
    "Sync",
    "WireFormat",
    "bye_frame",
    "decode_message",
    "decode_message_counted",
    "encode_frame",
    "encode_message",
    "join_frames",
    "encode_request",
    "err_frame",
    "error_from_frame",
    "ok_frame",
    "parse_request",
    "read_frame",
    "receipt_frame",
    "Receipts",
    "SignalRequest",
    "Typing",
    "typing_frame",
]
