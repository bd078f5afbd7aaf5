"""How a soft-state service (presence, typing, receipts) reaches linked peers.

The federation is built after these services, so its ``send_to`` and
``is_linked`` are attached later (``attach``). Their frames are soft state:
a lost one is logged and dropped, never raised, because each service has
its own way to send the news again (the next change, link-up or expiry).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from chinwag.protocol.addresses import node_id_text
from chinwag.protocol.link import LinkFrame

log = logging.getLogger(__name__)

SendFrame = Callable[[bytes, LinkFrame], Awaitable[None]]


class PeerLinked:
    """Base for a service that sends soft-state frames on peer links."""

    #: What the frames are, for the log line of a lost one.
    frame_kind = "link"

    def __init__(self) -> None:
        self._send: SendFrame | None = None
        self._is_linked: Callable[[bytes], bool] = lambda key: False

    def attach(self, send: SendFrame, is_linked: Callable[[bytes], bool]) -> None:
        """How to send a frame on a peer's link (async), and whether one is up."""
        self._send = send
        self._is_linked = is_linked

    async def _send_soft(self, key: bytes, frame: LinkFrame) -> bool:
        """Send ``frame`` to peer ``key``; whether it went (False when not attached)."""
        if self._send is None:
            return False
        try:
            await self._send(key, frame)
        except Exception as exc:  # soft state: the service sends the news again later
            log.debug("%s frame to %s lost: %s", self.frame_kind, node_id_text(key)[:12], exc)
            return False
        return True
