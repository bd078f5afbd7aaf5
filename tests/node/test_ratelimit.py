"""The pure rate-limit policies."""

from __future__ import annotations

import pytest

from chinwag.node.ratelimit import TokenBucket


def test_take_refuses_without_taking() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert bucket.take(0.0, 5) == 0
    assert bucket.take(0.0, 1) == pytest.approx(0.1)
    assert bucket.take(0.1, 1) == 0  # the refusal took nothing


def test_reserve_takes_the_tokens_even_when_it_asks_to_wait() -> None:
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    assert bucket.reserve(0.0, 100) == 0
    # 100 more now: wait 1 s for them, and they are spent.
    assert bucket.reserve(0.0, 100) == pytest.approx(1.0)
    # After that second, the refill paid the debt: the next 100 wait again.
    assert bucket.reserve(1.0, 100) == pytest.approx(1.0)
    # Over time, exactly `rate` per second: 10 s later at most the burst is back.
    assert bucket.reserve(12.0, 100) == 0
    assert bucket.reserve(12.0, 1) == pytest.approx(0.01)


def test_reserve_passes_a_cost_above_the_burst_after_its_wait() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert bucket.reserve(0.0, 25) == pytest.approx(2.0)
