"""``chinwag discover``: the chinwag nodes on this LAN, and which to pick."""

from __future__ import annotations

import argparse
import json

import trio

from chinwag.node.discovery import DiscoveredNode, discover_once, recommend


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("discover", help="list chinwag nodes on the LAN (mDNS); no node needed")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to listen (default 3)")
    p.add_argument(
        "--interface", action="append", default=[], help="interface name or IP (repeatable)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_discover)


def cmd_discover(args: argparse.Namespace) -> int:
    timeout = max(0.5, min(args.timeout, 60.0))

    async def go() -> list[DiscoveredNode]:
        return await discover_once(timeout, args.interface or None)

    nodes = trio.run(go)
    best = recommend(nodes)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "node_id": n.node_id,
                        "name": n.name,
                        "url": n.url,
                        "users_online": n.users_online,
                        "connections": n.connections,
                        "recommended": n is best,
                    }
                    for n in nodes
                ]
            )
        )
        return 0
    if not nodes:
        print("no chinwag nodes found")
    for n in nodes:
        mark = "*" if n is best else " "
        print(
            f"{mark} {n.name:<16} {n.url:<28} {n.node_id[:12]}"
            f"  users online {n.users_online}  connections {n.connections}"
        )
    return 0
