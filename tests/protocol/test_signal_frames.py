"""Typing and receipt frames (device and link) and presence ``hide``: bytes only."""

from __future__ import annotations

from typing import Any

import pytest

from chinwag.protocol.addresses import GroupAddress
from chinwag.protocol.codec import encode_cbor
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import (
    Receipts,
    Typing,
    WireFormat,
    decode_message,
    encode_message,
    encode_request,
    parse_request,
    receipt_frame,
    typing_frame,
)
from chinwag.protocol.link import (
    MAX_RECEIPT_ITEMS,
    MAX_TYPING_ITEMS,
    PresenceItem,
    PresenceUpdate,
    ReceiptItem,
    ReceiptUpdate,
    TypingItem,
    TypingUpdate,
    decode_link_frame,
    encode_link_frame,
)

NODE = "i2myd5vzjyqj47ynkb6v2cl2x6cfqd2oiy7hlh5cjmzaprzyjx7q"
GROUP = GroupAddress("club", NODE)


def test_typing_request_with_and_without_rid() -> None:
    assert parse_request({"t": "typing", "conv": "bob", "state": "start"}) == Typing(
        None, "bob", "start"
    )
    request = parse_request({"t": "typing", "rid": 3, "conv": "#club", "state": "stop"})
    assert request == Typing(3, "#club", "stop")
    assert encode_request(request) == {"t": "typing", "conv": "#club", "state": "stop", "rid": 3}
    assert parse_request({"t": "receipts", "rid": 1, "conv": "bob"}) == Receipts(1, "bob")


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "typing", "conv": "bob", "state": "typing"},
        {"t": "typing", "conv": "bob", "state": 1},
        {"t": "typing", "conv": "", "state": "start"},
        {"t": "typing", "conv": "bob"},
        {"t": "typing", "conv": "bob", "state": "start", "user": "x"},
        {"t": "receipts", "conv": "bob"},
    ],
)
def test_bad_typing_and_receipts_requests(frame: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(frame)
    assert info.value.code is ErrorCode.BAD_FRAME


def test_receipt_ids_are_strings_in_json() -> None:
    frame = receipt_frame("bob@x", {"u": "bob", "n": NODE}, delivered_id=1 << 60, read_id=5)
    text = encode_message([frame], WireFormat.JSON)
    assert isinstance(text, str) and '"delivered_id":"1152921504606846976"' in text
    assert decode_message(text, WireFormat.JSON)[0] == frame
    assert typing_frame("c", {"u": "a", "n": NODE}, "start")["state"] == "start"


@pytest.mark.parametrize(
    "frame",
    [
        TypingUpdate("bob", None, (TypingItem("alice", NODE, "start"),)),
        TypingUpdate(None, GROUP, tuple(TypingItem(f"u{i}", NODE, "stop") for i in range(3))),
        ReceiptUpdate((ReceiptItem("bob", "alice", None, 7), ReceiptItem("bob", "al", GROUP, 9))),
        PresenceUpdate((PresenceItem("alice", "online", 5, hide=("bob", "dan")),)),
        PresenceUpdate((PresenceItem("alice", "offline", None),)),
    ],
)
def test_signal_link_frames_round_trip(frame: Any) -> None:
    assert decode_link_frame(encode_link_frame(frame)) == frame


def test_presence_without_hides_has_no_hide_field() -> None:
    data = encode_link_frame(PresenceUpdate((PresenceItem("alice", "online", 5),)))
    assert b"hide" not in data


@pytest.mark.parametrize(
    "wire",
    [
        {"t": "typing", "items": [{"u": "a", "n": NODE, "s": "start"}]},
        {
            "t": "typing",
            "to": "b",
            "group": GROUP.to_wire(),
            "items": [{"u": "a", "n": NODE, "s": "start"}],
        },
        {"t": "typing", "to": "b", "items": []},
        {"t": "typing", "to": "b", "items": [{"u": "a", "n": "kitchen", "s": "start"}]},
        {"t": "typing", "to": "b", "items": [{"u": "a", "n": NODE, "s": "maybe"}]},
        {"t": "typing", "to": "B!", "items": [{"u": "a", "n": NODE, "s": "stop"}]},
        {
            "t": "typing",
            "to": "b",
            "items": [{"u": "a", "n": NODE, "s": "stop"}] * (MAX_TYPING_ITEMS + 1),
        },
        {"t": "receipt", "items": [{"r": "a", "u": "b", "id": -1}]},
        {"t": "receipt", "items": [{"r": "a", "u": "b", "id": True}]},
        {"t": "receipt", "items": [{"r": "a", "u": "b", "id": 1, "x": 1}]},
        {"t": "receipt", "items": [{"r": "a", "u": "b", "id": 1, "g": {"name": "c"}}]},
        {"t": "receipt", "items": [{"r": "a", "u": "b", "id": 1}] * (MAX_RECEIPT_ITEMS + 1)},
        {
            "t": "presence",
            "items": [{"u": "a", "status": "online", "last_active_at": 1, "hide": ["B!"]}],
        },
    ],
)
def test_bad_signal_link_frames_are_refused(wire: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_link_frame(encode_cbor(wire))
    assert info.value.code in (ErrorCode.BAD_FRAME, ErrorCode.TOO_LARGE)
