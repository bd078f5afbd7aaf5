"""``chinwag chat``'s model with the node's history frames (fake frames, no node):
``convs`` pages, ``history`` pages merged once each, read markers, ``/search`` hits."""

from __future__ import annotations

from typing import Any

from chinwag.cli.chat_commands import CommandError, OpenHit, SearchCommand, parse_command
from chinwag.cli.chat_model import EVENT, HISTORY_LIMIT, OK, PENDING, RECEIVED, ChatModel

from .test_chat_model import HOME, model, text_msg

BOB = f"bob@{HOME}"
ME = f"alice@{HOME}"


def from_bob(seq: int) -> dict[str, Any]:
    return text_msg(seq, BOB, ME, f"m{seq}", 1000 + seq)


def page(m: ChatModel, newest: int, oldest: int) -> list[dict[str, Any]]:
    """A ``history`` page of bob's conversation, newest first."""
    return [from_bob(seq) for seq in range(newest, oldest - 1, -1)]


def test_pages_merge_in_seq_order_once_each_and_mark_the_first_message() -> None:
    m = model()
    m.fresh = True
    assert m.merge_page(BOB, page(m, 100, 51), more=True) == 50
    conv = m.conversations[BOB]
    assert [e.seq for e in conv.entries] == list(range(51, 101)) and not conv.complete
    # An overlapping page (messages arrived meanwhile) adds only what is new.
    assert m.merge_page(BOB, page(m, 60, 11), more=True) == 40
    assert m.merge_page(BOB, page(m, 10, 1), more=False) == 10
    assert [e.seq for e in conv.entries] == list(range(1, 101)) and conv.complete
    assert all(e.state == RECEIVED for e in conv.entries)
    assert conv.oldest_seq() == 1 and conv.newest_seq() == 100
    # Paged-back entries stay in memory past HISTORY_LIMIT while new ones come
    # (as many as were loaded: a new message pushes the oldest out).
    m.merge_page(BOB, [from_bob(s) for s in range(400, 100, -1)], more=False)
    m.cursor = 400
    m.apply_msg(from_bob(401))
    assert len(conv.entries) == 400 > HISTORY_LIMIT
    assert conv.entries[0].seq == 2 and not conv.complete
    # The state file keeps the newest HISTORY_LIMIT only.
    saved = m.to_json()["conversations"][0]
    assert len(saved["entries"]) == HISTORY_LIMIT and saved["entries"][-1]["seq"] == 401
    assert "kept" not in saved and "fetched" not in saved


def test_a_page_keeps_pending_sends_after_the_message_they_followed() -> None:
    m = model()
    m.cursor = 5
    key = m.open("bob").key
    m.apply_msg(from_bob(6))
    pending = m.queue_send(key, "on its way")
    m.merge_page(key, page(m, 6, 1), more=False)
    entries = m.conversations[key].entries
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6, 0]
    assert entries[-1] is pending and pending.state == PENDING
    # My own message in a page is mine (OK), not received.
    mine = text_msg(3, ME, BOB, "from me", 77)
    other = model()
    other.merge_page(BOB, [mine], more=False)
    assert other.conversations[BOB].entries[0].state == OK


def test_convs_give_exact_unread_counts_previews_and_invitations() -> None:
    m = model()
    group = {"name": "club", "host": HOME}
    invited = {"type": "group", "group": group, "action": "invited", "by": BOB, "title": "Club"}
    items = [
        {"conv": BOB, "kind": "dm", "last": from_bob(120), "unread": 120, "read_seq": 0},
        {
            "conv": f"#club@{HOME}",
            "kind": "group",
            "title": "Club",
            "last": {"t": "msg", "seq": 7, "kind": "event", "body": invited, "ts": 5},
            "unread": 0,
            "read_seq": 0,
        },
    ]
    m.apply_convs(items)
    assert [c.key for c in m.ordered()] == [BOB, f"#club@{HOME}"]
    bob = m.conversations[BOB]
    assert bob.unread == 120 and [e.text for e in bob.entries] == ["m120"]
    club = m.conversations[f"#club@{HOME}"]
    assert club.left and f"#club@{HOME}" in m.invites and club.title == "Club"
    assert "invited you: /group accept #club@kitchen" in club.entries[0].text
    assert club.entries[0].state == EVENT and club.entries[0].seq == 7
    # A conversation already held keeps its messages; the count is the node's.
    m.apply_convs([{"conv": BOB, "last": from_bob(121), "unread": 3, "read_seq": 118}])
    assert [e.text for e in bob.entries] == ["m120"] and bob.unread == 3


def test_read_markers_only_move_forward_and_mark_what_is_shown() -> None:
    m = model()
    m.merge_page(BOB, page(m, 10, 1), more=False)
    conv = m.conversations[BOB]
    assert m.unread_mark(BOB) == 10
    assert m.apply_read({"conv": BOB, "read_seq": 8, "unread": 2}) == BOB
    assert (conv.read_seq, conv.unread) == (8, 2)
    assert m.apply_read({"t": "read", "conv": BOB, "read_seq": 5, "unread": 5}) is None
    assert (conv.read_seq, conv.unread) == (8, 2)
    assert m.apply_read({"conv": "nobody@" + HOME, "read_seq": 9, "unread": 0}) is None
    m.apply_read({"conv": BOB, "read_seq": 10, "unread": 0})
    assert m.unread_mark(BOB) == 0  # nothing newer to mark
    restored = model()
    restored.load_json(m.to_json())
    assert restored.conversations[BOB].read_seq == 10 and restored.conversations[BOB].complete


def test_search_and_open_commands_parse() -> None:
    assert parse_command("search crème brûlée") == SearchCommand("crème brûlée")
    assert parse_command("open 3") == OpenHit(3)
    for bad in ("search", "open", "open x", "open 0"):
        try:
            parse_command(bad)
        except CommandError:
            continue
        raise AssertionError(f"/{bad} was accepted")


def test_a_message_in_a_page_and_then_in_the_stream_is_held_once() -> None:
    m = model()
    m.cursor = 3
    key = m.open("bob").key
    m.queue_send(key, "pending, no seq yet")  # the newest entry has no seq
    m.merge_page(key, page(m, 5, 1), more=False)  # loaded ahead of the stream
    assert m.apply_msg(from_bob(4)) == key and m.apply_msg(from_bob(5)) == key
    assert m.apply_msg(from_bob(6)) == key
    assert [e.seq for e in m.conversations[key].entries] == [1, 2, 3, 4, 5, 0, 6]
