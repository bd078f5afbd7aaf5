"""Frames: every request type round-trips through both wire formats; bad input is typed."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import (
    Ack,
    Auth,
    Convs,
    Heartbeat,
    History,
    Read,
    Search,
    Send,
    Sync,
    WireFormat,
    decode_message,
    encode_frame,
    encode_message,
    encode_request,
    err_frame,
    error_from_frame,
    join_frames,
    parse_request,
)

rids = st.one_of(st.integers(0, 2**53 - 1), st.text(min_size=1, max_size=64))
short = st.text(min_size=1, max_size=50)
counts = st.integers(0, 2**63 - 1)
texts = st.text(min_size=1, max_size=300)

requests = st.one_of(
    st.builds(Auth, rid=rids, token=st.text(min_size=1, max_size=256)),
    st.builds(
        Send, rid=rids, to=short, text=texts, cid=st.none() | st.text(min_size=1, max_size=64)
    ),
    st.builds(Sync, rid=rids, after=counts),
    st.builds(Ack, rid=st.none() | rids, seq=counts),
    st.builds(Heartbeat, rid=st.none() | rids),
    st.builds(
        Convs, rid=rids, limit=st.integers(1, 200), before=st.none() | st.integers(1, 2**63 - 1)
    ),
    st.builds(
        History,
        rid=rids,
        conv=short,
        limit=st.integers(1, 200),
        before=st.none() | st.integers(1, 2**63 - 1),
    ),
    st.builds(Read, rid=rids, conv=short, seq=counts),
    st.builds(
        Search,
        rid=rids,
        q=st.text(min_size=1, max_size=200),
        conv=st.none() | short,
        limit=st.integers(1, 50),
        before=st.none() | st.integers(1, 2**63 - 1),
    ),
)


@settings(max_examples=300)
@given(requests, st.sampled_from(list(WireFormat)))
def test_every_request_round_trips(request, fmt) -> None:
    wire = encode_message([encode_request(request)], fmt)
    (frame,) = decode_message(wire, fmt)
    assert parse_request(frame) == request


@settings(max_examples=100)
@given(st.lists(requests, min_size=1, max_size=20), st.sampled_from(list(WireFormat)))
def test_batches_round_trip_and_join_matches_encode(batch, fmt) -> None:
    frames = [encode_request(r) for r in batch]
    joined = join_frames([encode_frame(f, fmt) for f in frames], fmt)
    assert joined == encode_message(frames, fmt)
    assert [parse_request(f) for f in decode_message(joined, fmt)] == batch


def test_json_ids_are_decimal_strings() -> None:
    msg = {"t": "msg", "seq": 3, "id": 2**62 + 5, "body": {"text": "x"}}
    wire = encode_message([msg], WireFormat.JSON)
    assert '"id":"4611686018427387909"' in wire
    (back,) = decode_message(wire, WireFormat.JSON)
    assert back["id"] == 2**62 + 5


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "bogus", "rid": 1},
        {"rid": 1},
        {"t": 5},
        {"t": "send", "rid": 1, "to": "bob"},
        {"t": "send", "rid": 1, "to": "bob", "text": 3},
        {"t": "send", "rid": 1, "to": "bob", "text": ""},
        {"t": "send", "rid": True, "to": "bob", "text": "x"},
        {"t": "sync", "rid": 1, "after": -1},
        {"t": "sync", "rid": 1, "after": True},
        {"t": "ack", "seq": "1"},
        {"t": "auth", "rid": 1, "token": "x", "extra": 1},
    ],
)
def test_invalid_frames_are_bad_frame(frame) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(frame)
    assert info.value.code is ErrorCode.BAD_FRAME


def test_text_over_limit_is_too_large() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request({"t": "send", "rid": 1, "to": "bob", "text": "é" * 9000})
    assert info.value.code is ErrorCode.TOO_LARGE


def test_batch_and_frame_limits() -> None:
    many = encode_message([{"t": "heartbeat"}] * 257, WireFormat.CBOR)
    with pytest.raises(ProtocolError) as info:
        decode_message(many, WireFormat.CBOR)
    assert info.value.code is ErrorCode.TOO_LARGE
    big = encode_message([{"t": "heartbeat", "x": "y" * 70_000}], WireFormat.CBOR)
    with pytest.raises(ProtocolError) as info:
        decode_message(big, WireFormat.CBOR)
    assert info.value.code is ErrorCode.TOO_LARGE
    with pytest.raises(ProtocolError):
        decode_message("text in a binary protocol", WireFormat.CBOR)
    with pytest.raises(ProtocolError):
        decode_message(b"\x80", WireFormat.CBOR)  # empty batch


def test_error_frames_round_trip() -> None:
    error = ProtocolError(ErrorCode.RATE_LIMITED, "slow down", retry_after_ms=250)
    back = error_from_frame(err_frame(7, error))
    assert (back.code, back.message, back.retry_after_ms) == (error.code, "slow down", 250)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from(list(WireFormat)))
def test_random_bytes_only_raise_protocol_error(data, fmt) -> None:
    payload = data if fmt is WireFormat.CBOR else data.decode("utf-8", "replace")
    try:
        for frame in decode_message(payload, fmt):
            parse_request(frame)
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(requests, st.data())
def test_mutated_frames_only_raise_protocol_error(request, data) -> None:
    wire = bytearray(encode_message([encode_request(request)], WireFormat.CBOR))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    try:
        for frame in decode_message(bytes(wire), WireFormat.CBOR):
            parse_request(frame)
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "send", "rid": 1, "to": "bob", "text": "half a pair \ud800"},
        {"t": "edit", "rid": 1, "id": 5, "text": "half a pair \udfff"},
    ],
)
def test_a_text_that_is_not_unicode_is_a_bad_request(frame: dict[str, Any]) -> None:
    # JSON frames can carry a lone surrogate ("\ud800" escaped): no UTF-8 form.
    with pytest.raises(ProtocolError) as caught:
        parse_request(frame)
    assert caught.value.code is ErrorCode.BAD_REQUEST
