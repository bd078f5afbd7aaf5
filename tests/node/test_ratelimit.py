"""The pure rate-limit policies."""

from __future__ import annotations

import pytest

from chinwag.node.ratelimit import TokenBucket, WindowCounter, address_key


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


def test_window_counter_counts_tries_and_gives_back_good_ones() -> None:
    counter = WindowCounter(limit=2, window=10.0)
    counter.record("alice", 0.0)
    counter.record("alice", 1.0)
    assert counter.blocked_for("alice", 1.0) == pytest.approx(9.0)
    counter.give_back("alice", 1.0)  # the second try was right
    assert counter.blocked_for("alice", 1.0) == 0.0
    counter.give_back("alice", 5.0)  # nothing recorded then: no effect
    counter.record("alice", 2.0)
    assert counter.blocked_for("alice", 2.0) == pytest.approx(8.0)
    assert counter.blocked_for("alice", 10.0) == 0.0  # the first one expired


def test_address_keys() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    # One host usually holds a whole IPv6 /64: limited as one address.
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("fe80::1%eth0") == "fe80::/64"
