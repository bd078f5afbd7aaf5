"""Invitation strings, fingerprints and the confirm's optional fields, bytes only."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from chinwag.protocol.address_record import make_record
from chinwag.protocol.codec import decode_cbor, encode_cbor
from chinwag.protocol.envelope import NodeKey
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.fingerprint import fingerprint
from chinwag.protocol.handshake import DialerHandshake, ResponderHandshake
from chinwag.protocol.invitation import (
    KIND_PEER,
    KIND_USER,
    Invitation,
    encode_invitation,
    parse_invitation,
)

A, B, M = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
SECRET = bytes(range(16))


def test_invitation_round_trips_and_is_one_short_line() -> None:
    for kind in (KIND_PEER, KIND_USER):
        invitation = Invitation(
            kind, "https://kitchen.example:7777", A.public, SECRET, 1_900_000_000
        )
        text = encode_invitation(invitation)
        assert text.startswith("chinwag1:") and text == text.strip() and len(text) < 200
        assert parse_invitation(text) == invitation
        # Upper case and line breaks from mail clients are tolerated.
        assert parse_invitation(text[:40].upper() + "\n  " + text[40:]) == invitation


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_any_string_parses_or_is_bad_request(text) -> None:
    try:
        parse_invitation(text)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_REQUEST


def test_damaged_invitations_say_so() -> None:
    text = encode_invitation(Invitation(KIND_PEER, "http://h:1", A.public, SECRET, 5))
    for bad in (text[:-8], "chinwag1:!!!!", "hello", "chinwag1:" + "a" * 2000):
        with pytest.raises(ProtocolError) as info:
            parse_invitation(bad)
        assert info.value.code is ErrorCode.BAD_REQUEST
        assert "invitation" in info.value.message


def test_fingerprint_is_six_groups_of_four_digits_and_differs_per_key() -> None:
    printed = fingerprint(A.public)
    groups = printed.split(" ")
    assert len(groups) == 6 and all(len(g) == 4 and g.isdigit() for g in groups)
    assert fingerprint(A.public) == printed  # stable
    assert len({fingerprint(NodeKey.generate().public) for _ in range(200)}) == 200
    with pytest.raises(ProtocolError):
        fingerprint(b"short")


def _run(dialer: DialerHandshake, responder: ResponderHandshake) -> bytes:
    responder.receive_hello(dialer.start())
    return dialer.receive_welcome(responder.welcome())


def test_confirm_carries_a_sealed_invitation_and_the_dialers_record() -> None:
    record = make_record(A, ["http://a.example:7777"], 1)
    dialer = DialerHandshake(A, "alpha", B.public, record=record, invitation=SECRET)
    responder = ResponderHandshake(B, "beta")
    confirm = _run(dialer, responder)
    assert SECRET not in confirm  # never in clear on the wire
    keys = responder.receive_confirm(confirm)
    assert keys.invitation == SECRET
    assert keys.record is not None and keys.record.urls == ("http://a.example:7777",)
    # Without the extras, a confirm is as before.
    plain = ResponderHandshake(B, "beta")
    keys = plain.receive_confirm(_run(DialerHandshake(A, "alpha", B.public), plain))
    assert keys.invitation is None and keys.record is None


def test_an_invitation_lifted_into_another_handshake_does_not_open() -> None:
    first = ResponderHandshake(B, "beta")
    lifted = decode_cbor(_run(DialerHandshake(A, "alpha", B.public, invitation=SECRET), first))
    second = ResponderHandshake(B, "beta")
    confirm = decode_cbor(_run(DialerHandshake(A, "alpha", B.public), second))
    assert isinstance(lifted, dict) and isinstance(confirm, dict)
    with pytest.raises(ProtocolError) as info:
        second.receive_confirm(encode_cbor({**confirm, "inv": lifted["inv"]}))
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_a_record_of_another_node_or_an_unknown_field_is_refused() -> None:
    responder = ResponderHandshake(B, "beta")
    confirm = decode_cbor(_run(DialerHandshake(A, "alpha", B.public), responder))
    assert isinstance(confirm, dict)
    with pytest.raises(ProtocolError) as info:
        responder.receive_confirm(
            encode_cbor({**confirm, "rec": make_record(M, ["http://m:1"], 1)})
        )
    assert info.value.code is ErrorCode.BAD_FRAME
    other = ResponderHandshake(B, "beta")
    confirm = decode_cbor(_run(DialerHandshake(A, "alpha", B.public), other))
    assert isinstance(confirm, dict)
    with pytest.raises(ProtocolError) as info:
        other.receive_confirm(encode_cbor({**confirm, "extra": b""}))
    assert info.value.code is ErrorCode.BAD_FRAME
