"""``chinwag contacts [add|remove ADDRESS] [--json]``: contacts and their presence."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from chinwag.node.client import ClientError, api_call

from .common import cached_login, fail, forget_login, fresh_login
from .node_cmds import run_async


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("contacts", help="list contacts with presence, or add/remove one")
    p.add_argument("--server", required=True, help="the node, http://host:port")
    p.add_argument("--user", required=True, help="your user name on that node")
    p.add_argument("--device", help="device name (default: one made at first log-in)")
    p.add_argument("action", nargs="?", choices=("list", "add", "remove"), default="list")
    p.add_argument("address", nargs="?", help="bob or bob@node (for add/remove)")
    p.add_argument("--json", action="store_true", help="one JSON object per contact")
    p.set_defaults(handler=cmd_contacts)


async def authed_call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An API call with the cached token, logging in again once if it was revoked."""
    cached = cached_login(args.server, args.user, args.device)
    login = cached or await fresh_login(args.server, args.user, args.device)
    try:
        return await api_call(args.server, method, path, body, login.token)
    except ClientError as exc:
        if exc.code != "unauthorized" or cached is None:
            raise
    forget_login(args.server, args.user, args.device)
    login = await fresh_login(args.server, args.user, args.device)
    return await api_call(args.server, method, path, body, login.token)


def _when(ms: int | None) -> str:
    if not ms:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_contacts(args: argparse.Namespace) -> int:
    if args.action in ("add", "remove") and not args.address:
        fail(f"contacts {args.action} needs an ADDRESS")

    async def go() -> dict[str, Any]:
        if args.action == "add":
            return await authed_call(args, "POST", "/api/contacts", {"address": args.address})
        if args.action == "remove":
            return await authed_call(args, "DELETE", "/api/contacts", {"address": args.address})
        return await authed_call(args, "GET", "/api/contacts")

    result = run_async(go)
    if args.action != "list":
        print(f"{'added' if args.action == 'add' else 'removed'} {result['address']}")
        return 0
    for contact in result["contacts"]:
        if args.json:
            print(json.dumps(contact))
        else:
            status = contact.get("status", "offline")
            last = _when(contact.get("last_active_at"))
            print(f"{contact['address']:<40} {status:<8} last active {last}")
    return 0
