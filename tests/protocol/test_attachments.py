"""Attachments in envelopes and ``send`` frames: strict shapes, bytes only."""

from __future__ import annotations

import pytest

from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.attachments import (
    MAX_ATTACHMENTS,
    Attachment,
    Preview,
    parse_attachments,
)
from chinwag.protocol.codec import encode_cbor
from chinwag.protocol.envelope import (
    Envelope,
    NodeKey,
    decode_envelope,
    encode_envelope,
    open_unit,
    sign_envelope,
)
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import Send, WireFormat, decode_message, encode_request, parse_request

KEY = NodeKey.generate()
SHA = "ab" * 32
PV = "cd" * 32


def att(**changes: object) -> dict[str, object]:
    item: dict[str, object] = {"sha256": SHA, "name": "photo.jpg", "type": "image/jpeg", "size": 5}
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


def preview(**changes: object) -> dict[str, object]:
    item: dict[str, object] = {
        "sha256": PV,
        "type": "image/jpeg",
        "size": 3,
        "width": 320,
        "height": 200,
    }
    item.update(changes)
    return item


def test_a_well_formed_list_round_trips() -> None:
    wire = [att(preview=preview()), att(name="notes.txt", type="text/plain", size=0)]
    parsed = parse_attachments(wire)
    assert parsed[0] == Attachment(
        SHA, "photo.jpg", "image/jpeg", 5, Preview(PV, "image/jpeg", 3, 320, 200)
    )
    assert parsed[0].hashes() == (SHA, PV)
    assert [a.to_wire() for a in parsed] == wire


@pytest.mark.parametrize(
    "bad",
    [
        att(sha256="AB" * 32),  # upper case
        att(sha256="ab" * 31),  # short
        att(sha256=b"\xab" * 32),  # bytes
        att(name=""),
        att(name="x" * 256),
        att(name="../etc/passwd"),
        att(name="a\\b"),
        att(name="bell\x07"),
        att(type="image"),
        att(type="Image/JPEG"),
        att(type="text/html; charset=utf-8"),
        att(size=-1),
        att(size=True),
        att(size=1.5),
        {**att(), "extra": 1},
        {"sha256": SHA, "name": "a", "type": "a/b"},  # no size
        att(preview=preview(type="image/svg+xml")),
        att(preview=preview(width=0)),
        att(preview={**preview(), "x": 1}),
        "not a map",
    ],
)
def test_malformed_attachments_are_refused(bad: object) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_attachments([bad])
    assert refused.value.code == ErrorCode.BAD_FRAME


def test_the_count_is_bounded() -> None:
    parse_attachments([att()] * MAX_ATTACHMENTS)
    for bad in ([], [att()] * (MAX_ATTACHMENTS + 1), att()):
        with pytest.raises(ProtocolError):
            parse_attachments(bad)


def test_a_size_over_the_given_limit_is_too_large() -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_attachments([att(size=1001)], max_size=1000)
    assert refused.value.code == ErrorCode.TOO_LARGE


def _env(body: dict[str, object]) -> Envelope:
    return Envelope(
        id=1,
        sender=UserAddress("alice", KEY.id),
        to=UserAddress("bob", KEY.id),
        group=None,
        ts=1,
        kind="text",
        body=body,
    )


def test_envelopes_carry_signed_attachments() -> None:
    body = {"text": "", "attachments": [att(preview=preview())]}
    unit = sign_envelope(KEY, _env(body))
    assert open_unit(unit).body == body


def test_an_envelope_with_malformed_attachments_is_refused() -> None:
    data = encode_envelope(_env({"text": "", "attachments": [att(sha256="zz")]}))
    with pytest.raises(ProtocolError) as refused:
        decode_envelope(data)
    assert refused.value.code == ErrorCode.BAD_FRAME


def _frame(**fields: object) -> dict[str, object]:
    (frame,) = decode_message(
        encode_cbor([{"t": "send", "rid": 1, "to": "bob", **fields}]), WireFormat.CBOR
    )
    return frame


def test_send_takes_attachments_and_empty_text_only_with_them() -> None:
    request = parse_request(_frame(text="", attachments=[att()]))
    assert isinstance(request, Send)
    assert request.attachments == (Attachment(SHA, "photo.jpg", "image/jpeg", 5),)
    assert encode_request(request)["attachments"] == [att()]
    with pytest.raises(ProtocolError):
        parse_request(_frame(text=""))
    with pytest.raises(ProtocolError):
        parse_request(_frame(text="x", attachments=[att(name="")]))
    with pytest.raises(ProtocolError):
        parse_request(_frame(text="x", attachments=[]))
