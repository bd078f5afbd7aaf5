"""Helpers for driving ``chinwag chat`` in tests.

The app runs under asyncio (textual's ``run_test``) in a plain sync test, so
the node is a real ``chinwag run`` process started with ``subprocess`` and the
other users are driven by the trio client library, each call in its own
``trio.run`` on a worker thread. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import trio
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Static

from chinwag.cli.chat_session import Backoff
from chinwag.cli.chat_state import StateFile
from chinwag.cli.chat_tui import ChatApp
from chinwag.cli.common import forget_login
from chinwag.cli.tui_cmd import load_model, prepare_login
from chinwag.node.client import ChatClient, LoginResult, SendAck, connect, login, signup

from ..integration.procs import SyncNode

PW = "tui-password"
T = TypeVar("T")


def start_node(data: Path, home: Path) -> SyncNode:
    """Start a node (named ``kitchen``) and wait, at most 20 s, for its URL."""
    node = SyncNode(data, home)
    node.start()
    return node


def run_app_test(main: Callable[[], Coroutine[Any, Any, None]], timeout: float = 60) -> None:
    """``asyncio.run(main())`` on a thread of its own, at most ``timeout`` seconds.

    Not on pytest's main thread: another library may keep an event loop
    running there for the whole session (Playwright's sync API does).
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # re-raised below, on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="chat-app-test", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"the app test did not finish in {timeout:g}s")
    if errors:
        raise errors[0]


def in_trio(fn: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T]:
    """Run trio code from the asyncio side: its own ``trio.run`` on a thread."""
    return asyncio.to_thread(trio.run, fn, *args)


async def make_user(url: str, name: str) -> LoginResult:
    await signup(url, name, PW)
    return await login(url, name, PW)


async def send_as(url: str, token: str, to: str, text: str) -> SendAck:
    async with connect(url, token) as client:
        return await client.send(to, text)


async def texts_of(url: str, token: str) -> list[str]:
    """Every message text in the user's queue, read by a fresh connection."""
    out: list[str] = []
    async with connect(url, token) as client:
        head, seq = await client.sync(0), 0
        while seq < head:
            frame = await client.next_message(timeout=10)
            seq = frame["seq"]
            if frame.get("kind") == "text":
                out.append(frame["body"]["text"])
    return out


class Online:
    """Keeps one device of a user connected, on its own thread, inside ``with``."""

    def __init__(self, url: str, token: str) -> None:
        self._url, self._token = url, token
        self._ready, self._stop = threading.Event(), threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            trio.run(self._hold)
        except BaseException as exc:  # reported by __exit__
            self._error = exc
            self._ready.set()

    async def _hold(self) -> None:
        async with connect(self._url, self._token) as client:
            self.client: ChatClient = client
            self._ready.set()
            with trio.fail_after(60):
                await trio.to_thread.run_sync(self._stop.wait)

    def __enter__(self) -> Online:
        self._thread.start()
        assert self._ready.wait(10), "peer did not connect"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()
        if self._error is not None:
            raise self._error


def open_app(url: str, user: str, device: str | None = None) -> ChatApp:
    """The app as ``chinwag chat`` builds it (log-in through the same code).

    Needs ``XDG_CONFIG_HOME`` and ``CHINWAG_PASSWORD`` set by the test.
    """
    result = trio.run(prepare_login, url, user, device)
    state = StateFile(url, result.user, result.device)
    return ChatApp(
        url,
        result,
        load_model(result, state),
        state,
        backoff=Backoff(0.05, 0.5),
        timeout=5.0,
        on_unauthorized=lambda: forget_login(url, user, device),
    )


def shown(app: App[Any], selector: str) -> str:
    """The plain text a Static widget shows."""
    widget = app.query_one(selector, Static)
    # textual >= 2 calls it ``content``; older versions ``renderable``.
    return str(getattr(widget, "content", None) or getattr(widget, "renderable", ""))


def listed(app: App[Any]) -> list[str]:
    """The conversation list as shown, top first."""
    listing = app.query_one("#conversations", OptionList)
    return [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)]


async def until(
    pilot: Pilot[Any], check: Callable[[], object], what: str, timeout: float = 10
) -> None:
    """Let the app run until ``check()`` is true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            parts = ("#status", "#title", "#messages", "#notice")
            screen = {part: shown(pilot.app, part) for part in parts}
            raise AssertionError(f"timed out waiting for {what}; screen: {screen}")
        await pilot.pause(0.02)


async def until_connected(pilot: Pilot[Any]) -> None:
    """Until the status line says the app is connected."""
    await until(pilot, lambda: shown(pilot.app, "#status").endswith("  connected"), "connected")


async def type_line(pilot: Pilot[Any], text: str) -> None:
    """Put ``text`` in the input line and press Enter."""
    pilot.app.query_one("#input", Input).value = text
    await pilot.press("enter")


def users(node: SyncNode, *names: str) -> list[str]:
    """Sign the users up on ``node``; returns a token for each."""
    return [trio.run(make_user, node.url, name).token for name in names]
