"""``chinwag chat``: log in on the terminal, then run the full-screen client."""

from __future__ import annotations

import argparse

from chinwag.node.client import ClientError, LoginResult, http_json

from .chat_model import ChatModel
from .chat_state import StateBusy, StateFile
from .common import cached_login, fail, forget_login, fresh_login
from .exitcodes import Exit
from .node_cmds import run_async

#: How long the start-up check of a cached token may take.
TOKEN_CHECK_TIMEOUT = 5.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("chat", help="the full-screen terminal chat client")
    p.add_argument("--server", required=True, help="the node, http://host:port")
    p.add_argument("--user", required=True, help="your user name on that node")
    p.add_argument("--device", help="device name (default: one made at first log-in)")
    p.set_defaults(handler=cmd_chat)


async def prepare_login(server: str, user: str, device: str | None) -> LoginResult:
    """The cached token if the node still takes it, else a fresh log-in.

    A fresh log-in asks for the password (``CHINWAG_PASSWORD`` or the terminal)
    here, *before* the full-screen app starts. If the node cannot be reached,
    a cached token is used as it is: the app keeps trying to connect.
    """
    cached = cached_login(server, user, device)
    if cached is not None:
        try:
            status, _ = await http_json(
                server, "GET", "/api/profile", token=cached.token, timeout=TOKEN_CHECK_TIMEOUT
            )
        except ClientError:
            return cached
        if status != 401:
            return cached
        forget_login(server, user, device)
    return await fresh_login(server, user, device)


def load_model(login: LoginResult, state: StateFile) -> ChatModel:
    """The device's model, restored from its state file (cursor and history);
    without one, a fresh model that starts at the queue head."""
    model = ChatModel(login.user, login.node_id, login.node_name)
    saved = state.load()
    model.load_json(saved)
    model.fresh = not saved
    return model


def cmd_chat(args: argparse.Namespace) -> int:
    login = run_async(lambda: prepare_login(args.server, args.user, args.device))
    state = StateFile(args.server, login.user, login.device)
    try:
        state.lock()
    except StateBusy as exc:
        fail(str(exc), Exit.CONFLICT)
    try:
        # Imported here: only this command needs textual.
        from .chat_tui import ChatApp

        app = ChatApp(
            args.server,
            login,
            load_model(login, state),
            state,
            on_unauthorized=lambda: forget_login(args.server, args.user, args.device),
        )
        app.run()
    finally:
        state.unlock()
    return 0
