"""``chinwag group ...``: create, add, remove, leave, list, members, invites,
accept, decline."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .chat_cmds import session
from .node_cmds import run_async


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("group", help="manage groups (#name@host)")
    gsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def client_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--server", required=True, help="the node, http://host:port")
        q.add_argument("--user", required=True, help="your user name on that node")
        q.add_argument("--device", help="device name (default: one made at first log-in)")
        q.add_argument("--json", action="store_true")
        q.set_defaults(handler=cmd_group)

    q = gsub.add_parser("create", help="create #NAME on your node (you own it)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--title", default="")
    client_args(q)
    for action, text in (("add", "add members"), ("remove", "remove members")):
        q = gsub.add_parser(action, help=text)
        q.add_argument("group", metavar="GROUP", help="#name@host")
        q.add_argument("members", metavar="MEMBER", nargs="+", help="bob@node")
        client_args(q)
    q = gsub.add_parser("leave", help="leave a group")
    q.add_argument("group", metavar="GROUP")
    client_args(q)
    q = gsub.add_parser("list", help="your groups")
    client_args(q)
    q = gsub.add_parser("members", help="a group's members with their presence")
    q.add_argument("group", metavar="GROUP")
    client_args(q)
    q = gsub.add_parser("invites", help="your open invitations to groups")
    client_args(q)
    for action, text in (("accept", "join a group you were invited to"), ("decline", "refuse it")):
        q = gsub.add_parser(action, help=text)
        q.add_argument("group", metavar="GROUP", help="#name@host")
        client_args(q)


def cmd_group(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {}
    if args.action == "create":
        fields = {"name": args.name.lstrip("#")}
        if args.title:
            fields["title"] = args.title
    elif args.action in ("add", "remove"):
        fields = {"group": args.group, "members": list(args.members)}
    elif args.action in ("leave", "members", "accept", "decline"):
        fields = {"group": args.group}

    async def go() -> dict[str, Any]:
        async with session(args) as client:
            return await client.group(args.action, **fields)

    result = run_async(go)
    if args.json:
        if args.action in ("members", "invites"):
            for item in result[args.action]:
                print(json.dumps(item))
        else:
            print(json.dumps({k: v for k, v in result.items() if k not in ("t", "rid")}))
        return 0
    if args.action == "list":
        for group in result["groups"]:
            title = f"  {group['title']}" if group["title"] else ""
            print(f"{group['group']}  {group['members']} members{title}")
    elif args.action == "members":
        for member in result["members"]:
            print(f"{member['address']:<40} {member.get('status', '?')}")
        for address in result.get("invited", []):
            print(f"{address:<40} invited")
    elif args.action == "invites":
        for invite in result["invites"]:
            title = f"  {invite['title']}" if invite["title"] else ""
            print(f"{invite['group']}  from {invite['by']}{title}")
    elif args.action in ("accept", "decline"):
        done = {"accept": "accepted", "decline": "declined"}[args.action]
        print(f"{done} {result['group']}")
    elif args.action == "create":
        print(result["group"])
    elif args.action == "add":
        print(f"{result['group']}: {result['members']} members; anyone without you in their")
        print("contacts was sent an invitation (chinwag group invites / accept)")
    elif args.action == "remove":
        print(f"{result['group']}: {result['members']} members")
    else:
        print(f"left {result['group']}")
    return 0
