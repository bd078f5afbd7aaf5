"""Envelopes: sign the exact bytes, verify before decoding, refuse any change."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from chinwag.protocol.addresses import GroupAddress, UserAddress
from chinwag.protocol.envelope import (
    CONTEXT_ENVELOPE,
    CONTEXT_HANDSHAKE,
    Envelope,
    NodeKey,
    SignedUnit,
    Verified,
    check_public_key,
    decode_envelope,
    encode_envelope,
    open_unit,
    sign_envelope,
    verify,
)
from chinwag.protocol.errors import ErrorCode, ProtocolError

KEY = NodeKey.generate()
OTHER = NodeKey.generate()


def make_env(text: str = "hello", key: NodeKey = KEY, msg_id: int = 12345) -> Envelope:
    return Envelope(
        id=msg_id,
        sender=UserAddress("alice", key.id),
        to=UserAddress("bob", OTHER.id),
        group=None,
        ts=1_700_000_000_000,
        kind="text",
        body={"text": text},
    )


@settings(max_examples=100)
@given(st.text(min_size=1, max_size=500), st.integers(1, 2**63 - 1))
def test_sign_open_round_trip(text, msg_id) -> None:
    env = make_env(text, msg_id=msg_id)
    unit = sign_envelope(KEY, env)
    assert open_unit(SignedUnit.decode(unit.encode()), expected_origin=KEY.public) == env


@settings(max_examples=300)
@given(st.data())
def test_any_flipped_bit_fails(data) -> None:
    unit = sign_envelope(KEY, make_env())
    field = data.draw(st.sampled_from(["env", "sig"]))
    raw = bytearray(getattr(unit, field))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    tampered = SignedUnit(
        env=bytes(raw) if field == "env" else unit.env,
        sig=bytes(raw) if field == "sig" else unit.sig,
        by=unit.by,
    )
    with pytest.raises(ProtocolError) as info:
        open_unit(tampered)
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_origin_must_match_and_sign_only_own_users() -> None:
    unit = sign_envelope(KEY, make_env())
    with pytest.raises(ProtocolError) as info:
        open_unit(unit, expected_origin=OTHER.public)
    assert info.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(ProtocolError):
        sign_envelope(KEY, make_env(key=OTHER))  # alice@OTHER is not KEY's user
    # A node signing an envelope "from" another node's user is refused on open.
    forged_env = encode_envelope(make_env(key=OTHER))
    forged = SignedUnit(forged_env, KEY.sign(CONTEXT_ENVELOPE, forged_env), KEY.public)
    with pytest.raises(ProtocolError) as info:
        open_unit(forged)
    assert info.value.code is ErrorCode.FORBIDDEN


def test_signatures_are_domain_separated() -> None:
    data = encode_envelope(make_env())
    handshake_sig = KEY.sign(CONTEXT_HANDSHAKE, data)
    with pytest.raises(ProtocolError):
        verify(CONTEXT_ENVELOPE, KEY.public, data, handshake_sig)
    with pytest.raises(ProtocolError):
        open_unit(SignedUnit(data, handshake_sig, KEY.public))


@pytest.mark.parametrize(
    "hexkey",
    [
        "00" * 32,
        "01" + "00" * 31,
        "ec" + "ff" * 30 + "7f",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ],
)
def test_small_order_keys_are_refused(hexkey) -> None:
    with pytest.raises(ProtocolError) as info:
        check_public_key(bytes.fromhex(hexkey))
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_good_key_accepted_and_short_key_refused() -> None:
    assert check_public_key(KEY.public) == KEY.public
    with pytest.raises(ProtocolError):
        check_public_key(b"\x01" * 31)


def test_group_envelope_and_shape_checks() -> None:
    env = Envelope(
        id=1,
        sender=UserAddress("alice", KEY.id),
        to=None,
        group=GroupAddress("team", KEY.id),
        ts=0,
        kind="text",
        body={"text": "hi all"},
    )
    assert decode_envelope(encode_envelope(env)) == env
    with pytest.raises(ProtocolError):
        decode_envelope(b"\xa1\x61v\x02")
    with pytest.raises(ProtocolError):
        decode_envelope(encode_envelope(make_env())[:-3])


def test_key_seed_round_trip() -> None:
    again = NodeKey.from_seed(KEY.seed())
    assert again.id == KEY.id and len(KEY.id) == 52


# ---------------------------------------------------------------- checked ahead
def test_verified_spares_only_the_exact_signature() -> None:
    unit = sign_envelope(KEY, make_env())
    other = sign_envelope(KEY, make_env("other"))
    verified = Verified()
    assert verified.check(CONTEXT_ENVELOPE, unit.by, unit.env, unit.sig)
    assert len(verified) == 1
    assert open_unit(unit, verified=verified) == make_env()
    # Same signature over other bytes, or under another context: checked, refused.
    forged = SignedUnit(env=other.env, sig=unit.sig, by=unit.by)
    with pytest.raises(ProtocolError) as err:
        open_unit(forged, verified=verified)
    assert err.value.code is ErrorCode.BAD_SIGNATURE
    with pytest.raises(ProtocolError):
        verify(CONTEXT_HANDSHAKE, unit.by, unit.env, unit.sig, verified)


def test_verified_remembers_no_failed_check() -> None:
    unit = sign_envelope(KEY, make_env())
    bad_sig = bytes([unit.sig[0] ^ 1]) + unit.sig[1:]
    verified = Verified()
    assert not verified.check(CONTEXT_ENVELOPE, unit.by, unit.env, bad_sig)
    assert not verified.check(CONTEXT_ENVELOPE, b"\x00" * 32, unit.env, unit.sig)
    assert not verified.check(CONTEXT_ENVELOPE, unit.by, unit.env, unit.sig[:63])
    assert len(verified) == 0
    with pytest.raises(ProtocolError):
        open_unit(SignedUnit(env=unit.env, sig=bad_sig, by=unit.by), verified=verified)
