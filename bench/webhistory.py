#!/usr/bin/env python3
"""Web client on a big history (issue 15): time to the list and newest page.

Fills a node's store directly (bench/history.py's ``fill``: ``--messages``
1:1 messages to ``bob`` from ``--convs`` senders, indexed in the append
transaction as a real send is), starts that node (bench/nodeproc.py), and
drives the web client in headless Debian chromium (Playwright's sync API,
``/usr/bin/chromium`` or ``$CHINWAG_CHROMIUM``). Times, in the page
(``performance.now()``; a MutationObserver sees the DOM change):

* **log-in**: from the click on "Log in" until the conversation list is drawn
  and the page is online;
* **open**: from the click on the newest conversation until its newest page
  (50 messages) is drawn;
* **reload**: from the start of the navigation (the tab reloaded, the
  conversation open) until the list and the newest page are drawn;
* **older page**: from scrolling to the top until the next 50 are drawn;
* and the number of ``msg`` frames the page received over its WebSocket
  after the reload (0: nothing replayed).

    python bench/webhistory.py                     # 100,000 messages in 50 conversations
    python bench/webhistory.py --messages 20000 --repeat 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio
from history import fill
from nodeproc import NodeProcess

from chinwag.node.identity import load_or_init_identity
from chinwag.node.passwords import FAST_TEST_COST, hash_password
from chinwag.node.store import Store

PASSWORD = "bench-password-webhistory"
CHROMIUM = os.environ.get("CHINWAG_CHROMIUM", "/usr/bin/chromium")
LIST = "#conversations li.conversation"
PAGE = "#messages li.message"

#: Resolves with the ms from ``t0`` (performance.now() units) until, for every
#: ``[selector, count]``, ``document.querySelectorAll(selector).length >= count``
#: and the page is online.
WAIT_FOR = """([wanted, t0]) => new Promise((resolve, reject) => {
  const done = () => wanted.every(([s, n]) => document.querySelectorAll(s).length >= n)
    && document.getElementById("conn-status").dataset.state === "online";
  const finish = () => resolve(performance.now() - t0);
  if (done()) return finish();
  const timer = setTimeout(() => reject(new Error(`timeout: ${JSON.stringify(wanted)}`)), 60000);
  const seen = new MutationObserver(() => {
    if (!done()) return;
    seen.disconnect();
    clearTimeout(timer);
    finish();
  });
  seen.observe(document, { childList: true, subtree: true, attributes: true });
})"""


async def prepare(data: Path, messages: int, convs: int, seed: int) -> None:
    """The node's data directory: bob, the senders, and the history."""
    identity = load_or_init_identity(data, "bench")
    store = Store(data, identity.key, map_size=4 << 30)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        pw_hash = await hash_password(PASSWORD, FAST_TEST_COST)
        senders = [f"s{n}" for n in range(convs)]
        for name in ["bob", *senders]:
            await store.create_user(name, pw_hash, int(time.time() * 1000))
        await fill(store, identity.id, senders, messages, seed)
        nursery.cancel_scope.cancel()


def measure(url: str, repeat: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    results: dict[str, list[float]] = {"login": [], "open": [], "reload": [], "older": []}
    replayed: list[int] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for _ in range(repeat):
                context = browser.new_context()
                page = context.new_page()
                page.goto(url)
                page.get_by_label("User name").fill("bob")
                page.get_by_label("Password", exact=True).fill(PASSWORD)
                t0 = page.evaluate("() => { document.getElementById('login-button').click(); "
                                   "return performance.now(); }")  # fmt: skip
                results["login"].append(page.evaluate(WAIT_FOR, [[[LIST, 1]], t0]))
                t0 = page.evaluate(
                    "() => { document.querySelector('#conversations button.conv-open').click();"
                    " return performance.now(); }"
                )
                results["open"].append(page.evaluate(WAIT_FOR, [[[PAGE, 50]], t0]))
                frames: list[int] = [0]

                def watch(ws: Any, frames: list[int] = frames) -> None:
                    def received(payload: Any) -> None:
                        if isinstance(payload, str):
                            data = json.loads(payload)
                            batch = data if isinstance(data, list) else [data]
                            frames[0] += sum(1 for f in batch if f.get("t") == "msg")

                    ws.on("framereceived", received)

                page.on("websocket", watch)
                page.reload()
                # performance.now() counts from the navigation's start.
                results["reload"].append(page.evaluate(WAIT_FOR, [[[LIST, 1], [PAGE, 50]], 0]))
                replayed.append(frames[0])
                t0 = page.evaluate(
                    "() => { document.getElementById('messages').scrollTop = 0;"
                    " return performance.now(); }"
                )
                results["older"].append(page.evaluate(WAIT_FOR, [[[PAGE, 100]], t0]))
                context.close()
        finally:
            browser.close()
    out: dict[str, Any] = {}
    for name, values in results.items():
        out[f"{name}_ms_median"] = round(statistics.median(values), 1)
        out[f"{name}_ms_max"] = round(max(values), 1)
    out["msg_frames_after_reload"] = max(replayed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--convs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    node = NodeProcess()
    started = time.perf_counter()
    trio.run(prepare, node.data_dir / "node", args.messages, args.convs, args.seed)
    fill_s = time.perf_counter() - started
    with node:
        result = {"messages": args.messages, "convs": args.convs, "fill_s": round(fill_s, 1)}
        result.update(measure(node.url, args.repeat))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")


if __name__ == "__main__":
    sys.exit(main())
