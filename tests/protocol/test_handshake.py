"""The node-to-node link handshake and link sealing, driven with bytes only (no sockets)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import hypothesis.strategies as st
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings

from chinwag.protocol.codec import decode_cbor, encode_cbor
from chinwag.protocol.envelope import CONTEXT_HANDSHAKE, NodeKey, verify
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.handshake import (
    FED_SUBPROTOCOL,
    HANDSHAKE_VERSION,
    DialerHandshake,
    LinkCipher,
    LinkKeys,
    PeerHello,
    ResponderHandshake,
    decode_refusal,
)

A, B, M = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()

#: Small-order Ed25519 encodings (and a sign-bit twin): anyone could forge for them.
SMALL_ORDER_ED25519 = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
]
#: Low-order X25519 points: the shared secret with any private key is all zero.
LOW_ORDER_X25519 = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


# ------------------------------------------------------------------ helpers


def pair(
    expected: bytes | None = B.public,
    dialer_rng: Callable[[int], bytes] | None = None,
    responder_rng: Callable[[int], bytes] | None = None,
) -> tuple[DialerHandshake, ResponderHandshake]:
    dialer = (
        DialerHandshake(A, "alpha", expected)
        if dialer_rng is None
        else DialerHandshake(A, "alpha", expected, rng=dialer_rng)
    )
    responder = (
        ResponderHandshake(B, "beta")
        if responder_rng is None
        else ResponderHandshake(B, "beta", rng=responder_rng)
    )
    return dialer, responder


def handshake() -> tuple[LinkKeys, LinkKeys]:
    dialer, responder = pair()
    hello = responder.receive_hello(dialer.start())
    assert hello == PeerHello(key=A.public, name="alpha")
    confirm = dialer.receive_welcome(responder.welcome())
    return dialer.result(), responder.receive_confirm(confirm)


def as_map(message: bytes) -> dict[str, Any]:
    item = decode_cbor(message)
    assert isinstance(item, dict)
    return item


def transcript(hello: dict[str, Any], welcome: dict[str, Any]) -> bytes:
    """The transcript exactly as the spec words it, built independently."""
    return encode_cbor(
        [
            HANDSHAKE_VERSION,
            hello["key"],
            welcome["key"],
            hello["name"],
            welcome["name"],
            hello["nonce"],
            welcome["nonce"],
            hello["eph"],
            welcome["eph"],
        ]
    )


def responder_sig(key: NodeKey, hello: dict[str, Any], welcome: dict[str, Any]) -> bytes:
    return key.sign(CONTEXT_HANDSHAKE, b"responder\x00" + transcript(hello, welcome))


def dialer_sig(key: NodeKey, hello: dict[str, Any], welcome: dict[str, Any]) -> bytes:
    return key.sign(CONTEXT_HANDSHAKE, b"dialer\x00" + transcript(hello, welcome))


def x25519_public(private: bytes) -> bytes:
    return (
        X25519PrivateKey.from_private_bytes(private)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


class RecordingRng:
    """A deterministic rng that remembers what it handed out."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.given: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            block = len(self.given).to_bytes(4, "big") + len(out).to_bytes(4, "big")
            out += hashlib.sha256(self.seed + block).digest()
        self.given.append(out[:n])
        return out[:n]

    def private_for(self, public: bytes) -> bytes:
        matches = [g for g in self.given if len(g) == 32 and x25519_public(g) == public]
        assert len(matches) == 1
        return matches[0]


@contextmanager
def raises_code(code: ErrorCode) -> Iterator[None]:
    with pytest.raises(ProtocolError) as info:
        yield
    assert info.value.code is code, info.value


# ----------------------------------------------------------- the happy path


def test_constants() -> None:
    assert FED_SUBPROTOCOL == "chinwag.fed.v1"
    assert HANDSHAKE_VERSION == 1


