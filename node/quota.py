"""Storage quotas: what one user may make the node store, and the disk reserve.

A user pays for the bytes their own actions write: every queue entry (the
recipient's copy, their own copy, each member's copy of a group message or
membership event) and every outbox entry (one per remote node) that a send,
a group change or a group create writes, counted as key plus value in the same
transaction as the writes. The account is a leaky bucket kept in LMDB
(``quota: uid(4) -> level(8) | at_ms(8)``): it drains continuously at
``bytes_per_window / window`` and a write that would lift it past
``bytes_per_window`` is refused with ``quota_exceeded`` and writes nothing.
So a user can store at most ``bytes_per_window`` in any window, plus what
drained meanwhile; the default (256 MiB a day) is far above what a person
typing sends, even into full groups.

Bytes written on account of remote users (inbound federation) are not charged
to anyone here: the peer's rate limit and the free-space reserve bound them.

The reserve is node-wide: when the file system of the data directory has
fewer than ``min_free_bytes`` available, every charged write gets
``unavailable`` before the disk fills. ``statvfs`` is asked at most once per
``DISK_CHECK_INTERVAL`` seconds.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chinwag.protocol.errors import ErrorCode, ProtocolError

from .logs import event

log = logging.getLogger(__name__)

DISK_CHECK_INTERVAL = 1.0

_ROW = struct.Struct(">QQ")


@dataclass(frozen=True)
class QuotaPolicy:
    """``bytes_per_window`` of 0 turns the per-user quota off."""

    bytes_per_window: int
    window_ms: int

    def charge(self, row: bytes | None, nbytes: int, now_ms: int) -> bytes:
        """The new ``quota`` row after charging ``nbytes``; raise when over.

        Pure: the stored row in, the row to store out. A clock that went
        backwards drains nothing (the level never drops below what is stored
        for a past ``now``).
        """
        level, at_ms = (0, now_ms) if row is None else _ROW.unpack(row)
        elapsed = max(0, now_ms - at_ms)
        drained = elapsed * self.bytes_per_window // max(1, self.window_ms)
        level = max(0, level - drained)
        if level + nbytes > self.bytes_per_window:
            raise ProtocolError(
                ErrorCode.QUOTA_EXCEEDED,
                f"storage quota of {self.bytes_per_window} bytes per "
                f"{self.window_ms // 1000} s used up; try later",
            )
        return _ROW.pack(level + nbytes, max(at_ms, now_ms))

    @staticmethod
    def used(row: bytes | None) -> int:
        """The stored level (before draining) of a ``quota`` row."""
        return 0 if row is None else _ROW.unpack(row)[0]


class DiskReserve:
    """Whether the data directory's file system is below the free-space reserve.

    Called from the store's writer thread only; the answer is cached for
    ``DISK_CHECK_INTERVAL`` seconds of ``clock``.
    """

    def __init__(
        self,
        path: Path,
        min_free_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._min_free = min_free_bytes
        self._clock = clock
        self._checked_at: float | None = None
        self._low = False
        self.checks = 0

    def check(self) -> None:
        """Raise ``unavailable`` while free space is below the reserve."""
        if self._min_free <= 0:
            return
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= DISK_CHECK_INTERVAL:
            self._checked_at = now
            self.checks += 1
            was_low = self._low
            free: int | None = None
            try:
                st = os.statvfs(self._path)
                free = st.f_bavail * st.f_frsize
                self._low = free < self._min_free
            except OSError:
                self._low = False  # cannot tell: the commit itself will say
            if self._low != was_low:
                self._log_change(free)
        if self._low:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the node is low on disk space; try later")

    def _log_change(self, free: int | None) -> None:
        # Once per change, not per refused write: an admin sees when sends
        # began to fail for lack of disk and when they stopped.
        if self._low:
            log.error(
                "free disk space in %s is %d bytes, below the reserve of %d (--min-free): "
                "sends are refused until space is freed",
                self._path,
                free,
                self._min_free,
                extra=event(
                    "storage_error",
                    reason="disk space below the reserve",
                    free_bytes=free,
                    min_free_bytes=self._min_free,
                ),
            )
        else:
            log.info(
                "free disk space in %s is above the reserve again (%s bytes)",
                self._path,
                "unknown" if free is None else free,
            )
