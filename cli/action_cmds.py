"""Actions on messages (issue 17): ``chinwag edit``, ``chinwag delete``, ``chinwag react``.

Each names a message by its id (as ``send`` prints it and ``tail --json``
shows it) and exits 0 once the node committed the action; the node refuses
with ``forbidden`` (not your message, or past the delete window) or
``not_found`` (no such message in your history).
"""

from __future__ import annotations

import argparse

from chinwag.node.client import SendAck

from .chat_cmds import _client_args, session
from .common import fail
from .node_cmds import run_async


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("edit", help="replace the text of one of your messages, everywhere")
    _client_args(p)
    p.add_argument("id", metavar="ID", type=int, help="the message id")
    p.add_argument("text", metavar="TEXT", help="the new text")
    p.set_defaults(handler=cmd_edit)

    p = sub.add_parser("delete", help="delete one of your messages for everyone")
    _client_args(p)
    p.add_argument("id", metavar="ID", type=int, help="the message id")
    p.set_defaults(handler=cmd_delete)

    p = sub.add_parser("react", help="react to a message with an emoji")
    _client_args(p)
    p.add_argument("id", metavar="ID", type=int, help="the message id")
    p.add_argument("emoji", metavar="EMOJI", help="the emoji, e.g. 👍")
    p.add_argument("--remove", action="store_true", help="take the reaction back")
    p.set_defaults(handler=cmd_react)


def _print_ack(ack: SendAck) -> None:
    print(f"id={ack.id} seq={ack.seq}", flush=True)


def _check_id(value: int) -> None:
    if value <= 0:
        fail("a message id is a positive number")


def cmd_edit(args: argparse.Namespace) -> int:
    _check_id(args.id)
    if not args.text:
        fail("an edit needs the new text")

    async def go() -> int:
        async with session(args) as client:
            _print_ack(await client.edit(args.id, args.text))
        return 0

    return run_async(go)


def cmd_delete(args: argparse.Namespace) -> int:
    _check_id(args.id)

    async def go() -> int:
        async with session(args) as client:
            _print_ack(await client.delete(args.id))
        return 0

    return run_async(go)


def cmd_react(args: argparse.Namespace) -> int:
    _check_id(args.id)

    async def go() -> int:
        async with session(args) as client:
            _print_ack(await client.react(args.id, args.emoji, args.remove))
        return 0

    return run_async(go)
