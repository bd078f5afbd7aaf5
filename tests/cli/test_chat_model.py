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
    NameCommand,
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
from chinwag.cli.chat_session import Backoff, ChatSession
from chinwag.cli.chat_state import StateBusy, StateFile
from chinwag.cli.chat_view import (
    clean,
    contacts_text,
    conversation_prompt,
    conversation_title,
    message_log,
)
from chinwag.node.client import LoginResult

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
    assert parse_command('name Alice "the cat" L.') == NameCommand("Alice the cat L.")
    assert parse_command("name -") == NameCommand("")
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


EVIL = "x\x1b]52;c;cm0gLXJmIH4K\x07y\x1b[31mred\x1b[2J"


def _no_escapes(text: str) -> bool:
    return not any(ch in text for ch in "\x1b\x07\x9b")


def test_titles_names_and_labels_from_peers_are_cleaned() -> None:
    m = model()
    group = {"name": "team", "host": ATTIC, "host_name": "attic\x1b[31m"}
    renamed = {"type": "group", "group": group, "gseq": 2, "action": "renamed"}
    renamed |= {"by": f"mallory@{ATTIC}", "title": EVIL}
    key = m.apply_msg({"t": "msg", "seq": 1, "kind": "event", "body": renamed})
    assert key is not None
    conv = m.conversations[key]
    assert conv.title == EVIL  # kept as the node sent it, cleaned when shown
    assert _no_escapes(m.title(conv)) and "red" in m.title(conv)
    assert _no_escapes(conversation_prompt(m, conv).plain)
    assert _no_escapes(conversation_title(m, conv).plain)
    assert _no_escapes(message_log(m, conv, 0).plain)
    # From ``group list``, and a peer's node name learnt from a message.
    listed = m.add_group("book", HOME, "\x1b]0;PWNED\x07Book")
    assert _no_escapes(m.title(listed)) and m.title(listed).endswith("Book)")
    frame = text_msg(2, f"eve@{ATTIC}", f"alice@{HOME}", "hi", 5)
    frame["from"]["name"] = "evil\x1b[2Jnode"
    sender = m.apply_msg(frame)
    assert sender is not None
    assert _no_escapes(m.display(sender)) and _no_escapes(m.label(ATTIC))
    assert _no_escapes(message_log(m, m.conversations[sender], 0).plain)
    m.set_contacts([{"address": "z\x1b[31m@attic", "status": "off\x1b[2Jline"}])
    assert _no_escapes(contacts_text(m, 0).plain)


@pytest.mark.parametrize("order", ["ok echo failed", "echo ok failed", "echo failed ok"])
def test_a_retry_after_delivery_failed_is_a_new_send(order: str) -> None:
    """The home node stored the first try and remembers its cid: same cid = nothing sent."""
    m = model()
    m.labels[ATTIC] = "attic"
    key = m.open("zed@attic").key
    first = m.queue_send(key, "hi")
    old_cid = first.cid
    failed = {"type": "delivery_failed", "id": 77, "to": {"u": "zed", "n": ATTIC}}
    failed |= {"group": None, "code": "no_such_user", "node": ATTIC}
    for step, seq in zip(order.split(), (1, 2, 3), strict=True):
        if step == "ok":
            m.send_ok(old_cid, 77, 1, 1000)
        elif step == "echo":
            m.apply_msg(text_msg(seq, f"alice@{HOME}", f"zed@{ATTIC}", "hi", 77))
        else:
            m.apply_msg({"t": "msg", "seq": seq, "kind": "event", "body": failed})
    (entry,) = m.conversations[key].entries
    assert entry.state == FAILED and entry.error.startswith("no_such_user from attic")
    assert m.retry_failed(key) == 1
    assert m.pending() == [entry]
    assert entry.cid and entry.cid != old_cid and entry.to == key and entry.id == 0
    # The new send is stored under a new id; its ok and echo make it one ✓.
    m.send_ok(entry.cid, 78, 0, 2000)
    m.apply_msg(text_msg(4, f"alice@{HOME}", f"zed@{ATTIC}", "hi", 78))
    assert [(e.text, e.state, e.id) for e in m.conversations[key].entries] == [("hi", OK, 78)]