def test_both_sides_agree_and_frames_round_trip_both_ways() -> None:
    d, r = handshake()
    assert d.transcript_hash == r.transcript_hash and len(d.transcript_hash) == 32
    assert (d.peer_key, d.peer_name) == (B.public, "beta")
    assert (r.peer_key, r.peer_name) == (A.public, "alpha")
    for i in range(300):
        to_r = b"to responder %d" % i * (i % 7)
        to_d = b"to dialer %d" % i
        sealed = d.cipher.seal(to_r)
        assert to_r not in sealed or not to_r
        assert r.cipher.open(sealed) == to_r
        assert d.cipher.open(r.cipher.seal(to_d)) == to_d
    # Bursts in one direction, then the other.
    frames = [d.cipher.seal(bytes([i]) * i) for i in range(100)]
    assert [r.cipher.open(f) for f in frames] == [bytes([i]) * i for i in range(100)]
    frames = [r.cipher.seal(bytes([i])) for i in range(100)]
    assert [d.cipher.open(f) for f in frames] == [bytes([i]) for i in range(100)]


def test_every_handshake_has_fresh_keys() -> None:
    d1, _ = handshake()
    d2, r2 = handshake()
    assert d1.transcript_hash != d2.transcript_hash
    first = d1.cipher.seal(b"same")
    assert first != d2.cipher.seal(b"same")
    with raises_code(ErrorCode.BAD_SIGNATURE):
        r2.cipher.open(first)  # a frame from another link does not open here


def test_no_expected_peer_links_to_whoever_answers() -> None:
    dialer, responder = pair(expected=None)
    hello = dialer.start()
    assert as_map(hello)["want"] is None
    responder.receive_hello(hello)
    responder.receive_confirm(dialer.receive_welcome(responder.welcome()))
    assert dialer.result().peer_key == B.public


def test_wire_format_signatures_and_keys_follow_the_spec() -> None:
    d_rng, r_rng = RecordingRng(b"dialer"), RecordingRng(b"responder")
    dialer, responder = pair(dialer_rng=d_rng, responder_rng=r_rng)
    hello_bytes = dialer.start()
    hello = as_map(hello_bytes)
    assert set(hello) == {"t", "v", "key", "name", "nonce", "eph", "want"}
    assert (hello["t"], hello["v"], hello["key"], hello["name"]) == ("hello", 1, A.public, "alpha")
    assert len(hello["nonce"]) == 32 and hello["nonce"] in d_rng.given
    assert hello["want"] == B.public
    responder.receive_hello(hello_bytes)
    welcome_bytes = responder.welcome()
    welcome = as_map(welcome_bytes)
    assert set(welcome) == {"t", "v", "key", "name", "nonce", "eph", "sig"}
    assert (welcome["t"], welcome["v"], welcome["key"]) == ("welcome", 1, B.public)
    assert welcome["nonce"] in r_rng.given
    confirm_bytes = dialer.receive_welcome(welcome_bytes)
    confirm = as_map(confirm_bytes)
    assert set(confirm) == {"t", "sig"} and confirm["t"] == "confirm"
    r_keys = responder.receive_confirm(confirm_bytes)
    d_keys = dialer.result()

    # Role-separated signatures over the transcript.
    t = transcript(hello, welcome)
    verify(CONTEXT_HANDSHAKE, B.public, b"responder\x00" + t, welcome["sig"])
    verify(CONTEXT_HANDSHAKE, A.public, b"dialer\x00" + t, confirm["sig"])
    assert d_keys.transcript_hash == hashlib.sha256(t).digest()

    # Key schedule, recomputed from the ephemeral the rng handed out.
    d_eph = X25519PrivateKey.from_private_bytes(d_rng.private_for(hello["eph"]))
    shared = d_eph.exchange(X25519PublicKey.from_public_bytes(welcome["eph"]))
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=64,
        salt=hello["nonce"] + welcome["nonce"],
        info=b"chinwag/v1/link\x00" + hashlib.sha256(t).digest(),
    ).derive(shared)
    d2r, r2d = ChaCha20Poly1305(okm[:32]), ChaCha20Poly1305(okm[32:])

    def nonce(counter: int) -> bytes:
        return bytes(4) + counter.to_bytes(8, "big")

    for counter in range(3):
        up = d_keys.cipher.seal(b"up %d" % counter)
        assert up == d2r.encrypt(nonce(counter), b"up %d" % counter, None)
        assert r_keys.cipher.open(up) == b"up %d" % counter
        down = r_keys.cipher.seal(b"down")
        assert down == r2d.encrypt(nonce(counter), b"down", None)
        assert d_keys.cipher.open(down) == b"down"
    assert r_keys.cipher.open(d2r.encrypt(nonce(3), b"x", None)) == b"x"
    assert d_keys.cipher.open(r2d.encrypt(nonce(3), b"y", None)) == b"y"


