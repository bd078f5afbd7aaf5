"""The node-to-node link handshake and the sealing of every later frame.

Sans-I/O, h11 style: feed bytes in, get bytes or typed results out.

::

    dialer                                   responder
    hello {v, key, name, nonce, eph, want}  ->
                                            <-  welcome {v, key, name, nonce, eph, sig}
    confirm {sig, rec?, inv?}               ->

Both signatures cover the same transcript (versions, both node keys, both
names, both nonces, both X25519 ephemerals), prefixed by the handshake
context and the signer's role, so neither can be replayed or reflected.
The X25519 secret and both nonces derive one ChaCha20-Poly1305 key per
direction; every later frame is sealed with a 64-bit counter nonce, so a
replayed, reordered, dropped or injected frame fails to open.

The confirm may carry two optional fields. ``rec``: the dialer's signed
address record (protocol/address_record.py), so a node it asks for a link
can show an admin where the request comes from and dial back once approved.
``inv``: an invitation secret (protocol/invitation.py), sealed under a key
derived from this handshake's X25519 secret, so it never crosses the wire in
clear and a man in the middle cannot lift it; the responder then trusts the
dialer without an admin's approval.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .address_record import AddressRecord, open_record
from .addresses import check_node_name
from .codec import decode_cbor, encode_cbor
from .envelope import CONTEXT_HANDSHAKE, NodeKey, check_public_key, verify
from .errors import ErrorCode, ProtocolError

FED_SUBPROTOCOL = "chinwag.fed.v1"
HANDSHAKE_VERSION = 1
MAX_HANDSHAKE_BYTES = 4096
NONCE_BYTES = 32
_ROLE_DIALER = b"dialer\x00"
_ROLE_RESPONDER = b"responder\x00"
_LINK_INFO = b"chinwag/v1/link\x00"
_INVITATION_INFO = b"chinwag/v1/invitation\x00"
MAX_INVITATION_SECRET = 64
_MAX_COUNTER = (1 << 64) - 1

Rng = Callable[[int], bytes]

# The allowed transitions, at a glance: state -> {method: next state}.
_DIALER_STATES: dict[str, dict[str, str]] = {
    "new": {"start": "sent_hello"},
    "sent_hello": {"receive_welcome": "done"},
    "done": {"result": "done"},
}
_RESPONDER_STATES: dict[str, dict[str, str]] = {
    "new": {"receive_hello": "got_hello"},
    "got_hello": {"welcome": "sent_welcome", "refuse": "refused"},
    "sent_welcome": {"receive_confirm": "done"},
    # A responder that must see the dialer's proof before it decides (an
    # unknown key is remembered only once proven) refuses after the confirm.
    "done": {"refuse": "refused"},
}


def _step(table: dict[str, dict[str, str]], state: str, method: str) -> str:
    nxt = table.get(state, {}).get(method)
    if nxt is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"handshake: {method} not allowed in {state}")
    return nxt


@dataclass(frozen=True)
class PeerHello:
    """What the responder learns from a hello, before deciding trust."""

    key: bytes
    name: str


class LinkCipher:
    """Seals and opens the frames of one link (one key per direction)."""

    def __init__(self, send_key: bytes, receive_key: bytes) -> None:
        self._send = ChaCha20Poly1305(send_key)
        self._receive = ChaCha20Poly1305(receive_key)
        self._send_counter = 0
        self._receive_counter = 0

    @staticmethod
    def _nonce(counter: int) -> bytes:
        return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")

    def seal(self, plaintext: bytes) -> bytes:
        if self._send_counter >= _MAX_COUNTER:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "link counter exhausted; reconnect")
        sealed = self._send.encrypt(self._nonce(self._send_counter), plaintext, None)
        self._send_counter += 1
        return sealed

    def open(self, sealed: bytes) -> bytes:
        if self._receive_counter >= _MAX_COUNTER:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "link counter exhausted; reconnect")
        try:
            plain = self._receive.decrypt(self._nonce(self._receive_counter), bytes(sealed), None)
        except Exception as exc:  # InvalidTag, or garbage of the wrong size
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE, "sealed frame does not open at the expected counter"
            ) from exc
        self._receive_counter += 1
        return plain


@dataclass(frozen=True)
class LinkKeys:
    """The outcome of a handshake: who the peer is and the link's cipher."""

    peer_key: bytes
    peer_name: str
    cipher: LinkCipher
    transcript_hash: bytes
    #: The dialer's own signed address record, if its confirm had one (responder only).
    record: AddressRecord | None = None
    #: The invitation secret the dialer presented (responder only).
    invitation: bytes | None = None


