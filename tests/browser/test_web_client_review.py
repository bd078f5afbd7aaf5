"""Regression tests for the web-client bugs found in review (helper-12).

Each test reproduces one bug exactly and asserts the fixed behaviour:

* a pending send restored after a reload is not mistaken for an older
  message with the same text;
* an early echo never merges a provisional conversation (``bob@attic``) into
  another one; message ids are per origin node (the same id from two nodes is
  two messages);
* fast sends to a provisional conversation on a federated node are each sent
  once and end up in one conversation;
* a Retry after ``delivery_failed`` is a new message (the node answers the old
  cid with the old ``ok``);
* list updates keep the keyboard focus, and the aria-live ``#messages`` list
  gets only the new message elements.

The mocked cases script the node's side of ``/ws`` with ``route_web_socket``
(the HTTP log-in still goes to a real node). Plain ``def`` tests (see
test_web_client.py); every wait is a bounded Playwright ``expect``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from .conftest import Browsers, NodeProcess
from .pages import Chat, PlaywrightError, expect

ONLINE_TIMEOUT_MS = 15_000  # a reconnect after a node restart: back-off plus start-up
REMOTE_TIMEOUT_MS = 15_000  # a delivery_failed from another node
ATTIC_ID = "a" * 52  # a node id the mocked node federates with


def _chat(browsers: Browsers, node: NodeProcess, context: Any = None) -> Chat:
    """A new tab at ``node``'s web client (``browsers.page`` only opens the first node)."""
    if node is browsers.node:
        return Chat(browsers.page(context), node)
    page = (context or browsers.context()).new_page()
    page.goto(node.url)
    return Chat(page, node)


def _states(chat: Chat) -> list[str]:
    """``seq:state:text`` of every message in the open conversation."""
    return chat.messages.evaluate_all(  # type: ignore[no-any-return]
        "items => items.map(li => `${li.dataset.seq || '-'}:${li.dataset.state}:`"
        " + li.querySelector('.msg-text').textContent)"
    )


def _conversation_keys(chat: Chat) -> list[str]:
    return chat.page.locator("#conversations li.conversation").evaluate_all(  # type: ignore[no-any-return]
        "items => items.map(li => li.dataset.conv).sort()"
    )


def _allow_repeats(browsers: Browsers, text: str, copies: int) -> None:
    """The test shows ``text`` ``copies`` times on purpose, as distinct messages.

    Drops the page-wide duplicate watch's reports of it (conftest), but only
    those with at most ``copies`` copies of which no two share an id.
    """
    browsers.duplicates()  # reports in flight arrive

    def intended(report: dict[str, Any]) -> bool:
        ids = [c["id"] for c in report["copies"] if c["id"]]
        return (
            report["text"] == text and len(report["copies"]) <= copies and len(ids) == len(set(ids))
        )

    browsers._duplicates[:] = [d for d in browsers._duplicates if not intended(d)]


# ------------------------------------------------------------------ reload while the node is down


