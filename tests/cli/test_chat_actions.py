"""``chinwag chat`` and actions on messages (issue 17): model, commands, view."""

from __future__ import annotations

from typing import Any

import pytest

from chinwag.cli.chat_commands import ActionCommand, CommandError, parse_command
from chinwag.cli.chat_model import ChatModel
from chinwag.cli.chat_view import message_log

from .test_chat_model import HOME, text_msg

BOB = f"bob@{HOME}"
ALICE = f"alice@{HOME}"


def action(seq: int, frm: str, to: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    frame = text_msg(seq, frm, to, "", 900 + seq)
    frame["kind"], frame["body"] = kind, body
    return frame


def test_action_commands_take_the_rest_of_the_line() -> None:
    assert parse_command('edit it\'s "fixed" now') == ActionCommand("edit", 'it\'s "fixed" now')
    assert parse_command("reply sure thing") == ActionCommand("reply", "sure thing")
    assert parse_command("react 👍") == ActionCommand("react", "👍")
    assert parse_command("delete") == ActionCommand("delete")
    for bad in ("edit", "react", "delete now", "reply  "):
        with pytest.raises(CommandError):
            parse_command(bad)


def test_edit_react_delete_change_the_held_entry_and_the_view() -> None:
    m = model = ChatModel("alice", HOME, "kitchen")
    m.apply_msg(text_msg(1, BOB, ALICE, "helo", 11))
    m.apply_msg(text_msg(2, ALICE, BOB, "mine", 12))
    conv = m.conversations[BOB]
    assert conv.last_target(m.me, own=True).id == 12
    assert conv.last_target(m.me, own=False).id == 12
    m.apply_msg(action(3, BOB, ALICE, "edit", {"target": 11, "text": "hello"}))
    m.apply_msg(action(4, BOB, ALICE, "react", {"target": 12, "emoji": "👍", "remove": False}))
    m.apply_msg(action(5, ALICE, BOB, "react", {"target": 12, "emoji": "👍", "remove": False}))
    m.apply_msg(action(6, BOB, ALICE, "react", {"target": 12, "emoji": "👍", "remove": False}))
    # alice's own edit of bob's message changes nothing: only the sender may.
    m.apply_msg(action(7, ALICE, BOB, "edit", {"target": 11, "text": "forged"}))
    first, second = conv.entries
    assert (first.text, first.edited) == ("hello", True)
    assert second.reactions == {"👍": [BOB, ALICE]}
    shown = message_log(model, conv, 1_700_000_000_000).plain
    assert "hello (edited)" in shown and "👍2" in shown
    assert len(conv.entries) == 2  # actions are no lines of their own
    m.apply_msg(action(8, BOB, ALICE, "delete", {"target": 11}))
    assert first.deleted and first.text == ""
    assert "(deleted)" in message_log(model, conv, 1_700_000_000_000).plain
    assert conv.last_target(m.me, own=False).id == 12


def test_pages_show_current_state_and_replies_quote() -> None:
    m = ChatModel("alice", HOME, "kitchen")
    gone = text_msg(1, BOB, ALICE, "", 11)
    gone["body"], gone["deleted"] = {}, True
    edited = text_msg(2, BOB, ALICE, "new", 12, edited=True)
    edited["reactions"] = {"🎉": [{"u": "alice", "n": HOME}]}
    quoting = text_msg(3, BOB, ALICE, "yes", 13)
    quoting["body"]["reply_to"] = {"id": 12, "from": {"u": "bob", "n": HOME}, "excerpt": "new"}
    m.merge_page(BOB, [quoting, edited, gone], more=False)
    deleted, changed, reply = m.conversations[BOB].entries
    assert deleted.deleted and changed.edited and changed.reactions == {"🎉": [ALICE]}
    assert reply.reply_to == 12
    shown = message_log(m, m.conversations[BOB], 1_700_000_000_000).plain
    assert "↳ bob@kitchen: new" in shown


def test_a_reply_is_queued_with_its_target() -> None:
    m = ChatModel("alice", HOME, "kitchen")
    m.apply_msg(text_msg(1, BOB, ALICE, "question?", 11))
    target = m.conversations[BOB].last_target(m.me, own=False)
    entry = m.queue_send(BOB, "answer", reply_to=target)
    assert entry.reply_to == 11 and entry.reply.endswith("question?")
    saved = m.to_json()
    again = ChatModel("alice", HOME, "kitchen")
    again.load_json(saved)
    assert again.pending()[0].reply_to == 11
