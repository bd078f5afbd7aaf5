"""``chinwag peers ...`` and ``chinwag status``: admin views over the node."""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import link_cmds
from .node_cmds import _data_arg, admin_call
from .status_view import link_words, status_lines


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("peers", help="manage federation peers")
    psub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = psub.add_parser("list", help="list known peers and their trust state")
    _data_arg(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_peers, target=None)
    q = psub.add_parser(
        "add", help="trust a peer: URL#NODEID, or URL (shows its fingerprint to confirm)"
    )
    q.add_argument("target", metavar="URL[#NODEID]")
    q.add_argument("--yes", action="store_true", help="trust the fetched key without asking")
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
    link_cmds.register_peers(psub)
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


def cmd_peers(args: argparse.Namespace) -> int:
    action = args.action
    cmd_args: dict[str, Any] = {}
    if action == "add":
        cmd_args["peer"] = link_cmds.peer_target(args)
    elif args.target is not None:
        cmd_args["id"] = args.target
    if action == "trust-introductions":
        cmd_args["on"] = not args.off
    result = admin_call(args, f"peers.{action.replace('-', '_')}", cmd_args)
    if args.json:
        print(json.dumps(result))
    elif action == "list":
        if not result["peers"]:
            print(
                "no peers yet: add one with 'chinwag peers add URL#NODEID', "
                "or run with --trust-lan on a LAN"
            )
        for peer in result["peers"]:
            urls = ",".join(peer["urls"]) or "-"
            name = peer["name"] or "?"
            came = f" (asked from {peer['address']})" if peer.get("address") else ""
            flags = _peer_flags(peer)
            print(f"{name:<16} {peer['state']:<8} {urls}{came}{flags}")
            print(f"  id {peer['node_id']}  fingerprint {peer['fingerprint']}")
            if "link" in peer:  # the node is running: how its link is doing
                print(f"    {link_words(peer)}")
    elif action == "trust-introductions":
        state = "on" if result["introductions"] else "off"
        print(f"{result['node_id']} introductions {state}")
        for node_id in result["revoked"]:
            print(f"  {node_id} no longer trusted (pending)")
    else:
        print(f"{result['node_id']} {result.get('state', 'removed')}")
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
    result = admin_call(args, "status", {})
    if args.json:
        print(json.dumps(result))
        return 0
    for line in status_lines(result):
        print(line)
    return 0