def test_the_injected_rng_makes_the_handshake_deterministic() -> None:
    one = DialerHandshake(A, "alpha", None, rng=RecordingRng(b"s")).start()
    two = DialerHandshake(A, "alpha", None, rng=RecordingRng(b"s")).start()
    assert one == two
    assert one != DialerHandshake(A, "alpha", None, rng=RecordingRng(b"t")).start()


# ------------------------------------------------------------- tampering


def _flip(message: bytes, bit: int) -> bytes:
    raw = bytearray(message)
    raw[bit // 8] ^= 1 << (bit % 8)
    return bytes(raw)


def _run_with_flip(which: str, bit: int) -> str:
    """Run a handshake with one bit flipped in one message; return the failing step."""
    dialer, responder = pair()
    step = "receive_hello"
    try:
        hello = dialer.start()
        responder.receive_hello(_flip(hello, bit) if which == "hello" else hello)
        step = "receive_welcome"
        welcome = responder.welcome()
        confirm = dialer.receive_welcome(_flip(welcome, bit) if which == "welcome" else welcome)
        step = "receive_confirm"
        responder.receive_confirm(_flip(confirm, bit) if which == "confirm" else confirm)
    except ProtocolError:
        return step
    return "undetected"


@pytest.mark.parametrize("which", ["hello", "welcome", "confirm"])
def test_every_flipped_bit_in_every_handshake_message_fails(which: str) -> None:
    dialer, responder = pair()
    hello = dialer.start()
    responder.receive_hello(hello)
    welcome = responder.welcome()
    confirm = dialer.receive_welcome(welcome)
    size = len({"hello": hello, "welcome": welcome, "confirm": confirm}[which])
    allowed = {
        "hello": {"receive_hello", "receive_welcome"},  # the transcript differs
        "welcome": {"receive_welcome"},
        "confirm": {"receive_confirm"},
    }[which]
    for bit in range(size * 8):
        assert _run_with_flip(which, bit) in allowed, (which, bit)


def test_wrong_expected_peer_is_forbidden() -> None:
    # The dialer wants M, but B answers: B refuses at once.
    dialer = DialerHandshake(A, "alpha", M.public)
    with raises_code(ErrorCode.FORBIDDEN):
        ResponderHandshake(B, "beta").receive_hello(dialer.start())

    # A man in the middle strips "want" and answers as himself: the dialer refuses.
    dialer = DialerHandshake(A, "alpha", B.public)
    hello = as_map(dialer.start())
    hello["want"] = None
    mallory = ResponderHandshake(M, "mallory")
    mallory.receive_hello(encode_cbor(hello))
    with raises_code(ErrorCode.FORBIDDEN):
        dialer.receive_welcome(mallory.welcome())


@pytest.mark.parametrize(
    ("message", "field"),
    [("hello", "eph"), ("hello", "nonce"), ("welcome", "eph"), ("welcome", "nonce")],
)
def test_man_in_the_middle_substituting_ephemeral_or_nonce_fails(message: str, field: str) -> None:
    dialer, responder = pair()
    mallory_hello = as_map(DialerHandshake(M, "mallory", None).start())
    mallory_resp = ResponderHandshake(M, "mallory")
    mallory_resp.receive_hello(DialerHandshake(A, "alpha", None).start())
    mallory_welcome = as_map(mallory_resp.welcome())

    hello = as_map(dialer.start())
    if message == "hello":
        hello[field] = mallory_hello[field]
    responder.receive_hello(encode_cbor(hello))
    welcome = as_map(responder.welcome())
    if message == "welcome":
        welcome[field] = mallory_welcome[field]
    with raises_code(ErrorCode.BAD_SIGNATURE):
        dialer.receive_welcome(encode_cbor(welcome))


def test_man_in_the_middle_cannot_complete_with_the_responder_either() -> None:
    # Mallory swaps the dialer's ephemeral for his own, then relays the real confirm
    # from a separate honest run: the dialer's signature is over another transcript.
    dialer, responder = pair()
    hello = as_map(dialer.start())
    hello["eph"] = x25519_public(b"\x42" * 32)
    responder.receive_hello(encode_cbor(hello))
    responder.welcome()
    d2, r2 = pair()
    r2.receive_hello(d2.start())
    stolen_confirm = d2.receive_welcome(r2.welcome())
    with raises_code(ErrorCode.BAD_SIGNATURE):
        responder.receive_confirm(stolen_confirm)


def test_responder_signature_cannot_be_reflected_as_the_dialers() -> None:
    dialer, responder = pair()
    responder.receive_hello(dialer.start())
    welcome = as_map(responder.welcome())
    with raises_code(ErrorCode.BAD_SIGNATURE):
        responder.receive_confirm(encode_cbor({"t": "confirm", "sig": welcome["sig"]}))


def test_dialer_signature_cannot_be_reflected_as_the_responders() -> None:
    # B's signature in the dialer role, over this very transcript, is not a welcome's.
    dialer, responder = pair()
    hello = as_map(dialer.start())
    responder.receive_hello(encode_cbor(hello))
    welcome = as_map(responder.welcome())
    welcome["sig"] = dialer_sig(B, hello, welcome)  # right key and transcript, wrong role
    with raises_code(ErrorCode.BAD_SIGNATURE):
        dialer.receive_welcome(encode_cbor(welcome))


def test_a_signature_by_another_key_fails() -> None:
    dialer, responder = pair(expected=None)
    hello = as_map(dialer.start())
    responder.receive_hello(encode_cbor(hello))
    welcome = as_map(responder.welcome())
    welcome["sig"] = responder_sig(M, hello, welcome)
    with raises_code(ErrorCode.BAD_SIGNATURE):
        dialer.receive_welcome(encode_cbor(welcome))


# ------------------------------------------------------------ sealed frames


def test_replayed_reordered_dropped_or_reflected_frames_fail() -> None:
    d, r = handshake()
    f0, f1, f2 = d.cipher.seal(b"0"), d.cipher.seal(b"1"), d.cipher.seal(b"2")
    with raises_code(ErrorCode.BAD_SIGNATURE):
        r.cipher.open(f1)  # f0 dropped, or f1 reordered ahead of it
    assert r.cipher.open(f0) == b"0"
    with raises_code(ErrorCode.BAD_SIGNATURE):
        r.cipher.open(f0)  # replay
    with raises_code(ErrorCode.BAD_SIGNATURE):
        r.cipher.open(f2)  # f1 dropped
    assert r.cipher.open(f1) == b"1"
    with raises_code(ErrorCode.BAD_SIGNATURE):
        d.cipher.open(f2)  # reflected back to its sender: the other direction's key
    with raises_code(ErrorCode.BAD_SIGNATURE):
        r.cipher.open(f2[:-1])  # truncated
    with raises_code(ErrorCode.BAD_SIGNATURE):
        r.cipher.open(_flip(f2, 3))  # tampered
    assert r.cipher.open(f2) == b"2"
    for junk in (b"", b"\x00" * 15, b"\x00" * 16, b"\xff" * 64):
        with raises_code(ErrorCode.BAD_SIGNATURE):
            r.cipher.open(junk)


def test_counter_exhaustion_raises() -> None:
    d, r = handshake()
    # Jump both counters to the last usable value (2**64 - 2) rather than sealing 2**64 frames.
    d.cipher._send_counter = (1 << 64) - 2  # noqa: SLF001
    r.cipher._receive_counter = (1 << 64) - 2  # noqa: SLF001
    assert r.cipher.open(d.cipher.seal(b"last")) == b"last"
    with pytest.raises(ProtocolError):
        d.cipher.seal(b"one too many")
    with pytest.raises(ProtocolError):
        r.cipher.open(b"\x00" * 32)


def test_link_cipher_directions_are_independent() -> None:
    k1, k2 = b"\x01" * 32, b"\x02" * 32
    left, right = LinkCipher(k1, k2), LinkCipher(k2, k1)
    assert right.open(left.seal(b"a")) == b"a"
    assert left.open(right.seal(b"b")) == b"b"
    with raises_code(ErrorCode.BAD_SIGNATURE):
        left.open(left.seal(b"c"))


# --------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "code", [ErrorCode.FORBIDDEN, ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE]
)
def test_refusal_is_decoded_on_the_dialer_side_with_its_code(code: ErrorCode) -> None:
    dialer, responder = pair()
    responder.receive_hello(dialer.start())
    refusal = responder.refuse(code, "pending admin approval")
    decoded = decode_refusal(refusal)
    assert decoded is not None and decoded.code is code and "pending" in decoded.message
    with raises_code(code):
        dialer.receive_welcome(refusal)
    with raises_code(ErrorCode.BAD_REQUEST):
        dialer.result()  # a refused handshake has no result


