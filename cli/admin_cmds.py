"""``chinwag peers ...`` and ``chinwag status``: admin views over the node."""

from __future__ import annotations

import argparse
import json
from typing import Any

from chinwag.protocol.errors import ProtocolError

from .common import CliError
from .node_cmds import _data_arg, _data_dir, run_async, with_admin


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("peers", help="manage federation peers")
    psub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = psub.add_parser("list", help="list known peers and their trust state")
    _data_arg(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_peers, target=None)
    q = psub.add_parser("add", help="trust a peer: URL#NODEID")
    q.add_argument("target", metavar="URL#NODEID")
    _data_arg(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_peers)
    for action, text in (
        ("approve", "trust a pending peer"),
        ("block", "block a peer (its links are refused)"),
        ("remove", "forget a peer"),
    ):
        q = psub.add_parser(action, help=text)
        q.add_argument("target", metavar="ID", help="node id (or a unique prefix)")
        _data_arg(q)
        q.add_argument("--json", action="store_true")
        q.set_defaults(handler=cmd_peers)
    q = psub.add_parser(
        "trust-introductions",
        help="trust the nodes a trusted peer introduces (off by default; --off revokes)",
    )
    q.add_argument("target", metavar="ID", help="node id (or a unique prefix)")
    q.add_argument(
        "--off",
        action="store_true",
        help="stop: nodes trusted only on this peer's word go back to pending",
    )
    _data_arg(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_peers)

    p = sub.add_parser("status", help="show the running node's status")
    _data_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)


def _call(args: argparse.Namespace, cmd: str, cmd_args: dict[str, Any]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        return await with_admin(_data_dir(args), cmd, cmd_args)

    try:
        return run_async(go)
    except ProtocolError as exc:
        raise CliError(f"{exc.message} ({exc.code})") from exc


def cmd_peers(args: argparse.Namespace) -> int:
    action = args.action
    cmd_args: dict[str, Any] = {}
    if action == "add":
        cmd_args["peer"] = args.target
    elif args.target is not None:
        cmd_args["id"] = args.target
    if action == "trust-introductions":
        cmd_args["on"] = not args.off
    result = _call(args, f"peers.{action.replace('-', '_')}", cmd_args)
    if args.json:
        print(json.dumps(result))
    elif action == "list":
        for peer in result["peers"]:
            urls = ",".join(peer["urls"]) or "-"
            name = peer["name"] or "?"
            flags = _peer_flags(peer)
            print(f"{peer['node_id'][:12]}  {name:<16} {peer['state']:<8} {urls}{flags}")
    elif action == "trust-introductions":
        state = "on" if result["introductions"] else "off"
        print(f"{result['node_id'][:12]} introductions {state}")
        for node_id in result["revoked"]:
            print(f"  {node_id[:12]} no longer trusted (pending)")
    else:
        print(f"{result['node_id'][:12]} {result.get('state', 'removed')}")
    return 0


def _peer_flags(peer: dict[str, Any]) -> str:
    """``peers list`` extras: introductions taken from it, who introduced it."""
    out = ""
    if peer.get("introductions"):
        out += "  [takes introductions]"
    via = peer.get("introduced_by") or []
    if via:
        out += "  introduced by " + ",".join(node_id[:12] for node_id in via)
    return out


def cmd_status(args: argparse.Namespace) -> int:
    result = _call(args, "status", {})
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"node {result['name']} ({result['node_id'][:12]}) up {result['uptime_s']}s")
    print(
        f"connections {result['connections']}  users online {result['users_online']}"
        f"  users {result['users']}"
    )
    for queue in result["queues"]:
        print(f"  queue {queue['user']}: head {queue['head']}, unacked {queue['max_unacked']}")
    for peer in result["peers"]:
        print(
            f"  peer {peer['node_id'][:12]} {peer['name'] or '?'}: {peer['state']}/{peer['link']}"
            f" outbox {peer['outbox']} sent {peer['sent']} received {peer['received']}"
            f" refused {peer['refused']}"
            + (
                f" oldest {peer['outbox_oldest_s']}s"
                if peer.get("outbox_oldest_s") is not None
                else ""
            )
            + (f" last error: {peer['last_error']}" if peer["last_error"] else "")
        )
    return 0
