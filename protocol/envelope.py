"""Signed envelopes and node keys.

An envelope is serialized once by its origin node; what is stored and
forwarded is the *unit* ``{env, sig, by}``: the exact envelope bytes, the
origin's Ed25519 signature over ``context || bytes`` and the origin's node id.
A receiver verifies the bytes it got and only then decodes them, so no
canonical re-encoding is ever needed. Every signature is domain-separated by a
context string naming its purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .addresses import GroupAddress, UserAddress, node_id_text
from .attachments import parse_attachments
from .codec import decode_cbor, encode_cbor
from .errors import ErrorCode, ProtocolError
from .limits import MAX_FRAME_BYTES, MAX_TEXT_BYTES

ENVELOPE_VERSION = 1

CONTEXT_ENVELOPE = b"chinwag/v1/envelope\x00"
CONTEXT_GROUP_RECORD = b"chinwag/v1/group-record\x00"
CONTEXT_HANDSHAKE = b"chinwag/v1/handshake\x00"
CONTEXT_ADDRESS = b"chinwag/v1/address-record\x00"

#: Encodings of the Ed25519 points of small order (and their non-canonical
#: twins), compared with the sign bit masked, the way libsodium does. A key among
#: these would let anyone forge signatures that verify for it.
_SMALL_ORDER = tuple(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)

_public_cache: dict[bytes, Ed25519PublicKey] = {}
_PUBLIC_CACHE_MAX = 4096


def check_public_key(raw: bytes) -> bytes:
    """Refuse malformed or small-order Ed25519 public keys; return ``raw``."""
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "a node key is 32 bytes")
    masked = raw[:31] + bytes([raw[31] & 0x7F])
    if masked in _SMALL_ORDER:
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "small-order node key refused")
    _public_key(raw)
    return raw


def _public_key(raw: bytes) -> Ed25519PublicKey:
    key = _public_cache.get(raw)
    if key is None:
        try:
            key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "malformed node key") from exc
        if len(_public_cache) >= _PUBLIC_CACHE_MAX:
            _public_cache.clear()
        _public_cache[raw] = key
    return key


def verify(
    context: bytes,
    public: bytes,
    data: bytes,
    signature: bytes,
    verified: Verified | None = None,
) -> None:
    """Check ``signature`` over ``context || data``; raise ``bad_signature``.

    ``verified`` holds signatures already checked over these exact bytes (in
    a worker thread, before a commit): one found there is not checked twice.
    """
    if verified is not None and (context, public, data, signature) in verified:
        return
    _public_key(public)  # a malformed key is refused as such
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "a signature is 64 bytes")
    try:
        _public_key(public).verify(signature, context + data)
    except InvalidSignature as exc:
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "signature does not verify") from exc


class Verified:
    """Signatures checked ahead of their use, each with its exact bytes.

    A receiver checks a batch of signatures where it may run beside the event
    loop and the store's writer (Ed25519 in ``cryptography`` releases the
    GIL), then hands this set to the code that opens the units: a signature
    is skipped there only for the identical (context, key, bytes, signature),
    so nothing unchecked ever passes. A failed check adds nothing; the opener
    checks that one again and refuses it with its usual error.
    """

    def __init__(self) -> None:
        self._seen: set[tuple[bytes, bytes, bytes, bytes]] = set()

    def check(self, context: bytes, public: bytes, data: bytes, signature: bytes) -> bool:
        """Verify now; remember and return True if the signature holds."""
        try:
            check_public_key(public)
            verify(context, public, data, signature)
        except ProtocolError:
            return False
        self._seen.add((context, public, data, signature))
        return True

    def merge(self, other: Verified) -> None:
        """Take in what ``other`` checked."""
        self._seen |= other._seen  # noqa: SLF001 - same class

    def __contains__(self, item: object) -> bool:
        return item in self._seen

    def __len__(self) -> int:
        return len(self._seen)


class NodeKey:
    """A node's Ed25519 key pair; the public half is the node id."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.id: str = node_id_text(self.public)

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        if len(seed) != 32:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "a key seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        """The 32-byte private seed, for the 0600 key file."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, context: bytes, data: bytes) -> bytes:
        return self._private.sign(context + data)


@dataclass(frozen=True)
class Envelope:
    """A decoded envelope. Exactly one of ``to`` and ``group`` is set."""

    id: int
    sender: UserAddress
    to: UserAddress | None
    group: GroupAddress | None
    ts: int
    kind: str
    body: dict[str, Any]
    v: int = ENVELOPE_VERSION

    @property
    def text(self) -> str | None:
        value = self.body.get("text")
        return value if isinstance(value, str) else None


