"""Pure rate-limit policies; callers pass ``now`` (trio's monotonic clock)."""

from __future__ import annotations

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


class FailureCounter:
    """Counts failures per key within a sliding window; bounded in keys."""

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
