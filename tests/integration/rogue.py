"""A hand-driven federation peer: a real handshake and sealed link, frames by hand.

The node under test trusts the rogue's key (``peers add`` with an address
nobody listens on, so the node never dials it); the test dials in and pushes
exactly the entries it wants, in exactly the frames it wants.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from chinwag.node.admin import admin_request
from chinwag.node.client import open_ws
from chinwag.protocol.codec import decode_cbor, encode_cbor
from chinwag.protocol.envelope import NodeKey
from chinwag.protocol.handshake import FED_SUBPROTOCOL, DialerHandshake, LinkCipher

TIMEOUT = 15


@dataclass
class RogueLink:
    key: NodeKey
    ws: WebSocketConnection
    cipher: LinkCipher

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_message(self.cipher.seal(encode_cbor(frame)))

    async def receive(self, kind: str) -> dict[str, Any]:
        """The next frame of type ``kind`` (others, e.g. the node's pushes, skipped)."""
        with trio.fail_after(TIMEOUT):
            while True:
                frame = decode_cbor(self.cipher.open(await self.ws.get_message()))
                assert isinstance(frame, dict)
                if frame["t"] == kind:
                    return frame

    async def push(self, entries: list[dict[str, Any]]) -> None:
        await self.send({"t": "push", "entries": entries})

    async def send_plain(self, plaintext: bytes) -> None:
        """Seal any bytes at the right counter: the frame opens, then is judged."""
        await self.ws.send_message(self.cipher.seal(plaintext))

    async def closed(self) -> int | None:
        """Wait until the node closes the link; its close code."""
        with trio.fail_after(TIMEOUT):
            while True:
                try:
                    await self.ws.get_message()
                except ConnectionClosed as exc:
                    return exc.reason.code if exc.reason is not None else None


async def trust_rogue(node: Any, key: NodeKey) -> None:
    await admin_request(
        node.node.config.data_dir, "peers.add", {"peer": f"http://127.0.0.1:9#{key.id}"}
    )


@asynccontextmanager
async def rogue_link(
    node: Any, key: NodeKey, name: str = "rogue", *, resume: bool = True
) -> AsyncIterator[RogueLink]:
    """Dial ``node`` as the (already trusted) ``key`` and exchange ``resume``
    (unless ``resume`` is False: the link is then left at its very start)."""
    url = node.url.replace("http://", "ws://") + "/federation"
    async with open_ws(url, subprotocols=[FED_SUBPROTOCOL]) as ws:
        hs = DialerHandshake(key, name, node.node.identity.key.public)
        with trio.fail_after(TIMEOUT):
            await ws.send_message(hs.start())
            await ws.send_message(hs.receive_welcome(await ws.get_message()))
        link = RogueLink(key, ws, hs.result().cipher)
        if resume:
            await link.send({"t": "resume", "applied": 0})
            await link.receive("resume")
        yield link