def test_responder_may_refuse_after_the_verified_confirm() -> None:
    """An unknown key is refused only once proven (node/federation.py)."""
    dialer, responder = pair()
    responder.receive_hello(dialer.start())
    confirm = dialer.receive_welcome(responder.welcome())
    keys = responder.receive_confirm(confirm)
    refusal = responder.refuse(ErrorCode.FORBIDDEN, "unknown node; pending admin approval")
    decoded = decode_refusal(refusal)
    assert decoded is not None and decoded.code is ErrorCode.FORBIDDEN
    # The refusal is no sealed frame: it never opens as one.
    with raises_code(ErrorCode.BAD_SIGNATURE):
        dialer.result().cipher.open(refusal)
    assert keys.transcript_hash == dialer.result().transcript_hash
    with raises_code(ErrorCode.BAD_REQUEST):
        responder.refuse(ErrorCode.FORBIDDEN, "twice")


def test_no_refusal_before_welcome_is_sent_after_a_bad_confirm() -> None:
    dialer, responder = pair()
    responder.receive_hello(dialer.start())
    dialer.receive_welcome(responder.welcome())
    with pytest.raises(ProtocolError):
        responder.receive_confirm(b"not a confirm")
    with raises_code(ErrorCode.BAD_REQUEST):
        responder.refuse(ErrorCode.FORBIDDEN, "a failed handshake refuses nothing")


