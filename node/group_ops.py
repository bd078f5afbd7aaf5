"""The ``group`` frame of a device: create, add, remove, leave, rename, list, members,
and the invitee's accept, decline and invites."""

from __future__ import annotations

import time
from typing import Any

from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import GroupOp, PresenceQuery

from .groups import GroupInfo, Groups, parse_member
from .presence import Presence
from .router import Router


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class GroupOps:
    """Answers a device's group requests on behalf of its user."""

    def __init__(self, groups: Groups, router: Router, presence: Presence | None) -> None:
        self._groups = groups
        self._router = router
        self._presence = presence

    def _show(self, text: str) -> str:
        member = parse_member(text)
        return f"{member.user}@{self._router.node_label(member.node) or member.node}"

    def _describe(self, info: GroupInfo) -> dict[str, Any]:
        return {
            "group": self._router.group_text(info.group),
            "name": info.group.name,
            "host": info.group.host,
            "title": info.title,
            "members": len(info.members),
            "owner": self._show(info.owner) if info.owner else "",
        }

    def _address(self, user: str, node_id: str) -> dict[str, str]:
        out = {"u": user, "n": node_id}
        label = self._router.node_label(node_id)
        if label:
            out["name"] = label
        return out

    def presence_query(self, user: str, request: PresenceQuery) -> dict[str, Any]:
        """``presence_query``: what is known now; remote users are asked on
        demand and their states follow as ``presence`` frames (node/presence.py)."""
        if self._presence is None:
            return {"users": []}
        return {
            "users": [
                {"user": self._address(*watched), **state.to_wire()}
                for watched, state in self._presence.query(user, list(request.users))
            ]
        }

    async def handle(self, user: str, op: GroupOp) -> dict[str, Any]:
        if op.op == "list":
            return {"groups": [self._describe(i) for i in self._groups.groups_of(user)]}
        if op.op == "invites":
            return {
                "invites": [
                    {
                        "group": self._router.group_text(invite.group),
                        "name": invite.group.name,
                        "host": invite.group.host,
                        "title": invite.title,
                        "by": self._show(invite.by),
                    }
                    for invite in self._groups.invites(user)
                ]
            }
        if op.op == "create":
            if op.name is None:
                raise ProtocolError(ErrorCode.BAD_FRAME, "create needs name")
            group = await self._groups.create(user, op.name, op.title or "", _now_ms())
            return {"group": self._router.group_text(group)}
        if op.group is None:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"{op.op} needs group")
        group = self._router.resolve_group(op.group)
        if op.op in ("add", "remove"):
            members = [self._router.resolve_user(m) for m in op.members]
            if not members:
                raise ProtocolError(ErrorCode.BAD_FRAME, f"{op.op} needs members")
            add = members if op.op == "add" else []
            remove = members if op.op == "remove" else []
            changed = await self._groups.change_members(user, group, add, remove, _now_ms())
            return self._describe(changed)
        if op.op == "leave":
            await self._groups.leave(user, group, _now_ms())
            return {"group": self._router.group_text(group)}
        if op.op in ("accept", "decline"):
            await self._groups.answer(user, group, op.op == "accept", _now_ms())
            return {"group": self._router.group_text(group)}
        if op.op == "rename":
            await self._groups.rename(user, group, op.title or "", _now_ms())
            return {"group": self._router.group_text(group)}
        # members: presence is fetched here, when a group is opened, never pushed.
        info = self._groups.info(group)
        me = f"{user}@{self._router.resolve_node(None)}"
        if info is None or me not in info.members:
            raise ProtocolError(ErrorCode.FORBIDDEN, "you are not a member of this group")
        listed: list[dict[str, Any]] = []
        # Remote members nobody here follows are asked for on demand (once per
        # node, however many open the group); their states follow as frames.
        states = {}
        if self._presence is not None:
            states = dict(self._presence.query(user, list(info.members)))
        for text in info.members:
            member = parse_member(text)
            item: dict[str, Any] = {"address": self._show(text)}
            state = states.get((member.user, member.node))
            if state is not None:
                item.update(state.to_wire())
            listed.append(item)
        invited = [self._show(text) for text in info.invited]
        return {**self._describe(info), "members": listed, "invited": invited}
