"""``chinwag chat`` end to end: the textual app against a real node process.

These are plain ``def`` tests (the suite runs async tests under trio; the app
needs asyncio): each runs its Pilot code with ``asyncio.run`` on a thread of
its own (``run_app_test``).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import trio
from textual.widgets import Input, OptionList

from chinwag.cli.chat_model import FAILED, OK, PENDING
from chinwag.cli.chat_state import StateFile
from chinwag.cli.common import cached_login
from chinwag.cli.tui_cmd import prepare_login
from chinwag.node.client import api_call, connect

from .tui_harness import (
    Online,
    SyncNode,
    in_trio,
    listed,
    open_app,
    run_app_test,
    send_as,
    shown,
    texts_of,
    type_line,
    until,
    until_connected,
    users,
)

SIZE = (120, 40)


def _befriend(node: SyncNode, token: str, address: str) -> None:
    """``token``'s user adds ``address`` as a contact (whose group adds are then direct)."""
    trio.run(api_call, node.url, "POST", "/api/contacts", {"address": address}, token)


def test_log_in_send_acknowledged_and_receive_live(node: SyncNode) -> None:
    (bob,) = users(node, "alice", "bob")[1:]

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            assert shown(app, "#status").startswith("alice@kitchen  device d-")
            await type_line(pilot, "/chat bob")
            assert shown(app, "#title").startswith("bob@kitchen")
            await pilot.press(*"hello bob", "enter")  # typed key by key
            entry = app.model.conversations[app.model.current or ""].entries[-1]
            assert entry.text == "hello bob" and entry.state in (PENDING, OK)
            await until(pilot, lambda: "you: hello bob  ✓" in shown(app, "#messages"), "the ok")
            assert entry.state == OK
            await type_line(pilot, "//slash, not a command")
            await until(
                pilot, lambda: "you: /slash, not a command  ✓" in shown(app, "#messages"), "/"
            )

            await in_trio(send_as, node.url, bob, "alice", "hi alice")
            await until(pilot, lambda: "bob@kitchen: hi alice" in shown(app, "#messages"), "msg")
            # The node answers a send it refuses: the entry shows it failed.
            await type_line(pilot, "/chat nobody")
            await type_line(pilot, "anyone there?")
            failed = app.model.conversations[app.model.current or ""].entries[-1]
            await until(pilot, lambda: "✗ failed" in shown(app, "#messages"), "the node's err")
            assert failed.state == FAILED and "no_such_user" in shown(app, "#messages")

    run_app_test(main)
    assert trio.run(texts_of, node.url, bob) == ["hello bob", "/slash, not a command", "hi alice"]
    # The token was cached at log-in, the state saved, both private.
    login = cached_login(node.url, "alice", None)
    assert login is not None
    state = StateFile(node.url, "alice", login.device).path
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state.parent).st_mode) == 0o700


def test_switch_conversations_with_keys_and_unread_counts(node: SyncNode) -> None:
    _, bob, carol = users(node, "alice", "bob", "carol")

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await type_line(pilot, "/chat carol")
            await in_trio(send_as, node.url, bob, "alice", "from bob")
            # Not open: counted as unread in the list, not shown in the log.
            await until(pilot, lambda: listed(app)[0].startswith("bob@kitchen (1)"), "bob's msg")
            assert "from bob" in listed(app)[0] and listed(app)[1].startswith("carol@kitchen")
            bob_key = app.model.resolve("bob")
            assert app.model.conversations[bob_key].unread == 1
            assert "from bob" not in shown(app, "#messages")

            await pilot.press("ctrl+n")
            assert app.model.current == bob_key
            assert "from bob" in shown(app, "#messages")
            assert app.model.conversations[bob_key].unread == 0
            await pilot.press("ctrl+p")
            assert app.model.current == app.model.resolve("carol")
            await in_trio(send_as, node.url, carol, "alice", "from carol")
            await until(pilot, lambda: "from carol" in shown(app, "#messages"), "carol's message")
            assert app.model.conversations[app.model.current or ""].unread == 0
            # Bad commands and bad addresses are explained, not sent.
            for line, expected in (
                ("/frobnicate", "unknown command /frobnicate"),
                ("/chat", "the following arguments are required"),
                ("/chat not valid!", "unrecognized arguments"),
                ("/chat Bad~Name", "is not an address"),
            ):
                await type_line(pilot, line)
                assert expected in shown(app, "#notice"), line

    run_app_test(main)