def test_pending_sends_go_out_in_send_order_across_conversations() -> None:
    m = model()
    bob, carol = m.open("bob").key, m.open("carol").key
    m.queue_send(carol, "first (to carol)")
    m.queue_send(bob, "second (to bob)")
    m.queue_send(carol, "third (to carol)")
    assert [e.text for e in m.pending()] == [
        "first (to carol)",
        "second (to bob)",
        "third (to carol)",
    ]
    refused = m.queue_send(bob, "refused")
    m.send_failed(refused.cid, "slow down (rate_limited)")
    m.queue_send(carol, "fourth (to carol)")
    m.retry_failed(bob)  # a retry goes out after what was queued before it
    expected = ["first (to carol)", "second (to bob)", "third (to carol)", "fourth (to carol)"]
    assert [e.text for e in m.pending()] == [*expected, "refused"]
    other = model()
    other.load_json(m.to_json())
    assert [e.text for e in other.pending()] == [*expected, "refused"]
    assert other.queue_send(bob, "later").sent > max(e.sent for e in m.pending())


def test_an_older_contact_list_does_not_undo_a_newer_presence_frame() -> None:
    m = model()
    m.set_contacts([{"address": "bob@kitchen", "status": "offline", "last_active_at": 100}])
    user = {"u": "bob", "n": HOME, "name": "kitchen"}
    assert m.apply_presence({"user": user, "status": "online", "last_active_at": 200})
    # The answer to a request sent before that frame.
    m.set_contacts([{"address": "bob@kitchen", "status": "offline", "last_active_at": 100}])
    assert (m.contacts["bob@kitchen"].status, m.contacts["bob@kitchen"].last_active_at) == (
        "online",
        200,
    )
    # A newer answer wins.
    m.set_contacts([{"address": "bob@kitchen", "status": "offline", "last_active_at": 300}])
    assert m.contacts["bob@kitchen"].status == "offline"


class _FakeClient:
    def __init__(self) -> None:
        self.presence: dict[str, dict[str, Any]] = {}


