"""``chinwag block add|remove|list`` (node/blocks.py) and ``chinwag receipts on|off|show``
(the user's read-receipts setting, node/receipts.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import fail
from .contacts_cmds import authed_call
from .node_cmds import run_async


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "block",
        help="block or unblock a user (their messages, typing and presence never reach you)",
    )
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("address", nargs="?", help="bob@node (for add/remove)")
    p.add_argument("--server", required=True, help="the node, http://host:port")
    p.add_argument("--user", required=True, help="your user name on that node")
    p.add_argument("--device", help="device name (default: one made at first log-in)")
    p.add_argument("--json", action="store_true", help="one JSON object per blocked address")
    p.set_defaults(handler=cmd_block)
    r = sub.add_parser(
        "receipts", help="turn your read receipts on or off (off: send none, see none)"
    )
    r.add_argument("action", nargs="?", choices=("on", "off", "show"), default="show")
    r.add_argument("--server", required=True, help="the node, http://host:port")
    r.add_argument("--user", required=True, help="your user name on that node")
    r.add_argument("--device", help="device name (default: one made at first log-in)")
    r.set_defaults(handler=cmd_receipts)


def cmd_receipts(args: argparse.Namespace) -> int:
    async def go() -> dict[str, Any]:
        if args.action == "show":
            return await authed_call(args, "GET", "/api/profile")
        body = {"read_receipts": args.action == "on"}
        return await authed_call(args, "PUT", "/api/profile", body)

    result = run_async(go)
    print(f"read receipts {'on' if result.get('read_receipts', True) else 'off'}")
    return 0


def cmd_block(args: argparse.Namespace) -> int:
    if args.action in ("add", "remove") and not args.address:
        fail(f"block {args.action} needs an ADDRESS")

    async def go() -> dict[str, Any]:
        if args.action == "add":
            return await authed_call(args, "POST", "/api/blocks", {"address": args.address})
        if args.action == "remove":
            return await authed_call(args, "DELETE", "/api/blocks", {"address": args.address})
        return await authed_call(args, "GET", "/api/blocks")

    result = run_async(go)
    if args.action != "list":
        print(f"{'blocked' if args.action == 'add' else 'unblocked'} {result['address']}")
        return 0
    for item in result["blocks"]:
        print(json.dumps(item) if args.json else item["address"])
    return 0
