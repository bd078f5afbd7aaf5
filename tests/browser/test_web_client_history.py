"""The web client on the node's history (issue 15): conversation list and
newest page at load, older pages on scroll, read markers across devices,
search, catching up, and a reload that does not replay the queue.

A real node process and headless Chromium, as in test_web_client.py. Messages
are seeded over the device protocol by a small script in a page of the node's
origin (one WebSocket, many sends), not one click at a time. Plain ``def``
tests (see test_web_client.py); every wait is a bounded Playwright ``expect``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .conftest import Browsers, NodeProcess
from .pages import Chat, expect

ONLINE_TIMEOUT_MS = 15_000

#: Sends ``texts`` from the token's user to ``to`` over one WebSocket, in
#: order, waiting out ``rate_limited`` as told.
SEED = """async ([token, to, texts]) => {
  const ws = new WebSocket(`ws://${location.host}/ws`, ["chinwag.json.v1"]);
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  const waiting = new Map();
  let rid = 0;
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    for (const f of Array.isArray(data) ? data : [data]) {
      if (f.rid === undefined || !waiting.has(f.rid)) continue;
      waiting.get(f.rid)(f);
      waiting.delete(f.rid);
    }
  };
  const call = (frame) => new Promise((resolve) => {
    rid += 1; waiting.set(rid, resolve); ws.send(JSON.stringify({ ...frame, rid }));
  });
  const auth = await call({ t: "auth", token });
  if (auth.t !== "ok") throw new Error(JSON.stringify(auth));
  const send = async (text, n) => {
    for (;;) {
      const r = await call({ t: "send", to, text, cid: `seed-${n}` });
      if (r.t === "ok") return;
      if (r.code !== "rate_limited") throw new Error(JSON.stringify(r));
      await new Promise((s) => setTimeout(s, r.retry_after_ms));
    }
  };
  // One at a time: pipelined sends may be committed out of order.
  for (let i = 0; i < texts.length; i += 1) await send(texts[i], i);
  ws.close();
}"""

#: Records every text "catching up…" shows while it is visible.
CATCH_UP_WATCH = """
(() => {
  window.catchUpSeen = [];
  const check = () => {
    const box = document.getElementById("catch-up");
    const count = document.getElementById("catch-up-count");
    if (!box || box.hidden || !count || !count.textContent) return;
    window.catchUpSeen.push(count.textContent);
  };
  new MutationObserver(check).observe(document, {
    childList: true, subtree: true, characterData: true, attributes: true,
  });
})();
"""


def _chat(browsers: Browsers, node: NodeProcess, context: Any = None) -> Chat:
    return Chat(browsers.page(context), node)


def _users(node: NodeProcess, *names: str) -> None:
    for name in names:
        node.signup(name)


def _seed(browsers: Browsers, node: NodeProcess, sender: str, to: str, texts: list[str]) -> None:
    """``sender`` sends ``texts`` to ``to`` (in order), from a fresh device."""
    page = browsers.page()
    page.evaluate(SEED, [node.login(sender), to, texts])
    page.close()


def _msg_frames(payload: Any) -> list[dict[str, Any]]:
    """The ``msg`` frames in one WebSocket message (JSON, maybe a batch)."""
    if not isinstance(payload, str):
        return []
    data = json.loads(payload)
    return [f for f in (data if isinstance(data, list) else [data]) if f.get("t") == "msg"]


def _search(chat: Chat, query: str) -> Any:
    chat.page.get_by_label("Search messages").fill(query)
    chat.page.locator("#search-form").get_by_role("button", name="Search").click()
    return chat.page.locator("#search-results li.search-hit")


def _assert_unique_ids(chat: Chat) -> None:
    ids = chat.page.locator("#messages li.message").evaluate_all(
        "items => items.map(li => `${li.dataset.origin}:${li.dataset.id}`)"
    )
    assert len(ids) == len(set(ids)), f"duplicate message ids: {ids}"


# ------------------------------------------------------------------ pages


def test_scroll_back_loads_older_pages_and_keeps_position(
    browsers: Browsers, node: NodeProcess, screenshot
) -> None:
    _users(node, "alice", "bob")
    texts = [f"older message {n:03}" for n in range(1, 131)]
    _seed(browsers, node, "bob", node.address("alice"), texts)
    alice = _chat(browsers, node).login("alice")
    conv = alice.conversation(node.address("bob"))
    expect(conv.locator(".conv-last")).to_have_text(texts[-1])
    expect(conv.locator(".conv-unread")).to_have_text("130")  # exact, from the node

    alice.open_conversation(node.address("bob"))
    # The newest page only (50), scrolled to the newest message.
    expect(alice.message_texts).to_have_count(50)
    expect(alice.message_texts.first).to_have_text(texts[80])
    expect(alice.message(texts[-1])).to_be_in_viewport()
    expect(conv.locator(".conv-unread")).to_be_hidden()

    # Scrolled to the top: the older page is put above, and what was in view stays put.
    top = alice.page.evaluate(
        """(text) => {
          const list = document.getElementById("messages");
          list.scrollTop = 0;
          const li = [...list.querySelectorAll("li.message")]
            .find((m) => m.querySelector(".msg-text").textContent === text);
          return li.getBoundingClientRect().top;
        }""",
        texts[80],
    )
    expect(alice.message_texts).to_have_count(100)
    expect(alice.message_texts.first).to_have_text(texts[30])
    moved = alice.message(texts[80]).evaluate("li => li.getBoundingClientRect().top") - top
    assert abs(moved) <= 2, f"the message in view moved by {moved}px when the older page came"
    expect(alice.page.locator("#history-start")).to_be_hidden()
    screenshot(alice.page, "history-scroll-back")

    # Once more: the rest, back to the very first message, each once and in order.
    alice.page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
    expect(alice.message_texts).to_have_count(130)
    alice.expect_texts(texts)
    expect(alice.page.locator("#history-start")).to_be_visible()
    _assert_unique_ids(alice)


def test_reload_shows_the_list_and_newest_page_without_replay(
    browsers: Browsers, node: NodeProcess
) -> None:
    _users(node, "alice", "bob")
    texts = [f"before the reload {n:02}" for n in range(1, 41)]
    _seed(browsers, node, "bob", node.address("alice"), texts)
    alice = _chat(browsers, node).login("alice")
    alice.open_conversation(node.address("bob"))
    alice.expect_texts(texts)

    streamed: list[dict[str, Any]] = []
    answers: list[str] = []

    def watch(ws: Any) -> None:
        def received(payload: Any) -> None:
            streamed.extend(_msg_frames(payload))
            if isinstance(payload, str) and '"msgs"' in payload:
                answers.append("history")

        ws.on("framereceived", received)

    alice.page.on("websocket", watch)
    alice.page.reload()
    alice.expect_logged_in("alice")
    # The list and the open conversation's newest page, from `convs` and `history`.
    expect(alice.conversation(node.address("bob"))).to_have_attribute("aria-current", "true")
    alice.expect_texts(texts)
    expect(alice.conversation(node.address("bob")).locator(".conv-last")).to_have_text(texts[-1])
    assert answers, "the page did not ask the node for a history page"
    assert streamed == [], f"the reload replayed the queue: {len(streamed)} msg frames"

    # The stream starts at the head: the next message comes live, once.
    _seed(browsers, node, "bob", node.address("alice"), ["after the reload"])
    alice.expect_texts([*texts, "after the reload"])
    assert [f["body"]["text"] for f in streamed] == ["after the reload"]
    _assert_unique_ids(alice)


# ------------------------------------------------------------------ read markers


def test_read_on_one_device_clears_the_badge_on_the_other(
    browsers: Browsers, node: NodeProcess
) -> None:
    _users(node, "alice", "bob")
    _seed(browsers, node, "bob", node.address("alice"), ["one", "two", "three"])
    # Two browser profiles: nothing shared but the account.
    laptop = _chat(browsers, node).login("alice")
    phone = _chat(browsers, node).login("alice")
    key = node.address("bob")
    for chat in (laptop, phone):
        expect(chat.conversation(key).locator(".conv-unread")).to_have_text("3")
        expect(chat.page).to_have_title(f"(3) chinwag · {node.name}")

    laptop.open_conversation(key)
    laptop.expect_texts(["one", "two", "three"])
    expect(phone.conversation(key).locator(".conv-unread")).to_be_hidden()
    expect(phone.page).to_have_title(f"chinwag · {node.name}")

    # A new message: read at once on the laptop (open), so not unread on the phone.
    _seed(browsers, node, "bob", node.address("alice"), ["four"])
    laptop.expect_texts(["one", "two", "three", "four"])
    expect(phone.conversation(key).locator(".conv-last")).to_have_text("four")
    expect(phone.conversation(key).locator(".conv-unread")).to_be_hidden()

    # Another message while the laptop looks elsewhere: unread on both, then
    # read on the phone, cleared on the laptop.
    laptop.open_new_chat("alice")  # notes to self: the conversation with bob is off screen
    _seed(browsers, node, "bob", node.address("alice"), ["five"])
    for chat in (laptop, phone):
        expect(chat.conversation(key).locator(".conv-unread")).to_have_text("1")
    phone.open_conversation(key)
    expect(laptop.conversation(key).locator(".conv-unread")).to_be_hidden()

    # A device that logs in later finds everything read.
    tablet = _chat(browsers, node).login("alice")
    expect(tablet.conversation(key).locator(".conv-last")).to_have_text("five")
    expect(tablet.conversation(key).locator(".conv-unread")).to_be_hidden()


# ------------------------------------------------------------------ search


def test_search_jumps_to_the_message(browsers: Browsers, node: NodeProcess, screenshot) -> None:
    _users(node, "alice", "bob", "carol")
    texts = [f"filler {n:03}" for n in range(1, 121)]
    texts[9] = "the Crème brûlée recipe is here"  # two pages back
    _seed(browsers, node, "bob", node.address("alice"), texts)
    _seed(browsers, node, "carol", node.address("alice"), ["creme for carol", "여러분 안녕하세요"])
    alice = _chat(browsers, node).login("alice")

    hits = _search(alice, "CREME")
    expect(hits).to_have_count(2)
    expect(alice.page.locator("#search-status")).to_have_text("2 found")
    expect(hits.nth(0).locator(".hit-conv")).to_have_text("carol")
    expect(hits.nth(0).locator(".hit-text")).to_have_text("creme for carol")
    expect(hits.nth(1).locator(".hit-conv")).to_have_text("bob")
    expect(hits.nth(1).locator(".hit-text")).to_have_text("the Crème brûlée recipe is here")
    screenshot(alice.page, "history-search")

    hits.nth(1).locator("button").click()
    expect(alice.conversation(node.address("bob"))).to_have_attribute("aria-current", "true")
    target = alice.message(texts[9])
    expect(target).to_have_count(1)
    expect(target).to_have_class(re.compile(r"\bhighlight\b"))
    expect(target).to_be_in_viewport()
    # Every page down to it was loaded: nothing missing in between.
    alice.expect_texts(texts[texts.index(alice.message_texts.first.text_content() or "") :])
    assert (alice.message_texts.count()) >= 111
    _assert_unique_ids(alice)

    hits = _search(alice, "여러분")
    expect(hits).to_have_count(1)
    expect(hits.locator(".hit-text")).to_have_text("여러분 안녕하세요")
    _search(alice, "nowhere to be found")
    expect(alice.page.locator("#search-status")).to_have_text("No messages found.")


# ------------------------------------------------------------------ catching up


def test_catching_up_shows_progress(browsers: Browsers, node: NodeProcess) -> None:
    """The page is cut off (its WebSocket closed, reconnects refused) while 300
    messages arrive; when it gets back it streams them from its cursor and
    shows "catching up… n/300" meanwhile."""
    _users(node, "alice", "bob")
    context = browsers.context()
    context.add_init_script(CATCH_UP_WATCH)
    connections: list[Any] = []
    cut_off = {"on": False}

    def route(ws: Any) -> None:
        if cut_off["on"]:
            ws.close(code=1013, reason="test: cut off")
            return
        server = ws.connect_to_server()
        connections.append((ws, server))

    context.route_web_socket(re.compile(r"/ws$"), route)
    alice = _chat(browsers, node, context).login("alice")
    cut_off["on"] = True
    page_side, node_side = connections[-1]
    page_side.close(code=1011, reason="test: connection lost")
    node_side.close()
    expect(alice.page.locator("#conn-status")).to_have_attribute(
        "data-state", re.compile("^(offline|connecting)$")
    )
    texts = [f"while away {n:03}" for n in range(1, 301)]
    _seed(browsers, node, "bob", node.address("alice"), texts)
    cut_off["on"] = False
    alice.expect_online(timeout=ONLINE_TIMEOUT_MS)
    conv = alice.conversation(node.address("bob"))
    expect(conv.locator(".conv-last")).to_have_text(texts[-1])
    expect(conv.locator(".conv-unread")).to_have_text("300")
    expect(alice.page.locator("#catch-up")).to_be_hidden()
    seen = alice.page.evaluate("window.catchUpSeen")
    assert any(re.fullmatch(r"\d+/300", s) for s in seen), f"no progress shown: {seen}"


# ------------------------------------------------------------------ groups


def test_group_from_the_node_after_a_reload(browsers: Browsers, node: NodeProcess) -> None:
    """A group's newest page after a reload shows its events and messages in
    order; membership comes from the node's group list, not from replaying
    the events: after leaving, a reload keeps the composer off."""
    _users(node, "alice", "bob")
    node.http("POST", "/api/contacts", {"address": "alice"}, node.login("bob"))
    alice = _chat(browsers, node).login("alice")
    form = alice.page.locator("#create-group-form")
    form.get_by_label("Group name").fill("team")
    form.get_by_role("button", name="Create group").click()
    key = node.group("team")
    expect(alice.conversation(key)).to_have_attribute("aria-current", "true")
    panel = alice.page.locator("#group-panel")
    panel.get_by_label("Add member").fill("bob")
    panel.get_by_role("button", name="Add").click()
    expect(alice.page.locator("#group-members li.member")).to_have_count(2)
    texts = ["agenda", "budget", "any other business"]
    for text in texts:
        alice.send_and_confirm(text)

    bob = _chat(browsers, node).login("bob")
    expect(bob.conversation(key).locator(".conv-unread")).to_have_text("3")
    bob.open_conversation(key)
    bob.expect_texts(texts)
    events = bob.page.locator("#messages li.event")
    expect(events).to_have_count(1)  # bob added (the creation was before his time)
    expect(events).to_have_text(re.compile(r"alice added bob"))
    expect(bob.page.locator("#composer-text")).to_be_enabled()
    bob.page.reload()
    bob.expect_logged_in("bob")
    bob.expect_texts(texts)
    expect(bob.page.locator("#composer-text")).to_be_enabled()

    bob.page.locator("#leave-group-button").click()
    expect(bob.page.locator("#composer-text")).to_be_disabled()
    bob.page.reload()
    bob.expect_logged_in("bob")
    bob.expect_texts(texts)
    expect(bob.page.locator("#conv-subtitle")).to_contain_text("you are not a member")
    expect(bob.page.locator("#composer-text")).to_be_disabled()
