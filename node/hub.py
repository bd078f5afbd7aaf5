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
from typing import Any, Protocol

import trio


class LiveSession(Protocol):
    #: SHA-256 of the token the session authenticated with.
    token_hash: bytes

    def offer(self, frame: dict[str, Any]) -> bool: ...

    def revoke(self) -> None:
        """The session's token was revoked: end the session (``bye unauthorized``)."""


@dataclass(frozen=True)
class HubStats:
    connections: int
    users_online: int


class Hub:
    """Registry of live device sessions per user."""

    def __init__(self) -> None:
        self._observers: list[Callable[[frozenset[str]], None]] = []
        self._presence_observers: list[Callable[[str, bool], None]] = []
        self._sessions: dict[str, set[LiveSession]] = {}
        self._by_token: dict[bytes, set[LiveSession]] = {}
        self._events: dict[str, trio.Event] = {}
        self._devices: dict[str, dict[str, int]] = {}
        #: Live (or authenticating) sessions per token hash, for the per-token cap.
        self._token_claims: dict[bytes, int] = {}
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
    def observe_presence(self, observer: Callable[[str, bool], None]) -> None:
        """``observer(user, online)`` when a user's first device comes or last goes."""
        self._presence_observers.append(observer)

    def _presence_changed(self, user: str, online: bool) -> None:
        for observer in self._presence_observers:
            try:
                observer(user, online)
            except Exception:
                logging.getLogger(__name__).exception("presence observer failed")

    def device_online(self, user: str, device: str, session: LiveSession | None = None) -> None:
        first = user not in self._devices
        devices = self._devices.setdefault(user, {})
        devices[device] = devices.get(device, 0) + 1
        if session is not None:
            self._sessions.setdefault(user, set()).add(session)
            self._by_token.setdefault(session.token_hash, set()).add(session)
        if first:
            self._presence_changed(user, True)

    def device_offline(self, user: str, device: str, session: LiveSession | None = None) -> None:
        if session is not None:
            sessions = self._sessions.get(user)
            if sessions is not None:
                sessions.discard(session)
                if not sessions:
                    del self._sessions[user]
            same_token = self._by_token.get(session.token_hash)
            if same_token is not None:
                same_token.discard(session)
                if not same_token:
                    del self._by_token[session.token_hash]
        devices = self._devices.get(user)
        if not devices or device not in devices:
            return
        devices[device] -= 1
        if devices[device] <= 0:
            del devices[device]
        if not devices:
            del self._devices[user]
            self._presence_changed(user, False)

    # -- sessions per token ------------------------------------------------------
    def claim_token(self, token_hash: bytes, limit: int) -> bool:
        """Count one more live session of this token; False (nothing counted)
        if it already holds ``limit``."""
        held = self._token_claims.get(token_hash, 0)
        if held >= limit:
            return False
        self._token_claims[token_hash] = held + 1
        return True

    def release_token(self, token_hash: bytes) -> None:
        """A session counted by :meth:`claim_token` ended."""
        held = self._token_claims.get(token_hash, 0) - 1
        if held > 0:
            self._token_claims[token_hash] = held
        else:
            self._token_claims.pop(token_hash, None)

    def sessions_revoked(self, token_hashes: Iterable[bytes]) -> None:
        """End every live session authenticated with one of these tokens.

        Called by the store after the commit that revoked them (logout,
        password change, user removal, the oldest session or device evicted).
        """
        for digest in token_hashes:
            for session in list(self._by_token.get(digest, ())):
                try:
                    session.revoke()
                except Exception:
                    logging.getLogger(__name__).exception("revoking a session failed")

    def offer(self, user: str, frame: dict[str, Any], exclude: LiveSession | None = None) -> None:
        """Give a soft-state frame (presence, read markers) to every live
        session of ``user`` but ``exclude``."""
        for session in self._sessions.get(user, ()):
            if session is not exclude:
                session.offer(frame)

    def is_online(self, user: str) -> bool:
        return user in self._devices

    def online_devices(self, user: str) -> frozenset[str]:
        return frozenset(self._devices.get(user, ()))

    def statistics(self) -> HubStats:
        return HubStats(connections=self.connections, users_online=len(self._devices))
