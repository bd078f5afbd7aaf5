"""The ``/commands`` typed in ``chinwag chat``'s input line.

The line is split like a shell line (:mod:`shlex`, so a title can be quoted)
and parsed by :mod:`argparse`, whose errors are raised as
:class:`CommandError` instead of exiting.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from typing import Any, NoReturn


class CommandError(ValueError):
    """A line that is not a valid command; the message says why."""


@dataclass(frozen=True)
class OpenChat:
    address: str


@dataclass(frozen=True)
class ContactCommand:
    action: str  # add | remove
    address: str


@dataclass(frozen=True)
class NameCommand:
    display_name: str  # shown for you on every node ("" clears it)


@dataclass(frozen=True)
class GroupCommand:
    op: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalCommand:
    name: str  # help | quit | retry


@dataclass(frozen=True)
class SearchCommand:
    query: str


@dataclass(frozen=True)
class OpenHit:
    number: int  # 1 = the first hit of the last /search


@dataclass(frozen=True)
class AttachCommand:
    path: str


@dataclass(frozen=True)
class SaveCommand:
    number: int | None  # None: list the conversation's files
    path: str | None


@dataclass(frozen=True)
class ActionCommand:
    """``/edit TEXT``, ``/delete``, ``/reply TEXT``, ``/react EMOJI``: on the last
    message of the open conversation (your own, for edit and delete)."""

    kind: str  # edit | delete | reply | react
    text: str = ""


@dataclass(frozen=True)
class BlockCommand:
    action: str  # add (/block) | remove (/unblock)
    address: str


@dataclass(frozen=True)
class ReceiptsCommand:
    on: bool


Command = (
    OpenChat
    | ContactCommand
    | NameCommand
    | GroupCommand
    | LocalCommand
    | SearchCommand
    | OpenHit
    | AttachCommand
    | SaveCommand
    | ActionCommand
    | BlockCommand
    | ReceiptsCommand
)
#: Commands whose argument is the rest of the line, as typed (no shell quoting).
_RAW = {"edit": "TEXT", "reply": "TEXT", "react": "EMOJI", "delete": ""}

HELP = """\
/chat ADDRESS                 open a conversation: bob, bob@node, #team@node
/contact add|remove ADDRESS   add or remove a contact (their presence is shown)
/name TEXT…                   your display name, shown to others ("/name -" clears it)
/group create NAME [TITLE]    create #NAME on your node
/group add #g@host ADDRESS…   add members (owner)
/group remove #g@host ADDRESS…
/group leave #g@host          leave a group
/group members #g@host        members with their presence
/group list                   your groups
/group invites                your open invitations to groups
/group accept|decline #g@host join a group you were invited to, or refuse
/retry                        resend the failed messages of this conversation
/search WORDS…                search your history (all words, any case or accent)
/open N                       open the conversation of search hit N, at that message
/attach PATH                  send a file (photos lose their EXIF on your node)
/save [N [PATH]]              list this conversation's files, or save file N (1 = newest)
/edit TEXT                    replace the text of your last message here
/delete                       delete your last message here, for everyone
/reply TEXT                   reply to the last message here, quoting it
/react EMOJI                  react to the last message here (again: take it back)
/block ADDRESS, /unblock ADDRESS  their messages, typing and presence never reach you
/receipts on|off              send (and see) read receipts, or not
/help                         this text
/quit                         quit (also ctrl+q)
ctrl+n / ctrl+p switch conversations; PageUp scrolls back and loads older
messages from the node; //text sends \"/text\"."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise CommandError(message or f"{self.prog}: see /help")


