"""``chinwag chat`` on the node's history: pages (PageUp), ``/search``, read markers.

Plain ``def`` tests driving the textual app headless against a real node
process, as in test_chat_tui.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from chinwag.node.client import ChatClient, connect, login

from .tui_harness import (
    PW,
    SyncNode,
    in_trio,
    listed,
    open_app,
    run_app_test,
    shown,
    type_line,
    until,
    until_connected,
    users,
)

SIZE = (120, 40)


async def _send_all(url: str, token: str, to: str, texts: list[str]) -> None:
    async with connect(url, token) as client:
        for start in range(0, len(texts), 50):
            acks = await client.send_many([(to, t, None) for t in texts[start : start + 50]])
            assert not any(isinstance(a, Exception) for a in acks)


def _seqs(app: Any) -> list[int]:
    conv = app.model.conversations[app.model.current]
    return [e.seq for e in conv.entries]


def test_a_new_device_opens_on_the_newest_page_and_pageup_loads_older(node: SyncNode) -> None:
    _, bob = users(node, "alice", "bob")
    trio.run(_send_all, node.url, bob, "alice", [f"old {n}" for n in range(120)])

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            # No replay: the list and the exact unread count come from the node.
            await until(pilot, lambda: listed(app) and "(120)" in listed(app)[0], "the list")
            assert listed(app)[0].startswith("bob@kitchen (120)") and "old 119" in listed(app)[0]
            assert app.model.cursor == 120
            await pilot.press("ctrl+n")
            await until(pilot, lambda: "old 70" in shown(app, "#messages"), "the newest page")
            assert "old 69" not in shown(app, "#messages")
            assert _seqs(app) == list(range(71, 121))
            await until(pilot, lambda: "(120)" not in listed(app)[0], "read")
            # PageUp scrolls to the top, then loads older pages, each once.
            for _ in range(30):
                if "old 0" in shown(app, "#messages"):
                    break
                await pilot.press("pageup")
                await pilot.pause(0.05)
            await until(pilot, lambda: "old 0" in shown(app, "#messages"), "the first message")
            assert _seqs(app) == list(range(1, 121))
            assert "from the first message" in shown(app, "#title")
            for _ in range(10):  # scrolled to the top again: nothing older to load
                await pilot.press("pageup")
                await pilot.pause(0.05)
            await until(pilot, lambda: "first message" in shown(app, "#notice"), "no more")
            assert _seqs(app) == list(range(1, 121))

    run_app_test(main, timeout=90)


def test_search_shows_hits_and_open_jumps_to_one(node: SyncNode) -> None:
    _, bob, carol = users(node, "alice", "bob", "carol")
    trio.run(_send_all, node.url, bob, "alice", ["a needle in the haystack"])
    trio.run(_send_all, node.url, bob, "alice", [f"hay {n}" for n in range(80)])
    trio.run(_send_all, node.url, carol, "alice", ["another Needle, newer"])

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await type_line(pilot, "/search needle")
            await until(pilot, lambda: "newest hits" in shown(app, "#notice"), "the hits")
            notice = shown(app, "#notice")
            assert "1. carol@kitchen" in notice and "another Needle, newer" in notice
            assert "2. bob@kitchen" in notice and "a needle in the haystack" in notice
            await type_line(pilot, "/open 2")
            await until(pilot, lambda: "hit 2 in bob@kitchen" in shown(app, "#notice"), "jump")
            assert app.model.current == app.model.resolve("bob")
            assert "▶ " in shown(app, "#messages")
            marked = [ln for ln in shown(app, "#messages").splitlines() if "▶" in ln]
            assert len(marked) == 1 and "a needle in the haystack" in marked[0]
            assert _seqs(app) == list(range(1, 82))  # paged back to it, nothing twice
            await type_line(pilot, "/search nothinglikethis")
            await until(pilot, lambda: "nothing found" in shown(app, "#notice"), "no hits")
            await type_line(pilot, "/open 9")
            await until(pilot, lambda: "no hit 9" in shown(app, "#notice"), "bad number")

    run_app_test(main, timeout=90)


async def _read_elsewhere(url: str, conv: str, seq: int) -> dict[str, Any]:
    """alice's other device reads ``conv`` up to ``seq``."""
    other = await login(url, "alice", PW, "phone")
    async with connect(url, other.token) as client:
        return await client.read(conv, seq)


async def _unread_on_node(url: str) -> dict[str, int]:
    other = await login(url, "alice", PW, "phone")
    async with connect(url, other.token) as client:
        page = await ChatClient.convs(client)
    return {c["conv"].split("@")[0]: c["unread"] for c in page["convs"]}


def test_read_markers_are_shared_with_the_other_devices(
    node: SyncNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("chinwag.cli.chat_session.CONVS_PAGE", 1)  # the list in two pages
    _, bob, carol = users(node, "alice", "bob", "carol")
    trio.run(_send_all, node.url, bob, "alice", ["b1", "b2", "b3"])
    trio.run(_send_all, node.url, carol, "alice", ["c1", "c2"])

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await until(pilot, lambda: len(listed(app)) == 2, "the list")
            assert listed(app)[0].startswith("carol@kitchen (2)")
            assert listed(app)[1].startswith("bob@kitchen (3)")
            # Read on the phone: the count goes at once here too.
            bob_key = app.model.resolve("bob")
            reply = await in_trio(_read_elsewhere, node.url, bob_key, 2)
            assert reply["read_seq"] == 2 and reply["unread"] == 1
            await until(pilot, lambda: listed(app)[1].startswith("bob@kitchen (1)"), "phone read")
            # Shown here: read on the node, for the phone as well.
            await type_line(pilot, "/chat carol")
            await until(pilot, lambda: "c2" in shown(app, "#messages"), "carol's page")
            assert (await in_trio(_unread_on_node, node.url)) == {"carol": 0, "bob": 1}

    run_app_test(main, timeout=90)
