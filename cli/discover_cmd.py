"""``chinwag discover``: the chinwag nodes on this LAN, and which one to pick.

Needs no node of its own: it browses mDNS for ``--timeout`` seconds. What it
lists are hints (claimed ids and addresses), nothing is verified.
"""

from __future__ import annotations

import argparse
import json
import math

import trio

from chinwag.node.discovery import DiscoveredNode, DiscoveryError, discover_once, recommend

from .common import CliError
from .exitcodes import Exit

MAX_TIMEOUT = 60.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("discover", help="list chinwag nodes on the LAN (mDNS); no node needed")
    p.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to listen (default 3, at most 60)"
    )
    p.add_argument(
        "--interface",
        action="append",
        default=[],
        metavar="IF",
        help="interface name or IP address to browse on (repeatable; default: all)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(handler=cmd_discover)


def cmd_discover(args: argparse.Namespace) -> int:
    timeout = args.timeout
    if not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT:
        raise CliError(
            f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds", Exit.USAGE
        )
    try:
        nodes = trio.run(discover_once, timeout, args.interface or None)
    except DiscoveryError as exc:
        raise CliError(str(exc), Exit.USAGE) from exc
    best = recommend(nodes)
    if args.json:
        print(json.dumps([_as_json(n, n is best) for n in nodes]))
        return 0
    if not nodes:
        print("no chinwag nodes found")
        return 0
    for n in nodes:
        mark = "*" if n is best else " "
        print(
            f"{mark} {n.name:<16} {n.url:<28} {n.node_id}"
            f"  users online {n.users_online}  connections {n.connections}"
        )
    print("* recommended (lowest load)")
    return 0


def _as_json(node: DiscoveredNode, recommended: bool) -> dict[str, object]:
    return {
        "node_id": node.node_id,
        "name": node.name,
        "url": node.url,
        "users_online": node.users_online,
        "connections": node.connections,
        "recommended": recommended,
    }
