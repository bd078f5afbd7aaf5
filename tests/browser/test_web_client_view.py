"""The chat view of issue 16 in a real browser: the unread count in the title,
desktop notifications (granted through the context, observed through an
init script that records every ``Notification``), muting, closing a
conversation, links that cannot carry HTML, and, across two federated nodes,
display names, node labels, a group's title, owner-only actions and a
remote member's presence fetched when the group is opened. The attach flow
runs once the node serves ``POST /api/blobs``."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from typing import Any

import pytest

try:
    from playwright.sync_api import expect
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CHINWAG_REQUIRE_BROWSER") == "1":
        raise
    pytest.skip(f"playwright is not installed ({exc})", allow_module_level=True)

from .conftest import Browsers, NodeProcess
from .pages import Chat

REMOTE_TIMEOUT_MS = 15_000

#: Records notifications instead of showing them; ``__focused`` stands in for
#: the window's focus, which a headless page does not have reliably.
NOTIFICATION_SPY = """
(() => {
  window.__notes = [];
  window.__focused = true;
  const Real = window.Notification;
  class Spy {
    constructor(title, options) {
      window.__notes.push({ title, body: (options || {}).body, tag: (options || {}).tag });
      this.onclick = null;
    }
    close() {}
    static get permission() { return Real ? Real.permission : "denied"; }
    static requestPermission() { return Real.requestPermission(); }
  }
  window.Notification = Spy;
  document.hasFocus = () => window.__focused;
})();
"""


def _chat(browsers: Browsers, node: NodeProcess, context: Any = None) -> Chat:
    if node is browsers.node:
        return Chat(browsers.page(context), node)
    page = (context or browsers.context()).new_page()
    page.goto(node.url)
    return Chat(page, node)


def _notes(chat: Chat) -> list[dict[str, Any]]:
    return chat.page.evaluate("window.__notes")  # type: ignore[no-any-return]


def test_title_count_notifications_mute_and_close(browsers: Browsers, node: NodeProcess) -> None:
    for name in ("alice", "bob"):
        node.signup(name)
    context = browsers.context()
    context.grant_permissions(["notifications"], origin=node.origin)
    context.add_init_script(NOTIFICATION_SPY)
    alice = _chat(browsers, node, context).login("alice")
    expect(alice.page.locator("#notify-button")).to_have_attribute(
        "aria-label", "Turn off notifications"
    )
    bob = _chat(browsers, node).login("bob")
    bob.open_new_chat("alice")
    bob.send_and_confirm("hello alice, are you there?")

    # A background conversation: the title counts it, a notification says who.
    expect(alice.page).to_have_title(f"(1) chinwag · {node.name}")
    expect(alice.conversation(node.address("bob"))).to_be_visible()
    assert _notes(alice) == [
        {"title": "bob", "body": "hello alice, are you there?", "tag": node.address("bob")}
    ]

    # On screen in a focused tab: read, and no notification.
    alice.open_conversation(node.address("bob"))
    expect(alice.page).to_have_title(f"chinwag · {node.name}")
    bob.send_and_confirm("second")
    alice.expect_message("second", "received")
    assert len(_notes(alice)) == 1

    # The same conversation in a tab without focus is notified.
    alice.page.evaluate("window.__focused = false")
    bob.send_and_confirm("third")
    alice.expect_message("third", "received")
    assert _notes(alice)[-1]["body"] == "third"

    # Muted: nothing, and the switch survives a reload (localStorage).
    mute = alice.page.locator("#mute-button")
    mute.click()
    expect(mute).to_have_attribute("aria-pressed", "true")
    alice.page.reload()
    alice.expect_online()
    expect(alice.page.locator("#mute-button")).to_have_attribute("aria-pressed", "true")
    alice.page.evaluate("window.__focused = false")
    bob.send_and_confirm("fourth")
    alice.expect_message("fourth", "received")
    assert _notes(alice) == []  # the spy is new with the page: nothing since

    # Closed: off the list until the next message, also after a reload.
    alice.page.locator("#close-conv-button").click()
    expect(alice.conversation(node.address("bob"))).to_have_count(0)
    alice.page.reload()
    alice.expect_online()
    expect(alice.page.locator("#conversations li.conversation")).to_have_count(0)
    bob.send_and_confirm("fifth")
    expect(alice.conversation(node.address("bob"))).to_be_visible()


def test_links_are_clickable_and_nothing_is_html(browsers: Browsers, node: NodeProcess) -> None:
    for name in ("alice", "bob"):
        node.signup(name)
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")
    text = (
        'see https://example.org/a?b=1&c=2, and <img src=x onerror="window.__pwned=1">'
        " <a href=javascript:alert(1)>x</a> javascript:alert(2) www.example.com/x."
    )
    bob.open_new_chat("alice")
    bob.send_and_confirm(text)
    alice.open_conversation(node.address("bob"))
    message = alice.expect_message(text, "received")
    links = message.locator(".msg-text a")
    expect(links).to_have_count(2)
    expect(links.nth(0)).to_have_attribute("href", "https://example.org/a?b=1&c=2")
    expect(links.nth(0)).to_have_attribute("rel", "noopener noreferrer")
    expect(links.nth(0)).to_have_attribute("target", "_blank")
    expect(links.nth(1)).to_have_attribute("href", "https://www.example.com/x")
    expect(links.nth(1)).to_have_text("www.example.com/x")
    expect(alice.page.locator("#messages img")).to_have_count(0)
    assert alice.page.evaluate("window.__pwned") is None


def test_names_titles_owner_and_remote_presence_across_nodes(
    browsers: Browsers, node: NodeProcess, attic: NodeProcess, screenshot
) -> None:
    node.signup("alice")
    attic.signup("bob")
    node.http("PUT", "/api/profile", {"display_name": "Alice Liddell"}, node.login("alice"))
    bob_token = attic.login("bob")
    attic.http("PUT", "/api/profile", {"display_name": "Bob Builder"}, bob_token)
    # bob has alice as a contact: her add makes him a member at once. alice
    # does not have bob: his presence reaches her only on demand.
    attic.http("POST", "/api/contacts", {"address": "alice@kitchen"}, bob_token)

    bob = _chat(browsers, attic).login("bob")
    alice = _chat(browsers, node).login("alice")
    form = alice.page.locator("#create-group-form")
    form.get_by_label("Group name").fill("team")
    form.get_by_label("Group title (optional)").fill("The Kitchen Team")
    form.get_by_role("button", name="Create group").click()
    expect(alice.conversation(node.group("team"))).to_have_attribute("aria-current", "true")
    alice.page.get_by_label("Add member").fill("bob@attic")
    alice.page.locator("#add-member-form").get_by_role("button", name="Add").click()

    # bob's node: the title, labels (never a raw node id), no owner actions.
    key = node.group("team")
    expect(bob.conversation(key)).to_be_visible(timeout=REMOTE_TIMEOUT_MS)
    bob.open_conversation(key)
    expect(bob.page.locator("#conv-subtitle")).to_have_text("The Kitchen Team")
    event = bob.page.locator("#messages li.event").last
    # bob's node accepted alice's invitation for him (she is his contact).
    expect(event).to_have_text(re.compile(r"^(Bob Builder|bob) joined$"))
    for text in bob.page.locator("#messages li.event").all_text_contents():
        assert node.node_id[:8] not in text and attic.node_id[:8] not in text, text
    expect(bob.page.locator("#add-member-form")).to_be_hidden()
    expect(bob.page.locator("#leave-group-button")).to_be_visible()
    alice_member = bob.page.locator(
        f'#group-members li.member[data-address="{node.address("alice")}"]'
    )
    expect(alice_member.locator(".member-name")).to_have_text("Alice Liddell")

    # alice's node: bob's presence and name, asked when the group is opened.
    alice.open_conversation(key)
    expect(alice.page.locator("#add-member-form")).to_be_visible()
    bob_member = alice.page.locator(
        f'#group-members li.member[data-address="{attic.address("bob")}"]'
    )
    expect(bob_member.locator(".presence-dot")).to_have_attribute(
        "data-status", "online", timeout=REMOTE_TIMEOUT_MS
    )
    expect(bob_member.locator(".member-name")).to_have_text("Bob Builder")

    # Messages show display names; the address stays in the tooltip.
    bob.send_and_confirm("hi team")
    message = alice.expect_message("hi team", "received", timeout=REMOTE_TIMEOUT_MS)
    expect(message.locator(".msg-from")).to_have_text("Bob Builder")
    expect(message.locator(".msg-from")).to_have_attribute("title", "bob@attic")
    screenshot(alice.page, "group-names-across-nodes")


def _serves_blobs(node: NodeProcess) -> bool:
    """Whether the node has the files API (another branch adds it)."""
    request = urllib.request.Request(node.origin + "/api/blobs", data=b"x", method="POST")
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as exc:
        return exc.code != 404
    except OSError:
        return False
    return True


# A 2x2 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000020000000208020000"
    "00fdd49a730000001649444154789c63f8cfc0f09f81e13f03c3ff0c"
    "0c0c00241c03fd0e4fd3d90000000049454e44ae426082"
)


def test_attach_a_photo_and_a_file(browsers: Browsers, node: NodeProcess, tmp_path) -> None:
    if not _serves_blobs(node):
        pytest.skip("this node does not serve POST /api/blobs (the files branch adds it)")
    for name in ("alice", "bob"):
        node.signup(name)
    photo = tmp_path / "photo.png"
    photo.write_bytes(PNG)
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n" * 100)
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")
    alice.open_new_chat("bob")
    alice.page.get_by_label("Message", exact=True).fill("look at this")
    alice.page.locator("#attach-input").set_input_files([str(photo), str(notes)])
    alice.expect_message("look at this", "sent")
    bob.open_conversation(node.address("alice"))
    message = bob.expect_message("look at this", "received")
    image = message.locator("img.att-img")
    expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    chip = message.locator("button.att-file")
    expect(chip).to_contain_text("notes.txt")
    expect(chip).to_contain_text("1.4 KB")
    message.locator("button.att-image").click()
    expect(bob.page.locator(".lightbox img")).to_have_attribute("src", re.compile(r"^blob:"))
    bob.page.keyboard.press("Escape")
    expect(bob.page.locator(".lightbox")).to_have_count(0)
    # No token in any URL the page asked for.
    assert not [u for u in browsers.requests if "token" in u.lower()]
