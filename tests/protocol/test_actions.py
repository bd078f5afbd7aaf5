"""Action envelopes and frames (issue 17): bytes in, typed values or errors out."""

from __future__ import annotations

import pytest

from chinwag.protocol.actions import (
    EXCERPT_CHARS,
    check_emoji,
    delete_body,
    edit_body,
    parse_action,
    parse_reply_to,
    react_body,
    reply_to_body,
)
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.codec import encode_cbor
from chinwag.protocol.envelope import (
    Envelope,
    NodeKey,
    SignedUnit,
    decode_envelope,
    encode_envelope,
    open_unit,
    sign_envelope,
)
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import (
    Delete,
    Edit,
    React,
    Send,
    WireFormat,
    decode_message,
    encode_message,
    encode_request,
    parse_request,
)

KEY = NodeKey.generate()
ALICE = UserAddress("alice", KEY.id)
BOB = UserAddress("bob", KEY.id)


def action_env(kind: str, body: dict[str, object]) -> Envelope:
    return Envelope(id=77, sender=ALICE, to=BOB, group=None, ts=5, kind=kind, body=body)


def test_edit_envelope_bytes_round_trip_through_a_signed_unit() -> None:
    unit = sign_envelope(KEY, action_env("edit", edit_body(12, "fixed")))
    data = unit.encode()
    env = open_unit(SignedUnit.decode(data))
    assert env.kind == "edit" and env.body == {"target": 12, "text": "fixed"}
    assert parse_action(env.kind, env.body).text == "fixed"
    # The body is plain CBOR in the signed bytes: a map of target and text.
    assert encode_cbor({"target": 12, "text": "fixed"}) in unit.env


def test_delete_and_react_bodies_decode_from_bytes() -> None:
    for kind, body in (("delete", delete_body(9)), ("react", react_body(9, "🎉", True))):
        env = decode_envelope(encode_envelope(action_env(kind, body)))
        action = parse_action(env.kind, env.body)
        assert action.kind == kind and action.target == 9
    assert parse_action("react", react_body(9, "🎉", True)).remove is True


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("edit", {"target": 1}),
        ("edit", {"target": 1, "text": ""}),
        ("edit", {"target": 0, "text": "x"}),
        ("edit", {"target": True, "text": "x"}),
        ("edit", {"target": 1, "text": "x", "extra": 1}),
        ("delete", {"target": -4}),
        ("delete", {}),
        ("react", {"target": 1, "emoji": "👍"}),
        ("react", {"target": 1, "emoji": "ok", "remove": False}),
        ("react", {"target": 1, "emoji": "👍", "remove": 1}),
        ("shout", {"target": 1}),
    ],
)
def test_bad_action_bodies_are_bad_frames(kind: str, body: dict[str, object]) -> None:
    env = decode_envelope(encode_envelope(action_env(kind, body)))
    with pytest.raises(ProtocolError) as caught:
        parse_action(env.kind, env.body)
    assert caught.value.code is ErrorCode.BAD_FRAME


def test_edit_text_over_the_limit_is_too_large() -> None:
    with pytest.raises(ProtocolError) as caught:
        edit_body(1, "x" * (16 * 1024 + 1))
    assert caught.value.code is ErrorCode.TOO_LARGE


@pytest.mark.parametrize("emoji", ["👍", "🎉", "❤️", "👩‍💻", "🇫🇷", "?!", "‼", "1\ufe0f\u20e3"])
def test_emoji_accepted(emoji: str) -> None:
    assert check_emoji(emoji) == emoji


@pytest.mark.parametrize("emoji", ["", "ok", "1", "👍 ", "a👍", "\x00", "🎉" * 9, "\n"])
def test_emoji_refused(emoji: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_emoji(emoji)
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_reply_to_is_filled_and_checked() -> None:
    quoted = reply_to_body(5, ALICE, "y" * 300)
    assert len(quoted["excerpt"]) == EXCERPT_CHARS
    env = decode_envelope(encode_envelope(action_env("text", {"text": "re", "reply_to": quoted})))
    assert parse_reply_to(env.body["reply_to"]) == quoted
    for bad in ({"id": 5}, {**quoted, "id": 0}, {**quoted, "excerpt": "z" * 101}, "x"):
        with pytest.raises(ProtocolError) as caught:
            parse_reply_to(bad)
        assert caught.value.code is ErrorCode.BAD_FRAME


def test_action_frames_parse_from_cbor_and_json_bytes() -> None:
    requests = [
        Edit(rid=1, id=(1 << 62) + 3, text="new"),
        Delete(rid=2, id=(1 << 62) + 3),
        React(rid=3, id=(1 << 62) + 3, emoji="👍", remove=True),
        Send(rid=4, to="bob", text="re", cid=None, reply_to=(1 << 62) + 3),
    ]
    for fmt in WireFormat:
        data = encode_message([encode_request(r) for r in requests], fmt)
        if fmt is WireFormat.JSON:
            # 64-bit ids travel as decimal strings in JSON.
            assert isinstance(data, str) and f'"{(1 << 62) + 3}"' in data
        parsed = [parse_request(f) for f in decode_message(data, fmt)]
        assert parsed == requests


@pytest.mark.parametrize(
    "frame",
    [
        b'{"t":"edit","rid":1,"id":"5"}',
        b'{"t":"edit","rid":1,"id":"5","text":""}',
        b'{"t":"delete","rid":1,"id":"0"}',
        b'{"t":"delete","rid":1,"id":"5","text":"x"}',
        b'{"t":"react","rid":1,"id":"5","emoji":"yes"}',
        b'{"t":"react","rid":1,"id":"5","emoji":"\\ud83d\\udc4d","remove":"no"}',
        b'{"t":"send","rid":1,"to":"bob","text":"x","reply_to":"abc"}',
    ],
)
def test_bad_action_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        (decoded,) = decode_message(frame.decode(), WireFormat.JSON)
        parse_request(decoded)
    assert caught.value.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_REQUEST)
