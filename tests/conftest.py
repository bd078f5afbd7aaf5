"""Fixtures: real nodes on loopback port 0, temporary data dirs, real clients."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from chinwag.node.app import Node, NodeSeams, RunningNode
from chinwag.node.client import login, signup
from chinwag.node.config import NodeConfig
from chinwag.node.identity import load_or_init_identity
from chinwag.node.passwords import FAST_TEST_COST, KdfCost

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
        kdf_cost: KdfCost = FAST_TEST_COST,
        seams: NodeSeams | None = None,
        **overrides: Any,
    ) -> TestNode:
        """``kdf_cost``: cheap Argon2id by default (tests create many users),
        injected through the node's constructor (NodeSeams); no setting of a
        real node can select it. ``seams``: what the test puts in place of the
        real clock, resolver or peer registry (node/app.py NodeSeams);
        ``overrides``: NodeConfig fields."""
        directory = data_dir or tmp_path / f"node{next(_counter)}"
        # Never mDNS on a real interface in tests (see tests/integration/netns).
        overrides.setdefault("mdns", False)
        # Tests sign many users up from one loopback address; the sign-up
        # limits have their own tests (tests/node/test_abuse_auth.py).
        overrides.setdefault("signups_per_address", 10_000)
        overrides.setdefault("signups_per_node", 10_000)
        config = NodeConfig(data_dir=directory, host="127.0.0.1", port=0, **overrides)
        seams = dataclasses.replace(seams or NodeSeams(), kdf_cost=kdf_cost)
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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say out loud when the web client's browser tests did not run."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if (
            "tests/browser/" in str(getattr(report, "nodeid", "")).replace("\\", "/")
            or str(report.location[0]).startswith("tests/browser")
        )
        # Skipped for a missing node feature, not for a missing browser.
        and "/api/blobs" not in str(report.longrepr)
    ]
    if skipped:
        terminalreporter.write_line(
            f"WARNING: {len(skipped)} browser tests of the web client were SKIPPED "
            "(no chromium or playwright): apt-get install chromium, or set "
            "CHINWAG_REQUIRE_BROWSER=1 to make this fail.",
            yellow=True,
            bold=True,
        )


class ShiftedClock:
    """A wall clock (Unix ms) a test can move forward: ``NodeSeams(federation_now_ms=...)``."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def shift(self, seconds: float) -> None:
        self.offset_ms = int(seconds * 1000)

    def __call__(self) -> int:
        import time

        return time.time_ns() // 1_000_000 + self.offset_ms