def _decode(
    data: bytes,
    kind: str,
    fields: frozenset[str],
    *,
    refusal_ok: bool = False,
    optional: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError(ErrorCode.BAD_FRAME, "handshake messages are bytes")
    item = decode_cbor(bytes(data), max_bytes=MAX_HANDSHAKE_BYTES)
    if not isinstance(item, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "a handshake message is a map")
    if refusal_ok:  # only the dialer, waiting for a welcome, may be refused
        refusal = _refusal(item)
        if refusal is not None:
            raise refusal
    if item.get("t") != kind or not fields | {"t"} <= set(item) <= fields | optional | {"t"}:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"expected a well-formed {kind}")
    if "v" in fields:
        version = item["v"]
        # bool is an int in Python (True == 1): refuse it explicitly.
        if type(version) is not int or version != HANDSHAKE_VERSION:
            raise ProtocolError(ErrorCode.BAD_FRAME, "unsupported handshake version")
    return item


def _bytes_field(item: dict[str, Any], key: str, size: int) -> bytes:
    value = item[key]
    if not isinstance(value, bytes) or len(value) != size:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"handshake field {key!r} is {size} bytes")
    return value


def _name_field(item: dict[str, Any]) -> str:
    name = item["name"]
    try:
        return check_node_name(name)
    except ProtocolError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, "bad node name in handshake") from exc


def _refusal(item: object) -> ProtocolError | None:
    """The error a well-formed refusal ``{t: "refuse", code, message}`` carries."""
    if not isinstance(item, dict) or set(item) != {"t", "code", "message"}:
        return None
    code, message = item["code"], item["message"]
    if item["t"] != "refuse" or not isinstance(code, str) or not isinstance(message, str):
        return None
    try:
        known = ErrorCode(code)
    except ValueError:  # a code from a newer peer: still a refusal
        known = ErrorCode.FORBIDDEN
    # The peer's text ends up in logs: keep it short and printable.
    text = "".join(c for c in message[:200] if c.isprintable()) or "refused"
    return ProtocolError(known, f"peer refused the link: {text}")


def decode_refusal(data: bytes) -> ProtocolError | None:
    """The error a refusal message carries, or None if ``data`` is not one."""
    if not isinstance(data, bytes | bytearray):
        return None
    try:
        item = decode_cbor(bytes(data), max_bytes=MAX_HANDSHAKE_BYTES)
    except ProtocolError:
        return None
    return _refusal(item)


def _ephemeral(rng: Rng) -> tuple[X25519PrivateKey, bytes]:
    private = X25519PrivateKey.from_private_bytes(rng(32))
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return private, public


def _shared(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # low-order point: all-zero secret
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "bad ephemeral key") from exc
    if shared == bytes(32):
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "bad ephemeral key")
    return shared


def _keys(
    shared: bytes, dialer_nonce: bytes, responder_nonce: bytes, transcript: bytes
) -> tuple[bytes, bytes, bytes]:
    digest = hashlib.sha256(transcript).digest()
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=64,
        salt=dialer_nonce + responder_nonce,
        info=_LINK_INFO + digest,
    ).derive(shared)
    return okm[:32], okm[32:], digest


def _invitation_cipher(shared: bytes, nonces: bytes, digest: bytes) -> ChaCha20Poly1305:
    """A one-use key for the confirm's ``inv`` (never a link key)."""
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=nonces, info=_INVITATION_INFO + digest
    ).derive(shared)
    return ChaCha20Poly1305(key)


