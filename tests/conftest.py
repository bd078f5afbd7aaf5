"""Fixtures: real nodes on loopback port 0, temporary data dirs, real clients."""

from __future__ import annotations

import os

# Cheap Argon2id parameters: tests create many users. Set before the node
# modules read it.
os.environ.setdefault("CHINWAG_TEST_FAST_KDF", "1")

import dataclasses  # noqa: E402
import itertools  # noqa: E402
from collections.abc import AsyncIterator, Awaitable, Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import trio  # noqa: E402

from chinwag.node.app import Node, NodeSeams, RunningNode  # noqa: E402
from chinwag.node.client import login, signup  # noqa: E402
from chinwag.node.config import NodeConfig  # noqa: E402
from chinwag.node.identity import load_or_init_identity  # noqa: E402

PASSWORD = "correct horse battery staple"


@dataclasses.dataclass
class TestNode:
    node: Node
    running: RunningNode
    cancel_scope: trio.CancelScope
    stopped: trio.Event

    @property
    def url(self) -> str:
        return self.running.url

    async def stop(self) -> None:
        self.cancel_scope.cancel()
        with trio.fail_after(10):
            await self.stopped.wait()

    async def user(self, name: str, device: str | None = None) -> str:
        """Sign up ``name`` if needed and return a fresh device token."""
        if self.node.store.get_user(name) is None:
            await signup(self.url, name, PASSWORD)
        return (await login(self.url, name, PASSWORD, device)).token


StartNode = Callable[..., Awaitable[TestNode]]

_counter = itertools.count()


@pytest.fixture
async def start_node(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[StartNode]:
    """Start a real node in this test's nursery: ``await start_node(**config)``."""

    async def start(
        data_dir: Path | None = None,
        name: str | None = None,
        seams: NodeSeams | None = None,
        **overrides: Any,
    ) -> TestNode:
        """``seams``: what the test puts in place of the real clock, resolver or
        peer registry (node/app.py NodeSeams); ``overrides``: NodeConfig fields."""
        directory = data_dir or tmp_path / f"node{next(_counter)}"
        # Never mDNS on a real interface in tests (see tests/integration/netns).
        overrides.setdefault("mdns", False)
        config = NodeConfig(data_dir=directory, host="127.0.0.1", port=0, **overrides)
        node = Node(config, load_or_init_identity(directory, name), seams)
        stopped = trio.Event()

        async def serve(task_status: trio.TaskStatus[tuple[RunningNode, trio.CancelScope]]) -> None:
            try:
                with trio.CancelScope() as scope:
                    await node.run(task_status=_Relay(task_status, scope))
            finally:
                stopped.set()

        running, scope = await nursery.start(serve)
        return TestNode(node, running, scope, stopped)

    yield start


class _Relay:
    """Passes (running, scope) up through a nested task_status."""

    def __init__(self, outer: Any, scope: trio.CancelScope) -> None:
        self._outer = outer
        self._scope = scope

    def started(self, value: RunningNode) -> None:
        self._outer.started((value, self._scope))


class ShiftedClock:
    """A wall clock (Unix ms) a test can move forward: ``NodeSeams(federation_now_ms=...)``."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def shift(self, seconds: float) -> None:
        self.offset_ms = int(seconds * 1000)

    def __call__(self) -> int:
        import time

        return time.time_ns() // 1_000_000 + self.offset_ms