def encode_envelope(env: Envelope) -> bytes:
    """Serialize an envelope (done once, by its origin)."""
    item: dict[str, Any] = {"v": env.v, "id": env.id, "from": env.sender.to_wire()}
    if env.to is not None:
        item["to"] = env.to.to_wire()
    if env.group is not None:
        item["group"] = env.group.to_wire()
    item.update({"ts": env.ts, "kind": env.kind, "body": env.body})
    return encode_cbor(item)


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


def decode_envelope(data: bytes) -> Envelope:
    """Decode envelope bytes (verify them first) and check their shape."""
    item = decode_cbor(data, max_bytes=MAX_FRAME_BYTES)
    if not isinstance(item, dict):
        raise _bad("an envelope is a map")
    if item.get("v") != ENVELOPE_VERSION:
        raise _bad("unknown envelope version")
    allowed = {"v", "id", "from", "to", "group", "ts", "kind", "body"}
    if not set(item) <= allowed:
        raise _bad("unknown envelope field")
    msg_id, ts, kind, body = item.get("id"), item.get("ts"), item.get("kind"), item.get("body")
    if not isinstance(msg_id, int) or isinstance(msg_id, bool) or not 0 < msg_id < 1 << 63:
        raise _bad("envelope id is a positive 64-bit integer")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise _bad("envelope ts is a non-negative integer")
    if not isinstance(kind, str) or not 0 < len(kind) <= 32:
        raise _bad("envelope kind is a short string")
    if not isinstance(body, dict):
        raise _bad("envelope body is a map")
    text = body.get("text")
    if text is not None and (
        not isinstance(text, str) or len(text.encode("utf-8")) > MAX_TEXT_BYTES
    ):
        raise _bad("envelope text is a string of at most 16 KiB")
    if "attachments" in body:
        # Checked as strictly as a device's send: a forged or malformed list
        # never reaches a queue (protocol/attachments.py).
        parse_attachments(body["attachments"])
    sender = UserAddress.from_wire(item.get("from"))
    to = UserAddress.from_wire(item["to"]) if "to" in item else None
    group = GroupAddress.from_wire(item["group"]) if "group" in item else None
    if (to is None) == (group is None):
        raise _bad("an envelope has exactly one of to and group")
    return Envelope(id=msg_id, sender=sender, to=to, group=group, ts=ts, kind=kind, body=body)


@dataclass(frozen=True)
class SignedUnit:
    """The stored and forwarded unit: envelope bytes, signature, origin."""

    env: bytes
    sig: bytes
    by: bytes

    def encode(self) -> bytes:
        return encode_cbor({"env": self.env, "sig": self.sig, "by": self.by})

    def to_wire(self) -> dict[str, bytes]:
        return {"env": self.env, "sig": self.sig, "by": self.by}

    @classmethod
    def from_wire(cls, item: object) -> SignedUnit:
        if not isinstance(item, dict) or set(item) != {"env", "sig", "by"}:
            raise _bad("a unit is a map {env, sig, by}")
        env, sig, by = item["env"], item["sig"], item["by"]
        if not isinstance(env, bytes) or not isinstance(sig, bytes) or not isinstance(by, bytes):
            raise _bad("unit fields are byte strings")
        if len(sig) != 64 or len(by) != 32:
            raise _bad("unit signature is 64 bytes and origin 32")
        return cls(env=env, sig=sig, by=by)

    @classmethod
    def decode(cls, data: bytes) -> SignedUnit:
        return cls.from_wire(decode_cbor(data, max_bytes=MAX_FRAME_BYTES + 256))


def sign_envelope(key: NodeKey, env: Envelope) -> SignedUnit:
    """Serialize and sign an envelope originated by ``key``'s node."""
    if env.sender.node != key.id:
        raise ProtocolError(ErrorCode.FORBIDDEN, "a node only originates its own users' messages")
    data = encode_envelope(env)
    return SignedUnit(env=data, sig=key.sign(CONTEXT_ENVELOPE, data), by=key.public)


def open_unit(
    unit: SignedUnit,
    *,
    expected_origin: bytes | None = None,
    verified: Verified | None = None,
) -> Envelope:
    """Verify a unit's signature, then decode it and check attribution.

    The origin (``by``) must sign the exact bytes, and the envelope's sender
    must be a user of the origin node. ``expected_origin`` pins the origin
    (the peer a 1:1 envelope arrived from); ``verified`` (see
    :class:`Verified`) spares a signature checked before.
    """
    if expected_origin is not None and unit.by != expected_origin:
        raise ProtocolError(ErrorCode.FORBIDDEN, "envelope origin is not the sending peer")
    check_public_key(unit.by)
    verify(CONTEXT_ENVELOPE, unit.by, unit.env, unit.sig, verified)
    env = decode_envelope(unit.env)
    if env.sender.node != node_id_text(unit.by):
        raise ProtocolError(ErrorCode.FORBIDDEN, "envelope sender is not a user of its origin")
    return env