def test_decode_refusal_tells_a_refusal_from_anything_else() -> None:
    dialer, responder = pair()
    responder.receive_hello(dialer.start())
    assert decode_refusal(responder.welcome()) is None
    for other in (b"", b"\xff", encode_cbor({"t": "refuse"}), encode_cbor([1, 2])):
        assert decode_refusal(other) is None
    odd = decode_refusal(encode_cbor({"t": "refuse", "code": "from_the_future", "message": "x"}))
    assert odd is not None and odd.code is ErrorCode.FORBIDDEN
    noisy = decode_refusal(
        encode_cbor({"t": "refuse", "code": "forbidden", "message": "a\x1b[2Jb\n" + "z" * 999})
    )
    assert noisy is not None and "\x1b" not in noisy.message and "\n" not in noisy.message
    assert len(noisy.message) < 300


def test_only_the_dialer_accepts_a_refusal() -> None:
    # A dialer cannot make the responder raise a code of its choosing.
    refusal = encode_cbor({"t": "refuse", "code": "internal", "message": "boo"})
    with raises_code(ErrorCode.BAD_FRAME):
        ResponderHandshake(B, "beta").receive_hello(refusal)
    dialer, responder = pair()
    responder.receive_hello(dialer.start())
    responder.welcome()
    with raises_code(ErrorCode.BAD_FRAME):
        responder.receive_confirm(refusal)


