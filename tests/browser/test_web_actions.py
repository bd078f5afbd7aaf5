"""The web client's actions on messages (issue 17) in headless Chromium:
the message menu (reply, react, edit, delete), edited and deleted states,
reply previews that jump to the quoted message, reaction chips."""

from __future__ import annotations

from .conftest import Browsers, NodeProcess
from .pages import Chat, expect


def _menu(chat: Chat, text: str) -> None:
    """Open the action menu of the message ``text`` (hover, then its button)."""
    message = chat.message(text)
    message.hover()
    message.get_by_role("button", name="Message actions").click()
    expect(message.get_by_role("menu")).to_be_visible()


def test_menu_reply_react_edit_delete(browsers: Browsers, node: NodeProcess, screenshot) -> None:
    node.signup("alice")
    node.signup("bob")
    alice = Chat(browsers.page(), node).login("alice")
    bob = Chat(browsers.page(), node).login("bob")
    alice.open_new_chat("bob")
    alice.send_and_confirm("lunch at noon?")
    alice.send_and_confirm("or one")
    bob.open_conversation(node.address("alice"))
    bob.expect_texts(["lunch at noon?", "or one"])

    # Bob reacts and replies through the menu; both tabs show it.
    _menu(bob, "lunch at noon?")
    bob.message("lunch at noon?").get_by_role("menuitem", name="React 👍").click()
    for chat in (alice, bob):
        chip = chat.message("lunch at noon?").locator(".reaction")
        expect(chip).to_have_text("👍 1")
    expect(bob.message("lunch at noon?").locator(".reaction")).to_have_attribute(
        "aria-pressed", "true"
    )
    _menu(bob, "lunch at noon?")
    bob.message("lunch at noon?").get_by_role("menuitem", name="Reply").click()
    expect(bob.page.locator("#action-banner")).to_contain_text("Replying to")
    bob.send_and_confirm("noon works")
    for chat in (alice, bob):
        preview = chat.message("noon works").locator(".reply-preview")
        expect(preview).to_contain_text("lunch at noon?")
    alice.message("noon works").locator(".reply-preview").click()
    expect(alice.message("lunch at noon?")).to_have_class("message mine highlight")

    # Alice edits her message: the composer holds its text; Enter saves.
    _menu(alice, "or one")
    alice.message("or one").get_by_role("menuitem", name="Edit").click()
    expect(alice.page.locator("#composer-text")).to_have_value("or one")
    alice.page.locator("#composer-text").fill("or at one")
    alice.page.locator("#composer-text").press("Enter")
    for chat in (alice, bob):
        expect(chat.message("or at one").locator(".msg-edited")).to_have_text("(edited)")
    # Bob's menu on Alice's message has no Edit or Delete.
    _menu(bob, "or at one")
    expect(bob.message("or at one").get_by_role("menuitem", name="Edit")).to_have_count(0)
    bob.page.keyboard.press("Escape")

    # Alice deletes it: a tombstone on both sides, and after a reload.
    alice.page.once("dialog", lambda dialog: dialog.accept())
    _menu(alice, "or at one")
    alice.message("or at one").get_by_role("menuitem", name="Delete").click()
    for chat in (alice, bob):
        expect(chat.page.locator("#messages .msg-deleted")).to_have_count(1)
        expect(chat.message("or at one")).to_have_count(0)
    screenshot(bob.page, "actions-deleted")
    bob.page.reload()
    bob.expect_logged_in("bob")
    bob.open_conversation(node.address("alice"))
    expect(bob.page.locator("#messages .msg-deleted")).to_have_count(1)
    expect(bob.message("lunch at noon?").locator(".reaction")).to_have_text("👍 1")
    expect(bob.message("noon works").locator(".reply-preview")).to_contain_text("lunch at noon?")