def test_pending_send_with_the_text_of_an_older_message_survives_a_reload(
    browsers: Browsers, node: NodeProcess
) -> None:
    """A send made while the node is down, with the same text as an earlier
    message, then the tab reloaded (still down): after the node is back the
    page syncs from 0. The old echo must not be taken for the pending send's:
    the send is made, and both messages are shown, each once."""
    node.signup("alice")
    node.signup("bob")
    alice = _chat(browsers, node).login("alice")
    alice.open_new_chat("bob")
    alice.send_and_confirm("ok")

    node.stop()
    expect(alice.page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    alice.send("ok")
    expect(alice.message("ok", "pending")).to_have_count(1)
    pending = json.loads(alice.page.evaluate("sessionStorage.getItem('chinwag.pending')"))
    assert [p["text"] for p in pending] == ["ok"]
    with pytest.raises(PlaywrightError):
        alice.page.reload(timeout=5_000)  # nothing listens: an error page

    node.start()  # same port: same origin, same sessionStorage
    alice.page.goto(node.url)
    expect(alice.page.locator("#chat-view")).to_be_visible()
    alice.expect_online(timeout=ONLINE_TIMEOUT_MS)
    alice.open_conversation(node.address("bob"))
    alice.expect_texts(["ok", "ok"])
    expect(alice.message("ok", "sent")).to_have_count(2)
    assert _states(alice) == ["1:sent:ok", "2:sent:ok"]
    assert alice.page.evaluate("sessionStorage.getItem('chinwag.pending')") in (None, "[]")

    bob = _chat(browsers, node).login("bob")
    bob.open_conversation(node.address("alice"))
    bob.expect_texts(["ok", "ok"])
    expect(bob.message("ok", "received")).to_have_count(2)
    _allow_repeats(browsers, "ok", 2)


# ------------------------------------------------------------------ a scripted node (/ws mocked)


class MockNode:
    """The node's side of ``/ws``, scripted; ``on_send(mock, frame)`` answers sends."""

    def __init__(
        self,
        node: NodeProcess,
        user: str,
        backlog: Sequence[dict[str, Any]] = (),
        on_send: Callable[[MockNode, dict[str, Any]], None] | None = None,
    ) -> None:
        self.node_id = node.node_id
        self.node_name = node.name
        self.user = user
        self.backlog = list(backlog)
        self.seq = len(self.backlog)
        self.next_id = 1000
        self.on_send = on_send
        self.sends: list[dict[str, Any]] = []
        self.ws: Any = None

    def attach(self, context: Any) -> None:
        context.route_web_socket(re.compile(r"/ws$"), self._route)

    def _route(self, ws: Any) -> None:
        self.ws = ws
        ws.on_message(self._from_page)

    def send(self, *frames: dict[str, Any]) -> None:
        self.ws.send(json.dumps(list(frames) if len(frames) > 1 else frames[0]))

    def _from_page(self, message: Any) -> None:
        data = json.loads(message)
        for frame in data if isinstance(data, list) else [data]:
            kind = frame.get("t")
            if kind == "auth":
                self.send({
                    "t": "ok", "rid": frame["rid"], "user": self.user, "device": "d",
                    "node_id": self.node_id, "node_name": self.node_name, "protocol": 1,
                    "heartbeat_ms": 10_000, "head": self.seq,
                })  # fmt: skip
            elif kind == "sync":
                after = [m for m in self.backlog if m["seq"] > frame["after"]]
                self.send({"t": "ok", "rid": frame["rid"], "head": self.seq}, *after)
            elif kind == "convs":
                self.send({"t": "ok", "rid": frame["rid"], "convs": self._convs()})
            elif kind == "history":
                msgs = [m for m in reversed(self.backlog) if self._conv_of(m) == frame["conv"]]
                if msgs:
                    self.send({"t": "ok", "rid": frame["rid"], "conv": frame["conv"], "msgs": msgs})
                else:
                    self.send({
                        "t": "err", "rid": frame["rid"], "code": "not_found",
                        "message": "no such conversation",
                    })  # fmt: skip
            elif kind == "read":
                self.send({
                    "t": "ok", "rid": frame["rid"], "conv": frame["conv"],
                    "read_seq": frame["seq"], "unread": 0,
                })  # fmt: skip
            elif kind == "send":
                self.sends.append(frame)
                if self.on_send is not None:
                    self.on_send(self, frame)
            elif kind == "group":
                self.send({"t": "ok", "rid": frame["rid"], "groups": [], "members": []})
            elif "rid" in frame:
                self.send({"t": "ok", "rid": frame["rid"]})

    def _conv_of(self, msg: dict[str, Any]) -> str:
        """The node's conversation key of a text ``msg`` for this user."""
        if "group" in msg:
            return f"#{msg['group']['name']}@{msg['group']['host']}"
        mine = msg["from"]["u"] == self.user and msg["from"]["n"] == self.node_id
        other = msg["to"] if mine else msg["from"]
        return f"{other['u']}@{other['n']}"

    def _convs(self) -> list[dict[str, Any]]:
        """``convs`` from the backlog: newest first, every message from others unread."""
        convs: dict[str, dict[str, Any]] = {}
        for m in self.backlog:
            key = self._conv_of(m)
            conv = convs.setdefault(key, {"conv": key, "kind": "dm", "unread": 0, "read_seq": 0})
            conv["last"] = m
            if not (m["from"]["u"] == self.user and m["from"]["n"] == self.node_id):
                conv["unread"] += 1
        return sorted(convs.values(), key=lambda c: -c["last"]["seq"])

    def msg(
        self,
        sender: str,
        text: str,
        to: str,
        *,
        mid: int | None = None,
        to_name: str | None = None,
        from_name: str | None = None,
    ) -> dict[str, Any]:
        """A text ``msg`` frame, next in the queue; addresses are ``user@<node id>``."""
        self.seq += 1
        self.next_id += 1
        from_user, from_node = sender.split("@")
        to_user, to_node = to.split("@")
        frame: dict[str, Any] = {
            "t": "msg", "seq": self.seq, "id": str(mid or self.next_id), "origin": from_node,
            "from": {"u": from_user, "n": from_node}, "to": {"u": to_user, "n": to_node},
            "ts": 1_795_600_000_000 + self.seq, "kind": "text", "body": {"text": text},
        }  # fmt: skip
        if from_name:
            frame["from"]["name"] = from_name
        if to_name:
            frame["to"]["name"] = to_name
        return frame

    @staticmethod
    def ok(send: dict[str, Any], echo: dict[str, Any]) -> dict[str, Any]:
        return {
            "t": "ok",
            "rid": send["rid"],
            "id": echo["id"],
            "seq": echo["seq"],
            "ts": echo["ts"],
        }


def _mocked_chat(browsers: Browsers, node: NodeProcess, mock: MockNode) -> Chat:
    node.signup(mock.user)  # the HTTP log-in is the real node's
    context = browsers.context()
    mock.attach(context)
    return _chat(browsers, node, context).login(mock.user)


def test_an_early_echo_does_not_merge_a_provisional_conversation(
    browsers: Browsers, node: NodeProcess
) -> None:
    """A send to ``bob@attic`` (a node label the page cannot resolve yet) is
    still unanswered when a send of the same text to carol is echoed before
    its ok. That echo belongs to carol's conversation only: bob@attic keeps its
    pending message, and is re-keyed to attic's id when its own ok and echo
    come."""
    me = node.address("alice")
    carol = node.address("carol")
    bob = f"bob@{ATTIC_ID}"

    def on_send(mock: MockNode, frame: dict[str, Any]) -> None:
        if frame["to"] == "bob@attic":
            return  # held: answered by the test below
        echo = mock.msg(me, frame["text"], carol)
        mock.send(echo)  # the echo first, in its own WebSocket message ...
        mock.send(mock.ok(frame, echo))  # ... then the ok

    mock = MockNode(node, "alice", on_send=on_send)
    alice = _mocked_chat(browsers, node, mock)
    alice.open_new_chat("bob@attic")
    alice.send("hi")
    alice.expect_message("hi", "pending")
    alice.open_new_chat("carol")
    alice.send("hi")
    alice.expect_message("hi", "sent")
    assert [s["to"] for s in mock.sends] == ["bob@attic", carol]

    conversations = alice.page.locator("#conversations li.conversation")
    expect(conversations).to_have_count(2)
    assert _conversation_keys(alice) == sorted(["bob@attic", carol])
    assert _states(alice) == ["1:sent:hi"]
    alice.open_conversation("bob@attic")
    assert _states(alice) == ["-:pending:hi"]

    # Now bob's send is answered: ok, then its echo (which names attic's id).
    held = mock.sends[0]
    echo = mock.msg(me, "hi", bob, to_name="attic")
    mock.send(mock.ok(held, echo))
    mock.send(echo)
    expect(alice.conversation(bob)).to_have_attribute("aria-current", "true")
    expect(alice.conversation("bob@attic")).to_have_count(0)
    expect(conversations).to_have_count(2)
    assert _conversation_keys(alice) == sorted([bob, carol])
    alice.expect_message("hi", "sent")
    assert _states(alice) == [f"{echo['seq']}:sent:hi"]
    expect(alice.messages).to_have_attribute("data-id", echo["id"])
    alice.open_conversation(carol)
    assert _states(alice) == ["1:sent:hi"]


def test_the_same_message_id_from_two_nodes_is_two_messages(
    browsers: Browsers, node: NodeProcess
) -> None:
    """Ids are unique per origin node only: alice's message to carol and bob's
    (from attic) to alice share id 4242, and both are shown, in their own
    conversations."""
    me = node.address("alice")
    carol = node.address("carol")
    bob = f"bob@{ATTIC_ID}"
    mock = MockNode(node, "alice")
    mock.backlog = [
        mock.msg(me, "mine", carol, mid=4242),
        mock.msg(bob, "from bob, same id", me, mid=4242, from_name="attic"),
    ]
    alice = _mocked_chat(browsers, node, mock)

    expect(alice.page.locator("#conversations li.conversation")).to_have_count(2)
    assert _conversation_keys(alice) == sorted([bob, carol])
    expect(alice.conversation(carol).locator(".conv-last")).to_have_text("mine")
    expect(alice.conversation(bob).locator(".conv-last")).to_have_text("from bob, same id")
    expect(alice.conversation(bob).locator(".conv-unread")).to_have_text("1")
    alice.open_conversation(carol)
    assert _states(alice) == ["1:sent:mine"]
    alice.open_conversation(bob)
    assert _states(alice) == ["2:received:from bob, same id"]


def test_two_quick_sends_to_a_provisional_conversation(
    browsers: Browsers, node: NodeProcess
) -> None:
    """Two sends to ``bob@attic`` before any answer; the first is answered ok
    then echo (which re-keys the conversation to attic's id), the second echo
    then ok. One conversation, each message once, both sent."""
    me = node.address("alice")
    bob = f"bob@{ATTIC_ID}"

    def on_send(mock: MockNode, frame: dict[str, Any]) -> None:
        echo = mock.msg(me, frame["text"], bob, to_name="attic")
        if len(mock.sends) == 1:
            mock.send(mock.ok(frame, echo))
            mock.send(echo)
        else:
            mock.send(echo)
            mock.send(mock.ok(frame, echo))

    mock = MockNode(node, "alice", on_send=on_send)
    alice = _mocked_chat(browsers, node, mock)
    alice.open_new_chat("bob@attic")
    # Both submitted in one task: neither answer can come in between.
    alice.page.evaluate(
        """() => {
          const text = document.getElementById('composer-text');
          const form = document.getElementById('composer');
          for (const word of ['one', 'two']) { text.value = word; form.requestSubmit(); }
        }"""
    )
    expect(alice.message("two", "sent")).to_have_count(1)
    expect(alice.message("one", "sent")).to_have_count(1)
    alice.expect_texts(["one", "two"])
    assert _states(alice) == ["1:sent:one", "2:sent:two"]
    expect(alice.page.locator("#conversations li.conversation")).to_have_count(1)
    assert _conversation_keys(alice) == [bob]
    assert len(mock.sends) == 2


# ------------------------------------------------------------------ two federated nodes


def test_fast_sends_to_a_remote_user_by_node_label(
    browsers: Browsers, node: NodeProcess, attic: NodeProcess
) -> None:
    """Alice (kitchen) opens ``bob@attic`` before her page knows attic's id and
    sends four messages in one go: all four are sent once, in one conversation
    keyed by attic's id, and bob gets them in order."""
    node.signup("alice")
    attic.signup("bob")
    alice = _chat(browsers, node).login("alice")
    alice.open_new_chat("bob@attic")
    alice.page.evaluate(
        """() => {
          const text = document.getElementById('composer-text');
          const form = document.getElementById('composer');
          for (const word of ['a', 'b', 'c', 'd']) { text.value = word; form.requestSubmit(); }
        }"""
    )
    expect(alice.page.locator('#messages li.message[data-state="sent"]')).to_have_count(4)
    alice.expect_texts(["a", "b", "c", "d"])
    assert _states(alice) == ["1:sent:a", "2:sent:b", "3:sent:c", "4:sent:d"]
    expect(alice.page.locator("#conversations li.conversation")).to_have_count(1)
    expect(alice.conversation(attic.address("bob"))).to_have_attribute("aria-current", "true")
    assert alice.page.evaluate("sessionStorage.getItem('chinwag.pending')") in (None, "[]")

    bob = _chat(browsers, attic).login("bob")
    bob.open_conversation(node.address("alice"))
    bob.expect_texts(["a", "b", "c", "d"])
    expect(bob.page.locator('#messages li.message[data-state="received"]')).to_have_count(4)


def test_retry_after_delivery_failed_is_a_new_message(
    browsers: Browsers, node: NodeProcess, attic: NodeProcess
) -> None:
    """Attic refuses a message (no such user there) with ``delivery_failed``.
    Retry must send a new message: the node would answer the old cid with the
    old, refused message's ok. The refused one stays marked failed (without a
    second Retry), the new one is sent, and bob gets it once."""
    node.signup("alice")
    alice = _chat(browsers, node).login("alice")
    alice.open_new_chat("bob@attic")
    alice.send("are you there?")
    failed = alice.message("are you there?", "failed")
    expect(failed).to_have_count(1, timeout=REMOTE_TIMEOUT_MS)
    expect(failed.locator(".msg-state")).to_have_text(re.compile("not delivered"))
    first_id = failed.get_attribute("data-id")
    assert first_id

    attic.signup("bob")  # the reason for the refusal goes away
    failed.locator("button.msg-retry").click()
    sent = alice.message("are you there?", "sent")
    expect(sent).to_have_count(1)
    expect(alice.message("are you there?")).to_have_count(2)
    expect(failed).to_have_count(1)
    expect(alice.page.locator("#messages button.msg-retry")).to_have_count(0)
    assert alice.messages.evaluate_all("items => items.map(li => li.dataset.state)") == [
        "failed",
        "sent",
    ]
    new_id = sent.get_attribute("data-id")
    assert new_id and new_id != first_id

    bob = _chat(browsers, attic).login("bob")
    bob.open_conversation(node.address("alice"))
    bob.expect_texts(["are you there?"])
    expect(bob.message("are you there?", "received")).to_have_count(1)
    _allow_repeats(browsers, "are you there?", 2)


# ------------------------------------------------------------------ focus and the live region

#: Counts the elements added to and removed from #messages from now on.
WATCH_MESSAGES = """() => {
  window.messageChanges = { added: [], removed: 0 };
  new MutationObserver(records => {
    for (const r of records) {
      for (const n of r.addedNodes) {
        if (n.nodeType === 1) window.messageChanges.added.push(n.textContent);
      }
      window.messageChanges.removed += r.removedNodes.length;
    }
  }).observe(document.getElementById('messages'), { childList: true });
}"""


def test_list_updates_keep_focus_and_the_live_region_gets_only_new_messages(
    browsers: Browsers, node: NodeProcess
) -> None:
    """A presence change re-renders the contact list, and a new message the
    conversation list: the focused button stays focused. Each new message adds
    exactly one element to the aria-live ``#messages`` list and nothing is
    removed (a rebuild would announce the whole conversation again)."""
    for name in ("alice", "bob", "carol"):
        node.signup(name)
    alice = _chat(browsers, node).login("alice")
    form = alice.page.locator("#add-contact-form")
    contacts = alice.page.locator("#contacts li.contact")
    for count, name in enumerate(("bob", "carol"), 1):
        form.get_by_label("Add contact").fill(name)
        form.get_by_role("button", name="Add").click()
        # One at a time: an add typed while the previous one is in flight can be
        # lost (the form clears its field when the previous POST returns).
        expect(contacts).to_have_count(count)
    bob_contact = alice.page.locator(f'#contacts li.contact[data-address="bob@{node.name}"]')
    carol_contact = alice.page.locator(f'#contacts li.contact[data-address="carol@{node.name}"]')
    expect(bob_contact.locator(".presence-dot")).not_to_have_attribute("data-status", "online")

    bob_button = bob_contact.locator("button.contact-open")
    bob_button.focus()
    bob = _chat(browsers, node).login("bob")  # bob comes online: a presence frame
    expect(bob_contact.locator(".presence-dot")).to_have_attribute("data-status", "online")
    expect(bob_button).to_be_focused(timeout=1_000)

    bob_button.click()
    key = node.address("bob")
    expect(alice.conversation(key)).to_have_attribute("aria-current", "true")
    conv_button = alice.conversation(key).locator("button.conv-open")
    conv_button.focus()
    alice.page.evaluate(WATCH_MESSAGES)

    bob.open_new_chat("alice")
    texts = ["one", "two", "three"]
    for text in texts:
        bob.send_and_confirm(text)
    alice.expect_texts(texts)
    expect(alice.conversation(key).locator(".conv-last")).to_have_text("three")
    expect(conv_button).to_be_focused(timeout=1_000)

    _chat(browsers, node).login("carol")  # another presence change
    expect(carol_contact.locator(".presence-dot")).to_have_attribute("data-status", "online")
    changes = alice.page.evaluate("window.messageChanges")
    assert changes["removed"] == 0, changes
    assert len(changes["added"]) == 3, changes
    assert all(t in added for t, added in zip(texts, changes["added"], strict=True)), changes