# ---------------------------------------------------------- bad node keys


@pytest.mark.parametrize("bad_key", SMALL_ORDER_ED25519)
def test_small_order_node_key_in_hello_is_refused(bad_key: bytes) -> None:
    hello = as_map(DialerHandshake(A, "alpha", None).start())
    hello["key"] = bad_key
    with raises_code(ErrorCode.BAD_SIGNATURE):
        ResponderHandshake(B, "beta").receive_hello(encode_cbor(hello))


@pytest.mark.parametrize("bad_key", SMALL_ORDER_ED25519)
def test_small_order_node_key_in_welcome_is_refused(bad_key: bytes) -> None:
    dialer, responder = pair(expected=None)
    responder.receive_hello(dialer.start())
    welcome = as_map(responder.welcome())
    welcome["key"] = bad_key
    with raises_code(ErrorCode.BAD_SIGNATURE):
        dialer.receive_welcome(encode_cbor(welcome))


def test_a_hello_with_the_responders_own_key_is_forbidden() -> None:
    hello = as_map(DialerHandshake(A, "alpha", None).start())
    hello["key"] = B.public
    with raises_code(ErrorCode.FORBIDDEN):
        ResponderHandshake(B, "beta").receive_hello(encode_cbor(hello))


def test_a_welcome_with_the_dialers_own_key_is_forbidden() -> None:
    dialer = DialerHandshake(A, "alpha", None)
    hello = as_map(dialer.start())
    looped = ResponderHandshake(A, "alpha")
    with raises_code(ErrorCode.FORBIDDEN):  # the responder already refuses itself
        looped.receive_hello(encode_cbor(hello))
    welcome = {
        "t": "welcome", "v": 1, "key": A.public, "name": "alpha",
        "nonce": b"\x07" * 32, "eph": x25519_public(b"\x09" * 32),
    }  # fmt: skip
    welcome["sig"] = responder_sig(A, hello, welcome)
    with raises_code(ErrorCode.FORBIDDEN):
        dialer.receive_welcome(encode_cbor(welcome))


# ------------------------------------------------------ low-order ephemerals


@pytest.mark.parametrize("eph", LOW_ORDER_X25519)
def test_low_order_ephemeral_from_a_signing_dialer_is_refused(eph: bytes) -> None:
    # Even a dialer that really holds A's key cannot force an all-zero secret.
    responder = ResponderHandshake(B, "beta")
    hello = as_map(DialerHandshake(A, "alpha", B.public).start())
    hello["eph"] = eph
    responder.receive_hello(encode_cbor(hello))
    welcome = as_map(responder.welcome())
    confirm = encode_cbor({"t": "confirm", "sig": dialer_sig(A, hello, welcome)})
    with pytest.raises(ProtocolError):
        responder.receive_confirm(confirm)


@pytest.mark.parametrize("eph", LOW_ORDER_X25519)
def test_low_order_ephemeral_from_a_signing_responder_is_refused(eph: bytes) -> None:
    dialer = DialerHandshake(A, "alpha", B.public)
    hello = as_map(dialer.start())
    welcome = {
        "t": "welcome", "v": 1, "key": B.public, "name": "beta",
        "nonce": b"\x05" * 32, "eph": eph,
    }  # fmt: skip
    welcome["sig"] = responder_sig(B, hello, welcome)
    with pytest.raises(ProtocolError):
        dialer.receive_welcome(encode_cbor(welcome))


# -------------------------------------------------------- malformed fields