def _transcript(
    dialer_key: bytes,
    responder_key: bytes,
    dialer_name: str,
    responder_name: str,
    dialer_nonce: bytes,
    responder_nonce: bytes,
    dialer_eph: bytes,
    responder_eph: bytes,
) -> bytes:
    return encode_cbor(
        [
            HANDSHAKE_VERSION,
            dialer_key,
            responder_key,
            dialer_name,
            responder_name,
            dialer_nonce,
            responder_nonce,
            dialer_eph,
            responder_eph,
        ]
    )


class DialerHandshake:
    """The side that opened the connection."""

    def __init__(
        self,
        key: NodeKey,
        name: str,
        expected_peer: bytes | None,
        *,
        rng: Rng = os.urandom,
        record: dict[str, bytes] | None = None,
        invitation: bytes | None = None,
    ) -> None:
        """``record``: this node's signed address record (``make_record``), sent
        in the confirm; ``invitation``: a secret to present (sealed)."""
        if invitation is not None and not 0 < len(invitation) <= MAX_INVITATION_SECRET:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "bad invitation secret")
        self._record = record
        self._invitation = invitation
        self._key = key
        self._name = check_node_name(name)
        self._expected = expected_peer
        self._nonce = rng(NONCE_BYTES)
        self._eph_private, self._eph_public = _ephemeral(rng)
        self._state = "new"
        self._result: LinkKeys | None = None

    def start(self) -> bytes:
        self._state = _step(_DIALER_STATES, self._state, "start")
        return encode_cbor(
            {
                "t": "hello",
                "v": HANDSHAKE_VERSION,
                "key": self._key.public,
                "name": self._name,
                "nonce": self._nonce,
                "eph": self._eph_public,
                "want": self._expected,
            }
        )

    def receive_welcome(self, data: bytes) -> bytes:
        self._state = _step(_DIALER_STATES, self._state, "receive_welcome")
        self._state = "failed"
        item = _decode(
            data,
            "welcome",
            frozenset({"v", "key", "name", "nonce", "eph", "sig"}),
            refusal_ok=True,
        )
        peer = check_public_key(_bytes_field(item, "key", 32))
        if self._expected is not None and peer != self._expected:
            raise ProtocolError(ErrorCode.FORBIDDEN, "the peer is not the node we dialed")
        if peer == self._key.public:
            raise ProtocolError(ErrorCode.FORBIDDEN, "dialed ourselves")
        name = _name_field(item)
        nonce = _bytes_field(item, "nonce", NONCE_BYTES)
        eph = _bytes_field(item, "eph", 32)
        sig = _bytes_field(item, "sig", 64)
        transcript = _transcript(
            self._key.public, peer, self._name, name, self._nonce, nonce, self._eph_public, eph
        )
        verify(CONTEXT_HANDSHAKE, peer, _ROLE_RESPONDER + transcript, sig)
        shared = _shared(self._eph_private, eph)
        out_key, in_key, digest = _keys(shared, self._nonce, nonce, transcript)
        self._result = LinkKeys(peer, name, LinkCipher(out_key, in_key), digest)
        self._state = "done"
        confirm: dict[str, Any] = {
            "t": "confirm",
            "sig": self._key.sign(CONTEXT_HANDSHAKE, _ROLE_DIALER + transcript),
        }
        if self._record is not None:
            confirm["rec"] = dict(self._record)
        if self._invitation is not None:
            sealer = _invitation_cipher(shared, self._nonce + nonce, digest)
            confirm["inv"] = sealer.encrypt(bytes(12), self._invitation, None)
        return encode_cbor(confirm)

    def result(self) -> LinkKeys:
        self._state = _step(_DIALER_STATES, self._state, "result")
        assert self._result is not None
        return self._result


