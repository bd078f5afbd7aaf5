"""Invitation strings: one line an admin hands over to link a node or sign a user up.

``chinwag1:`` followed by lowercase unpadded base32 (the alphabet of node
ids) of the CBOR array ``[kind, url, node key (32 bytes), secret (16 bytes),
expires (Unix seconds)]``; ``kind`` is ``"p"`` (a peer node) or ``"u"`` (a
user on a node with closed sign-up). The string carries the inviting node's
key, so the joiner pins it without copying an id; the secret proves the
invitation and is single-use (the inviting node stores only its SHA-256).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from .addresses import NODE_ID_BYTES
from .codec import decode_cbor, encode_cbor
from .envelope import check_public_key
from .errors import ErrorCode, ProtocolError

PREFIX = "chinwag1:"
SECRET_BYTES = 16
KIND_PEER = "peer"
KIND_USER = "user"
_KIND_CODES = {KIND_PEER: "p", KIND_USER: "u"}
_KINDS = {code: kind for kind, code in _KIND_CODES.items()}
MAX_URL_CHARS = 300
MAX_INVITATION_CHARS = 1024


@dataclass(frozen=True)
class Invitation:
    kind: str
    url: str
    node_key: bytes
    secret: bytes
    expires_s: int


def secret_hash(secret: bytes) -> bytes:
    """What the inviting node stores (and looks an invitation up by)."""
    return hashlib.sha256(secret).digest()


def encode_invitation(invitation: Invitation) -> str:
    data = encode_cbor(
        [
            _KIND_CODES[invitation.kind],
            invitation.url,
            invitation.node_key,
            invitation.secret,
            invitation.expires_s,
        ]
    )
    return PREFIX + base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _bad(why: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, f"not a chinwag invitation: {why}")


def parse_invitation(text: str) -> Invitation:
    """Decode an invitation string; raise ``bad_request`` with the reason."""
    if not isinstance(text, str) or len(text) > MAX_INVITATION_CHARS:
        raise _bad("too long")
    text = "".join(text.split())  # tolerate line breaks added by mail or chat
    if not text.lower().startswith(PREFIX):
        raise _bad(f"it starts with {PREFIX!r}")
    body = text[len(PREFIX) :].upper()
    try:
        data = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError) as exc:
        raise _bad("damaged (not base32)") from exc
    try:
        item = decode_cbor(data, max_bytes=MAX_INVITATION_CHARS)
    except ProtocolError as exc:
        raise _bad("damaged") from exc
    if not isinstance(item, list) or len(item) != 5:
        raise _bad("damaged")
    code, url, key, secret, expires = item
    if code not in _KINDS:
        raise _bad("unknown kind")
    if (
        not isinstance(url, str)
        or not url.startswith(("http://", "https://"))
        or len(url) > MAX_URL_CHARS
    ):
        raise _bad("bad URL")
    if not isinstance(key, bytes) or len(key) != NODE_ID_BYTES:
        raise _bad("bad node key")
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise _bad("bad secret")
    if type(expires) is not int or expires < 0:
        raise _bad("bad expiry")
    return Invitation(_KINDS[code], url.rstrip("/"), check_public_key(key), secret, expires)
