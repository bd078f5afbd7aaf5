"""Admission of connections that have not authenticated yet.

A connection is *unauthenticated* from its accept until it becomes a device
session that passed ``auth`` or a federation link that passed the handshake
(plain HTTP connections never leave that state). Such connections cost the
node memory and a slot under the global cap while proving nothing, so their
number is bounded node-wide by ``max_unauthenticated``. When a new connection
arrives at the bound, the oldest *idle* unauthenticated connection (one
waiting for bytes, not one whose request is being served) is dropped to make
room, or the oldest of all if none is idle. A flood of idle connections from
many addresses therefore only ever displaces itself: the newest connection,
such as a user's log-in, always gets in, and authenticated sessions are never
counted or dropped.

An authenticated *federation link* also leaves the per-address count
(``max_connections_per_address``, applied by node/server.py): a federation of
many nodes behind one address (a NAT, or all on one machine) would otherwise
be refused. Its ticket's ``on_link`` hook tells the listener so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio


class Ticket:
    """One admitted connection, known to the :class:`Admission` until it
    authenticates or ends."""

    __slots__ = ("_admission", "busy", "on_link", "scope")

    def __init__(self, admission: Admission, scope: trio.CancelScope) -> None:
        self._admission = admission
        #: Cancelled to drop the connection.
        self.scope = scope
        #: True while a request is being served (not merely awaited).
        self.busy = False
        #: Called by :meth:`link_authenticated` (the listener sets it to
        #: stop counting the connection against its address's cap).
        self.on_link: Callable[[], None] | None = None

    def authenticated(self) -> None:
        """The connection proved who it is: it no longer counts or can be dropped."""
        self._admission.release(self)

    def link_authenticated(self) -> None:
        """A federation link passed its handshake: as :meth:`authenticated`,
        and it stops counting against its address's connection cap."""
        self.authenticated()
        hook, self.on_link = self.on_link, None
        if hook is not None:
            hook()


@dataclass(frozen=True)
class AdmissionStats:
    unauthenticated: int
    #: Unauthenticated connections dropped to make room, since start.
    evicted: int


class Admission:
    """The node-wide set of unauthenticated connections, oldest first."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._waiting: dict[Ticket, None] = {}
        self._evicted = 0

    def statistics(self) -> AdmissionStats:
        return AdmissionStats(len(self._waiting), self._evicted)

    def admit(self, scope: trio.CancelScope) -> Ticket:
        """Count a new connection, dropping the oldest idle one if full."""
        while len(self._waiting) >= self.limit:
            victim = next((t for t in self._waiting if not t.busy), None)
            if victim is None:
                victim = next(iter(self._waiting))
            self.release(victim)
            victim.scope.cancel()
            self._evicted += 1
        ticket = Ticket(self, scope)
        self._waiting[ticket] = None
        return ticket

    def release(self, ticket: Ticket) -> None:
        """Stop counting ``ticket`` (authenticated, or its connection ended)."""
        self._waiting.pop(ticket, None)
