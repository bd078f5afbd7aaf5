"""The web client's live signals (signals.js): typing line, receipt ticks, block."""

from __future__ import annotations

import json
import urllib.request

from .conftest import Browsers, NodeProcess
from .pages import Chat, expect


def _chat(browsers: Browsers, node: NodeProcess) -> Chat:
    return Chat(browsers.page(None), node)


def test_typing_line_and_ticks(browsers: Browsers, node: NodeProcess, screenshot) -> None:
    for name in ("alice", "bob"):
        node.signup(name)
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")
    alice.open_new_chat("bob")
    # A user of our own node has a message once it is stored: ✓✓ at once.
    sent = alice.send_and_confirm("hello bob")
    expect(sent).to_have_attribute("data-receipt", "delivered")
    expect(sent.locator(".msg-state")).to_have_text("✓✓")

    bob.open_conversation(node.address("alice"))
    bob.expect_texts(["hello bob"])
    # Bob read it (the conversation is on his screen): alice sees "read".
    expect(sent).to_have_attribute("data-receipt", "read")
    expect(sent.locator(".msg-state")).to_have_text("✓✓ read")

    bob.page.locator("#composer-text").press_sequentially("typing a reply")
    expect(alice.page.locator("#typing-line")).to_have_text("bob is typing…")
    screenshot(alice.page, "typing-line")
    bob.page.locator("#send-button").click()
    # His message ends the line at once.
    alice.expect_message("typing a reply", "received")
    expect(alice.page.locator("#typing-line")).to_have_text("")

    bob.page.locator("#composer-text").press_sequentially("x")
    expect(alice.page.locator("#typing-line")).to_have_text("bob is typing…")
    bob.page.locator("#composer-text").fill("")
    expect(alice.page.locator("#typing-line")).to_have_text("")


def test_block_from_the_conversation_header(browsers: Browsers, node: NodeProcess) -> None:
    for name in ("carol", "dave"):
        node.signup(name)
    carol = _chat(browsers, node).login("carol")
    carol.open_new_chat("dave")
    carol.send_and_confirm("before the block")
    button = carol.page.locator("#block-button")
    expect(button).to_have_text("Block")
    carol.page.once("dialog", lambda dialog: dialog.accept())
    button.click()
    expect(button).to_have_text("Unblock")
    token = carol.page.evaluate("JSON.parse(sessionStorage.getItem('chinwag.session')).token")
    request = urllib.request.Request(
        f"{node.url}/api/blocks", headers={"authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        listed = json.loads(response.read())
    assert [b["user"] for b in listed["blocks"]] == ["dave"]
    button.click()
    expect(button).to_have_text("Block")