def _hello() -> dict[str, Any]:
    return as_map(DialerHandshake(A, "alpha", B.public).start())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("v", 0),
        ("v", 2),
        ("v", True),
        ("v", "1"),
        ("t", "welcome"),
        ("t", "confirm"),
        ("t", 1),
        ("key", A.public[:31]),
        ("key", A.public + b"\x00"),
        ("key", "alpha"),
        ("name", "Not A Name!"),
        ("name", ""),
        ("name", b"alpha"),
        ("name", 7),
        ("nonce", b"\x00" * 31),
        ("nonce", b"\x00" * 33),
        ("nonce", None),
        ("eph", b"\x00" * 31),
        ("eph", "eph"),
        ("want", b"\x00" * 31),
        ("want", "beta"),
        ("want", False),
        ("want", [B.public]),
    ],
)
def test_a_malformed_hello_is_refused(field: str, value: object) -> None:
    hello = _hello()
    hello[field] = value
    with raises_code(ErrorCode.BAD_FRAME):
        ResponderHandshake(B, "beta").receive_hello(encode_cbor(hello))


def test_missing_extra_or_wrong_shaped_hello_is_refused() -> None:
    for mutate in (
        lambda h: h.pop("want"),
        lambda h: h.pop("nonce"),
        lambda h: h.update(extra=1),
        lambda h: h.update(sig=b"\x00" * 64),
    ):
        hello = _hello()
        mutate(hello)
        with raises_code(ErrorCode.BAD_FRAME):
            ResponderHandshake(B, "beta").receive_hello(encode_cbor(hello))
    for message in (encode_cbor([1, 2]), encode_cbor("hello"), b"", b"\xa0"):
        with raises_code(ErrorCode.BAD_FRAME):
            ResponderHandshake(B, "beta").receive_hello(message)
    huge = _hello()
    huge["name"] = "a" * 5000
    with raises_code(ErrorCode.TOO_LARGE):
        ResponderHandshake(B, "beta").receive_hello(encode_cbor(huge))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("v", 2),
        ("v", True),
        ("t", "hello"),
        ("name", "BETA"),
        ("nonce", b"\x00" * 31),
        ("eph", b"\x00" * 33),
        ("sig", b"\x00" * 63),
        ("sig", "sig"),
    ],
)
def test_a_malformed_welcome_is_refused(field: str, value: object) -> None:
    dialer, responder = pair()
    responder.receive_hello(dialer.start())
    welcome = as_map(responder.welcome())
    welcome[field] = value
    with raises_code(ErrorCode.BAD_FRAME):
        dialer.receive_welcome(encode_cbor(welcome))


@pytest.mark.parametrize(
    "confirm",
    [
        {"t": "confirm"},
        {"t": "confirm", "sig": b"\x00" * 63},
        {"t": "confirm", "sig": "x" * 64},
        {"t": "confirm", "sig": b"\x00" * 64, "v": 1},
        {"t": "welcome", "sig": b"\x00" * 64},
    ],
)
def test_a_malformed_confirm_is_refused(confirm: dict[str, Any]) -> None:
    dialer, responder = pair()
    responder.receive_hello(dialer.start())
    responder.welcome()
    with raises_code(ErrorCode.BAD_FRAME):
        responder.receive_confirm(encode_cbor(confirm))


# ------------------------------------------------------- the state machine


def _dialer_done() -> DialerHandshake:
    dialer, responder = pair()
    responder.receive_hello(dialer.start())
    dialer.receive_welcome(responder.welcome())
    return dialer


def _responder_at(step: str) -> ResponderHandshake:
    dialer, responder = pair()
    if step == "new":
        return responder
    responder.receive_hello(dialer.start())
    if step == "welcomed":
        responder.welcome()
    elif step == "refused":
        responder.refuse(ErrorCode.FORBIDDEN, "no")
    elif step == "done":
        responder.receive_confirm(dialer.receive_welcome(responder.welcome()))
    return responder


