"""Where a message goes: resolve the target, commit it, and render queue records.

Today: local users (one transaction into both queues). Federation adds
outboxes behind the same ``send`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cbor2

from chinwag.protocol.addresses import UserAddress, is_node_id_text, parse_target
from chinwag.protocol.envelope import SignedUnit, decode_envelope
from chinwag.protocol.errors import ErrorCode, ProtocolError

from .identity import NodeIdentity
from .store import SendResult, Store


class Router:
    """Resolves addresses and commits messages through the store."""

    def __init__(
        self,
        identity: NodeIdentity,
        store: Store,
        now_ms: Callable[[], int],
    ) -> None:
        self._identity = identity
        self._store = store
        self._now_ms = now_ms

    def node_label(self, node_id: str) -> str | None:
        """The display name of a node, from this node's own pins."""
        if node_id == self._identity.id:
            return self._identity.name
        return None

    def resolve_node(self, text: str | None) -> str:
        """A node label or id (None = this node) to a node id."""
        if text is None or text == self._identity.name or text == self._identity.id:
            return self._identity.id
        if is_node_id_text(text):
            return text
        raise ProtocolError(ErrorCode.NO_SUCH_NODE, f"unknown node {text!r}")

    def resolve_user(self, text: str) -> UserAddress:
        target = parse_target(text)
        if target.is_group:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "groups are not supported yet")
        return UserAddress(target.name, self.resolve_node(target.node))

    def display(self, address: UserAddress) -> str:
        return f"{address.user}@{self.node_label(address.node) or address.node}"

    async def send(
        self, sender: str, device: str, cid: str | None, to_text: str, text: str
    ) -> SendResult:
        to = self.resolve_user(to_text)
        if to.node != self._identity.id:
            raise ProtocolError(ErrorCode.NO_SUCH_NODE, f"unknown node {to.node[:12]}")
        return await self._store.send_direct(sender, device, cid, to, text, self._now_ms())

    def render(self, seq: int, record: bytes) -> dict[str, Any]:
        """A queue record as the ``msg`` frame a device receives."""
        item = cbor2.loads(record)
        if "unit" in item:
            unit = SignedUnit.from_wire(item["unit"])
            env = decode_envelope(unit.env)
            frame: dict[str, Any] = {
                "t": "msg",
                "seq": seq,
                "id": env.id,
                "origin": env.sender.node,
                "from": self._address_wire(env.sender),
                "ts": env.ts,
                "kind": env.kind,
                "body": env.body,
            }
            if env.to is not None:
                frame["to"] = self._address_wire(env.to)
            if env.group is not None:
                frame["group"] = env.group.to_wire()
            return frame
        event = item.get("event", {})
        return {"t": "msg", "seq": seq, "kind": "event", "body": event}

    def _address_wire(self, address: UserAddress) -> dict[str, str]:
        wire = address.to_wire()
        label = self.node_label(address.node)
        if label is not None:
            wire["name"] = label
        return wire
