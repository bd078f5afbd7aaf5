"""What reading and decoding a device's messages may cost, per account.

The node's event loop decodes every message it reads, so the sender, not the
node, should pay for that work: each message is charged an estimate of it in
cost units of roughly a microsecond of node CPU,

    20 per message + 1 per data item + 1 per 256 bytes + 10 per WebSocket frame,

against a token bucket shared by all of one account's connections
(``read_rate`` units/s, ``read_burst``). An account in debt is not refused:
its sessions stop reading until the debt is paid, so TCP flow control pushes
back on the sender and the node's time goes to everyone else. Legitimate
traffic stays far below the default (a 1:1 send is about 35 units; the
per-device ``send_rate`` caps it long before), while a message of 8,192 empty
arrays costs ~8,200 and a stream of them is slowed to a few per second.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ratelimit import TokenBucket

MESSAGE_COST = 20
FRAME_COST = 10
BYTES_PER_UNIT = 256


def message_cost(size: int, items: int, frames: int) -> int:
    """Cost units of one received message (see the module docstring)."""
    return MESSAGE_COST + items + size // BYTES_PER_UNIT + FRAME_COST * frames


@dataclass
class _Account:
    bucket: TokenBucket
    sessions: int = 0


class ReadBudgets:
    """One read budget per account.

    An account's bucket outlives its sessions until it has refilled, so
    reconnecting does not buy a fresh burst; the table holds at most the
    accounts online plus those that left within the last ``burst / rate``
    seconds.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = burst
        self._accounts: dict[str, _Account] = {}
        #: Accounts without a session, oldest departure first.
        self._idle: dict[str, float] = {}

    def attach(self, user: str, now: float) -> None:
        """A session of ``user`` starts reading."""
        self._forget_refilled(now)
        self._idle.pop(user, None)
        account = self._accounts.get(user)
        if account is None:
            account = self._accounts[user] = _Account(TokenBucket(self._rate, self._burst, now))
        account.sessions += 1

    def detach(self, user: str, now: float) -> None:
        """A session of ``user`` ended."""
        account = self._accounts.get(user)
        if account is not None:
            account.sessions -= 1
            if account.sessions <= 0:
                self._idle[user] = now
        self._forget_refilled(now)

    def charge(self, user: str, cost: int, now: float) -> float:
        """Charge ``cost`` units to ``user``; seconds to wait before reading on."""
        account = self._accounts.get(user)
        if account is None:
            return 0.0
        return account.bucket.reserve(now, cost)

    def __len__(self) -> int:
        return len(self._accounts)

    def _forget_refilled(self, now: float) -> None:
        # A bucket left alone for (burst + debt) / rate is full again; debt is
        # at most one message per session, so twice burst / rate covers it in
        # all but floods over many sessions (which then get a fresh bucket,
        # still bounded by the item and fragment caps).
        refill = 2 * self._burst / self._rate if self._rate > 0 else float("inf")
        while self._idle:
            user, since = next(iter(self._idle.items()))
            if now - since < refill:
                break
            del self._idle[user]
            del self._accounts[user]
