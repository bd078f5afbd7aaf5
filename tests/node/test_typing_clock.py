"""The typing service's timing rules on trio's MockClock: expiry, renewal, rate, sends.

No sockets here: the service is fed frames the way a device session does and
its output is what the hub offers to the recipient's live sessions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from chinwag.node.config import NodeConfig
from chinwag.node.hub import Hub
from chinwag.node.typing import Typing
from chinwag.protocol.addresses import GroupAddress, UserAddress

NODE = "i2myd5vzjyqj47ynkb6v2cl2x6cfqd2oiy7hlh5cjmzaprzyjx7q"


@pytest.fixture
def mock_clock() -> MockClock:
    return MockClock(autojump_threshold=0)


class Screen:
    """A live session of the recipient: remembers what was offered, with the time."""

    token_hash = b"t" * 32

    def __init__(self) -> None:
        self.frames: list[tuple[float, dict[str, Any]]] = []

    def offer(self, frame: dict[str, Any]) -> bool:
        self.frames.append((trio.current_time(), frame))
        return True

    def revoke(self) -> None: ...

    def queue_grew(self) -> None: ...

    def states(self) -> list[tuple[float, str]]:
        return [(round(t, 3), f["state"]) for t, f in self.frames]


class Resolver:
    def resolve_user(self, text: str) -> UserAddress:
        return UserAddress(text.partition("@")[0], NODE)

    def resolve_group(self, text: str) -> GroupAddress:
        return GroupAddress(text[1:].partition("@")[0], NODE)

    def node_label(self, node_id: str) -> str | None:
        return "home"


class NoGroups:
    def info(self, group: GroupAddress) -> Any:
        return None


class Device:
    """Stands for a device session (the service keys its rate by it, weakly)."""


async def service(nursery: trio.Nursery) -> tuple[Typing, Screen]:
    hub = Hub()
    screen = Screen()
    hub.device_online("bob", "d1", screen)
    config = NodeConfig(data_dir=Path("/nonexistent"))
    typing = Typing(config, NODE, hub, Resolver(), NoGroups())
    await nursery.start(typing.run)
    return typing, screen


async def test_an_unrenewed_start_stops_after_the_expiry(nursery, mock_clock) -> None:
    typing, screen = await service(nursery)
    start = trio.current_time()
    device = Device()
    typing.from_device("alice", device, "bob", "start")
    await trio.sleep(5.9)
    assert [s for _, s in screen.states()] == ["start"]
    await trio.sleep(0.2)
    assert screen.states() == [(round(start, 3), "start"), (round(start + 6.0, 3), "stop")]
    assert typing.statistics().expired == 1
    frame = screen.frames[0][1]
    assert frame["conv"] == f"alice@{NODE}" and frame["user"]["name"] == "home"


async def test_a_renewed_start_holds_and_a_stop_ends_it_at_once(nursery, mock_clock) -> None:
    typing, screen = await service(nursery)
    device = Device()
    typing.from_device("alice", device, "bob", "start")
    await trio.sleep(4)
    typing.from_device("alice", device, "bob", "start")  # renewed: 6 s from now
    await trio.sleep(5)
    assert [s for _, s in screen.states()] == ["start", "start"]
    typing.from_device("alice", device, "bob", "stop")
    typing.from_device("alice", device, "bob", "stop")  # nothing to stop: not sent again
    await trio.sleep(10)
    assert [s for _, s in screen.states()] == ["start", "start", "stop"]
    assert typing.statistics().expired == 0


async def test_starts_over_the_device_rate_are_dropped_and_counted(nursery, mock_clock) -> None:
    typing, screen = await service(nursery)
    device, other = Device(), Device()
    for _ in range(4):
        typing.from_device("alice", device, "bob", "start")
    typing.from_device("carol", other, "bob", "start")  # another device: its own rate
    assert typing.statistics().dropped == 2  # a burst of 2, then one per 2 s
    await trio.sleep(2.0)
    typing.from_device("alice", device, "bob", "start")
    assert typing.statistics().dropped == 2
    assert len(screen.frames) == 4


async def test_a_send_ends_typing_without_a_stop(nursery, mock_clock) -> None:
    typing, screen = await service(nursery)
    typing.from_device("alice", Device(), "bob", "start")
    typing.message_sent("alice", "bob")
    await trio.sleep(20)
    assert [s for _, s in screen.states()] == ["start"]
    assert typing.statistics().expired == 0
