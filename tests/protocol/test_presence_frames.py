"""presence_query (device) and display names in link presence items, bytes only."""

from __future__ import annotations

import pytest

from chinwag.protocol.codec import encode_cbor
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import PresenceQuery, encode_request, parse_request
from chinwag.protocol.link import (
    PresenceItem,
    PresenceUpdate,
    decode_link_frame,
    encode_link_frame,
)


def test_presence_query_round_trips() -> None:
    frame = {"t": "presence_query", "rid": 7, "users": ["bob@kitchen", "carol"]}
    request = parse_request(frame)
    assert request == PresenceQuery(7, ("bob@kitchen", "carol"))
    assert encode_request(request) == frame


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "presence_query", "rid": 1},
        {"t": "presence_query", "rid": 1, "users": "bob"},
        {"t": "presence_query", "rid": 1, "users": [""]},
        {"t": "presence_query", "rid": 1, "users": [3]},
        {"t": "presence_query", "rid": 1, "users": ["b"] * 257},
        {"t": "presence_query", "rid": 1, "users": [], "extra": 1},
    ],
)
def test_bad_presence_queries_are_bad_frame(frame: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(frame)
    assert caught.value.code is ErrorCode.BAD_FRAME


def test_display_name_is_on_the_wire_only_when_set() -> None:
    plain = encode_link_frame(PresenceUpdate((PresenceItem("bob", "online", 1),)))
    assert b"dn" not in plain  # the same bytes as before display names
    named = PresenceUpdate((PresenceItem("bob", "online", 1, "Bob B."),))
    assert decode_link_frame(encode_link_frame(named)) == named


@pytest.mark.parametrize("dn", [3, "x" * 201, None])
def test_bad_display_names_are_bad_frame(dn: object) -> None:
    item = {"u": "bob", "status": "online", "last_active_at": 1, "dn": dn}
    with pytest.raises(ProtocolError) as caught:
        decode_link_frame(encode_cbor({"t": "presence", "items": [item]}))
    assert caught.value.code is ErrorCode.BAD_FRAME
