"""Link requests from unknown nodes, kept in memory until an admin decides.

A node that is not trusted may still dial in. Nothing about it is stored
durably: anyone can make fresh keys, and a durable row per request would let
a stranger fill the peer table (``MAX_PEERS``) and lock every new peer out.
A request is only recorded once the dialer has proven its key (its signed
``confirm``), and at most ``max_pending_peers`` are kept; past that the
oldest request is forgotten. ``chinwag peers approve`` turns a request into
a durable trusted peer (node/admin.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class PendingRequest:
    key: bytes
    name: str
    first_ms: int
    last_ms: int
    attempts: int
    #: Where the node says it can be reached (its signed address record in
    #: the handshake's confirm), and the address the request came from.
    urls: tuple[str, ...] = ()
    address: str = ""


@dataclass(frozen=True)
class PendingStatistics:
    pending: int
    capacity: int
    recorded: int
    evicted: int


class PendingRequests:
    """A bounded, oldest-first-evicted map of proven but unknown dialers."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._requests: OrderedDict[bytes, PendingRequest] = OrderedDict()
        self._recorded = 0
        self._evicted = 0

    def record(
        self,
        key: bytes,
        name: str,
        now_ms: int,
        *,
        urls: tuple[str, ...] = (),
        address: str = "",
    ) -> PendingRequest:
        """Remember that ``key`` (proven) asked for a link."""
        old = self._requests.pop(key, None)
        request = PendingRequest(
            key,
            name,
            old.first_ms if old else now_ms,
            now_ms,
            (old.attempts if old else 0) + 1,
            urls or (old.urls if old else ()),
            address,
        )
        self._requests[key] = request  # newest last: eviction takes the front
        self._recorded += 1
        while len(self._requests) > self._capacity:
            self._requests.popitem(last=False)
            self._evicted += 1
        return request

    def get(self, key: bytes) -> PendingRequest | None:
        return self._requests.get(key)

    def pop(self, key: bytes) -> PendingRequest | None:
        return self._requests.pop(key, None)

    def all(self) -> list[PendingRequest]:
        return list(self._requests.values())

    def statistics(self) -> PendingStatistics:
        return PendingStatistics(len(self._requests), self._capacity, self._recorded, self._evicted)
