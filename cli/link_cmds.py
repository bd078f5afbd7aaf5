"""Linking nodes without copying ids: ``invite``, ``peers join``, ``peers add URL``."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

from chinwag.node.client import ClientError, api_call
from chinwag.node.invitations import DEFAULT_TTL_S
from chinwag.node.peers import check_url
from chinwag.protocol.addresses import is_node_id_text, node_id_bytes
from chinwag.protocol.envelope import check_public_key
from chinwag.protocol.errors import ProtocolError
from chinwag.protocol.fingerprint import fingerprint

from .common import CliError
from .node_cmds import _data_arg, admin_call, run_async

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d`` or plain seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"a duration like 30m, 24h or 7d, not {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("invite", help="make a one-time invitation for a node or a person")
    p.add_argument(
        "kind",
        choices=("peer", "user"),
        help="peer: another node joins with 'chinwag peers join'; "
        "user: a person signs up with it on this node (even with --signup closed)",
    )
    p.add_argument(
        "--expires",
        type=parse_duration,
        default=float(DEFAULT_TTL_S),
        metavar="DURATION",
        help="valid for this long (30m, 24h, 7d; default 24h, at most 30d)",
    )
    p.add_argument("--url", help="the URL to put in it (default: the node's advertised URL)")
    p.add_argument(
        "--introductions",
        action="store_true",
        help="peer: also trust the nodes the joiner introduces (see 'peers trust-introductions')",
    )
    _data_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_invite)


def register_peers(psub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``peers join`` (the ``peers`` parser lives in admin_cmds)."""
    q = psub.add_parser("join", help="link to the node that made an invitation (no approval)")
    q.add_argument("invitation", metavar="INVITATION", help="the chinwag1:... string")
    q.add_argument(
        "--trust-introductions",
        action="store_true",
        help="also trust the nodes the inviting node introduces (see 'peers trust-introductions')",
    )
    _data_arg(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_join)


def cmd_invite(args: argparse.Namespace) -> int:
    cmd_args: dict[str, Any] = {"kind": args.kind, "ttl_s": args.expires}
    if args.url:
        cmd_args["url"] = args.url
    if args.introductions:
        cmd_args["introductions"] = True
    result = admin_call(args, "invite.create", cmd_args)
    if args.json:
        print(json.dumps(result))
        return 0
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(result["expires_ms"] / 1000))
    print(result["invitation"])
    if args.kind == "peer":
        how = "On the other node, run:  chinwag peers join INVITATION"
    else:
        how = f"The person signs up at {result['url']} with this invitation code"
    print(f"{how}\n(one use, valid until {expires})", file=sys.stderr)
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    join_args: dict[str, Any] = {"invitation": args.invitation}
    if args.trust_introductions:
        join_args["trust_introductions"] = True
    result = admin_call(args, "peers.join", join_args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"linked with {result['name'] or '?'} ({result['node_id']})")
    print(f"fingerprint {result['fingerprint']}")
    return 0


def fetch_node(url: str) -> tuple[str, str]:
    """(node id, name) a node says it has at ``url`` (unauthenticated: the
    admin confirms it by the fingerprint, the link handshake then proves it)."""

    async def go() -> dict[str, Any]:
        return await api_call(url, "GET", "/.well-known/chinwag")

    try:
        info = run_async(go)
    except ClientError as exc:
        raise CliError(f"cannot ask {url} for its node id: {exc.message}") from exc
    node_id, name = info.get("node_id"), info.get("name")
    if not isinstance(node_id, str) or not is_node_id_text(node_id):
        raise CliError(f"{url} did not answer with a chinwag node id")
    try:
        check_public_key(node_id_bytes(node_id))
    except ProtocolError as exc:
        raise CliError(f"{url} answered with a bad node id: {exc.message}") from exc
    printable = "".join(c for c in str(name)[:64] if c.isprintable()) if name else "?"
    return node_id, printable


def peer_target(args: argparse.Namespace) -> str:
    """``URL#NODEID`` for ``peers add``: as given, or with the id fetched from
    the URL and confirmed by the admin (``--yes`` for scripts)."""
    target: str = args.target
    if "#" in target:
        return target
    try:
        url = check_url(target.strip())
    except ProtocolError as exc:
        raise CliError(f"{exc.message}: give URL or URL#NODEID") from exc
    node_id, name = fetch_node(url)
    print(f"node {name} at {url}")
    print(f"  id           {node_id}")
    print(f"  fingerprint  {fingerprint(node_id_bytes(node_id))}")
    print("Check the fingerprint with that node's admin ('chinwag status' shows it there).")
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("not confirmed: run in a terminal, or add --yes to trust it unasked")
        answer = input("Trust this node? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise CliError("not added")
    return f"{url}#{node_id}"