@pytest.mark.parametrize("listed_before", [True, False])
async def test_the_contacts_reply_does_not_undo_a_frame_that_came_meanwhile(
    listed_before: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    m = model()
    if listed_before:
        m.set_contacts([{"address": "bob@kitchen", "status": "offline", "last_active_at": 100}])
    login = LoginResult("token", "d-1", "alice", HOME, "kitchen")
    session = ChatSession(
        "http://h:1", login, m, StateFile("http://h:1", "alice", "d-1"), lambda change: None
    )
    client = _FakeClient()
    session._client = client  # type: ignore[assignment]
    frame = {"t": "presence", "user": {"u": "bob", "n": HOME, "name": "kitchen"}}
    frame |= {"status": "online", "last_active_at": 200}

    async def api_call(*args: Any, **kwargs: Any) -> dict[str, Any]:
        # While the request is on its way: the client gets the frame and the
        # session's presence watcher applies it.
        client.presence["bob@kitchen"] = frame
        m.apply_presence(frame)
        return {
            "contacts": [{"address": "bob@kitchen", "status": "offline", "last_active_at": 100}]
        }

    monkeypatch.setattr("chinwag.cli.chat_session.api_call", api_call)
    await session._load_contacts()
    assert m.contacts["bob@kitchen"].status == "online"
    assert m.contacts["bob@kitchen"].last_active_at == 200


def test_an_invitation_shows_how_to_answer_and_accepting_joins() -> None:
    m = model()
    group = {"name": "club", "host": ATTIC}
    m.labels[ATTIC] = "attic"
    invited = {"type": "group", "group": group, "action": "invited"}
    invited |= {"by": f"carol@{ATTIC}", "title": "Book club"}
    m.apply_msg({"t": "msg", "seq": 1, "kind": "event", "body": invited})
    key = f"#club@{ATTIC}"
    conv = m.conversations[key]
    assert conv.left and conv.title == "Book club"  # not a member yet: no sending
    assert m.invites == {key: "carol@attic"}
    assert conv.entries[-1].text == (
        "carol@attic invited you: /group accept #club@attic or /group decline #club@attic"
    )
    assert parse_command("group accept #club@attic") == GroupCommand(
        "accept", {"group": "#club@attic"}
    )
    assert parse_command("group decline #club@attic") == GroupCommand(
        "decline", {"group": "#club@attic"}
    )
    assert parse_command("group invites") == GroupCommand("invites", {})
    with pytest.raises(CommandError, match="#name@host"):
        parse_command("group accept club@attic")
    # The host's record of the join (after accept) makes alice a member.
    joined = {"type": "group", "group": group, "gseq": 5, "action": "members"}
    joined |= {"by": f"alice@{HOME}", "added": [f"alice@{HOME}"], "removed": []}
    m.apply_msg({"t": "msg", "seq": 2, "kind": "event", "body": joined})
    assert not conv.left and m.invites == {}


def test_senders_display_names_are_asked_once_and_shown() -> None:
    m = model()
    bob = f"bob@{ATTIC}"
    m.apply_msg(text_msg(1, bob, f"alice@{HOME}", "hi", 10))
    m.apply_msg(text_msg(2, bob, f"alice@{HOME}", "again", 11))
    m.apply_msg(text_msg(3, f"alice@{HOME}", bob, "mine", 12))
    assert m.names_wanted == {bob}  # once, and never oneself
    m.names_wanted.clear()
    m.apply_msg(text_msg(4, bob, f"alice@{HOME}", "third", 13))
    assert m.names_wanted == set()
    assert m.person(bob) == m.display(bob)  # no name known yet
    # A presence_query answer, then a live presence frame that has none set.
    user = {"u": "bob", "n": ATTIC, "name": "attic"}
    m.apply_presence({"user": user, "status": "online", "display_name": "Bob\x1b[2J B."})
    assert m.person(bob).startswith("Bob") and _no_escapes(m.person(bob))  # a peer chose it
    m.apply_presence({"user": user, "status": "online", "last_active_at": None})
    assert m.names[bob] == "Bob\x1b[2J B."  # an answer without a name changes nothing
    m.apply_presence({"t": "presence", "user": user, "status": "offline"})
    assert m.person(bob) == "bob@attic"


def test_files_are_shown_numbered_and_survive_the_state_file() -> None:
    from chinwag.cli.chat_commands import AttachCommand, SaveCommand

    m = model()
    photo = {"sha256": "a" * 64, "name": "photo.jpg", "type": "image/jpeg", "size": 2_100_000}
    notes = {"sha256": "b" * 64, "name": "notes.txt", "type": "text/plain", "size": 18}
    frame = text_msg(1, f"bob@{HOME}", f"alice@{HOME}", "", 10)
    frame["body"]["attachments"] = [photo, {"junk": 1}]
    m.apply_msg(frame)
    m.apply_msg(text_msg(2, f"bob@{HOME}", f"alice@{HOME}", "and", 11))
    frame = text_msg(3, f"bob@{HOME}", f"alice@{HOME}", "this", 12)
    frame["body"]["attachments"] = [notes]
    m.apply_msg(frame)
    key = f"bob@{HOME}"
    assert m.files_in(key) == [notes, photo]  # /save 1 is the newest
    conv = m.conversations[key]
    shown = message_log(m, conv, 0).plain
    assert ": [photo.jpg 2.1 MB]" in shown and "this [notes.txt 18 B]" in shown
    assert "this [notes.txt 18 B]" in conversation_prompt(m, conv).plain
    again = model()
    again.load_json(m.to_json())
    assert again.files_in(key) == [notes, photo]
    with pytest.raises(CommandError):
        parse_command("attach ~/a b.jpg")  # a space: quote the path
    assert parse_command("attach '~/a b.jpg'") == AttachCommand("~/a b.jpg")
    assert parse_command("save") == SaveCommand(None, None)
    assert parse_command("save 2 /tmp") == SaveCommand(2, "/tmp")
    with pytest.raises(CommandError):
        parse_command("save 0")
