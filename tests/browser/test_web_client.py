"""The web client in headless Chromium against a real node process.

Plain ``def`` tests on purpose: pytest runs with trio_mode, and Playwright's
sync API must not run inside trio. Every wait is a bounded Playwright
``expect`` (10 s by default, see conftest.TIMEOUT_MS); there are no sleeps.
"""

from __future__ import annotations

import json
import re

from .conftest import PASSWORD, Browsers, NodeProcess, _cli
from .pages import Chat, expect

ONLINE_TIMEOUT_MS = 15_000  # a reconnect after a node restart: back-off plus start-up

#: Resolves once the client's cursor reached seq 1 and two frames have been drawn
#: since; rejects after 10 s.
ECHO_RENDERED = """() => new Promise((resolve, reject) => {
  const start = performance.now();
  const frame = () => new Promise(r => requestAnimationFrame(r));
  const tick = () => {
    if (window.chinwag.cursor >= 1) frame().then(frame).then(resolve);
    else if (performance.now() - start > 10000) reject(new Error("the echo never came"));
    else requestAnimationFrame(tick);
  };
  tick();
})"""


def _chat(browsers: Browsers, node: NodeProcess, context=None, **options) -> Chat:
    return Chat(browsers.page(context, **options), node)


def _users(node: NodeProcess, *names: str) -> None:
    for name in names:
        node.signup(name)


# ------------------------------------------------------------------ log-in page


def test_node_serves_the_login_page(browsers: Browsers, node: NodeProcess, screenshot) -> None:
    chat = _chat(browsers, node)
    page = chat.page
    expect(page).to_have_title(re.compile("chinwag"))
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#chat-view")).to_be_hidden()
    expect(page.get_by_label("User name")).to_be_visible()
    expect(page.get_by_label("Password", exact=True)).to_be_visible()
    expect(page.locator("#login-button")).to_have_text("Log in")
    expect(page.locator("#signup-button")).to_have_text("Sign up")
    expect(page.locator("#error")).to_have_text("")
    screenshot(page, "login")


def test_login_page_loads_nothing_from_elsewhere(browsers: Browsers, node: NodeProcess) -> None:
    chat = _chat(browsers, node)
    chat.login("alice", signup=True)
    chat.open_new_chat("alice")
    chat.send_and_confirm("note to self")
    assert browsers.requests, "no request was recorded"
    origin = node.origin + "/"
    foreign = [
        url
        for url in browsers.requests
        if not url.startswith(origin) and not url.startswith("data:")
    ]
    assert not foreign, f"requests to other origins: {foreign}"
    ws_origin = "ws://" + node.origin.removeprefix("http://") + "/"
    assert browsers.websockets, "the page opened no WebSocket"
    assert all(url.startswith(ws_origin) for url in browsers.websockets), browsers.websockets


def test_signup_and_login_in_two_contexts(browsers: Browsers, node: NodeProcess) -> None:
    alice = _chat(browsers, node).login("alice", signup=True)
    bob = _chat(browsers, node).login("bob", signup=True)
    # A second context logs in to the accounts just created.
    alice2 = _chat(browsers, node).login("alice")
    bob2 = _chat(browsers, node).login("bob")
    for chat in (alice, bob, alice2, bob2):
        expect(chat.page.locator("#conn-status")).to_have_attribute("data-state", "online")
        expect(chat.error).to_have_text("")
    # Log out: back to the log-in view.
    alice2.page.locator("#logout-button").click()
    expect(alice2.page.locator("#login-view")).to_be_visible()
    expect(alice2.page.locator("#chat-view")).to_be_hidden()


