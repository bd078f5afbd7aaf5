"""Answers a device's ``edit``, ``delete`` and ``react`` frames and fills replies.

The device names a message of its user's own queue by id. This node looks
the message up there, checks what it may (only the sender edits or deletes;
deletes within ``delete_window``; a user's reactions per message are capped),
and sends the action as an envelope of its kind to the message's
conversation, 1:1 or group, exactly like a text message. Every queue that
receives it applies it to its own copy of the target (node/actions_store.py),
on this node and on every other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chinwag.protocol.actions import (
    KIND_DELETE,
    KIND_EDIT,
    KIND_REACT,
    MAX_REACTIONS_PER_USER,
    delete_body,
    edit_body,
    react_body,
    reply_to_body,
)
from chinwag.protocol.addresses import GroupAddress, UserAddress
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import ActionRequest, Delete, Edit

from . import actions_store
from .actions_store import Stored
from .store import SendResult, Store

if TYPE_CHECKING:
    from .groups import Groups

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """A message of the user's own queue, as an action sees it."""

    seq: int
    stored: Stored

    @property
    def group(self) -> GroupAddress | None:
        wire = self.stored.env.get("group")
        return GroupAddress.from_wire(wire) if wire is not None else None

    def sender(self) -> UserAddress:
        return UserAddress.from_wire(self.stored.env.get("from"))

    def peer_of(self, me: UserAddress) -> UserAddress:
        """The other end of a 1:1 message (``me`` for a note to self)."""
        sender = self.sender()
        if sender != me:
            return sender
        return UserAddress.from_wire(self.stored.env.get("to"))


class ActionOps:
    """Actions on messages for this node's devices; one per node."""

    def __init__(
        self,
        store: Store,
        node_id: str,
        groups: Groups | None,
        now_ms: Callable[[], int],
        delete_window: float,
    ) -> None:
        self._store = store
        self._node_id = node_id
        self._groups = groups
        self._now_ms = now_ms
        #: Seconds after sending within which a delete is allowed (0 = always).
        self._delete_window = delete_window

    def find(self, user: str, msg_id: int) -> Target:
        """Message ``msg_id`` of ``user``'s queue; ``not_found`` if none."""

        def read(view: Any) -> tuple[int, bytes] | None:
            uid = view.require_user(user).uid
            return actions_store.find_target(
                view.txn, view.db("msg_ids"), view.db("queue"), uid, msg_id
            )

        found = self._store.read(read)
        stored = actions_store.load(found[1], cached=False) if found is not None else None
        if found is None or stored is None or stored.deleted:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no message {msg_id} in your history")
        return Target(found[0], stored)

    async def handle(self, user: str, device: str, request: ActionRequest) -> dict[str, Any]:
        """The ``ok`` fields answering an edit, delete or react frame."""
        target = self.find(user, request.id)
        me = UserAddress(user, self._node_id)
        now = self._now_ms()
        if isinstance(request, Edit | Delete):
            if target.sender() != me:
                self._refuse(user, request, "not the sender of the message")
            if isinstance(request, Edit):
                kind, body = KIND_EDIT, edit_body(request.id, request.text)
            else:
                window_ms = int(self._delete_window * 1000)
                ts = target.stored.env.get("ts")
                if window_ms and isinstance(ts, int) and now - ts > window_ms:
                    self._refuse(user, request, "older than the node's delete window")
                kind, body = KIND_DELETE, delete_body(request.id)
        else:
            if not request.remove:
                mine = [
                    r
                    for r in target.stored.item.get("react", [])
                    if isinstance(r, list) and r[1:] == [me.user, me.node]
                ]
                if (
                    len(mine) >= MAX_REACTIONS_PER_USER
                    and [request.emoji, me.user, me.node] not in mine
                ):
                    raise ProtocolError(
                        ErrorCode.TOO_LARGE,
                        f"at most {MAX_REACTIONS_PER_USER} reactions per message",
                    )
            kind, body = KIND_REACT, react_body(request.id, request.emoji, request.remove)
        result = await self._send(user, device, None, target, me, now, kind, body)
        return {"id": result.id, "seq": result.seq, "ts": result.ts}

    def reply_body(self, user: str, reply_to: int, text: str) -> dict[str, Any]:
        """The body of a text replying to message ``reply_to`` of ``user``'s queue."""
        target = self.find(user, reply_to)
        quoted = target.stored.current_text() or ""
        return {"text": text, "reply_to": reply_to_body(reply_to, target.sender(), quoted)}

    def _refuse(self, user: str, request: ActionRequest, why: str) -> None:
        self._store.action_stats.count(refused=1)
        log.info(
            "refused %s of message %d by %s: %s", type(request).__name__, request.id, user, why
        )
        raise ProtocolError(ErrorCode.FORBIDDEN, f"you may not change this message: {why}")

    async def _send(
        self,
        user: str,
        device: str,
        cid: str | None,
        target: Target,
        me: UserAddress,
        now: int,
        kind: str,
        body: dict[str, Any],
    ) -> SendResult:
        group = target.group
        if group is not None:
            if self._groups is None:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "groups are not enabled")
            return await self._groups.send(user, device, cid, group, "", now, kind=kind, body=body)
        to = target.peer_of(me)
        return await self._store.send_direct(user, device, cid, to, "", now, kind=kind, body=body)