def test_group_commands(node: SyncNode) -> None:
    _, bob = users(node, "alice", "bob")
    _befriend(node, bob, "alice")  # so alice's add makes bob a member at once

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await type_line(pilot, '/group create book "Book club"')
            await until(pilot, lambda: "created #book@kitchen" in shown(app, "#notice"), "create")
            assert shown(app, "#title").startswith("#book@kitchen (Book club)")
            await until(pilot, lambda: "created the group" in shown(app, "#messages"), "event")
            await type_line(pilot, "/group add #book@kitchen bob")
            await until(pilot, lambda: "2 members" in shown(app, "#notice"), "add")
            await until(pilot, lambda: "added bob@kitchen" in shown(app, "#messages"), "event")
            await type_line(pilot, "chapter one")
            await until(pilot, lambda: "chapter one  ✓" in shown(app, "#messages"), "group send")
            await in_trio(send_as, node.url, bob, "#book@kitchen", "loved it")
            await until(pilot, lambda: "bob@kitchen: loved it" in shown(app, "#messages"), "msg")
            await type_line(pilot, "/group members #book@kitchen")
            await until(pilot, lambda: "2 members\n" in shown(app, "#notice"), "members")
            assert "● alice@kitchen online" in shown(app, "#notice")
            assert "bob@kitchen" in shown(app, "#notice")
            # A server error is shown with the node's message and code.
            await type_line(pilot, "/group add #nope@kitchen bob")
            await until(pilot, lambda: "failed" in shown(app, "#notice"), "error")
            assert "(not_found)" in shown(app, "#notice")
            await type_line(pilot, "/group leave #book@kitchen")
            await until(pilot, lambda: "left #book@kitchen" in shown(app, "#notice"), "leave")
            assert "you are not a member" in shown(app, "#title")

    run_app_test(main)
    assert trio.run(texts_of, node.url, bob) == ["chapter one", "loved it"]


def test_contacts_presence_changes_live(node: SyncNode) -> None:
    _, bob = users(node, "alice", "bob")

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            assert "No contacts" in shown(app, "#contacts")
            await type_line(pilot, "/contact add bob")
            await until(pilot, lambda: "added contact bob@kitchen" in shown(app, "#notice"), "add")
            await until(pilot, lambda: "○ bob@kitchen offline" in shown(app, "#contacts"), "list")
            with Online(node.url, bob):
                await until(pilot, lambda: "● bob@kitchen online" in shown(app, "#contacts"), "on")
            # Offline after the node's presence grace (2 s), with the time of it.
            await until(pilot, lambda: "bob@kitchen offline" in shown(app, "#contacts"), "off")
            assert "last active" in shown(app, "#contacts")
            await type_line(pilot, "/contact remove bob")
            await until(pilot, lambda: "No contacts" in shown(app, "#contacts"), "removed")

    run_app_test(main)