def test_wrong_password_shows_an_error(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice")
    chat = _chat(browsers, node)
    page = chat.page
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password", exact=True).fill("not the password")
    page.locator("#login-button").click()
    expect(chat.error).to_have_text(re.compile(r"\S"))
    expect(chat.error).to_be_visible()
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#chat-view")).to_be_hidden()
    # The right password still works from the same page, and the error goes.
    chat.login("alice")
    expect(chat.error).to_have_text("")


def test_signup_of_a_taken_name_shows_an_error(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice")
    chat = _chat(browsers, node)
    chat.page.get_by_label("User name").fill("alice")
    chat.page.get_by_label("Password", exact=True).fill("another password")
    chat.page.locator("#signup-button").click()
    expect(chat.error).to_have_text(re.compile(r"\S"))
    expect(chat.page.locator("#chat-view")).to_be_hidden()


# ------------------------------------------------------------------ 1:1 chat


def test_one_to_one_chat_both_ways(browsers: Browsers, node: NodeProcess, screenshot) -> None:
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")

    alice.open_new_chat("bob")
    expect(alice.page.locator("#conv-title")).to_have_text("bob")
    expect(alice.conversation(node.address("bob"))).to_have_attribute("aria-current", "true")
    alice.send("hello bob")
    first = alice.expect_message("hello bob", "sent")
    expect(first.locator(".msg-time")).not_to_be_empty()
    second = alice.send_and_confirm("are you there?")

    # Bob has not opened the conversation: it is listed with 2 unread.
    conv = bob.conversation(node.address("alice"))
    expect(conv.locator(".conv-name")).to_have_text("alice")
    expect(conv.locator(".conv-last")).to_have_text("are you there?")
    expect(conv.locator(".conv-unread")).to_have_text("2")
    expect(conv.locator(".conv-unread")).to_be_visible()
    screenshot(bob.page, "chat-unread")

    bob.open_conversation(node.address("alice"))
    expect(conv.locator(".conv-unread")).to_be_hidden()
    bob.expect_texts(["hello bob", "are you there?"])
    bob.expect_message("hello bob", "received")
    expect(bob.message("hello bob").locator(".msg-from")).to_have_text(re.compile("alice"))
    bob.send_and_confirm("hi alice")

    alice.expect_texts(["hello bob", "are you there?", "hi alice"])
    bob.expect_texts(["hello bob", "are you there?", "hi alice"])
    alice.expect_message("hi alice", "received")
    # Alice has the conversation open: nothing unread there.
    expect(alice.conversation(node.address("bob")).locator(".conv-unread")).to_be_hidden()
    expect(alice.conversation(node.address("bob")).locator(".conv-last")).to_have_text("hi alice")
    _assert_unique_ids(alice)
    _assert_unique_ids(bob)
    assert second.get_attribute("data-id")
    screenshot(alice.page, "chat-1to1")


def _assert_unique_ids(chat: Chat) -> None:
    ids = chat.messages.evaluate_all("items => items.map(li => li.dataset.id)")
    assert all(ids), f"a message without data-id: {ids}"
    assert len(ids) == len(set(ids)), f"a message is shown twice: {ids}"


def test_a_click_across_a_list_refresh_opens_the_conversation(
    browsers: Browsers, node: NodeProcess
) -> None:
    """The list re-renders as frames arrive; a click pressed before and released
    after a refresh must still open the conversation (CI lost one such click)."""
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")
    alice.open_new_chat("bob")
    alice.send_and_confirm("one")
    conv = bob.conversation(node.address("alice"))
    expect(conv.locator(".conv-unread")).to_have_text("1")

    button = conv.locator("button.conv-open")
    button.hover()
    bob.page.mouse.down()
    alice.send_and_confirm("two")  # refreshes bob's list between press and release
    expect(conv.locator(".conv-unread")).to_have_text("2")
    bob.page.mouse.up()
    expect(conv).to_have_attribute("aria-current", "true")
    bob.expect_texts(["one", "two"])


# ------------------------------------------------------------------ groups


def test_group_chat(browsers: Browsers, node: NodeProcess, screenshot) -> None:
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")
    page = alice.page

    form = page.locator("#create-group-form")
    form.get_by_label("Group name").fill("team")
    form.get_by_label("Group title (optional)").fill("The team")
    form.get_by_role("button", name="Create group").click()
    key = node.group("team")
    expect(alice.conversation(key)).to_have_attribute("aria-current", "true")
    expect(alice.conversation(key).locator(".conv-name")).to_have_text("#team")
    expect(page.locator("#group-panel")).to_be_visible()
    expect(page.locator("#group-members li.member")).to_have_count(1)
    expect(
        page.locator(f'#group-members li.member[data-address="{node.address("alice")}"]')
    ).to_have_count(1)
    expect(page.locator("#messages li.event").first).to_be_visible()

    panel = page.locator("#group-panel")
    panel.get_by_label("Add member").fill("bob")
    panel.get_by_role("button", name="Add").click()
    expect(page.locator("#error")).to_have_text("")

    # Bob does not have alice in his contacts: he gets an invitation, sees
    # nothing of the group and cannot write until he accepts.
    expect(bob.conversation(key)).to_have_count(1)
    bob.open_conversation(key)
    invite = bob.page.locator("#invite-panel")
    expect(invite).to_be_visible()
    expect(invite.locator("#invite-text")).to_contain_text("alice invited you")
    expect(bob.page.locator("#group-panel")).to_be_hidden()
    expect(bob.page.locator("#composer-text")).to_be_disabled()
    screenshot(bob.page, "group-invitation")
    invite.get_by_role("button", name="Accept").click()
    expect(invite).to_be_hidden()
    bob_member = page.locator(f'#group-members li.member[data-address="{node.address("bob")}"]')
    expect(bob_member).to_have_count(1)
    expect(bob_member.locator(".presence-dot")).to_have_attribute("data-status", "online")
    expect(bob.page.locator("#group-panel")).to_be_visible()
    expect(bob.page.locator("#group-members li.member")).to_have_count(2)
    expect(bob.page.locator("#composer-text")).to_be_enabled()

    alice.send_and_confirm("welcome, bob")
    bob.send_and_confirm("thanks!")
    alice.send_and_confirm("first item: the budget")
    bob.send_and_confirm("agreed")
    order = ["welcome, bob", "thanks!", "first item: the budget", "agreed"]
    alice.expect_texts(order)
    bob.expect_texts(order)
    _assert_unique_ids(alice)
    _assert_unique_ids(bob)
    # Both sides show the same messages (same ids) in the same order.
    ids_alice = alice.messages.evaluate_all("items => items.map(li => li.dataset.id)")
    ids_bob = bob.messages.evaluate_all("items => items.map(li => li.dataset.id)")
    assert ids_alice == ids_bob
    screenshot(alice.page, "group")

    # Bob leaves.
    bob.page.locator("#leave-group-button").click()
    expect(bob.page.locator("#composer-text")).to_be_disabled()
    expect(bob.page.locator("#leave-group-button")).to_be_hidden()
    expect(alice.page.locator("#group-members li.member")).to_have_count(1)
    expect(bob_member).to_have_count(0)
    expect(alice.page.locator("#messages li.event").last).to_have_text(re.compile(r"bob.*left"))
    alice.send_and_confirm("bye bob")
    alice.expect_texts([*order, "bye bob"])
    bob.expect_texts(order)  # no message after leaving
    screenshot(bob.page, "group-left")


# ------------------------------------------------------------------ presence


def test_contact_presence(browsers: Browsers, node: NodeProcess, screenshot) -> None:
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    bob_context = browsers.context()
    bob = _chat(browsers, node, bob_context).login("bob")

    form = alice.page.locator("#add-contact-form")
    form.get_by_label("Add contact").fill("bob")
    form.get_by_role("button", name="Add").click()
    contact = alice.page.locator(f'#contacts li.contact[data-address="bob@{node.name}"]')
    expect(contact).to_have_count(1)
    expect(contact.locator(".contact-name")).to_have_text("bob")
    dot = contact.locator(".presence-dot")
    expect(dot).to_have_attribute("data-status", "online")
    expect(contact.locator(".last-active")).to_have_text("online")
    screenshot(alice.page, "contacts-online")

    # Bob closes his browser: offline after the node's 2 s grace.
    bob_context.close()
    expect(dot).to_have_attribute("data-status", "offline", timeout=10_000)
    expect(contact.locator(".last-active")).to_have_text(re.compile(r"last active \S"))
    screenshot(alice.page, "contacts-offline")

    # Bob comes back.
    _chat(browsers, node).login("bob")
    expect(dot).to_have_attribute("data-status", "online")
    expect(contact.locator(".last-active")).to_have_text("online")

    # The contact button opens the 1:1 chat.
    contact.locator("button.contact-open").click()
    expect(alice.conversation(node.address("bob"))).to_have_attribute("aria-current", "true")
    expect(alice.page.locator("#conv-title")).to_have_text("bob")
    assert bob.page.is_closed()


# ------------------------------------------------------------------ offline catch-up


def test_offline_catch_up(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    bob_context = browsers.context()
    bob = _chat(browsers, node, bob_context).login("bob")

    alice.open_new_chat("bob")
    alice.send_and_confirm("before 1")
    bob.open_conversation(node.address("alice"))
    bob.send_and_confirm("before 2")
    alice.expect_texts(["before 1", "before 2"])
    bob_context.close()

    missed = [f"while you were away {n}" for n in range(1, 6)]
    for text in missed:
        alice.send_and_confirm(text)

    bob = _chat(browsers, node).login("bob")  # a new device: syncs from the start
    conv = bob.conversation(node.address("alice"))
    expect(conv.locator(".conv-last")).to_have_text(missed[-1])
    bob.open_conversation(node.address("alice"))
    bob.expect_texts(["before 1", "before 2", *missed])
    _assert_unique_ids(bob)
    alice.expect_texts(["before 1", "before 2", *missed])


# ------------------------------------------------------------------ reconnect


def test_reconnects_after_a_node_restart(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")
    alice.open_new_chat("bob")
    alice.send_and_confirm("before the restart")
    bob.open_conversation(node.address("alice"))
    bob.expect_texts(["before the restart"])

    node.stop()
    status = alice.page.locator("#conn-status")
    expect(status).to_have_attribute("data-state", re.compile("^(offline|connecting)$"))
    expect(bob.page.locator("#conn-status")).to_have_attribute(
        "data-state", re.compile("^(offline|connecting)$")
    )
    # Sent while the node is down: pending, then sent once it is back.
    alice.send("sent while the node was down")
    alice.expect_message("sent while the node was down", "pending")

    node.start()
    alice.expect_online(timeout=ONLINE_TIMEOUT_MS)
    bob.expect_online(timeout=ONLINE_TIMEOUT_MS)
    alice.expect_message("sent while the node was down", "sent", timeout=ONLINE_TIMEOUT_MS)

    bob.send_and_confirm("after the restart")
    expected = ["before the restart", "sent while the node was down", "after the restart"]
    alice.expect_texts(expected)
    bob.expect_texts(expected)
    _assert_unique_ids(alice)
    _assert_unique_ids(bob)
    # Still in sync afterwards, both ways.
    alice.send_and_confirm("all good")
    bob.expect_texts([*expected, "all good"])


def test_reconnects_after_a_node_crash(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")
    alice.open_new_chat("bob")
    alice.send_and_confirm("one")

    node.kill()
    expect(alice.page.locator("#conn-status")).to_have_attribute(
        "data-state", re.compile("^(offline|connecting)$")
    )
    node.start()
    alice.expect_online(timeout=ONLINE_TIMEOUT_MS)
    bob.expect_online(timeout=ONLINE_TIMEOUT_MS)
    bob.open_conversation(node.address("alice"))
    bob.send_and_confirm("two")
    alice.expect_texts(["one", "two"])
    bob.expect_texts(["one", "two"])


# ------------------------------------------------------------------ two tabs


def test_two_tabs_of_one_user_stay_in_sync(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice", "bob")
    context = browsers.context()
    tab1 = _chat(browsers, node, context).login("alice")
    tab2 = _chat(browsers, node, context).login("alice")
    bob = _chat(browsers, node).login("bob")

    # The person switches tabs as they would (a tab in the background gets
    # few animation frames in Chromium).
    tab1.page.bring_to_front()
    tab1.open_new_chat("bob")
    tab1.send_and_confirm("from tab 1")

    tab2.page.bring_to_front()
    conv = tab2.conversation(node.address("bob"))
    expect(conv.locator(".conv-last")).to_have_text("from tab 1")
    # One's own message from another device is not unread.
    expect(conv.locator(".conv-unread")).to_be_hidden()
    tab2.open_conversation(node.address("bob"))
    tab2.expect_texts(["from tab 1"])
    tab2.expect_message("from tab 1", "sent")
    tab2.send_and_confirm("from tab 2")

    tab1.page.bring_to_front()
    tab1.expect_texts(["from tab 1", "from tab 2"])
    tab1.expect_message("from tab 2", "sent")
    bob.open_conversation(node.address("alice"))
    bob.send_and_confirm("hi both")
    for chat in (tab1, tab2, bob):
        chat.page.bring_to_front()
        chat.expect_texts(["from tab 1", "from tab 2", "hi both"])
        _assert_unique_ids(chat)


# ------------------------------------------------------------------ keyboard


def test_keyboard_only(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice", "bob")
    bob = _chat(browsers, node).login("bob")
    chat = _chat(browsers, node)
    page = chat.page
    keyboard = page.keyboard

    # The user name field has the focus on load.
    expect(page.locator("#login-user")).to_be_focused()
    keyboard.type("alice")
    keyboard.press("Tab")
    expect(page.locator("#login-password")).to_be_focused()
    keyboard.type(PASSWORD)
    keyboard.press("Enter")
    chat.expect_logged_in("alice")

    _tab_to(page, "new-chat-to")
    keyboard.type("bob")
    keyboard.press("Enter")
    expect(page.locator("#conv-title")).to_have_text("bob")
    if not page.evaluate("document.activeElement.id") == "composer-text":
        _tab_to(page, "composer-text")
    keyboard.type("typed, not clicked")
    keyboard.press("Enter")
    chat.expect_message("typed, not clicked", "sent")
    expect(page.locator("#composer-text")).to_have_value("")

    # Shift+Enter is a new line, Enter sends.
    keyboard.type("line one")
    keyboard.press("Shift+Enter")
    keyboard.type("line two")
    expect(page.locator("#composer-text")).to_have_value("line one\nline two")
    keyboard.press("Enter")
    chat.expect_texts(["typed, not clicked", "line one\nline two"])
    chat.expect_message("line one\nline two", "sent")

    bob.open_conversation(node.address("alice"))
    bob.expect_texts(["typed, not clicked", "line one\nline two"])


def _tab_to(page, element_id: str, limit: int = 30) -> None:
    """Presses Tab until ``#element_id`` has the focus (at most ``limit`` times)."""
    for _ in range(limit):
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    expect(page.locator(f"#{element_id}")).to_be_focused(timeout=1)


def test_an_invitation_waiting_at_log_in_can_be_declined(
    browsers: Browsers, node: NodeProcess
) -> None:
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    form = alice.page.locator("#create-group-form")
    form.get_by_label("Group name").fill("club")
    form.get_by_role("button", name="Create group").click()
    key = node.group("club")
    expect(alice.conversation(key)).to_have_attribute("aria-current", "true")
    alice.page.locator("#group-panel").get_by_label("Add member").fill("bob")
    alice.page.locator("#add-member-form").get_by_role("button", name="Add").click()
    expect(alice.page.locator("#error")).to_have_text("")
    alice.send_and_confirm("before bob answers")

    # bob logs in afterwards: the invitation is loaded with his groups.
    bob = _chat(browsers, node).login("bob")
    expect(bob.conversation(key)).to_have_count(1)
    bob.open_conversation(key)
    invite = bob.page.locator("#invite-panel")
    expect(invite).to_be_visible()
    invite.get_by_role("button", name="Decline").click()
    expect(invite).to_be_hidden()
    expect(bob.page.locator("#conv-subtitle")).to_have_text("you are not a member")
    expect(bob.page.locator("#composer-text")).to_be_disabled()
    expect(bob.page.locator("#error")).to_have_text("")
    expect(bob.messages).to_have_count(0)  # nothing of the group reached him


# ------------------------------------------------------------------ phone


def test_phone_viewport(browsers: Browsers, node: NodeProcess, screenshot) -> None:
    _users(node, "alice", "bob")
    # bob has alice as a contact: her group add makes him a member at once.
    node.http("POST", "/api/contacts", {"address": "alice"}, node.login("bob"))
    bob = _chat(browsers, node).login("bob")
    bob.open_new_chat("alice")
    history = [f"desktop message {n}" for n in range(1, 26)]
    for text in history:
        bob.send(text)
    bob.expect_message(history[-1], "sent")

    phone = dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    chat = _chat(browsers, node, **phone)
    screenshot(chat.page, "phone-login")
    chat.login("alice")
    screenshot(chat.page, "phone-conversations")
    chat.open_conversation(node.address("bob"))
    chat.expect_texts(history)
    _expect_composer_on_screen(chat)
    # A long history scrolls inside the page; the newest message is in view.
    expect(chat.message(history[-1])).to_be_in_viewport()
    chat.send_and_confirm("hello from a phone")
    expect(chat.message("hello from a phone")).to_be_in_viewport()
    _expect_composer_on_screen(chat)
    screenshot(chat.page, "phone-conversation")
    bob.expect_texts([*history, "hello from a phone"])

    # A group on a phone: the members panel does not push the composer away.
    chat.page.locator("#back-button").click()
    expect(chat.page.locator("#conversations")).to_be_in_viewport()
    form = chat.page.locator("#create-group-form")
    form.get_by_label("Group name").fill("team")
    form.get_by_role("button", name="Create group").click()
    expect(chat.conversation(node.group("team"))).to_have_attribute("aria-current", "true")
    # On a phone the member panel starts folded; it unfolds on demand.
    toggle = chat.page.locator("#members-toggle")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(chat.page.locator("#members-body")).to_be_hidden()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    chat.page.get_by_label("Add member").fill("bob")
    chat.page.locator("#add-member-form").get_by_role("button", name="Add").click()
    expect(chat.page.locator("#group-members li.member")).to_have_count(2)
    chat.send_and_confirm("hello team")
    _expect_composer_on_screen(chat)
    screenshot(chat.page, "phone-group")


def _expect_composer_on_screen(chat: Chat) -> None:
    page = chat.page
    composer = page.locator("#composer-text")
    expect(composer).to_be_visible()
    expect(composer).to_be_enabled()
    expect(composer).to_be_in_viewport(ratio=1)
    expect(page.locator("#send-button")).to_be_in_viewport(ratio=1)
    viewport = page.viewport_size
    assert viewport is not None
    box = composer.bounding_box()
    assert box is not None
    assert 0 <= box["x"] and box["x"] + box["width"] <= viewport["width"], box
    assert 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"], box
    # No sideways scrolling on a phone.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], (
        f"the page is {width} px wide on a {viewport['width']} px screen"
    )


# ------------------------------------------------------------------ failures, reloads, echo


def test_failed_send_can_be_retried(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice")
    alice = _chat(browsers, node).login("alice")
    alice.open_new_chat("carol")  # no such user (yet)
    alice.send("are you there, carol?")
    failed = alice.expect_message("are you there, carol?", "failed")
    retry = failed.locator("button.msg-retry")
    expect(retry).to_be_visible()

    node.signup("carol")
    retry.click()
    alice.expect_message("are you there, carol?", "sent")
    expect(alice.page.locator("#messages button.msg-retry")).to_have_count(0)
    carol = _chat(browsers, node).login("carol")
    carol.open_conversation(node.address("alice"))
    carol.expect_texts(["are you there, carol?"])


def test_reload_keeps_the_session_and_history(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")
    alice.open_new_chat("bob")
    alice.send_and_confirm("one")
    alice.send_and_confirm("two")
    conv = bob.conversation(node.address("alice"))
    expect(conv.locator(".conv-unread")).to_have_text("2")

    # A reload is the same device, still logged in; the history is rebuilt once.
    alice.page.reload()
    alice.expect_logged_in("alice")
    alice.open_conversation(node.address("bob"))
    alice.expect_texts(["one", "two"])
    expect(alice.message("two", "sent")).to_have_count(1)

    # Unread counts survive a reload until read, and read stays read.
    bob.page.reload()
    bob.expect_logged_in("bob")
    expect(conv.locator(".conv-unread")).to_have_text("2")
    bob.open_conversation(node.address("alice"))
    expect(conv.locator(".conv-unread")).to_be_hidden()
    bob.page.reload()
    bob.expect_logged_in("bob")
    expect(conv.locator(".conv-last")).to_have_text("two")
    expect(conv.locator(".conv-unread")).to_be_hidden()


def test_own_message_echo_before_ok_is_shown_once(
    browsers: Browsers, node: NodeProcess, screenshot
) -> None:
    """The stream can deliver one's own message before the send's ``ok``.

    Deterministic: a WebSocket route holds back the node's ``ok`` for the send
    (it arrives in a separate WebSocket message, as it sometimes does for
    real) until the echo has been rendered.
    """
    _users(node, "alice", "bob")
    context = browsers.context()
    sends: set[object] = set()
    held: list[tuple[object, str]] = []
    holding = [True]

    def route(ws) -> None:
        server = ws.connect_to_server()

        def from_page(message) -> None:
            if isinstance(message, str):
                frames = json.loads(message)
                for frame in frames if isinstance(frames, list) else [frames]:
                    if frame.get("t") == "send":
                        sends.add(frame.get("rid"))
            server.send(message)

        def from_node(message) -> None:
            frames = json.loads(message)
            for frame in frames if isinstance(frames, list) else [frames]:
                text = json.dumps(frame)
                if holding[0] and frame.get("t") == "ok" and frame.get("rid") in sends:
                    held.append((ws, text))
                else:
                    ws.send(text)

        ws.on_message(from_page)
        server.on_message(from_node)

    context.route_web_socket(re.compile(r"/ws$"), route)
    alice = _chat(browsers, node, context).login("alice")
    alice.open_new_chat("bob")
    alice.send("echo first")
    page = alice.page
    # The echo is in (the client's cursor passed it), then two frames: rendered.
    # (Not wait_for_function: its string predicate trips the page's CSP.)
    page.evaluate(ECHO_RENDERED)
    shown = alice.message("echo first").evaluate_all(
        "items => items.map(li => `${li.dataset.state} id=${li.dataset.id}`)"
    )
    if len(shown) > 1:
        screenshot(page, "bug-echo-before-ok")
    release = list(held)
    holding[0] = False
    for ws, text in release:
        ws.send(text)  # type: ignore[attr-defined]
    alice.expect_message("echo first", "sent")
    if len(shown) > 1:  # the page-wide duplicate watch (conftest) saw it too
        assert any(d["text"] == "echo first" for d in browsers.duplicates())
    assert len(shown) == 1, f"own message shown {len(shown)} times before its ok: {shown}"


def test_presence_is_right_after_a_node_restart(browsers: Browsers, node: NodeProcess) -> None:
    """A contact who went away while the node was down is shown offline."""
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    bob_context = browsers.context()
    _chat(browsers, node, bob_context).login("bob")
    form = alice.page.locator("#add-contact-form")
    form.get_by_label("Add contact").fill("bob")
    form.get_by_role("button", name="Add").click()
    contact = alice.page.locator(f'#contacts li.contact[data-address="bob@{node.name}"]')
    expect(contact.locator(".presence-dot")).to_have_attribute("data-status", "online")

    node.stop()
    bob_context.close()  # bob leaves while the node is down
    node.start()
    alice.expect_online(timeout=ONLINE_TIMEOUT_MS)
    expect(contact.locator(".presence-dot")).to_have_attribute("data-status", "offline")
    expect(contact.locator(".last-active")).not_to_have_text("online")


def test_logout_then_another_user_in_the_same_tab(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice", "bob", "carol")
    alice = _chat(browsers, node).login("alice")
    alice.open_new_chat("carol")
    alice.send_and_confirm("for carol only")
    alice.page.locator("#logout-button").click()
    expect(alice.page.locator("#login-view")).to_be_visible()
    expect(alice.page.locator("#chat-view")).to_be_hidden()

    bob = Chat(alice.page, node).login("bob")
    expect(bob.page.locator("#conversations li.conversation")).to_have_count(0)
    expect(bob.page.locator("#messages li")).to_have_count(0)
    expect(bob.page.get_by_text("for carol only")).to_have_count(0)
    bob.open_new_chat("carol")
    bob.send_and_confirm("bob here")
    bob.expect_texts(["bob here"])
    carol = _chat(browsers, node).login("carol")
    carol.open_conversation(node.address("bob"))
    carol.expect_texts(["bob here"])
    expect(carol.message("bob here").locator(".msg-from")).to_have_text(re.compile("bob"))
    carol.open_conversation(node.address("alice"))
    carol.expect_texts(["for carol only"])


def test_address_forms_open_one_conversation(browsers: Browsers, node: NodeProcess) -> None:
    _users(node, "alice", "bob")
    alice = _chat(browsers, node).login("alice")
    alice.page.locator("#create-group-form").get_by_label("Group name").fill("team")
    alice.page.locator("#create-group-form").get_by_role("button", name="Create group").click()
    expect(alice.conversation(node.group("team"))).to_have_attribute("aria-current", "true")

    for typed in ("bob", f"bob@{node.name}", f"bob@{node.node_id}"):
        alice.open_new_chat(typed)
        expect(alice.conversation(node.address("bob"))).to_have_attribute("aria-current", "true")
        expect(alice.page.locator("#conv-title")).to_have_text("bob")
    alice.send_and_confirm("to bob")
    for typed in ("#team", f"#team@{node.name}", f"#team@{node.node_id}"):
        alice.open_new_chat(typed)
        expect(alice.conversation(node.group("team"))).to_have_attribute("aria-current", "true")
        expect(alice.page.locator("#conv-title")).to_have_text("#team")
    alice.send_and_confirm("to the team")
    expect(alice.page.locator("#conversations li.conversation")).to_have_count(2)
    expect(alice.page.locator("#error")).to_have_text("")

    alice.open_new_chat("not an address!")
    expect(alice.page.locator("#error")).to_have_text(re.compile(r"\S"))
    expect(alice.page.locator("#conversations li.conversation")).to_have_count(2)


def test_send_whose_ok_was_lost_is_stored_once(browsers: Browsers, node: NodeProcess) -> None:
    """The connection drops after the node committed a send but before its ``ok``
    reached the page: the page resends it (same ``cid``) and it exists once."""
    _users(node, "alice", "bob")
    context = browsers.context()
    connections: list[object] = []
    sends: set[object] = set()

    def route(ws) -> None:
        connections.append(ws)
        first = len(connections) == 1
        server = ws.connect_to_server()

        def from_page(message) -> None:
            if first and isinstance(message, str):
                frames = json.loads(message)
                for frame in frames if isinstance(frames, list) else [frames]:
                    if frame.get("t") == "send":
                        sends.add(frame.get("rid"))
            server.send(message)

        def from_node(message) -> None:
            if not first:
                ws.send(message)
                return
            frames = json.loads(message)
            frames = frames if isinstance(frames, list) else [frames]
            if any(f.get("t") == "ok" and f.get("rid") in sends for f in frames):
                # The ok (and whatever came with it) is lost with the connection.
                ws.close(code=1011, reason="test: connection lost")
                server.close()
                return
            if any(f.get("t") == "msg" for f in frames) and sends:
                return  # the echo of the send is lost too
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_node)

    context.route_web_socket(re.compile(r"/ws$"), route)
    alice = _chat(browsers, node, context).login("alice")
    bob = _chat(browsers, node).login("bob")
    alice.open_new_chat("bob")
    alice.send("the ok of this one is lost")
    alice.expect_message("the ok of this one is lost", "sent", timeout=ONLINE_TIMEOUT_MS)
    assert len(connections) >= 2, "the page did not reconnect"
    alice.expect_online()
    alice.send_and_confirm("and this one is fine")
    expected = ["the ok of this one is lost", "and this one is fine"]
    alice.expect_texts(expected)
    bob.open_conversation(node.address("alice"))
    bob.expect_texts(expected)
    _assert_unique_ids(alice)
    # A new device of alice's (a fresh sync from the node's queue) has it once too.
    fresh = _chat(browsers, node).login("alice")
    fresh.open_conversation(node.address("bob"))
    fresh.expect_texts(expected)


def test_signup_with_a_weak_password_shows_why(browsers: Browsers, node: NodeProcess) -> None:
    chat = _chat(browsers, node)
    page = chat.page
    expect(page.locator("#password-rule")).to_contain_text("at least 8 characters")
    page.get_by_label("User name").fill("dora")
    page.get_by_label("Password", exact=True).fill("password1")
    page.locator("#signup-button").click()
    expect(chat.error).to_contain_text("Choose another password")
    expect(chat.error).to_contain_text("one of the most common passwords")
    expect(page.locator("#login-password")).to_be_focused()
    expect(page.locator("#chat-view")).to_be_hidden()
    # A good one goes through from the same page, and the error goes.
    chat.login("dora", "a much better password", signup=True)
    expect(chat.error).to_have_text("")


def test_signup_with_an_invitation_code_on_a_closed_node(
    browsers: Browsers, node: NodeProcess
) -> None:
    node.stop()
    (node.data_dir / "chinwag.toml").write_text('signup = "closed"\n')
    node.start()
    chat = _chat(browsers, node)
    page = chat.page
    page.get_by_label("User name").fill("gina")
    page.get_by_label("Password", exact=True).fill("a much better password")
    page.locator("#signup-button").click()
    expect(chat.error).to_contain_text("invitation")
    expect(page.locator("#chat-view")).to_be_hidden()
    # The admin's one-time code opens it, once.
    code = _cli(node, "invite", "user").strip()
    page.locator("#login-invite").fill(code)
    chat.login("gina", "a much better password", signup=True)
    expect(page.locator("#login-invite")).to_have_value("")
