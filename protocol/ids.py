"""Snowflake message ids: 64 bits, unique and time-ordered per origin node.

Layout (most significant first): 1 bit zero, 41 bits of milliseconds since
:data:`EPOCH_MS`, 22 bits of per-millisecond sequence. The generator never
reads the clock itself: callers pass ``now_ms``, so it is testable with
plain numbers, and it stays monotonic even when the wall clock steps back.
"""

from __future__ import annotations

from dataclasses import dataclass

#: 2024-01-01T00:00:00Z in Unix milliseconds.
EPOCH_MS = 1_704_067_200_000
SEQUENCE_BITS = 22
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_ID = (1 << 63) - 1


@dataclass(frozen=True)
class IdParts:
    """The pieces of a snowflake id."""

    ms: int
    sequence: int


def make_id(ms: int, sequence: int) -> int:
    """Compose an id from a millisecond timestamp (Unix ms) and a sequence."""
    return ((ms - EPOCH_MS) << SEQUENCE_BITS) | sequence


def split_id(message_id: int) -> IdParts:
    """Inverse of :func:`make_id`."""
    return IdParts(ms=(message_id >> SEQUENCE_BITS) + EPOCH_MS, sequence=message_id & MAX_SEQUENCE)


class IdGenerator:
    """Hands out strictly increasing snowflake ids.

    ``last`` is the last id handed out (persisted by the store in the same
    transaction as the message that used it); after a restart the generator
    continues at ``max(now_ms, last.ms + 1)``.
    """

    def __init__(self, last: int = 0) -> None:
        self._last = last
        if last:
            parts = split_id(last)
            self._ms = parts.ms + 1
            self._sequence = -1
        else:
            self._ms = 0
            self._sequence = -1

    @property
    def last(self) -> int:
        """The most recent id handed out (0 if none)."""
        return self._last

    def next_id(self, now_ms: int) -> int:
        """Return the next id; ``now_ms`` is the wall clock in Unix ms."""
        if now_ms > self._ms:
            self._ms = now_ms
            self._sequence = 0
        else:
            # The clock stood still or stepped back: keep counting in the
            # newest millisecond we have used, borrowing the next one when full.
            self._sequence += 1
            if self._sequence > MAX_SEQUENCE:
                self._ms += 1
                self._sequence = 0
        self._last = make_id(self._ms, self._sequence)
        return self._last