def test_restart_resumes_from_the_saved_cursor_without_duplicates(node: SyncNode) -> None:
    _, bob = users(node, "alice", "bob")
    trio.run(send_as, node.url, bob, "alice", "one")

    async def first_run() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.cursor == 1, "backlog")
            await type_line(pilot, "/chat bob")
            await type_line(pilot, "two")
            await until(pilot, lambda: "two  ✓" in shown(app, "#messages"), "ack")
            await until(pilot, lambda: app.model.cursor == 2, "the echo of two")
            await type_line(pilot, "/quit")
            await until(pilot, lambda: not app.is_running, "quit")

    run_app_test(first_run)
    login = cached_login(node.url, "alice", None)
    assert login is not None
    state = StateFile(node.url, "alice", login.device)
    assert json.loads(state.path.read_text())["cursor"] == 2
    trio.run(send_as, node.url, bob, "alice", "three")  # while the app is closed

    async def second_run() -> None:
        app = open_app(node.url, "alice")
        assert app.login.device == login.device  # the same device, so the same cursor
        async with app.run_test(size=SIZE) as pilot:
            # The cached history is there before any connection.
            assert app.model.current == app.model.resolve("bob")
            assert "one" in shown(app, "#messages") and "two" in shown(app, "#messages")
            await until(pilot, lambda: "three" in shown(app, "#messages"), "the new message")
            await until_connected(pilot)
            lines = shown(app, "#messages").splitlines()
            for text in ("bob@kitchen: one", "you: two  ✓✓", "bob@kitchen: three"):
                assert sum(line.endswith(text) for line in lines) == 1, lines
            assert len(lines) == 3
            assert app.model.cursor == 3

    run_app_test(second_run)


def test_reconnects_by_itself_and_resends_pending(node: SyncNode) -> None:
    _, bob = users(node, "alice", "bob")

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await type_line(pilot, "/chat bob")
            await asyncio.to_thread(node.kill)
            await until(pilot, lambda: "offline" in shown(app, "#status"), "noticed")
            await type_line(pilot, "sent while down")
            assert "sent while down  sending…" in shown(app, "#messages")
            await asyncio.to_thread(node.start)  # the same port and data
            await until(
                pilot,
                lambda: "you: sent while down  ✓" in shown(app, "#messages"),
                "the resend's ok",
            )
            assert app.session.connected
            await in_trio(send_as, node.url, bob, "alice", "welcome back")
            await until(pilot, lambda: "welcome back" in shown(app, "#messages"), "live msg")
            lines = shown(app, "#messages").splitlines()
            assert [line.split(" ", 1)[1] for line in lines] == [
                "you: sent while down  ✓✓",  # a user of our node: delivered once stored
                "bob@kitchen: welcome back",
            ]
            sent = await in_trio(texts_of, node.url, bob)
            assert sent == ["sent while down", "welcome back"]

    run_app_test(main)


def test_log_in_reuses_a_valid_token_and_replaces_a_revoked_one(node: SyncNode) -> None:
    users(node, "alice")
    first = trio.run(prepare_login, node.url, "alice", None)  # password from the environment
    assert trio.run(prepare_login, node.url, "alice", None) == first  # cached, still valid
    trio.run(api_call, node.url, "POST", "/api/logout", None, first.token)
    again = trio.run(prepare_login, node.url, "alice", None)
    assert again.token != first.token
    assert cached_login(node.url, "alice", None) == again


def test_a_revoked_session_stops_reconnecting_and_forgets_the_token(node: SyncNode) -> None:
    users(node, "alice")

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await in_trio(api_call, node.url, "POST", "/api/logout", None, app.login.token)
            # An open WebSocket outlives its token; the next connection is refused.
            await asyncio.to_thread(node.kill)
            await asyncio.to_thread(node.start)  # the same port and data
            await until(pilot, lambda: "logged out" in shown(app, "#status"), "refusal")
            assert "run chinwag chat again" in shown(app, "#notice")

    run_app_test(main)
    assert cached_login(node.url, "alice", None) is None


async def _invite_alice(url: str, token: str) -> None:
    async with connect(url, token) as client:
        await client.group("create", name="club", title="Club")
        await client.group("add", group="#club@kitchen", members=["alice"])


def test_an_invitation_is_answered_with_group_accept(node: SyncNode) -> None:
    _, bob = users(node, "alice", "bob")
    trio.run(_invite_alice, node.url, bob)  # alice does not have bob as a contact

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await until(pilot, lambda: any("#club@kitchen" in i for i in listed(app)), "invite")
            await type_line(pilot, "/chat #club@kitchen")
            await until(pilot, lambda: "invited you" in shown(app, "#messages"), "invitation")
            assert "/group accept #club@kitchen" in shown(app, "#messages")
            await type_line(pilot, "/group invites")
            await until(pilot, lambda: "your invitations" in shown(app, "#notice"), "invites")
            assert "#club@kitchen from bob@kitchen" in shown(app, "#notice")
            await type_line(pilot, "/group accept #club@kitchen")
            await until(pilot, lambda: "accepted #club@kitchen" in shown(app, "#notice"), "ok")
            await until(pilot, lambda: "added alice@kitchen" in shown(app, "#messages"), "join")
            await in_trio(send_as, node.url, bob, "#club@kitchen", "welcome")
            await until(pilot, lambda: "bob@kitchen: welcome" in shown(app, "#messages"), "msg")

    run_app_test(main)


