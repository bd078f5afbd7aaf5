"""``chinwag chat`` without a screen or a node: model, commands, state file, back-off."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from chinwag.cli.chat_commands import (
    CommandError,
    ContactCommand,
    GroupCommand,
    LocalCommand,
    OpenChat,
    parse_command,
)
from chinwag.cli.chat_model import (
    EVENT,
    FAILED,
    HISTORY_LIMIT,
    MAX_CONVERSATIONS,
    OK,
    PENDING,
    RECEIVED,
    AddressError,
    ChatModel,
)
from chinwag.cli.chat_session import Backoff
from chinwag.cli.chat_state import StateBusy, StateFile
from chinwag.cli.chat_view import clean, message_log

HOME = "a" * 52
ATTIC = "b" * 52


def model() -> ChatModel:
    return ChatModel("alice", HOME, "kitchen")


def text_msg(seq: int, frm: str, to: str, text: str, msg_id: int, **extra: Any) -> dict[str, Any]:
    def user(address: str) -> dict[str, str]:
        u, _, n = address.partition("@")
        return {"u": u, "n": n}

    frame = {"t": "msg", "seq": seq, "kind": "text", "body": {"text": text}, "id": msg_id}
    frame |= {"origin": user(frm)["n"], "from": user(frm), "to": user(to), "ts": 1_700_000_000_000}
    return frame | extra


def test_the_cursor_drops_what_was_seen_and_counts_unread() -> None:
    m = model()
    assert m.apply_msg(text_msg(1, f"bob@{HOME}", f"alice@{HOME}", "hi", 10)) == f"bob@{HOME}"
    assert m.apply_msg(text_msg(1, f"bob@{HOME}", f"alice@{HOME}", "hi", 10)) is None
    assert m.apply_msg({"t": "msg", "seq": 2, "kind": "something-new", "body": {}}) is None
    assert m.cursor == 2
    conv = m.conversations[f"bob@{HOME}"]
    assert [e.text for e in conv.entries] == ["hi"] and conv.entries[0].state == RECEIVED
    assert conv.unread == 1
    m.select(conv.key)
    assert conv.unread == 0
    m.apply_msg(text_msg(3, f"bob@{HOME}", f"alice@{HOME}", "more", 11))
    assert conv.unread == 0  # open: read as it arrives


@pytest.mark.parametrize("echo_first", [False, True])
def test_a_send_is_pending_then_ok_and_its_echo_is_not_a_second_message(echo_first: bool) -> None:
    m = model()
    key = m.open("bob").key
    entry = m.queue_send(key, "hello")
    assert entry.state == PENDING and entry.cid and m.pending() == [entry]
    echo = text_msg(5, f"alice@{HOME}", f"bob@{HOME}", "hello", 99)
    if echo_first:
        m.apply_msg(echo)
    m.send_ok(entry.cid, 99, 5, 1_700_000_000_001)
    if not echo_first:
        m.apply_msg(echo)
    entries = m.conversations[key].entries
    assert [(e.text, e.state) for e in entries] == [("hello", OK)]
    assert m.pending() == [] and m.conversations[key].unread == 0


def test_failed_sends_keep_their_cid_for_a_retry() -> None:
    m = model()
    key = m.open("nobody").key
    entry = m.queue_send(key, "x")
    m.send_failed(entry.cid, "no such user (no_such_user)")
    assert entry.state == FAILED and m.pending() == []
    assert "✗ failed: no such user" in str(message_log(m, m.conversations[key], 0))
    cid = entry.cid
    assert m.retry_failed(key) == 1
    assert m.pending() == [entry] and entry.cid == cid
    # A remote refusal arrives later as an event naming the message id.
    m.send_ok(cid, 7, 3, 1)
    m.apply_msg(
        {
            "t": "msg",
            "seq": 4,
            "kind": "event",
            "body": {"type": "delivery_failed", "id": 7, "code": "no_such_user", "node": ATTIC},
        }
    )
    assert entry.state == FAILED and entry.error.startswith("no_such_user")


def test_a_conversation_opened_by_label_is_merged_into_the_node_id() -> None:
    m = model()
    conv = m.open("carol@attic")
    assert conv.key == "carol@attic"
    entry = m.queue_send(conv.key, "hello attic")
    assert entry.to == "carol@attic"  # the home node resolves the label
    m.send_ok(entry.cid, 42, 1, 1)
    # The echo names attic's id (no label in it): the two are one conversation.
    m.apply_msg(text_msg(1, f"alice@{HOME}", f"carol@{ATTIC}", "hello attic", 42, origin=HOME))
    assert list(m.conversations) == [f"carol@{ATTIC}"]
    assert m.current == f"carol@{ATTIC}" and m.display(m.current) == "carol@attic"
    assert [e.text for e in m.conversations[m.current].entries] == ["hello attic"]
    assert m.resolve("carol@attic") == f"carol@{ATTIC}"


def test_addresses_are_checked_and_resolved() -> None:
    m = model()
    assert m.resolve("bob") == m.resolve("bob@kitchen") == m.resolve(f"bob@{HOME}")
    assert m.resolve("#team@kitchen") == f"#team@{HOME}"
    assert m.resolve("Bob") == f"bob@{HOME}"
    for bad in ("", "bob@", "b o b", "#", "bob@no_such!"):
        with pytest.raises(AddressError):
            m.resolve(bad)


def test_history_is_bounded_but_keeps_pending_sends() -> None:
    m = model()
    key = m.open("bob").key
    pending = m.queue_send(key, "still waiting")
    for seq in range(1, HISTORY_LIMIT + 50):
        m.apply_msg(text_msg(seq, f"bob@{HOME}", f"alice@{HOME}", f"m{seq}", seq))
    entries = m.conversations[key].entries
    assert len(entries) == HISTORY_LIMIT and pending in entries
    assert entries[-1].text == f"m{HISTORY_LIMIT + 49}"


def test_the_number_of_conversations_is_bounded() -> None:
    m = model()
    first = m.open("first").key
    for n in range(MAX_CONVERSATIONS + 10):
        m.apply_msg(text_msg(n + 1, f"u{n}@{HOME}", f"alice@{HOME}", "hi", n + 1))
    assert len(m.conversations) == MAX_CONVERSATIONS
    assert first in m.conversations  # the open one stays
    assert f"u{MAX_CONVERSATIONS + 9}@{HOME}" in m.conversations
    assert "u0@" + HOME not in m.conversations


def test_group_events_and_presence() -> None:
    m = model()
    group = {"name": "book", "host": HOME}
    created = {"type": "group", "group": group, "gseq": 1, "action": "created"}
    created |= {"by": f"alice@{HOME}", "members": [f"alice@{HOME}"]}
    removed = {"type": "group", "group": group, "gseq": 2, "action": "members"}
    removed |= {"by": f"bob@{HOME}", "added": [], "removed": [f"alice@{HOME}"]}
    m.apply_msg({"t": "msg", "seq": 1, "kind": "event", "body": created})
    m.apply_msg({"t": "msg", "seq": 2, "kind": "event", "body": removed})
    conv = m.conversations[f"#book@{HOME}"]
    assert [e.state for e in conv.entries] == [EVENT, EVENT] and conv.left
    assert "bob@kitchen removed alice@kitchen" in conv.entries[1].text

    m.set_contacts([{"address": "bob@kitchen", "status": "offline", "last_active_at": 100}])

    def presence(status: str, last: int) -> dict[str, Any]:
        user = {"u": "bob", "n": HOME, "name": "kitchen"}
        return {"t": "presence", "user": user, "status": status, "last_active_at": last}

    assert m.apply_presence(presence("online", 200))
    assert m.contacts["bob@kitchen"].status == "online"
    assert not m.apply_presence(presence("offline", 150))  # older than what we know
    assert m.contacts["bob@kitchen"].status == "online"


def test_saved_state_round_trips_without_local_notes() -> None:
    m = model()
    key = m.open("bob").key
    m.apply_msg(text_msg(3, f"bob@{HOME}", f"alice@{HOME}", "hi", 1))
    m.queue_send(key, "unsent")
    m.note(key, "a local note")
    m.set_contacts([{"address": "bob@kitchen", "status": "online", "last_active_at": 5}])
    other = model()
    other.load_json(m.to_json())
    assert other.cursor == 3 and other.current == key
    assert [e.text for e in other.conversations[key].entries] == ["hi", "unsent"]
    assert [e.text for e in other.pending()] == ["unsent"]
    assert other.contacts["bob@kitchen"].status == "unknown"  # stale until the node says
    broken = model()
    broken.load_json({"cursor": "x", "conversations": [{"entries": 5}, "junk"]})
    assert broken.cursor == 0 and broken.conversations == {}


def test_state_file_is_private_locked_and_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    state = StateFile("http://h:1/", "alice", "d-1")
    m = model()
    m.cursor = 9
    state.write(state.dump(m))
    assert stat.S_IMODE(os.stat(state.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state.path.parent).st_mode) == 0o700
    assert state.load()["cursor"] == 9
    assert StateFile("http://h:1", "alice", "d-2").load() == {}  # another device
    state.lock()
    with pytest.raises(StateBusy):
        StateFile("http://h:1", "alice", "d-1").lock()
    state.unlock()


def test_commands_parse_or_explain() -> None:
    assert parse_command("chat #team@kitchen") == OpenChat("#team@kitchen")
    assert parse_command("contact remove bob") == ContactCommand("remove", "bob")
    assert parse_command('group create book "Book club"') == GroupCommand(
        "create", {"name": "book", "title": "Book club"}
    )
    assert parse_command("group add #b@k bob carol@attic") == GroupCommand(
        "add", {"group": "#b@k", "members": ["bob", "carol@attic"]}
    )
    assert parse_command("group leave #b@k") == GroupCommand("leave", {"group": "#b@k"})
    assert parse_command("quit") == LocalCommand("quit")
    for line, expected in (
        ("", "empty"),
        ("nope", "unknown command /nope"),
        ("group add #b@k", "required: ADDRESS"),
        ("group leave b@k", "#name@host"),
        ("contact wave bob", "invalid choice"),
        ('chat "bob', "No closing quotation"),
        ("help me", "unrecognized arguments"),
    ):
        with pytest.raises(CommandError, match=expected):
            parse_command(line)


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(0.5, 10.0)
    assert [backoff.delay(n, 1.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoff.delay(1000, 0.0) == 5.0


def test_control_characters_never_reach_the_terminal() -> None:
    assert clean("hi\x1b[2J\x07 there\nnext") == "hi\ufffd[2J\ufffd there\nnext"
