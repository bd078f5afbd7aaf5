"""Actions on messages (issue 17): edit, delete, react, and reply references.

An action is an envelope of its own kind naming the target message by id
(``body.target``); it travels, is signed and is stored exactly like a text
message. A reply is a text message whose body carries ``reply_to``. This
module holds the bodies' shapes, their limits and their validation; it is
sans-I/O like the rest of ``protocol/``.

Bodies:

* ``edit``:   ``{target: uint64, text: str (1..16 KiB)}``
* ``delete``: ``{target: uint64}``
* ``react``:  ``{target: uint64, emoji: str, remove: bool}``
* ``text`` may carry ``reply_to: {id: uint64, from: {u, n}, excerpt: str}``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .addresses import UserAddress
from .errors import ErrorCode, ProtocolError
from .limits import check_text

KIND_EDIT = "edit"
KIND_DELETE = "delete"
KIND_REACT = "react"
ACTION_KINDS = frozenset({KIND_EDIT, KIND_DELETE, KIND_REACT})

#: An emoji (or short emoji sequence): at most this many code points...
MAX_EMOJI_CODEPOINTS = 8
#: ... and this many UTF-8 bytes.
MAX_EMOJI_BYTES = 32
#: Distinct emoji one user may put on one message.
MAX_REACTIONS_PER_USER = 20
#: Distinct (user, emoji) pairs one message holds; reactions past it are
#: ignored, so a stored record (and a history page) stays bounded.
MAX_REACTIONS_PER_MESSAGE = 256
#: A reply's excerpt of its target: the first this many characters.
EXCERPT_CHARS = 100

_MAX_ID = (1 << 63) - 1


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


def check_message_id(value: Any, what: str = "target") -> int:
    """A message id: a positive 63-bit integer."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_ID:
        raise _bad(f"{what} is a positive 64-bit message id")
    return value


def check_emoji(value: Any) -> str:
    """An emoji: 1-8 code points, at most 32 bytes, no ASCII letters, digits,
    spaces or control characters (so no words pass as reactions)."""
    if not isinstance(value, str) or not value:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "an emoji is a non-empty string")
    if len(value) > MAX_EMOJI_CODEPOINTS or len(value.encode("utf-8", "surrogatepass")) > (
        MAX_EMOJI_BYTES
    ):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"an emoji is at most {MAX_EMOJI_CODEPOINTS} code points"
        )
    keycap = "\u20e3" in value  # 1️⃣, #️⃣: a digit or # made an emoji by U+20E3
    for char in value:
        if keycap and char in "0123456789#*":
            continue
        if char.isascii() and (char.isalnum() or char.isspace() or not char.isprintable()):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "an emoji holds no letters or digits")
        if not char.isprintable() and char not in "\u200d\ufe0f\ufe0e":
            raise ProtocolError(ErrorCode.BAD_REQUEST, "an emoji holds no control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "an emoji is valid unicode") from None
    return value


def check_edit_text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "an edit's text is a non-empty string")
    return check_text(value)


@dataclass(frozen=True)
class Action:
    """A decoded action body: ``kind`` is edit, delete or react."""

    kind: str
    target: int
    text: str | None = None
    emoji: str | None = None
    remove: bool = False


def edit_body(target: int, text: str) -> dict[str, Any]:
    return {"target": check_message_id(target), "text": check_edit_text(text)}


def delete_body(target: int) -> dict[str, Any]:
    return {"target": check_message_id(target)}


def react_body(target: int, emoji: str, remove: bool = False) -> dict[str, Any]:
    return {"target": check_message_id(target), "emoji": check_emoji(emoji), "remove": remove}


def parse_action(kind: str, body: Any) -> Action:
    """Validate an action envelope's body; raise ``bad_frame``."""
    if not isinstance(body, dict):
        raise _bad("an action body is a map")
    expected = {
        KIND_EDIT: {"target", "text"},
        KIND_DELETE: {"target"},
        KIND_REACT: {"target", "emoji", "remove"},
    }.get(kind)
    if expected is None:
        raise _bad(f"not an action kind: {kind[:32]!r}")
    if set(body) != expected:
        raise _bad(f"a {kind} body is {{{', '.join(sorted(expected))}}}")
    target = check_message_id(body["target"])
    try:
        if kind == KIND_EDIT:
            return Action(kind, target, text=check_edit_text(body["text"]))
        if kind == KIND_DELETE:
            return Action(kind, target)
        remove = body["remove"]
        if not isinstance(remove, bool):
            raise _bad("react.remove is a boolean")
        return Action(kind, target, emoji=check_emoji(body["emoji"]), remove=remove)
    except ProtocolError as exc:
        if exc.code is ErrorCode.BAD_FRAME:
            raise
        raise _bad(exc.message) from None


def excerpt(text: str) -> str:
    """A reply's excerpt of its target's text."""
    return text[:EXCERPT_CHARS]


def reply_to_body(target: int, sender: UserAddress, text: str) -> dict[str, Any]:
    """The ``reply_to`` of a text body quoting ``target`` by ``sender``."""
    return {"id": check_message_id(target), "from": sender.to_wire(), "excerpt": excerpt(text)}


def parse_reply_to(value: Any) -> dict[str, Any]:
    """Validate a text body's ``reply_to``; raise ``bad_frame``."""
    if not isinstance(value, dict) or set(value) != {"id", "from", "excerpt"}:
        raise _bad("reply_to is {id, from, excerpt}")
    check_message_id(value["id"], "reply_to.id")
    UserAddress.from_wire(value["from"])
    text = value["excerpt"]
    if not isinstance(text, str) or len(text) > EXCERPT_CHARS:
        raise _bad(f"reply_to.excerpt is a string of at most {EXCERPT_CHARS} characters")
    return value