EVIL_TITLE = "Evil\x1b]52;c;cm0gLXJmIH4K\x07 \x1b[31mred\x1b[0m"


def _no_escapes(text: str) -> bool:
    return not any(ch in text for ch in "\x1b\x07\x9b")


async def _evil_group(url: str, token: str) -> None:
    """bob makes a group with alice whose titles are terminal escape sequences."""
    async with connect(url, token) as client:
        await client.group("create", name="evil", title=EVIL_TITLE)
        await client.group("add", group="#evil@kitchen", members=["alice"])
        await client.group("rename", group="#evil@kitchen", title="\x1b[2J" + EVIL_TITLE)


def test_escape_sequences_in_group_titles_never_reach_the_screen(node: SyncNode) -> None:
    alice, bob = users(node, "alice", "bob")
    _befriend(node, alice, "bob")
    trio.run(_evil_group, node.url, bob)

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            # The renamed event (and the group list at connect) set the title.
            await until(pilot, lambda: any("#evil@kitchen" in i for i in listed(app)), "group")
            await until(pilot, lambda: "red" in listed(app)[0], "the title")
            assert all(_no_escapes(item) for item in listed(app)), listed(app)
            await type_line(pilot, "/chat #evil@kitchen")
            assert "red" in shown(app, "#title") and _no_escapes(shown(app, "#title"))
            assert "renamed the group" in shown(app, "#messages")
            assert _no_escapes(shown(app, "#messages"))
            assert "chatting with #evil@kitchen (\ufffd[2JEvil" in shown(app, "#notice")
            assert _no_escapes(shown(app, "#notice"))
            await type_line(pilot, "/group list")
            await until(pilot, lambda: "your groups" in shown(app, "#notice"), "group list")
            assert "red" in shown(app, "#notice") and _no_escapes(shown(app, "#notice"))
            assert all(_no_escapes(item) for item in listed(app))
            await type_line(pilot, "/group members #evil@kitchen")
            await until(pilot, lambda: "2 members" in shown(app, "#notice"), "members")
            assert _no_escapes(shown(app, "#notice"))

    run_app_test(main)


def test_the_list_highlight_stays_where_the_user_moved_it(node: SyncNode) -> None:
    _, bob = users(node, "alice", "bob", "carol", "dave")[:2]

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            for name in ("bob", "carol", "dave"):
                await type_line(pilot, f"/chat {name}")
            listing = app.query_one("#conversations", OptionList)
            carol, dave = app.model.resolve("carol"), app.model.resolve("dave")
            assert [o.id for o in listing.options] == [dave, carol, app.model.resolve("bob")]
            listing.focus()
            await pilot.press("down")  # browsing: dave (open) -> carol
            assert listing.highlighted_option is not None
            assert listing.highlighted_option.id == carol
            # A message re-orders and redraws the list; the highlight stays on carol.
            await in_trio(send_as, node.url, bob, "alice", "moves bob up")
            await until(pilot, lambda: "moves bob up" in listed(app)[0], "bob's message")
            assert listing.highlighted_option is not None
            assert listing.highlighted_option.id == carol
            assert app.model.current == dave
            await pilot.press("enter")
            assert app.model.current == carol
            # Switching with ctrl+n/ctrl+p moves it along with the open conversation.
            await pilot.press("ctrl+n")
            assert listing.highlighted_option is not None
            assert listing.highlighted_option.id == app.model.current != carol

    run_app_test(main)


