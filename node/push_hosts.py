"""Pacing of push POSTs per destination host, node-wide.

Push endpoints are URLs that users choose, so without a bound per destination
one account could aim its 32 endpoints (and any number of accounts theirs) at
a third party and turn every message into dozens of POSTs: an HTTP reflector.
Every POST therefore takes a turn in the *lane* of the host it goes to,
shared by every endpoint and every user of the node:

* a token bucket (``push_host_rate`` POSTs/s, burst ``push_host_burst``);
* at most ``push_host_concurrency`` POSTs to the host at once;
* after a failed attempt (network error, 5xx, 429) the whole host backs off,
  exponentially from ``push_backoff_min`` to ``push_backoff_max`` (or as long
  as its ``Retry-After`` asks, within that cap); a success ends the back-off;
* at most ``push_host_pending`` notifications wait for a turn; past it the
  oldest waiting one is dropped. A waiting notification is the endpoint's one
  delivery, into which newer notifications are folded (node/push.py), so a
  burst to one host coalesces while it waits.

The host is the checked address a POST connects to (an IPv6 address counts
as its /64), not the URL's name, so many names for one machine share a lane.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

#: Lanes kept at most; past it idle lanes are forgotten, oldest first.
MAX_LANES = 10_000


@dataclass(frozen=True)
class HostLimits:
    rate: float
    burst: int
    pending: int
    concurrency: int
    backoff_min: float
    backoff_max: float


def host_key(address: str) -> str:
    """The lane of a checked address: the IPv4 address, or the IPv6 /64."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


@dataclass(eq=False)
class _Lane:
    tokens: float
    stamp: float
    #: Waiters for a turn, oldest first, each with the callback that drops it.
    waiting: dict[object, Callable[[], None]] = field(default_factory=dict)
    active: int = 0
    backoff_until: float = 0.0
    delay: float = 0.0
    lock: trio.Lock = field(default_factory=trio.Lock)
    freed: trio.Event = field(default_factory=trio.Event)


class Turn:
    """One admitted POST: report how it went."""

    def __init__(self, lanes: HostLanes, lane: _Lane) -> None:
        self._lanes = lanes
        self._lane = lane

    def succeeded(self) -> None:
        self._lane.delay = 0.0

    def failed(self, retry_after: float | None = None) -> None:
        """The host failed (network, 5xx, 429): back it off as a whole."""
        self._lanes.back_off(self._lane, retry_after)


class HostLanes:
    """Turns for POSTs, one lane per destination host."""

    def __init__(self, limits: HostLimits, on_change: Callable[[], None]) -> None:
        self.limits = limits
        #: Called when the waiting count or the back-off count changes.
        self._on_change = on_change
        self._lanes: dict[str, _Lane] = {}
        #: Times a host was put into back-off.
        self.backoffs = 0

    def waiting(self) -> int:
        """Notifications waiting for a turn, over all hosts."""
        return sum(len(lane.waiting) for lane in self._lanes.values())

    def hosts(self) -> int:
        return len(self._lanes)

    @asynccontextmanager
    async def turn(self, address: str, drop: Callable[[], None]) -> AsyncIterator[Turn]:
        """Wait for a turn to POST to ``address``; ``drop`` cancels the waiter
        if too many wait for this host (it is called synchronously)."""
        key = host_key(address)
        lane = self._lane(key)
        waiter = object()
        lane.waiting[waiter] = drop
        while len(lane.waiting) > self.limits.pending:
            oldest = next(iter(lane.waiting))
            lane.waiting.pop(oldest)()
        self._on_change()
        try:
            async with lane.lock:  # trio's Lock is fair: turns go in arrival order
                await self._admit(lane)
        finally:
            lane.waiting.pop(waiter, None)
            self._on_change()
        lane.active += 1
        try:
            yield Turn(self, lane)
        finally:
            lane.active -= 1
            lane.freed.set()
            lane.freed = trio.Event()

    async def _admit(self, lane: _Lane) -> None:
        limits = self.limits
        while True:
            # A waiter dropped just as the lock came to it must not spend a token.
            await trio.lowlevel.checkpoint_if_cancelled()
            now = trio.current_time()
            if now < lane.backoff_until:
                await trio.sleep_until(lane.backoff_until)
                continue
            if lane.active >= limits.concurrency:
                await lane.freed.wait()
                continue
            lane.tokens = min(limits.burst, lane.tokens + (now - lane.stamp) * limits.rate)
            lane.stamp = now
            if lane.tokens >= 1:
                lane.tokens -= 1
                return
            await trio.sleep((1 - lane.tokens) / limits.rate)

    def back_off(self, lane: _Lane, retry_after: float | None) -> None:
        limits = self.limits
        lane.delay = min(limits.backoff_max, max(limits.backoff_min, lane.delay * 2))
        wait = lane.delay * random.uniform(0.75, 1.0)
        if retry_after is not None:
            wait = max(wait, min(limits.backoff_max, retry_after))
        lane.backoff_until = max(lane.backoff_until, trio.current_time() + wait)
        self.backoffs += 1
        self._on_change()

    def _lane(self, key: str) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            if len(self._lanes) >= MAX_LANES:
                self._prune()
            lane = self._lanes[key] = _Lane(float(self.limits.burst), trio.current_time())
        return lane

    def _prune(self) -> None:
        """Forget idle lanes: first those that are back to a full bucket and
        no back-off (nothing lost), then the oldest idle ones."""
        now = trio.current_time()
        limits = self.limits

        def idle(lane: _Lane) -> bool:
            return not lane.waiting and lane.active == 0

        def settled(lane: _Lane) -> bool:
            full = lane.tokens + (now - lane.stamp) * limits.rate >= limits.burst
            return idle(lane) and full and now >= lane.backoff_until

        for key in [k for k, lane in self._lanes.items() if settled(lane)]:
            del self._lanes[key]
        for key in [k for k, lane in self._lanes.items() if idle(lane)]:
            if len(self._lanes) < MAX_LANES:
                break
            del self._lanes[key]
