#!/usr/bin/env python3
"""Log-in/sign-up flood: does a returning user still get in? (issue 11)

    python bench/authflood.py [--logins 400] [--signups 150] [--addresses 100]

Starts ``chinwag run`` with the production Argon2id cost and default limits,
signs ``alice`` up and logs her in once (so she is a returning user), then
sends ``--logins`` log-ins with made-up names from ``--addresses`` loopback
addresses (127.0.0.2, ...; enough that the per-address failure limit does not
stop them) and ``--signups`` sign-ups from one address, all at once. Half a
second in, alice logs in; the time she takes is the figure. Before the
bounded hashing queue this took 61-107 s (log-ins) and 64 s (sign-ups).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import trio
from abuse import http_post
from nodeproc import NodeProcess

from chinwag.node.client import login, signup

PASSWORD = "alice's password"


async def post(url: str, path: str, body: dict[str, str], source: str) -> int:
    """POST from loopback address ``source``; the HTTP status (0: none within 300 s,
    long enough to see how slow the old, unbounded queue was)."""
    return await http_post(url, path, body, source, timeout=300)


async def flood(url: str, args: argparse.Namespace) -> dict[str, object]:
    await signup(url, "alice", PASSWORD)
    await login(url, "alice", PASSWORD, "laptop")
    statuses: dict[str, collections.Counter[int]] = {
        "login": collections.Counter(),
        "signup": collections.Counter(),
    }

    async def one(kind: str, n: int) -> None:
        if kind == "login":
            source = f"127.0.{1 + n % args.addresses // 250}.{2 + n % args.addresses % 250}"
            status = await post(url, "/api/login", {"user": f"ghost{n}", "password": "x"}, source)
        else:
            status = await post(
                url, "/api/signup", {"user": f"spam{n}", "password": "spam-password-1"}, "127.0.0.1"
            )
        statuses[kind][status] += 1

    async with trio.open_nursery() as nursery:
        for n in range(args.logins):
            nursery.start_soon(one, "login", n)
        for n in range(args.signups):
            nursery.start_soon(one, "signup", n)
        await trio.sleep(0.5)
        started = trio.current_time()
        await login(url, "alice", PASSWORD, "laptop")
        alice = trio.current_time() - started
    return {
        "alice_login_s": round(alice, 3),
        "login_statuses": dict(statuses["login"]),
        "signup_statuses": dict(statuses["signup"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=400)
    parser.add_argument("--signups", type=int, default=150)
    parser.add_argument("--addresses", type=int, default=100)
    parser.add_argument("--node-arg", action="append", default=[], help="extra node flag")
    args = parser.parse_args(argv)
    with NodeProcess(extra_args=tuple(args.node_arg), production_auth=True) as node:
        result = trio.run(flood, node.url, args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
