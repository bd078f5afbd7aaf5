"""A fixed-bucket latency histogram cheap enough for the store's writer thread.

One writer thread observes; ``/metrics`` reads at scrape time. An int add per
commit, no lock: a scrape may see a commit counted in its bucket but not yet
in the sum, which a histogram's consumer tolerates.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

#: Upper bounds in seconds: an fsync on SSD is ~1 ms, on a busy disk 10-100 ms.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class LatencySnapshot:
    #: (upper bound, cumulative count), ending with ``+Inf``.
    buckets: tuple[tuple[float, int], ...]
    count: int
    sum: float


class LatencyHistogram:
    """Counts of observations per bucket, plus their sum."""

    def __init__(self, bounds: tuple[float, ...] = COMMIT_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def snapshot(self) -> LatencySnapshot:
        counts = list(self._counts)
        out = []
        total = 0
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            total += count
            out.append((bound, total))
        return LatencySnapshot(tuple(out), total, self._sum)


__all__ = ["COMMIT_BUCKETS", "LatencyHistogram", "LatencySnapshot"]
