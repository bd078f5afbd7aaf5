"""``chinwag chat``'s typing line, receipt ticks and the block/receipts commands (no node)."""

from __future__ import annotations

from typing import Any

import pytest

from chinwag.cli.chat_commands import BlockCommand, CommandError, ReceiptsCommand, parse_command
from chinwag.cli.chat_model import TYPING_EXPIRY, ChatModel
from chinwag.cli.chat_view import message_log, typing_text

from .test_chat_model import ATTIC, HOME, text_msg


def model() -> ChatModel:
    return ChatModel("alice", HOME, "kitchen")


def typing(conv: str, user: str, state: str) -> dict[str, Any]:
    u, _, n = user.partition("@")
    return {"t": "typing", "conv": conv, "user": {"u": u, "n": n}, "state": state}


def receipt(conv: str, user: str, **ids: int) -> dict[str, Any]:
    u, _, n = user.partition("@")
    return {"t": "receipt", "conv": conv, "user": {"u": u, "n": n}, **ids}


def test_typing_line_appears_expires_and_ends_with_the_message() -> None:
    m = model()
    bob = f"bob@{ATTIC}"
    m.open(bob)
    assert m.apply_typing(typing(bob, bob, "start"), now=100.0) == bob
    assert m.typing_line(bob, 101.0) == f"{m.display(bob)} is typing…"
    assert m.typing_line(bob, 100.0 + TYPING_EXPIRY + 0.1) == ""  # ran out
    m.apply_typing(typing(bob, bob, "start"), now=200.0)
    m.apply_typing(typing(bob, bob, "stop"), now=201.0)
    assert m.typing_line(bob, 201.0) == ""
    m.apply_typing(typing(bob, bob, "start"), now=300.0)
    m.apply_msg(text_msg(1, bob, f"alice@{HOME}", "hi", 7))
    assert m.typing_line(bob, 300.5) == ""  # their message ends the line
    # Our own typing (another device) and unknown conversations are ignored.
    assert m.apply_typing(typing(bob, f"alice@{HOME}", "start"), now=1.0) is None
    assert m.apply_typing(typing("nobody@x", bob, "start"), now=1.0) is None


def test_typing_line_names_two_then_counts() -> None:
    m = model()
    group = f"#team@{HOME}"
    m.open(group)
    for name in ("bob", "carol"):
        m.apply_typing(typing(group, f"{name}@{HOME}", "start"), now=10.0)
    assert m.typing_line(group, 10.0) == "bob@kitchen and carol@kitchen are typing…"
    m.apply_typing(typing(group, f"dave@{HOME}", "start"), now=10.0)
    assert m.typing_line(group, 10.0) == "3 people are typing…"
    assert str(typing_text(m, m.conversations[group], 10.0)) == "3 people are typing…"


def test_ticks_stored_delivered_read_in_a_direct_conversation() -> None:
    m = model()
    bob = f"bob@{ATTIC}"
    for seq, msg_id in ((1, 10), (2, 20)):
        m.apply_msg(text_msg(seq, f"alice@{HOME}", bob, f"m{msg_id}", msg_id))
    conv = m.conversations[bob]
    first, second = conv.entries
    assert m.tick(conv, first) == "✓"  # stored on our node only
    m.apply_receipt(receipt(bob, bob, delivered_id=20))
    assert m.tick(conv, second) == "✓✓"
    m.apply_receipt(receipt(bob, bob, read_id=10))
    assert m.tick(conv, first) == "✓✓ read" and m.tick(conv, second) == "✓✓"
    # Positions never go back.
    m.apply_receipt(receipt(bob, bob, read_id=5, delivered_id=1))
    assert m.tick(conv, first) == "✓✓ read"
    assert "✓✓ read" in str(message_log(m, conv, 0))
    # A user of our own node has it once it is stored.
    carol = f"carol@{HOME}"
    m.apply_msg(text_msg(3, f"alice@{HOME}", carol, "hey", 30))
    local = m.conversations[carol]
    assert m.tick(local, local.entries[0]) == "✓✓"


def test_read_by_n_in_a_group_from_a_receipts_answer() -> None:
    m = model()
    group = f"#team@{HOME}"
    frame = text_msg(1, f"alice@{HOME}", f"x@{HOME}", "hello", 50)
    del frame["to"]
    frame["group"] = {"name": "team", "host": HOME}
    m.apply_msg(frame)
    conv = m.conversations[group]
    entry = conv.entries[0]
    assert m.tick(conv, entry) == "✓"
    reply = {
        "conv": group,
        "read_receipts": True,
        "receipts": [
            {"user": {"u": "bob", "n": ATTIC}, "read_id": 50},
            {"user": {"u": "carol", "n": HOME}, "read_id": 49},
            {"user": {"u": "dave", "n": HOME}, "read_id": 60},
        ],
    }
    assert m.apply_receipts(reply) == group
    assert m.read_by(conv, entry) == [f"bob@{ATTIC}", f"dave@{HOME}"]
    assert m.tick(conv, entry) == "✓ read by 2"
    # Receipts are not saved: they are asked again at the next start.
    assert "receipts" not in m.to_json()["conversations"][0]


def test_block_and_receipts_commands() -> None:
    assert parse_command("block bob@attic") == BlockCommand("add", "bob@attic")
    assert parse_command("unblock bob") == BlockCommand("remove", "bob")
    assert parse_command("receipts off") == ReceiptsCommand(False)
    assert parse_command("receipts on") == ReceiptsCommand(True)
    for bad in ("block", "block #team", "receipts maybe"):
        with pytest.raises(CommandError):
            parse_command(bad)