def _build() -> _Parser:
    root = _Parser(prog="command", add_help=False)
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> _Parser:
        parser = sub.add_parser(name, prog=f"/{name}", add_help=False)
        assert isinstance(parser, _Parser)
        return parser

    command("chat").add_argument("address", metavar="ADDRESS")
    p = command("contact")
    p.add_argument("action", choices=("add", "remove"), metavar="add|remove")
    p.add_argument("address", metavar="ADDRESS")
    command("name").add_argument("words", metavar="TEXT", nargs="+")
    group = command("group").add_subparsers(dest="op", required=True, metavar="OP")

    def group_op(name: str) -> _Parser:
        parser = group.add_parser(name, prog=f"/group {name}", add_help=False)
        assert isinstance(parser, _Parser)
        return parser

    p = group_op("create")
    p.add_argument("name", metavar="NAME")
    p.add_argument("title", metavar="TITLE", nargs="?", default="")
    for op in ("add", "remove"):
        p = group_op(op)
        p.add_argument("group", metavar="GROUP")
        p.add_argument("members", metavar="ADDRESS", nargs="+")
    for op in ("leave", "members", "accept", "decline"):
        group_op(op).add_argument("group", metavar="GROUP")
    group_op("list")
    group_op("invites")
    command("search").add_argument("words", metavar="WORDS", nargs="+")
    command("open").add_argument("number", metavar="N", type=int)
    command("attach").add_argument("path", metavar="PATH")
    p = command("save")
    p.add_argument("number", metavar="N", type=int, nargs="?")
    p.add_argument("path", metavar="PATH", nargs="?")
    command("block").add_argument("address", metavar="ADDRESS")
    command("unblock").add_argument("address", metavar="ADDRESS")
    command("receipts").add_argument("state", choices=("on", "off"), metavar="on|off")
    for name in ("help", "quit", "retry"):
        command(name)
    return root


_PARSER = _build()
_NAMES = (
    "chat",
    "contact",
    "name",
    "group",
    "help",
    "quit",
    "retry",
    "search",
    "open",
    "attach",
    "save",
    "block",
    "unblock",
    "receipts",
)


def parse_command(line: str) -> Command:
    """Parse what follows the ``/`` of an input line."""
    name, _, rest = line.strip().partition(" ")
    if name in _RAW:
        return _action(name, rest.strip())
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise CommandError(f"cannot read that command: {exc}") from None
    if not words:
        raise CommandError("an empty command: see /help")
    if words[0] not in _NAMES:
        raise CommandError(f"unknown command /{words[0]}: see /help")
    args = _PARSER.parse_args(words)
    if args.command == "chat":
        return OpenChat(args.address)
    if args.command == "contact":
        return ContactCommand(args.action, args.address)
    if args.command == "name":
        text = " ".join(args.words)
        return NameCommand("" if text == "-" else text)
    if args.command == "group":
        return GroupCommand(args.op, _group_fields(args))
    if args.command == "search":
        return SearchCommand(" ".join(args.words))
    if args.command in ("block", "unblock"):
        if args.address.startswith("#"):
            raise CommandError(f"/{args.command}: block a user, not a group")
        return BlockCommand("add" if args.command == "block" else "remove", args.address)
    if args.command == "receipts":
        return ReceiptsCommand(args.state == "on")
    if args.command == "open":
        if args.number < 1:
            raise CommandError("/open N: N is the number of a hit, 1 or more")
        return OpenHit(args.number)
    if args.command == "attach":
        return AttachCommand(args.path)
    if args.command == "save":
        if args.number is not None and args.number < 1:
            raise CommandError("/save N: N is the number of a file, 1 or more")
        return SaveCommand(args.number, args.path)
    return LocalCommand(args.command)


def _action(name: str, rest: str) -> ActionCommand:
    if name == "delete":
        if rest:
            raise CommandError("/delete takes nothing: it deletes your last message here")
        return ActionCommand("delete")
    if not rest:
        raise CommandError(f"/{name} {_RAW[name]}: the {_RAW[name].lower()} is missing")
    return ActionCommand(name, rest)


def _group_fields(args: argparse.Namespace) -> dict[str, Any]:
    if args.op == "create":
        fields: dict[str, Any] = {"name": args.name.lstrip("#")}
        if args.title:
            fields["title"] = args.title
        return fields
    if args.op in ("add", "remove"):
        return {"group": _group(args.group), "members": list(args.members)}
    if args.op in ("leave", "members", "accept", "decline"):
        return {"group": _group(args.group)}
    return {}


def _group(text: str) -> str:
    if not text.startswith("#"):
        raise CommandError(f"a group is written #name@host, not {text!r}")
    return text
