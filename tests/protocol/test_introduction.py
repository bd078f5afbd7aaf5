"""Signed introductions: bytes in, a verified Introduction or ProtocolError out."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from chinwag.protocol.codec import encode_cbor
from chinwag.protocol.envelope import CONTEXT_ENVELOPE, NodeKey
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.introduction import (
    CONTEXT_INTRODUCTION,
    Introduction,
    make_statement,
    open_statement,
)

HUB = NodeKey.from_seed(b"h" * 32)
LEAF = NodeKey.from_seed(b"l" * 32)
OTHER = NodeKey.from_seed(b"o" * 32)


def refused(item: object, code: ErrorCode, introducer: bytes = HUB.public) -> None:
    with pytest.raises(ProtocolError) as info:
        open_statement(item, introducer)
    assert info.value.code is code


def signed(body: dict[str, object], key: NodeKey = HUB) -> dict[str, bytes]:
    data = encode_cbor(body)
    return {"st": data, "sig": key.sign(CONTEXT_INTRODUCTION, data)}


def test_a_statement_opens_to_what_was_signed() -> None:
    item = make_statement(HUB, LEAF.public, "leaf7", 42)
    assert open_statement(item, HUB.public) == Introduction(HUB.public, LEAF.public, "leaf7", 42)


def test_only_the_introducer_that_sent_it() -> None:
    item = make_statement(HUB, LEAF.public, "leaf7", 1)
    refused(item, ErrorCode.FORBIDDEN, OTHER.public)  # relayed by another node
    forged = signed({"by": HUB.public, "key": LEAF.public, "name": "leaf7", "ts": 1}, OTHER)
    refused(forged, ErrorCode.BAD_SIGNATURE)


def test_tampered_bytes_do_not_verify() -> None:
    item = make_statement(HUB, LEAF.public, "leaf7", 1)
    refused({**item, "st": item["st"].replace(b"leaf7", b"leaf8")}, ErrorCode.BAD_SIGNATURE)


def test_signature_of_another_purpose_is_refused() -> None:
    data = encode_cbor({"by": HUB.public, "key": LEAF.public, "name": "leaf7", "ts": 1})
    refused({"st": data, "sig": HUB.sign(CONTEXT_ENVELOPE, data)}, ErrorCode.BAD_SIGNATURE)


@pytest.mark.parametrize(
    "body",
    [
        {"by": HUB.public, "key": LEAF.public, "name": "Not A Name", "ts": 1},
        {"by": HUB.public, "key": LEAF.public, "name": "leaf7", "ts": -1},
        {"by": HUB.public, "key": LEAF.public, "name": "leaf7", "ts": True},
        {"by": HUB.public, "key": LEAF.public, "name": "leaf7"},
        {"by": HUB.public, "key": LEAF.public, "name": "leaf7", "ts": 1, "urls": []},
        {"by": HUB.public, "key": HUB.public, "name": "hub", "ts": 1},
    ],
)
def test_malformed_bodies_are_bad_frame(body: dict[str, object]) -> None:
    refused(signed(body), ErrorCode.BAD_FRAME)


def test_small_order_keys_are_refused() -> None:
    body = {"by": HUB.public, "key": b"\x01" + b"\x00" * 31, "name": "x", "ts": 1}
    refused(signed(body), ErrorCode.BAD_SIGNATURE)


@pytest.mark.parametrize(
    "item", [None, [], {"st": b"x"}, {"st": "x", "sig": b"s" * 64}, {"st": b"x", "sig": b"s"}]
)
def test_malformed_items_are_bad_frame(item: object) -> None:
    refused(item, ErrorCode.BAD_FRAME)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=70))
def test_random_statements_raise_only_protocol_error(data: bytes, sig: bytes) -> None:
    try:
        open_statement({"st": data, "sig": sig}, HUB.public)
    except ProtocolError:
        pass
