"""Pure rate-limit policies; callers pass ``now`` (trio's monotonic clock)."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; return 0 on success, else seconds to wait."""
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate

    def reserve(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens now, into debt if need be; return the seconds to
        wait before going on (0 if there were enough).

        For a caller that waits rather than refuses: the tokens are taken
        whether or not there were enough, so waiting and then proceeding
        never spends the same refill twice, and a cost above ``burst`` still
        passes (after its wait).
        """
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= cost
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class WindowCounter:
    """Counts events per key within a sliding window; bounded in keys.

    Log-in tries are counted *before* the password is checked
    (:meth:`blocked_for`, then :meth:`record` with no ``await`` between) and
    handed back if the password was right (:meth:`give_back`),
    so however many tries arrive at once, no more than ``limit`` are checked
    per window.
    """

    def __init__(self, limit: int, window: float, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._events: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> list[float]:
        stamps = [t for t in self._events.get(key, ()) if now - t < self.window]
        if stamps:
            self._events[key] = stamps
            self._events.move_to_end(key)
        else:
            self._events.pop(key, None)
        return stamps

    def blocked_for(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again (0 if it may now)."""
        stamps = self._recent(key, now)
        if len(stamps) < self.limit:
            return 0.0
        return max(0.0, stamps[-self.limit] + self.window - now)

    def record(self, key: str, now: float) -> None:
        stamps = self._recent(key, now)
        stamps.append(now)
        self._events[key] = stamps[-self.limit :]
        self._events.move_to_end(key)
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)

    def give_back(self, key: str, stamp: float) -> None:
        """Undo one :meth:`record` made at ``stamp`` (a try that succeeded)."""
        stamps = self._events.get(key)
        if stamps is not None and stamp in stamps:
            stamps.remove(stamp)
            if not stamps:
                del self._events[key]


def blocked_for_all(counters: list[tuple[WindowCounter, str]], now: float) -> float:
    """The longest wait among several (counter, key) pairs; 0 if all may go."""
    return max((counter.blocked_for(key, now) for counter, key in counters), default=0.0)


def address_key(peer: str) -> str:
    """The key a client address is limited by: IPv4 as is, IPv6 by its /64
    (one host usually holds a whole /64, so per-address limits would be void)."""
    if ":" not in peer:
        return peer
    try:
        network = ipaddress.IPv6Network((peer.split("%", 1)[0], 64), strict=False)
    except ValueError:
        return peer
    mapped = ipaddress.IPv6Address(peer.split("%", 1)[0]).ipv4_mapped
    return str(mapped) if mapped is not None else str(network)
