"""The federation handshake and link sealing, driven with bytes only."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from chinwag.protocol.codec import decode_cbor, encode_cbor
from chinwag.protocol.envelope import NodeKey
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.handshake import (
    DialerHandshake,
    LinkKeys,
    ResponderHandshake,
    decode_refusal,
)

A, B, M = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()


def handshake() -> tuple[LinkKeys, LinkKeys]:
    dialer = DialerHandshake(A, "alpha", B.public)
    responder = ResponderHandshake(B, "beta")
    hello = responder.receive_hello(dialer.start())
    assert (hello.key, hello.name) == (A.public, "alpha")
    confirm = dialer.receive_welcome(responder.welcome())
    return dialer.result(), responder.receive_confirm(confirm)


def test_both_sides_agree_and_frames_seal_both_ways() -> None:
    d, r = handshake()
    assert d.transcript_hash == r.transcript_hash
    assert (d.peer_key, d.peer_name) == (B.public, "beta")
    assert (r.peer_key, r.peer_name) == (A.public, "alpha")
    for i in range(50):
        assert r.cipher.open(d.cipher.seal(b"to responder %d" % i)) == b"to responder %d" % i
        assert d.cipher.open(r.cipher.seal(b"to dialer %d" % i)) == b"to dialer %d" % i


def test_replayed_reordered_or_dropped_frames_fail() -> None:
    d, r = handshake()
    first, second = d.cipher.seal(b"1"), d.cipher.seal(b"2")
    with pytest.raises(ProtocolError):
        r.cipher.open(second)  # out of order (first dropped)
    d2, r2 = handshake()
    frame = d2.cipher.seal(b"x")
    r2.cipher.open(frame)
    with pytest.raises(ProtocolError) as info:
        r2.cipher.open(frame)  # replay
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    assert first != second


@settings(max_examples=60)
@given(st.sampled_from(["hello", "welcome", "confirm"]), st.data())
def test_any_flipped_bit_in_the_handshake_fails(which, data) -> None:
    dialer = DialerHandshake(A, "alpha", B.public)
    responder = ResponderHandshake(B, "beta")

    def flip(message: bytes) -> bytes:
        raw = bytearray(message)
        bit = data.draw(st.integers(0, len(raw) * 8 - 1))
        raw[bit // 8] ^= 1 << (bit % 8)
        return bytes(raw)

    with pytest.raises(ProtocolError):
        hello = dialer.start()
        responder.receive_hello(flip(hello) if which == "hello" else hello)
        welcome = responder.welcome()
        confirm = dialer.receive_welcome(flip(welcome) if which == "welcome" else welcome)
        responder.receive_confirm(flip(confirm) if which == "confirm" else confirm)
        # A flipped bit that still decodes changes the transcript: the keys differ.
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "not detected")


def test_wrong_expected_peer_is_forbidden() -> None:
    dialer = DialerHandshake(A, "alpha", M.public)
    responder = ResponderHandshake(B, "beta")
    with pytest.raises(ProtocolError) as info:
        responder.receive_hello(dialer.start())
    assert info.value.code is ErrorCode.FORBIDDEN
    dialer = DialerHandshake(A, "alpha", None)
    responder = ResponderHandshake(M, "mallory")
    responder.receive_hello(dialer.start())
    dialer2 = DialerHandshake(A, "alpha", B.public)
    responder2 = ResponderHandshake(M, "mallory")
    hello = decode_cbor(dialer2.start())
    assert isinstance(hello, dict)
    hello["want"] = None  # a man in the middle strips "want" ...
    responder2.receive_hello(encode_cbor(hello))
    with pytest.raises(ProtocolError) as info:
        dialer2.receive_welcome(responder2.welcome())  # ... but his key is not B
    assert info.value.code is ErrorCode.FORBIDDEN


def test_man_in_the_middle_swapping_ephemerals_fails() -> None:
    dialer = DialerHandshake(A, "alpha", B.public)
    responder = ResponderHandshake(B, "beta")
    mitm = DialerHandshake(M, "mallory", B.public)
    hello = decode_cbor(dialer.start())
    theirs = decode_cbor(mitm.start())
    assert isinstance(hello, dict) and isinstance(theirs, dict)
    hello["eph"] = theirs["eph"]
    responder.receive_hello(encode_cbor(hello))
    with pytest.raises(ProtocolError) as info:
        dialer.receive_welcome(responder.welcome())
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_responder_signature_cannot_be_reflected_as_dialer() -> None:
    dialer = DialerHandshake(A, "alpha", B.public)
    responder = ResponderHandshake(B, "beta")
    responder.receive_hello(dialer.start())
    welcome = decode_cbor(responder.welcome())
    assert isinstance(welcome, dict)
    with pytest.raises(ProtocolError) as info:
        responder.receive_confirm(encode_cbor({"t": "confirm", "sig": welcome["sig"]}))
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_refusal_reaches_the_dialer_with_its_code() -> None:
    dialer = DialerHandshake(A, "alpha", B.public)
    responder = ResponderHandshake(B, "beta")
    responder.receive_hello(dialer.start())
    refusal = responder.refuse(ErrorCode.FORBIDDEN, "pending admin approval")
    assert decode_refusal(refusal) is not None
    with pytest.raises(ProtocolError) as info:
        dialer.receive_welcome(refusal)
    assert info.value.code is ErrorCode.FORBIDDEN and "pending" in info.value.message


def test_small_order_key_in_hello_is_refused() -> None:
    hello = decode_cbor(DialerHandshake(A, "alpha", None).start())
    assert isinstance(hello, dict)
    hello["key"] = bytes(32)
    with pytest.raises(ProtocolError) as info:
        ResponderHandshake(B, "beta").receive_hello(encode_cbor(hello))
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_out_of_order_calls_raise() -> None:
    responder = ResponderHandshake(B, "beta")
    with pytest.raises(ProtocolError):
        responder.welcome()
    dialer = DialerHandshake(A, "alpha", B.public)
    with pytest.raises(ProtocolError):
        dialer.receive_welcome(b"")
    with pytest.raises(ProtocolError):
        dialer.result()


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_protocol_error(data) -> None:
    for attempt in range(3):
        try:
            if attempt == 0:
                ResponderHandshake(B, "beta").receive_hello(data)
            elif attempt == 1:
                dialer = DialerHandshake(A, "alpha", B.public)
                dialer.start()
                dialer.receive_welcome(data)
            else:
                d, _ = handshake()
                d.cipher.open(data)
        except ProtocolError:
            pass
