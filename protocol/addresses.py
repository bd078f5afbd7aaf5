"""Node ids, user names and addresses, in text and on the wire.

A node id is its Ed25519 public key (32 bytes); in text it is lowercase
unpadded base32 (52 characters). On the wire a user is ``{u, n}`` with ``n``
the node id text. ``alice@kitchen`` is the display form, resolved through the
receiving node's pins.
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass

from .errors import ErrorCode, ProtocolError

NODE_ID_BYTES = 32
NODE_ID_TEXT_LEN = 52
_USER_RE = re.compile(r"[a-z0-9._-]{1,32}")
_NODE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_NODE_ID_RE = re.compile(r"[a-z2-7]{52}")


def node_id_text(raw: bytes) -> str:
    """Encode a 32-byte node id as lowercase unpadded base32."""
    if type(raw) is bytes:
        # Cached: every inbound envelope checks its sender against its
        # origin's text form, and a node knows few keys.
        return _node_id_text(raw)
    return _node_id_text.__wrapped__(raw)


@functools.lru_cache(maxsize=4096)
def _node_id_text(raw: bytes) -> str:
    if len(raw) != NODE_ID_BYTES:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a node id is 32 bytes")
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def node_id_bytes(text: str) -> bytes:
    """Decode a node id from its text form."""
    if type(text) is str:
        return _node_id_bytes(text)  # cached, as above
    return _node_id_bytes.__wrapped__(text)


@functools.lru_cache(maxsize=4096)
def _node_id_bytes(text: str) -> bytes:
    if not is_node_id_text(text):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not a node id: {text[:60]!r}")
    return base64.b32decode(text.upper() + "====")


def is_node_id_text(text: str) -> bool:
    """True if ``text`` has the shape of a node id."""
    return _NODE_ID_RE.fullmatch(text) is not None


def short_id(node_id: str) -> str:
    """The first characters of a node id, for display only (shown with "…";
    the voice-comparable fingerprint is protocol/fingerprint.py)."""
    return node_id[:12]


def check_user_name(name: str) -> str:
    """Validate a local part (``alice``); return it or raise ``bad_request``."""
    if not isinstance(name, str) or _USER_RE.fullmatch(name) is None:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "a user name is 1-32 characters of lowercase letters, digits, '.', '_' or '-'",
        )
    return name


def check_node_name(name: str) -> str:
    """Validate a node label (``kitchen``)."""
    if not isinstance(name, str) or _NODE_NAME_RE.fullmatch(name) is None:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "a node name is 1-63 characters of lowercase letters, digits, '.', '_' or '-'",
        )
    return name


@dataclass(frozen=True, order=True)
class UserAddress:
    """A user on a node, the node named by id (``n``)."""

    user: str
    node: str

    def to_wire(self) -> dict[str, str]:
        return {"u": self.user, "n": self.node}

    @classmethod
    def from_wire(cls, value: object) -> UserAddress:
        if not isinstance(value, dict) or set(value) != {"u", "n"}:
            raise ProtocolError(ErrorCode.BAD_FRAME, "an address is a map {u, n}")
        user, node = value["u"], value["n"]
        if not isinstance(user, str) or not isinstance(node, str):
            raise ProtocolError(ErrorCode.BAD_FRAME, "address fields are strings")
        check_user_name(user)
        if not is_node_id_text(node):
            raise ProtocolError(ErrorCode.BAD_FRAME, "address node is not a node id")
        return cls(user, node)


@dataclass(frozen=True, order=True)
class GroupAddress:
    """A group on its host node (``#name@host``)."""

    name: str
    host: str

    def to_wire(self) -> dict[str, str]:
        return {"name": self.name, "host": self.host}

    @classmethod
    def from_wire(cls, value: object) -> GroupAddress:
        if not isinstance(value, dict) or set(value) != {"name", "host"}:
            raise ProtocolError(ErrorCode.BAD_FRAME, "a group is a map {name, host}")
        name, host = value["name"], value["host"]
        if not isinstance(name, str) or not isinstance(host, str):
            raise ProtocolError(ErrorCode.BAD_FRAME, "group fields are strings")
        check_user_name(name)
        if not is_node_id_text(host):
            raise ProtocolError(ErrorCode.BAD_FRAME, "group host is not a node id")
        return cls(name, host)


@dataclass(frozen=True)
class ParsedTarget:
    """A target typed by a person: ``bob``, ``bob@kitchen``, ``#team@kitchen``.

    ``node`` is a label or a node id text, or None for "this node".
    """

    name: str
    node: str | None
    is_group: bool


def parse_target(text: str) -> ParsedTarget:
    """Parse a human-typed address; the node part is resolved by the caller."""
    if not isinstance(text, str) or not text or len(text) > 200:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "empty or overlong address")
    is_group = text.startswith("#")
    body = text[1:] if is_group else text
    name, sep, node = body.partition("@")
    check_user_name(name)
    if sep:
        if not (is_node_id_text(node) or _NODE_NAME_RE.fullmatch(node)):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"bad node in address: {node[:60]!r}")
        return ParsedTarget(name, node, is_group)
    return ParsedTarget(name, None, is_group)