class ResponderHandshake:
    """The side that accepted the connection."""

    def __init__(self, key: NodeKey, name: str, *, rng: Rng = os.urandom) -> None:
        self._key = key
        self._name = check_node_name(name)
        self._nonce = rng(NONCE_BYTES)
        self._eph_private, self._eph_public = _ephemeral(rng)
        self._state = "new"
        self._peer: PeerHello | None = None
        self._peer_nonce = b""
        self._peer_eph = b""
        self._transcript = b""

    def receive_hello(self, data: bytes) -> PeerHello:
        self._state = _step(_RESPONDER_STATES, self._state, "receive_hello")
        self._state = "failed"
        item = _decode(data, "hello", frozenset({"v", "key", "name", "nonce", "eph", "want"}))
        want = item["want"]
        if want is not None:
            want = _bytes_field(item, "want", 32)
            if want != self._key.public:
                raise ProtocolError(ErrorCode.FORBIDDEN, "the dialer wants another node")
        peer = check_public_key(_bytes_field(item, "key", 32))
        if peer == self._key.public:
            raise ProtocolError(ErrorCode.FORBIDDEN, "a node cannot link to itself")
        self._peer = PeerHello(peer, _name_field(item))
        self._peer_nonce = _bytes_field(item, "nonce", NONCE_BYTES)
        self._peer_eph = _bytes_field(item, "eph", 32)
        self._state = "got_hello"
        return self._peer

    def welcome(self) -> bytes:
        self._state = _step(_RESPONDER_STATES, self._state, "welcome")
        assert self._peer is not None
        self._transcript = _transcript(
            self._peer.key,
            self._key.public,
            self._peer.name,
            self._name,
            self._peer_nonce,
            self._nonce,
            self._peer_eph,
            self._eph_public,
        )
        return encode_cbor(
            {
                "t": "welcome",
                "v": HANDSHAKE_VERSION,
                "key": self._key.public,
                "name": self._name,
                "nonce": self._nonce,
                "eph": self._eph_public,
                "sig": self._key.sign(CONTEXT_HANDSHAKE, _ROLE_RESPONDER + self._transcript),
            }
        )

    def refuse(self, code: ErrorCode, message: str) -> bytes:
        """A refusal, after the hello or after a verified confirm.

        After the confirm it is sent in place of the first sealed frame; the
        dialer tells it apart with :func:`decode_refusal`.
        """
        self._state = _step(_RESPONDER_STATES, self._state, "refuse")
        return encode_cbor({"t": "refuse", "code": str(code), "message": message[:200]})

    def receive_confirm(self, data: bytes) -> LinkKeys:
        self._state = _step(_RESPONDER_STATES, self._state, "receive_confirm")
        self._state = "failed"
        assert self._peer is not None
        item = _decode(data, "confirm", frozenset({"sig"}), optional=frozenset({"rec", "inv"}))
        sig = _bytes_field(item, "sig", 64)
        verify(CONTEXT_HANDSHAKE, self._peer.key, _ROLE_DIALER + self._transcript, sig)
        shared = _shared(self._eph_private, self._peer_eph)
        in_key, out_key, digest = _keys(shared, self._peer_nonce, self._nonce, self._transcript)
        record = None
        if "rec" in item:
            record = open_record(item["rec"])
            if record.key != self._peer.key:
                raise ProtocolError(ErrorCode.BAD_FRAME, "the confirm's record is another node's")
        invitation = None
        if "inv" in item:
            sealed = item["inv"]
            if not isinstance(sealed, bytes) or len(sealed) > MAX_INVITATION_SECRET + 16:
                raise ProtocolError(ErrorCode.BAD_FRAME, "handshake field 'inv' is bytes")
            opener = _invitation_cipher(shared, self._peer_nonce + self._nonce, digest)
            try:
                invitation = opener.decrypt(bytes(12), sealed, None)
            except Exception as exc:  # InvalidTag
                raise ProtocolError(
                    ErrorCode.BAD_SIGNATURE, "the invitation does not open"
                ) from exc
        self._state = "done"
        return LinkKeys(
            self._peer.key,
            self._peer.name,
            LinkCipher(out_key, in_key),
            digest,
            record=record,
            invitation=invitation,
        )
