"""``chinwag chat`` catching up on a backlog from its saved cursor (real node).

The state file is saved once at the end of a short catch-up, not per message
or per flush interval, and the screen is told per batch, not per message.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio

from chinwag.cli.chat_model import ChatModel
from chinwag.cli.chat_session import Change, ChatSession
from chinwag.cli.chat_state import StateFile
from chinwag.node.client import connect, login

from ..conftest import PASSWORD, StartNode

BACKLOG = 500


class CountingState(StateFile):
    """A state file that counts its writes (what the disk sees)."""

    def __init__(self, *args: str) -> None:
        super().__init__(*args)
        self.writes = 0
        self.written = trio.Event()

    def write(self, text: str) -> None:  # in a worker thread of the session's trio run
        self.writes += 1
        super().write(text)
        trio.from_thread.run_sync(self.written.set)


async def test_a_backlog_is_saved_once_and_drawn_in_batches(
    start_node: StartNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    node = await start_node(send_rate=1_000_000, send_burst=1_000_000)
    await node.user("alice")
    bob = await node.user("bob")
    async with connect(node.url, bob) as client:
        for start in range(0, BACKLOG, 100):
            items = [("alice", f"m{n}", None) for n in range(start, start + 100)]
            acks = await client.send_many(items)
            assert all(not isinstance(a, Exception) for a in acks)
    alice = await login(node.url, "alice", PASSWORD)
    model = ChatModel(alice.user, alice.node_id, alice.node_name)
    state = CountingState(node.url, alice.user, alice.device)
    changes: list[Change] = []
    caught_up = trio.Event()

    def notify(change: Change) -> None:
        changes.append(change)
        time.sleep(0.002)  # what a redraw of the screen costs, per notification
        if change.text == "connected" and model.cursor >= BACKLOG:
            caught_up.set()

    session = ChatSession(node.url, alice, model, state, notify, timeout=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        with trio.fail_after(30):
            await caught_up.wait()
            await state.written.wait()  # the save at the end of the catch-up
        writes_after_catchup = state.writes
        nursery.cancel_scope.cancel()
    assert writes_after_catchup == 1
    saved = json.loads(state.path.read_text())
    assert saved["cursor"] == BACKLOG
    (conv,) = saved["conversations"]
    assert conv["entries"][-1]["text"] == f"m{BACKLOG - 1}" and conv["unread"] == BACKLOG
    # The screen was told per batch of frames, with the progress on the way.
    message_changes = [c for c in changes if c.kind == "messages"]
    assert 1 <= len(message_changes) <= BACKLOG // 50
    progress = [c.text for c in changes if c.text.startswith("catching up")]
    assert progress and all(text.endswith(f"/{BACKLOG}") for text in progress)
    assert [c.text for c in changes if c.kind == "status"][-1] == "connected"