def test_out_of_order_calls_raise_bad_request() -> None:
    hello = DialerHandshake(A, "alpha", B.public).start()
    calls: list[Callable[[], object]] = [
        lambda: pair()[0].receive_welcome(b""),  # before start
        lambda: pair()[0].result(),  # before anything
        lambda: _dialer_done().start(),  # start twice
        lambda: _dialer_done().receive_welcome(b""),  # welcome twice
        lambda: _responder_at("new").welcome(),
        lambda: _responder_at("new").refuse(ErrorCode.FORBIDDEN, "no"),
        lambda: _responder_at("new").receive_confirm(b""),
        lambda: _responder_at("hello").receive_hello(hello),
        lambda: _responder_at("hello").receive_confirm(b""),
        lambda: _responder_at("welcomed").welcome(),
        lambda: _responder_at("welcomed").refuse(ErrorCode.FORBIDDEN, "no"),
        lambda: _responder_at("refused").welcome(),
        lambda: _responder_at("refused").receive_confirm(b""),
        lambda: _responder_at("done").receive_confirm(b""),
        lambda: _responder_at("done").welcome(),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(ProtocolError) as info:
            call()
        assert info.value.code is ErrorCode.BAD_REQUEST, i


def test_a_failed_step_leaves_the_handshake_unusable() -> None:
    dialer = DialerHandshake(A, "alpha", B.public)
    dialer.start()
    with pytest.raises(ProtocolError):
        dialer.receive_welcome(b"garbage")
    with raises_code(ErrorCode.BAD_REQUEST):
        dialer.result()
    responder = ResponderHandshake(B, "beta")
    with pytest.raises(ProtocolError):
        responder.receive_hello(b"garbage")
    with raises_code(ErrorCode.BAD_REQUEST):
        responder.welcome()
    with raises_code(ErrorCode.BAD_REQUEST):
        responder.receive_hello(DialerHandshake(A, "alpha", None).start())


def test_result_can_be_read_again() -> None:
    dialer = _dialer_done()
    assert dialer.result() is dialer.result()


# --------------------------------------------------- only ProtocolError, ever

_cbor_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.text(max_size=40),
    st.binary(max_size=70),
    st.sampled_from([b"\x00" * 32, b"\x00" * 64, A.public, B.public, "hello", "welcome"]),
)
_cbor_value = st.recursive(
    _cbor_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_field_names = ["t", "v", "key", "name", "nonce", "eph", "want", "sig", "code", "message"]
_shaped_maps = st.dictionaries(st.sampled_from(_field_names), _cbor_value, max_size=8).map(
    encode_cbor
)
_inputs = st.one_of(st.binary(max_size=600), _shaped_maps)


def _only_protocol_error(call: Callable[[], object]) -> None:
    try:
        call()
    except ProtocolError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_inputs)
def test_random_input_to_receive_hello_only_raises_protocol_error(data: bytes) -> None:
    _only_protocol_error(lambda: ResponderHandshake(B, "beta").receive_hello(data))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_inputs)
def test_random_input_to_receive_welcome_only_raises_protocol_error(data: bytes) -> None:
    dialer = DialerHandshake(A, "alpha", None)
    dialer.start()
    _only_protocol_error(lambda: dialer.receive_welcome(data))
    _only_protocol_error(lambda: decode_refusal(data))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_inputs)
def test_random_input_to_receive_confirm_only_raises_protocol_error(data: bytes) -> None:
    dialer, responder = pair()
    responder.receive_hello(dialer.start())
    responder.welcome()
    _only_protocol_error(lambda: responder.receive_confirm(data))


_LINK = handshake()


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_random_input_to_open_only_raises_protocol_error(data: bytes) -> None:
    d, r = _LINK
    with raises_code(ErrorCode.BAD_SIGNATURE):
        r.cipher.open(data)
    with raises_code(ErrorCode.BAD_SIGNATURE):
        d.cipher.open(data)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["hello", "welcome"]),
    st.sampled_from(["key", "name", "nonce", "eph", "want", "sig", "v", "t"]),
    _cbor_value,
)
def test_valid_messages_with_one_field_replaced_only_raise_protocol_error(
    which: str, field: str, value: object
) -> None:
    dialer, responder = pair(expected=None)
    hello = as_map(dialer.start())
    if which == "hello":
        if field in hello:
            hello[field] = value
        _only_protocol_error(lambda: responder.receive_hello(encode_cbor(hello)))
        return
    responder.receive_hello(encode_cbor(hello))
    welcome = as_map(responder.welcome())
    if field in welcome:
        welcome[field] = value
    _only_protocol_error(lambda: dialer.receive_welcome(encode_cbor(welcome)))
