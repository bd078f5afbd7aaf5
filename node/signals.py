"""Live signals on a device session and on links: typing and receipts (issue 17).

:class:`Signals` answers the device frames ``typing`` and ``receipts``;
:class:`SoftLinks` is what federation links hand their soft-state frames to
(presence, typing, receipts) and tells of links going up and down.
"""

from __future__ import annotations

from typing import Any

from chinwag.protocol.frames import Receipts, SignalRequest, Typing
from chinwag.protocol.link import PresenceUpdate, ReceiptUpdate, Sub, TypingUpdate, Unsub

from .presence import Presence
from .receipts import ReceiptService
from .typing import Typing as TypingService


class Signals:
    """The node's answers to ``typing`` and ``receipts`` from a device."""

    def __init__(self, typing: TypingService, receipts: ReceiptService, canonical: Any) -> None:
        self._typing = typing
        self._receipts = receipts
        #: Conversation text to its key (HistoryOps.canonical).
        self._canonical = canonical

    async def handle(self, user: str, session: object, request: SignalRequest) -> dict[str, Any]:
        """The ``ok`` fields (sent only when the request carried a rid)."""
        if isinstance(request, Typing):
            self._typing.from_device(user, session, request.conv, request.state)
            return {}
        assert isinstance(request, Receipts)
        return self._receipts.state(user, self._canonical(request.conv))

    def message_sent(self, user: str, to: str) -> None:
        self._typing.message_sent(user, to)


class SoftLinks:
    """Soft-state frames of links to presence, typing and receipts."""

    def __init__(self, presence: Presence, typing: TypingService, receipts: ReceiptService) -> None:
        self._presence = presence
        self._typing = typing
        self._receipts = receipts

    def on_frame(
        self, key: bytes, frame: Sub | Unsub | PresenceUpdate | TypingUpdate | ReceiptUpdate
    ) -> None:
        if isinstance(frame, TypingUpdate):
            self._typing.on_frame(key, frame)
        elif isinstance(frame, ReceiptUpdate):
            self._receipts.on_frame(key, frame)
        else:
            self._presence.on_frame(key, frame)

    def link_up(self, key: bytes) -> None:
        self._presence.link_up(key)
        self._receipts.link_up(key)

    def link_down(self, key: bytes) -> None:
        self._presence.link_down(key)

    def name_pinned(self, label: str) -> None:
        self._presence.name_pinned(label)
