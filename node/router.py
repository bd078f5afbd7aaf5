"""Where a message goes: resolve the target, commit it, and render queue records.

Local users get one transaction into both queues; a remote recipient gets
the sender's queue and the peer's outbox in one transaction; groups go
through :class:`~chinwag.node.groups.Groups`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cbor2

from chinwag.protocol.addresses import (
    GroupAddress,
    UserAddress,
    is_node_id_text,
    node_id_bytes,
    node_id_text,
    parse_target,
)
from chinwag.protocol.attachments import Attachment
from chinwag.protocol.envelope import SignedUnit, decode_envelope
from chinwag.protocol.errors import ErrorCode, ProtocolError

from .identity import NodeIdentity
from .peers import PeerRegistry

if TYPE_CHECKING:
    from .groups import Groups
from .store import Callback, SendResult, Store

#: Decoded queue records kept for reuse (insertion order: oldest dropped first).
RENDER_CACHE = 2048


@dataclass(frozen=True)
class RouterStats:
    #: Sends by this node's devices that were committed (1:1 and group).
    sent: int
    #: Sends refused with an error before or at their commit.
    refused: int


class Router:
    """Resolves addresses and commits messages through the store."""

    def __init__(
        self,
        identity: NodeIdentity,
        store: Store,
        now_ms: Callable[[], int],
        registry: PeerRegistry | None = None,
    ) -> None:
        self._identity = identity
        self._store = store
        self._now_ms = now_ms
        self._registry = registry
        self._labels: dict[str, str | None] = {}
        self._rendered: dict[bytes, dict[str, Any]] = {}
        #: Set by the app once groups exist.
        self.groups: Groups | None = None
        self._sent = 0
        self._refused = 0

    def statistics(self) -> RouterStats:
        return RouterStats(self._sent, self._refused)

    def node_label(self, node_id: str) -> str | None:
        """The display name of a node, from this node's own pins."""
        if node_id == self._identity.id:
            return self._identity.name
        if self._registry is None:
            return None
        if node_id not in self._labels or self._labels[node_id] is None:
            if len(self._labels) > 10_000:
                self._labels.clear()
            record = self._registry.get(node_id_bytes(node_id))
            name = record.name if record is not None and record.name else None
            if name is not None and self._registry.pinned(name) != record.key:  # type: ignore[union-attr]
                name = None
            self._labels[node_id] = name
        return self._labels[node_id]

    def resolve_node(self, text: str | None) -> str:
        """A node label or id (None = this node) to a node id."""
        if text is None or text == self._identity.name or text == self._identity.id:
            return self._identity.id
        if is_node_id_text(text):
            return text
        if self._registry is not None:
            key = self._registry.pinned(text)
            if key is not None:
                return node_id_text(key)
        raise ProtocolError(ErrorCode.NO_SUCH_NODE, f"unknown node {text!r}")

    def resolve_user(self, text: str) -> UserAddress:
        target = parse_target(text)
        if target.is_group:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{text!r} is a group, not a user")
        return UserAddress(target.name, self.resolve_node(target.node))

    def resolve_group(self, text: str) -> GroupAddress:
        target = parse_target(text if text.startswith("#") else "#" + text)
        return GroupAddress(target.name, self.resolve_node(target.node))

    def group_text(self, group: GroupAddress) -> str:
        return f"#{group.name}@{self.node_label(group.host) or group.host}"

    def display(self, address: UserAddress) -> str:
        return f"{address.user}@{self.node_label(address.node) or address.node}"

    async def send(
        self,
        sender: str,
        device: str,
        cid: str | None,
        to_text: str,
        text: str,
        attachments: tuple[Attachment, ...] = (),
        body: dict[str, Any] | None = None,
    ) -> SendResult:
        """Send a text; ``body`` replaces ``{"text": text}`` (a reply, node/actions.py)."""
        # Counted here, once per send, for /metrics (node/metrics.py).
        try:
            if to_text.startswith("#"):
                if self.groups is None:
                    raise ProtocolError(ErrorCode.BAD_REQUEST, "groups are not enabled")
                group = self.resolve_group(to_text)
                result = await self.groups.send(
                    sender, device, cid, group, text, self._now_ms(), attachments, body=body
                )
            else:
                to = self.resolve_user(to_text)
                # A remote recipient's outbox wakes its link after the commit
                # (Store.on_outbox), like every other outbox write.
                result = await self._store.send_direct(
                    sender, device, cid, to, text, self._now_ms(), attachments, body=body
                )
        except ProtocolError:
            self._refused += 1
            raise
        self._sent += 1
        return result

    async def submit_send(
        self,
        sender: str,
        device: str,
        cid: str | None,
        to_text: str,
        text: str,
        callback: Callback,
        attachments: tuple[Attachment, ...] = (),
    ) -> bool:
        """Hand a 1:1 send to the store, answered through ``callback``.

        Returns False, having done nothing, for a group target (the caller
        uses :meth:`send` for those). Raises a resolution error at once.
        """
        if to_text.startswith("#"):
            return False
        try:
            to = self.resolve_user(to_text)
        except ProtocolError:
            self._refused += 1
            raise

        def counted(result: Any, error: ProtocolError | None) -> None:
            # Counted like send(), for /metrics (node/metrics.py).
            if error is None:
                self._sent += 1
            else:
                self._refused += 1
            callback(result, error)

        await self._store.submit_direct(
            sender, device, cid, to, text, self._now_ms(), counted, attachments
        )
        return True

    def render(self, seq: int, record: bytes) -> dict[str, Any]:
        """A queue record as the ``msg`` frame a device receives.

        The same record sits in many queues (both ends of a 1:1 message, every
        member of a group, every device), so the decoded frame is cached by
        the record's bytes; each delivery copies it and sets its own ``seq``.
        """
        cached = self._rendered.get(record)
        if cached is None:
            cached = self._render(record)
            if len(self._rendered) >= RENDER_CACHE:
                self._rendered.pop(next(iter(self._rendered)))
            self._rendered[record] = cached
        frame = dict(cached)
        frame["seq"] = seq
        return frame

    def _render(self, record: bytes) -> dict[str, Any]:
        seq = 0
        item = cbor2.loads(record)
        if "plain" in item:
            # A record rewritten by an action (node/actions_store.py).
            return self._render_plain(item)
        if "unit" in item:
            env = decode_envelope(SignedUnit.from_wire(item["unit"]).env)
            frame = self._msg_frame(
                env.id, env.sender, env.to, env.group, env.ts, env.kind, env.body
            )
            if "edit" in item or "react" in item:
                self._overlay(frame, item)
            if "reply_to" in env.body:
                self._label_reply(frame)
            return frame
        event = item.get("event", {})
        out = {"t": "msg", "seq": seq, "kind": "event", "body": event}
        labels = self._event_labels(event)
        if labels:
            # Members are "user@<node id>"; the node's pinned labels let a
            # client show "alice@kitchen added erin", never a raw id.
            out["labels"] = labels
        return out

    def _event_labels(self, event: Any) -> dict[str, str]:
        """node id -> pinned label for every node an event names."""
        if not isinstance(event, dict):
            return {}
        texts: list[str] = []
        for key in ("by", "invitee"):
            if isinstance(event.get(key), str):
                texts.append(event[key])
        for key in ("added", "removed", "members"):
            value = event.get(key)
            if isinstance(value, list):
                texts.extend(t for t in value if isinstance(t, str))
        nodes = {t.rpartition("@")[2] for t in texts}
        group = event.get("group")
        if isinstance(group, dict) and isinstance(group.get("host"), str):
            nodes.add(group["host"])
        labels: dict[str, str] = {}
        for node_id in sorted(nodes):
            try:
                label = self.node_label(node_id)
            except ProtocolError:  # not a node id: nothing to label
                continue
            if label is not None:
                labels[node_id] = label
        return labels

    def _render_plain(self, item: dict[str, Any]) -> dict[str, Any]:
        env = item["plain"]
        frame = self._msg_frame(
            env["id"],
            UserAddress.from_wire(env["from"]),
            UserAddress.from_wire(env["to"]) if "to" in env else None,
            GroupAddress.from_wire(env["group"]) if "group" in env else None,
            env["ts"],
            env["kind"],
            env.get("body", {}),
        )
        if "del" in item:
            frame["deleted"] = True
        elif "edit" in item or "react" in item:
            self._overlay(frame, item)
        if "reply_to" in frame["body"]:
            self._label_reply(frame)
        return frame

    def _msg_frame(
        self,
        msg_id: int,
        sender: UserAddress,
        to: UserAddress | None,
        group: GroupAddress | None,
        ts: int,
        kind: str,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """The ``msg`` frame of a message (seq 0: set per queue entry), its
        nodes named by their pinned labels."""
        frame: dict[str, Any] = {
            "t": "msg",
            "seq": 0,
            "id": msg_id,
            "origin": sender.node,
            "from": self._address_wire(sender),
            "ts": ts,
            "kind": kind,
            "body": body,
        }
        if to is not None:
            frame["to"] = self._address_wire(to)
        if group is not None:
            frame["group"] = group.to_wire()
            label = self.node_label(group.host)
            if label is not None:
                frame["group"]["host_name"] = label
        return frame

    def _label_reply(self, frame: dict[str, Any]) -> None:
        """Name the quoted sender's node, as ``from`` is named (a copy: the
        body is the envelope's)."""
        quoted = frame["body"].get("reply_to")
        if isinstance(quoted, dict) and isinstance(quoted.get("from"), dict):
            try:
                sender = UserAddress.from_wire(quoted["from"])
            except ProtocolError:
                return
            shown = {**quoted, "from": self._address_wire(sender)}
            frame["body"] = {**frame["body"], "reply_to": shown}

    def _overlay(self, frame: dict[str, Any], item: dict[str, Any]) -> None:
        """Show an edited message's current text and its reactions."""
        edit = item.get("edit")
        if isinstance(edit, dict):
            frame["body"] = {**frame["body"], "text": edit.get("text")}
            frame["edited"] = True
            frame["edited_ts"] = edit.get("ts")
        reactions: dict[str, list[dict[str, str]]] = {}
        for emoji, user, node in item.get("react", []):
            reactions.setdefault(emoji, []).append(self._address_wire(UserAddress(user, node)))
        if reactions:
            frame["reactions"] = reactions

    def _address_wire(self, address: UserAddress) -> dict[str, str]:
        wire = address.to_wire()
        label = self.node_label(address.node)
        if label is not None:
            wire["name"] = label
        return wire
