"""``chinwag push add|remove ENDPOINT_URL`` and ``chinwag push list``, for one device."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .contacts_cmds import authed_call
from .node_cmds import run_async


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("push", help="push endpoints of this device (UnifiedPush style)")
    psub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("add", "register ENDPOINT_URL for this device"),
        ("remove", "unregister ENDPOINT_URL"),
        ("list", "list your endpoints"),
    ):
        q = psub.add_parser(action, help=text)
        if action != "list":
            q.add_argument("endpoint", metavar="ENDPOINT_URL")
        if action == "add":
            q.add_argument(
                "--include-text", action="store_true", help="put the message text in the push"
            )
        q.add_argument("--server", required=True, help="the node, http://host:port")
        q.add_argument("--user", required=True, help="your user name on that node")
        q.add_argument("--device", help="device name (default: one made at first log-in)")
        q.add_argument("--json", action="store_true")
        q.set_defaults(handler=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    async def go() -> dict[str, Any]:
        if args.action == "add":
            body = {"endpoint": args.endpoint, "include_text": args.include_text}
            return await authed_call(args, "POST", "/api/push", body)
        if args.action == "remove":
            return await authed_call(args, "DELETE", "/api/push", {"endpoint": args.endpoint})
        return await authed_call(args, "GET", "/api/push")

    result = run_async(go)
    if args.json:
        print(json.dumps(result))
    elif args.action == "list":
        for item in result["endpoints"]:
            text = " (with text)" if item["include_text"] else ""
            print(f"{item['endpoint']}  device {item['device']}{text}")
    else:
        print(f"{'registered' if args.action == 'add' else 'removed'} {result['endpoint']}")
    return 0
