#!/usr/bin/env python3
"""How fast ``chinwag chat`` catches up on a backlog when it streams from a saved cursor.

    python bench/chat_catchup.py --count 100000                # model + session only
    python bench/chat_catchup.py --count 20000 --mode tui      # the textual app, headless

A node runs in a subprocess (bench/nodeproc.py). ``bob`` fills ``alice``'s
queue with ``--count`` messages over ``--convs`` conversations (pipelined
``send_many``), then alice's terminal client starts from cursor 0 and streams
the whole queue: in ``session`` mode a :class:`ChatSession` with its model and
state file (what ``chinwag chat`` runs, without a screen), in ``tui`` mode the
whole :class:`ChatApp` under textual's headless pilot. The figure is the time
from connect to the cursor reaching the queue head (and, in ``tui``, the last
message on screen), as messages per second, plus the number of state-file
writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nodeproc import NodeProcess, send_windowed  # noqa: E402

from chinwag.cli.chat_model import ChatModel  # noqa: E402
from chinwag.cli.chat_session import Change, ChatSession  # noqa: E402
from chinwag.cli.chat_state import StateFile  # noqa: E402
from chinwag.node.client import ClientError, LoginResult, connect, login, signup  # noqa: E402

PW = "bench-password"


async def fill(url: str, count: int, convs: int) -> tuple[LoginResult, int]:
    """Sign up alice and ``convs`` senders; send ``count`` messages to alice."""
    await signup(url, "alice", PW)
    alice = await login(url, "alice", PW)
    senders = []
    for n in range(convs):
        await signup(url, f"s{n}", PW)
        senders.append(await login(url, f"s{n}", PW))
    per = -(-count // convs)
    errors: list[ClientError] = []

    def settle(results: list[Any] | ClientError, k: int) -> None:
        if isinstance(results, ClientError):
            errors.append(results)
        else:
            errors.extend(r for r in results if isinstance(r, ClientError))

    async def one(index: int, sender: LoginResult) -> None:
        mine = min(per, count - index * per)
        if mine <= 0:
            return
        async with connect(url, sender.token) as client:
            text = f"message from s{index} with some ordinary text in it, number "
            # About 2,000 sends in flight in all, whatever the number of senders.
            window = max(64, 2048 // convs)
            await send_windowed(
                client,
                mine,
                min(64, window),
                window,
                lambda n: ("alice", text + str(n), None),
                settle,
            )

    async with trio.open_nursery() as nursery:
        for index, sender in enumerate(senders):
            nursery.start_soon(one, index, sender)
    if errors:
        raise SystemExit(f"{len(errors)} sends failed, first: {errors[0]}")
    async with connect(url, alice.token) as client:
        assert client.info is not None
        return alice, client.info.head


class CountingState(StateFile):
    """A state file that counts its writes."""

    writes = 0

    def write(self, text: str) -> None:
        type(self).writes += 1
        super().write(text)


async def catch_up_session(url: str, alice: LoginResult, head: int) -> dict[str, Any]:
    model = ChatModel(alice.user, alice.node_id, alice.node_name)
    state = CountingState(url, alice.user, alice.device)
    changes = 0
    done = trio.Event()

    def notify(change: Change) -> None:
        nonlocal changes
        changes += 1
        if model.cursor >= head:
            done.set()

    session = ChatSession(url, alice, model, state, notify)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        with trio.fail_after(3600):
            await done.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    session.save_now()
    return {"seconds": elapsed, "notifications": changes, "state_writes": state.writes}


def catch_up_tui(url: str, alice: LoginResult, head: int) -> dict[str, Any]:
    from chinwag.cli.chat_tui import ChatApp

    model = ChatModel(alice.user, alice.node_id, alice.node_name)
    state = CountingState(url, alice.user, alice.device)
    result: dict[str, Any] = {}

    async def main() -> None:
        app = ChatApp(url, alice, model, state)
        async with app.run_test(size=(120, 40)) as pilot:
            start = time.perf_counter()
            deadline = start + 3600
            while model.cursor < head:
                if time.perf_counter() > deadline:
                    raise SystemExit("catch-up did not finish")
                await pilot.pause(0.01)
            result["seconds"] = time.perf_counter() - start
        result["state_writes"] = state.writes

    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages in the backlog")
    parser.add_argument("--convs", type=int, default=10, help="conversations they come from")
    parser.add_argument("--mode", choices=("session", "tui"), default="session")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    config = tempfile.mkdtemp(prefix="chinwag-bench-config-")
    os.environ["XDG_CONFIG_HOME"] = config
    with NodeProcess() as node:
        t0 = time.perf_counter()
        alice, head = trio.run(fill, node.url, args.count, args.convs)
        fill_s = time.perf_counter() - t0
        if args.mode == "session":
            figures = trio.run(catch_up_session, node.url, alice, head)
        else:
            figures = catch_up_tui(node.url, alice, head)
    out = {
        "mode": args.mode,
        "messages": head,
        "fill_seconds": round(fill_s, 2),
        **figures,
        "per_second": round(head / figures["seconds"]),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>16}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
