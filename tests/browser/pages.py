"""A page object for the web client, written against its DOM contract only."""

from __future__ import annotations

import os
from typing import Any

import pytest

# Every browser test module imports this one first: without playwright the
# module is skipped here, once for all (failed under CHINWAG_REQUIRE_BROWSER=1).
try:
    from playwright.sync_api import Error as PlaywrightError  # noqa: F401 - for the tests
    from playwright.sync_api import Locator, Page, expect
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CHINWAG_REQUIRE_BROWSER") == "1":
        raise
    pytest.skip(f"playwright is not installed ({exc})", allow_module_level=True)

from .conftest import PASSWORD, NodeProcess


class Chat:
    """One tab of the web client (one device)."""

    def __init__(self, page: Page, node: NodeProcess) -> None:
        self.page = page
        self.node = node
        self.user = ""

    # ------------------------------------------------------------ log-in view
    def login(self, user: str, password: str = PASSWORD, *, signup: bool = False) -> Chat:
        page = self.page
        expect(page.locator("#login-view")).to_be_visible()
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password", exact=True).fill(password)
        if signup:
            page.locator("#signup-button").click()
        else:
            page.locator("#login-button").click()
        self.expect_logged_in(user)
        return self

    def expect_logged_in(self, user: str) -> None:
        self.user = user
        expect(self.page.locator("#chat-view")).to_be_visible()
        expect(self.page.locator("#login-view")).to_be_hidden()
        expect(self.page.locator("#me")).to_have_text(f"{user}@{self.node.name}")
        self.expect_online()

    def expect_online(self, timeout: float | None = None) -> None:
        expect(self.page.locator("#conn-status")).to_have_attribute(
            "data-state", "online", **_t(timeout)
        )

    # ------------------------------------------------------------ conversations
    def conversation(self, key: str) -> Locator:
        """``li.conversation`` for ``user@<node id>`` or ``#group@<node id>``."""
        return self.page.locator(f'#conversations li.conversation[data-conv="{key}"]')

    def open_new_chat(self, to: str) -> None:
        form = self.page.locator("#new-chat-form")
        form.get_by_label("Chat with").fill(to)
        form.get_by_role("button", name="Open").click()

    def open_conversation(self, key: str) -> None:
        self.conversation(key).locator("button.conv-open").click()
        expect(self.conversation(key)).to_have_attribute("aria-current", "true")

    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages li.message")

    @property
    def message_texts(self) -> Locator:
        return self.page.locator("#messages li.message .msg-text")

    def message(self, text: str, state: str | None = None) -> Locator:
        """Every ``li.message`` whose ``.msg-text`` is exactly ``text`` (and in ``state``).

        Assert on it with counts (``to_have_count(1)``): a count is retried
        until the timeout, while an attribute check on a locator that matches
        two elements fails at once (Playwright's strict mode).
        """
        css = "#messages li.message" + (f'[data-state="{state}"]' if state else "")
        return self.page.locator(css).filter(
            has=self.page.locator(".msg-text", has_text=_exactly(text))
        )

    def expect_message(self, text: str, state: str, timeout: float | None = None) -> Locator:
        """Exactly one message ``text`` is shown, and it is in ``state``."""
        expect(self.message(text, state)).to_have_count(1, **_t(timeout))
        expect(self.message(text)).to_have_count(1, **_t(timeout))
        return self.message(text)

    def expect_texts(self, texts: list[str], timeout: float | None = None) -> None:
        """The open conversation shows exactly these messages, in this order."""
        expect(self.message_texts).to_have_text(texts, **_t(timeout))

    def send(self, text: str) -> Locator:
        """Types ``text`` in the composer and clicks Send."""
        self.page.get_by_label("Message", exact=True).fill(text)
        self.page.locator("#send-button").click()
        expect(self.page.locator("#composer-text")).to_have_value("")
        return self.message(text)

    def send_and_confirm(self, text: str) -> Locator:
        """Sends ``text`` and waits until it is shown once, acknowledged ("sent")."""
        self.send(text)
        return self.expect_message(text, "sent")

    # ------------------------------------------------------------ errors
    @property
    def error(self) -> Locator:
        return self.page.locator("#error")


def _t(timeout: float | None) -> dict[str, Any]:
    return {} if timeout is None else {"timeout": timeout}


def _exactly(text: str) -> Any:
    import re

    return re.compile(rf"^{re.escape(text)}$")
