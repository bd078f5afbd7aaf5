"""``chinwag push add|remove ENDPOINT_URL`` and ``chinwag push list``, for one device.

An endpoint is registered for the device the CLI logs in as (``--device``,
or the one cached from the first log-in); ``list`` shows every device's.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .chat_cmds import _client_args
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
        _client_args(q)  # --server, --user, --device: the same as ``chinwag send``
        q.add_argument("--json", action="store_true", help="print the node's JSON answer")
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