async def _types_to(url: str, token: str, to: str) -> None:
    async with connect(url, token) as client:
        await client.call({"t": "typing", "conv": to, "state": "start"})


async def _reads_all(url: str, token: str, conv: str) -> None:
    async with connect(url, token) as client:
        head = await client.sync(0)
        await client.read(conv, head)


async def _sees_typing(url: str, token: str, conv: str) -> str:
    """Wait (connected) until someone types to this user in ``conv``; their address."""
    async with connect(url, token) as client:
        await client.wait_signal(lambda: any(k[0] == conv for k in client.typing_states), 20)
        return next(k[1] for k in client.typing_states if k[0] == conv)


def test_typing_line_and_read_tick(node: SyncNode) -> None:
    (bob,) = users(node, "alice", "bob")[1:]

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await type_line(pilot, "/chat bob")
            await type_line(pilot, "are you there?")
            await until(pilot, lambda: "you: are you there?  ✓✓" in shown(app, "#messages"), "ok")
            await in_trio(_types_to, node.url, bob, "alice")
            await until(pilot, lambda: "bob@kitchen is typing…" in shown(app, "#typing"), "typing")
            await in_trio(_reads_all, node.url, bob, "alice")
            await until(pilot, lambda: "✓✓ read" in shown(app, "#messages"), "the read tick")
            # Typing in the input line reaches bob. His device connects at some
            # point: keep typing and clearing (each start after a stop goes out).
            conv = f"alice@{app.model.node_id}"
            watcher = asyncio.ensure_future(in_trio(_sees_typing, node.url, bob, conv))
            box = app.query_one("#input", Input)
            for _ in range(60):
                if watcher.done():
                    break
                box.value = "typing"
                await pilot.pause(0.2)
                box.value = ""
                await pilot.pause(0.2)
            assert await asyncio.wait_for(watcher, 5) == conv

    run_app_test(main)


def test_attach_a_file_and_save_one(node: SyncNode, tmp_path: Path) -> None:
    (bob,) = users(node, "alice", "bob")[1:]
    photo = tmp_path / "in" / "photo.jpg"
    photo.parent.mkdir()
    photo.write_bytes(b"\xff\xd8\xff not really a jpeg" + b"x" * 2_100_000)
    saved = tmp_path / "copy.bin"

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await type_line(pilot, "/chat bob")
            await type_line(pilot, f"/attach {photo}")
            await until(
                pilot, lambda: "[photo.jpg 2.1 MB]  ✓" in shown(app, "#messages"), "the file sent"
            )
            await type_line(pilot, "/save")
            assert "1. [photo.jpg 2.1 MB]" in shown(app, "#notice")
            await type_line(pilot, f"/save 1 {saved}")
            await until(pilot, lambda: shown(app, "#notice").startswith("saved "), "the file saved")
            # Into a directory: under the file's own name.
            await type_line(pilot, f"/save 1 {tmp_path}")
            await until(
                pilot,
                lambda: shown(app, "#notice").startswith(f"saved {tmp_path / 'photo.jpg'}"),
                "saved by name",
            )
            await type_line(pilot, "/save 2")
            assert "there are 1 file(s) here" in shown(app, "#notice")

    run_app_test(main)
    assert saved.read_bytes() == photo.read_bytes()
    assert (tmp_path / "photo.jpg").read_bytes() == photo.read_bytes()
    (frame,) = trio.run(frames_of, node.url, bob)
    assert [a["name"] for a in frame["body"]["attachments"]] == ["photo.jpg"]


async def frames_of(url: str, token: str) -> list[dict]:
    async with connect(url, token) as client:
        head = await client.sync(0)
        return [await client.messages.receive() for _ in range(head)]


def test_the_typing_line_timer_is_harmless_while_the_app_closes(node: SyncNode) -> None:
    """The typing line is redrawn every second by a timer, which can fire
    while the app is being torn down and its widgets are gone (CI saw
    NoMatches for '#typing' after a test's app exited)."""
    users(node, "alice")

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await app.query_one("#typing").remove()
            app._render_typing()  # what the timer calls; must not raise

    run_app_test(main)
