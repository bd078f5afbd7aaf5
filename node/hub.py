"""Who is connected, and waking device sessions when their user's queue grows.

The store calls :meth:`Hub.queues_grew` on the trio thread after each commit;
every session of those users is woken and reads its queue from the last
``seq`` it sent. Waking is level-triggered (sessions compare heads), so a
wake-up can never be lost between a read and a wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio


@dataclass(frozen=True)
class HubStats:
    connections: int
    users_online: int


class Hub:
    """Registry of live device sessions per user."""

    def __init__(self) -> None:
        self._observers: list[Callable[[frozenset[str]], None]] = []
        self._events: dict[str, trio.Event] = {}
        self._devices: dict[str, dict[str, int]] = {}
        self.connections = 0

    # -- commits -----------------------------------------------------------
    def observe_commits(self, observer: Callable[[frozenset[str]], None]) -> None:
        """Also tell ``observer`` (on the trio thread) whose queues grew."""
        self._observers.append(observer)

    def queues_grew(self, users: Iterable[str]) -> None:
        grown = frozenset(users)
        for observer in self._observers:
            try:
                observer(grown)
            except Exception:  # an observer's bug must not stop delivery
                logging.getLogger(__name__).exception("commit observer failed")
        for user in grown:
            event = self._events.pop(user, None)
            if event is not None:
                event.set()

    def commit_event(self, user: str) -> trio.Event:
        """An event set at the next commit that grows ``user``'s queue.

        Take it *before* reading the head, then wait on it if nothing new.
        """
        event = self._events.get(user)
        if event is None:
            event = self._events[user] = trio.Event()
        return event

    # -- presence of devices ------------------------------------------------
    def device_online(self, user: str, device: str) -> None:
        devices = self._devices.setdefault(user, {})
        devices[device] = devices.get(device, 0) + 1

    def device_offline(self, user: str, device: str) -> None:
        devices = self._devices.get(user)
        if not devices or device not in devices:
            return
        devices[device] -= 1
        if devices[device] <= 0:
            del devices[device]
        if not devices:
            del self._devices[user]

    def is_online(self, user: str) -> bool:
        return user in self._devices

    def online_devices(self, user: str) -> frozenset[str]:
        return frozenset(self._devices.get(user, ()))

    def statistics(self) -> HubStats:
        return HubStats(connections=self.connections, users_online=len(self._devices))
