"""Groups: hosted by their creator's node, which owns membership and order.

Host side (``groups`` db): the member list and the next ``gseq``. Every
message and membership change becomes a host-signed group record with the
next ``gseq``; the host commits it into each local member's queue and puts
one copy per remote node that has members into that node's outbox, in the
same transaction. Member nodes (``group_views`` db) accept records only from
the host's link, verify the host's and the origin's signatures, apply them in
``gseq`` order and fan out to their own members. Membership records carry the
whole member list, so a node that gains its first member gets a snapshot.

A member on another node sends to the host through its home outbox (its
``ok`` means durable there); the sender's own queue gets the message from
the host's record, like everyone else's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from chinwag.protocol.actions import ACTION_KINDS
from chinwag.protocol.addresses import (
    GroupAddress,
    UserAddress,
    check_user_name,
    node_id_bytes,
    node_id_text,
)
from chinwag.protocol.attachments import Attachment
from chinwag.protocol.envelope import (
    Envelope,
    SignedUnit,
    Verified,
    decode_envelope,
    open_unit,
    sign_envelope,
)
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.group_record import KIND_MESSAGE, make_group_record, open_group_record

from . import group_invites as consent
from .actions_store import ActionRefused
from .blocks import blocked_check
from .identity import NodeIdentity
from .peers import TRUSTED, PeerRegistry, record_dedup
from .store import SendResult, Store, WriteTxn, check_send, event_record, message_body

MAX_TITLE_CHARS = 100
#: The event of a host's membership snapshot for a member node that missed
#: records (node/group_sync.py); it carries the group's current ``gseq``.
ACTION_SNAPSHOT = "snapshot"


def member_text(address: UserAddress) -> str:
    return f"{address.user}@{address.node}"


def parse_member(text: str) -> UserAddress:
    user, _, node = text.partition("@")
    return UserAddress(user, node)


@dataclass(frozen=True)
class GroupInfo:
    group: GroupAddress
    title: str
    owner: str
    members: tuple[str, ...]
    gseq: int
    hosted: bool
    #: Open invitations (known on the host only).
    invited: tuple[str, ...] = ()


class Groups:
    """Group operations for devices, and group items arriving over federation."""

    def __init__(
        self,
        identity: NodeIdentity,
        store: Store,
        registry: PeerRegistry,
        cap: int,
    ) -> None:
        self._identity = identity
        self._store = store
        self._registry = registry
        self._cap = cap
        # Outboxes grown by an operation wake their links after its commit
        # (WriteTxn.outbox_grew, reported by the store).
        registry.group_inbound = self._inbound

    # ------------------------------------------------------------ reads
    def _hosted(self, view: Any, name: str) -> dict[str, Any] | None:
        raw = view.txn.get(name.encode(), db=view.db("groups"))
        return None if raw is None else cbor2.loads(raw)

    def _view(self, view: Any, group: GroupAddress) -> dict[str, Any] | None:
        raw = view.txn.get(
            node_id_bytes(group.host) + group.name.encode(), db=view.db("group_views")
        )
        return None if raw is None else cbor2.loads(raw)

    def info(self, group: GroupAddress) -> GroupInfo | None:
        def fn(view: Any) -> GroupInfo | None:
            hosted = group.host == self._identity.id
            item = self._hosted(view, group.name) if hosted else self._view(view, group)
            if item is None:
                return None
            return GroupInfo(
                group,
                item.get("title", ""),
                item.get("owner", ""),
                tuple(item["members"]),
                item["gseq"],
                hosted,
                tuple(item.get("invited", ())),
            )

        return self._store.read(fn)

    def groups_of(self, user: str) -> list[GroupInfo]:
        me = f"{user}@{self._identity.id}"

        def fn(view: Any) -> list[GroupInfo]:
            out = []
            for key, raw in view.txn.cursor(db=view.db("groups")):
                item = cbor2.loads(raw)
                if me in item["members"]:
                    group = GroupAddress(bytes(key).decode(), self._identity.id)
                    out.append(
                        GroupInfo(
                            group,
                            item["title"],
                            item["owner"],
                            tuple(item["members"]),
                            item["gseq"],
                            True,
                        )
                    )
            for key, raw in view.txn.cursor(db=view.db("group_views")):
                item = cbor2.loads(raw)
                if me in item["members"]:
                    group = GroupAddress(bytes(key[32:]).decode(), node_id_text(bytes(key[:32])))
                    out.append(
                        GroupInfo(
                            group,
                            item.get("title", ""),
                            item.get("owner", ""),
                            tuple(item["members"]),
                            item["gseq"],
                            False,
                        )
                    )
            return out

        return self._store.read(fn)

    # ------------------------------------------------------------ host side
    def _put_hosted(self, w: WriteTxn, name: str, item: dict[str, Any]) -> None:
        w.txn.put(name.encode(), cbor2.dumps(item), db=w.db("groups"))

    def _commit_record(
        self,
        w: WriteTxn,
        group: GroupAddress,
        item: dict[str, Any],
        recipients: set[str],
        now_ms: int,
        *,
        unit: SignedUnit | None = None,
        event: dict[str, Any] | None = None,
    ) -> int | None:
        """Next gseq, signed record, fan-out; returns the queue seq of ``item['_sender']``."""
        item["gseq"] += 1
        record = make_group_record(
            w.node_key,
            group,
            item["gseq"],
            unit=unit,
            members=None if unit is not None else list(item["members"]),
            event=event,
        )
        self._put_hosted(w, group.name, {k: v for k, v in item.items() if not k.startswith("_")})
        sender_seq = None
        remote_nodes: set[str] = set()
        # One record for every member's queue: encoded once, and the same
        # bytes let Router.render decode it once for all of them.
        queued = _queue_record(group, item["gseq"], unit, event)
        blocked = None if unit is None else blocked_check(w, decode_envelope(unit.env).sender)
        for text in sorted(recipients):
            member = parse_member(text)
            if member.node == self._identity.id:
                local = w.get_user(member.user)
                if local is None:
                    continue
                if blocked is not None and blocked(local.uid):
                    continue  # only the blocker's copy is dropped (node/blocks.py)
                seq = w.append_to_uid(local.uid, member.user, queued)
                if text == item.get("_sender"):
                    sender_seq = seq
            else:
                remote_nodes.add(member.node)
        for node_id in sorted(remote_nodes):
            # Nothing is queued for a node that is not trusted (pending or
            # blocked); once trusted again it sees the gap and asks for a
            # snapshot. A full outbox refuses the whole operation.
            if self._registry.is_trusted(w, node_id):
                self._registry.append_item(w, node_id, "gr", record, "", now_ms)
                w.charge(_outbox_bytes(record))
        return sender_seq

    def _require_hosted(self, w: WriteTxn, group: GroupAddress) -> dict[str, Any]:
        item = self._hosted(w, group.name)
        if item is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no group #{group.name} here")
        return item

    async def create(self, owner: str, name: str, title: str, now_ms: int) -> GroupAddress:
        check_user_name(name)
        group = GroupAddress(name, self._identity.id)
        me = f"{owner}@{self._identity.id}"

        def op(w: WriteTxn) -> None:
            w.bill(owner, now_ms)
            if self._hosted(w, name) is not None:
                raise ProtocolError(ErrorCode.CONFLICT, f"#{name} already exists here")
            item = {"title": title[:MAX_TITLE_CHARS], "owner": me, "members": [me], "gseq": 0}
            event = {"action": "created", "by": me, "members": [me]}
            self._commit_record(w, group, item, {me}, now_ms, event=event)

        await self._store.transact(op)
        return group

    async def change_members(
        self,
        actor: str,
        group: GroupAddress,
        add: list[UserAddress],
        remove: list[UserAddress],
        now_ms: int,
    ) -> GroupInfo:
        if group.host != self._identity.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "manage a group on its host node")
        me = f"{actor}@{self._identity.id}"

        def op(w: WriteTxn) -> None:
            w.bill(actor, now_ms)
            item = self._require_hosted(w, group)
            if me not in item["members"]:
                raise ProtocolError(ErrorCode.FORBIDDEN, "you are not a member")
            leaving_self = not add and [member_text(m) for m in remove] == [me]
            if item["owner"] != me and not leaving_self:
                raise ProtocolError(ErrorCode.FORBIDDEN, "only the group's owner changes members")
            for member in add:
                self._check_member(w, member)
            before = set(item["members"])
            removed = {member_text(m) for m in remove}
            direct, invite = self._consent_split(w, item, add, actor)
            after = (before | direct) - removed
            invited_before = set(item.get("invited", []))
            invited = (invited_before | invite) - after - removed
            if len(after) + len(invited) > self._cap:
                raise ProtocolError(
                    ErrorCode.GROUP_FULL, f"a group holds at most {self._cap} members"
                )
            item["invited"] = sorted(invited)
            if after != before:
                self._apply_membership(w, group, item, before, after, me, now_ms)
            elif invited != invited_before:
                self._put_hosted(w, group.name, item)
            for text in sorted(invited_before - invited - after):  # invitations withdrawn
                member = parse_member(text)
                if member.node == self._identity.id:
                    consent.drop(w, member.user, group)
            self._invite(w, group, item, sorted(invited - invited_before), actor, now_ms)

        await self._store.transact(op)
        info = self.info(group)
        assert info is not None
        return info

    def _apply_membership(
        self,
        w: WriteTxn,
        group: GroupAddress,
        item: dict[str, Any],
        before: set[str],
        after: set[str],
        actor: str,
        now_ms: int,
    ) -> None:
        added, removed = sorted(after - before), sorted(before - after)
        item["members"] = sorted(after)
        if item["owner"] not in after and after:
            item["owner"] = item["members"][0]
        event = {"action": "members", "by": actor, "added": added, "removed": removed}
        # Member nodes keep the group's title and owner from these records, so
        # a member on another node sees the title and who may manage it.
        event["title"] = item.get("title", "")
        event["owner"] = item["owner"]
        self._commit_record(w, group, item, before | after, now_ms, event=event)

    def _check_member(self, w: WriteTxn, member: UserAddress) -> None:
        if member.node == self._identity.id:
            w.require_user(member.user)
            return
        raw = w.txn.get(node_id_bytes(member.node), db=w.db("peers"))
        if raw is None or cbor2.loads(raw).get("state") != TRUSTED:
            raise ProtocolError(ErrorCode.NO_SUCH_NODE, f"unknown node {member.node[:12]}")

    async def rename(self, actor: str, group: GroupAddress, title: str, now_ms: int) -> None:
        if group.host != self._identity.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "manage a group on its host node")
        me = f"{actor}@{self._identity.id}"

        def op(w: WriteTxn) -> None:
            w.bill(actor, now_ms)
            item = self._require_hosted(w, group)
            if item["owner"] != me:
                raise ProtocolError(ErrorCode.FORBIDDEN, "only the group's owner renames it")
            item["title"] = title[:MAX_TITLE_CHARS]
            event = {"action": "renamed", "by": me, "title": item["title"]}
            self._commit_record(w, group, item, set(item["members"]), now_ms, event=event)

        await self._store.transact(op)

    async def send(
        self,
        sender: str,
        device: str,
        cid: str | None,
        group: GroupAddress,
        text: str,
        now_ms: int,
        attachments: tuple[Attachment, ...] = (),
        *,
        kind: str = "text",
        body: dict[str, Any] | None = None,
    ) -> SendResult:
        """Commit a group message; a repeat of ``(sender, device, cid)`` gets the
        original result and writes nothing (as for 1:1 sends). ``kind`` and
        ``body`` (default ``{"text": text}``): actions on messages (node/actions.py)."""
        check_send(device, cid, text)
        env_body = message_body(text, attachments) if body is None else body
        me = UserAddress(sender, self._identity.id)

        def op(w: WriteTxn) -> SendResult:
            uid = w.require_user(sender).uid
            retry = w.cid_result(uid, device, cid)
            if retry is not None:
                return retry
            w.bill(sender, now_ms)
            if attachments:
                w.check_attachments(uid, attachments)
            hosted = group.host == self._identity.id
            # Every check comes before the id is drawn and anything is written.
            if hosted:
                item = self._require_hosted(w, group)
                if member_text(me) not in item["members"]:
                    raise ProtocolError(ErrorCode.FORBIDDEN, "you are not a member of this group")
            else:
                view = self._view(w, group)
                if view is not None and member_text(me) not in view["members"]:
                    raise ProtocolError(ErrorCode.FORBIDDEN, "you are not a member of this group")
                self._registry.check(w, group.host)
            msg_id = w.next_id(now_ms)
            env = Envelope(
                id=msg_id,
                sender=me,
                to=None,
                group=group,
                ts=now_ms,
                kind=kind,
                body=env_body,
            )
            unit = sign_envelope(w.node_key, env)
            if hosted:
                item["_sender"] = member_text(me)
                seq = self._commit_record(w, group, item, set(item["members"]), now_ms, unit=unit)
                result = SendResult(msg_id, seq or 0, now_ms, duplicate=False)
            else:
                wire = unit.to_wire()
                self._registry.append_item(w, group.host, "gs", wire, sender, now_ms)
                w.charge(_outbox_bytes(wire))
                # Durable in the home outbox; the sender's queue gets it from the host.
                result = SendResult(msg_id, 0, now_ms, duplicate=False)
            w.remember_cid(uid, device, cid, result, now_ms)
            return result

        return await self._store.transact(op)

    async def leave(self, user: str, group: GroupAddress, now_ms: int) -> None:
        me = UserAddress(user, self._identity.id)
        if group.host == self._identity.id:
            await self.change_members(user, group, [], [me], now_ms)
            return

        def op(w: WriteTxn) -> None:
            msg_id = w.next_id(now_ms)
            env = Envelope(
                id=msg_id, sender=me, to=None, group=group, ts=now_ms, kind="leave", body={}
            )
            self._registry.check(w, group.host)
            self._registry.append_item(
                w, group.host, "gl", sign_envelope(w.node_key, env).to_wire(), user, now_ms
            )

        await self._store.transact(op)

    # ------------------------------------------------------------ consent
    # A user joins a group only with their consent (docs/architecture.md,
    # "Group consent"). The host keeps the group's open invitations in
    # ``invited``; the invitee's home node (which owns their contacts)
    # decides: a contact of the adder joins at once, anyone else gets an
    # invitation to accept or decline (node/group_invites.py).

    def _contact_forms(self, w: WriteTxn, address: UserAddress) -> set[str]:
        """The text forms a contact entry for ``address`` may have here."""
        forms = {f"{address.user}@{address.node}"}
        if address.node == self._identity.id:
            forms.add(f"{address.user}@{self._identity.name}")
            return forms
        key = node_id_bytes(address.node)
        raw = w.txn.get(key, db=w.db("peers"))
        name = None if raw is None else cbor2.loads(raw).get("name")
        if (
            isinstance(name, str)
            and name
            and w.txn.get(name.encode(), db=w.db("peer_names")) == key
        ):
            forms.add(f"{address.user}@{name}")
        return forms

    def _consent_split(
        self, w: WriteTxn, item: dict[str, Any], add: list[UserAddress], actor: str
    ) -> tuple[set[str], set[str]]:
        """Split ``add`` into members at once and invitees.

        A local user joins at once if they have the actor in their contacts
        (or are the actor); a remote user is always invited here, and their
        home node answers at once for a contact.
        """
        adder = self._contact_forms(w, UserAddress(actor, self._identity.id))
        direct: set[str] = set()
        invite: set[str] = set()
        for member in add:
            text = member_text(member)
            if text in item["members"]:
                continue
            local = member.node == self._identity.id
            if local and (member.user == actor or w.has_contact(member.user, adder)):
                direct.add(text)
            else:
                invite.add(text)
        return direct, invite

    def _invite(
        self,
        w: WriteTxn,
        group: GroupAddress,
        item: dict[str, Any],
        invitees: list[str],
        actor: str,
        now_ms: int,
    ) -> None:
        """Tell each new invitee: local ones here, remote ones through their node."""
        by = f"{actor}@{self._identity.id}"
        title = item.get("title", "")
        for text in invitees:
            member = parse_member(text)
            if member.node == self._identity.id:
                consent.put(w, member.user, group, consent.INVITED, by, title, now_ms)
                w.append_to_queue(member.user, consent.invitation_event(group, by, title))
                continue
            env = Envelope(
                id=w.next_id(now_ms),
                sender=UserAddress(actor, self._identity.id),
                to=None,
                group=group,
                ts=now_ms,
                kind="invite",
                body={"invitee": text, "title": title},
            )
            wire = sign_envelope(w.node_key, env).to_wire()
            self._registry.append_item(w, member.node, "gi", wire, actor, now_ms)
            w.charge(_outbox_bytes(wire))

    def _take_answer(
        self,
        w: WriteTxn,
        group: GroupAddress,
        item: dict[str, Any],
        text: str,
        accept: bool,
        now_ms: int,
    ) -> None:
        """Host side: ``text`` accepted (joins) or declined its invitation."""
        invited = set(item.get("invited", []))
        if text not in invited:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no invitation to #{group.name}")
        invited.discard(text)
        item["invited"] = sorted(invited)
        if accept:
            before = set(item["members"])
            self._apply_membership(w, group, item, before, before | {text}, text, now_ms)
        else:
            self._put_hosted(w, group.name, item)

    async def answer(self, user: str, group: GroupAddress, accept: bool, now_ms: int) -> None:
        """``user`` accepts or declines their invitation to ``group``."""
        me = UserAddress(user, self._identity.id)

        def op(w: WriteTxn) -> None:
            w.bill(user, now_ms)
            row = consent.row(w, user, group)
            if row is None or row["s"] != consent.INVITED:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no invitation to #{group.name}")
            if group.host == self._identity.id:
                consent.drop(w, user, group)
                item = self._require_hosted(w, group)
                self._take_answer(w, group, item, member_text(me), accept, now_ms)
                return
            self._registry.check(w, group.host)
            if accept:
                consent.put(w, user, group, consent.ACCEPTED, row["by"], row["title"], now_ms)
            else:
                consent.drop(w, user, group)
            self._send_answer(w, me, group, accept, now_ms)

        await self._store.transact(op)

    def invites(self, user: str) -> list[consent.Invite]:
        """``user``'s open invitations, oldest first."""
        return self._store.read(lambda view: consent.invites(view, user))

    def _send_answer(
        self, w: WriteTxn, me: UserAddress, group: GroupAddress, accept: bool, now_ms: int
    ) -> None:
        env = Envelope(
            id=w.next_id(now_ms),
            sender=me,
            to=None,
            group=group,
            ts=now_ms,
            kind="accept" if accept else "decline",
            body={},
        )
        wire = sign_envelope(w.node_key, env).to_wire()
        self._registry.append_item(w, group.host, "ga", wire, me.user, now_ms)
        w.charge(_outbox_bytes(wire))

    def _invited_here(
        self, w: WriteTxn, peer: bytes, payload: Any, now_ms: int, verified: Verified | None
    ) -> None:
        """Invitee's node: a host's ``gi``. A contact of the adder accepts at
        once; anyone else gets an invitation event and an ``i`` row."""
        unit = SignedUnit.from_wire(payload)
        env = open_unit(unit, expected_origin=peer, verified=verified)
        group = env.group
        if env.kind != "invite" or group is None or node_id_bytes(group.host) != peer:
            raise ProtocolError(ErrorCode.FORBIDDEN, "invitations come from the group's host")
        invitee, title = env.body.get("invitee"), env.body.get("title", "")
        if not isinstance(invitee, str) or not isinstance(title, str):
            raise ProtocolError(ErrorCode.BAD_FRAME, "an invitation names its invitee and title")
        member = parse_member(invitee)
        if member.node != self._identity.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "the invitee is not a user of this node")
        record_dedup(w, unit.by, env.id, now_ms)  # a replay is refused here
        w.require_user(member.user)
        title = title[:MAX_TITLE_CHARS]
        by = member_text(env.sender)
        row = consent.row(w, member.user, group)
        agreed = row is not None and row["s"] == consent.ACCEPTED
        if agreed or w.has_contact(member.user, self._contact_forms(w, env.sender)):
            consent.put(w, member.user, group, consent.ACCEPTED, by, title, now_ms)
            self._send_answer(w, member, group, True, now_ms)
            return
        consent.put(w, member.user, group, consent.INVITED, by, title, now_ms)
        if row is None:
            w.append_to_queue(member.user, consent.invitation_event(group, by, title))

    def _answered(
        self, w: WriteTxn, peer: bytes, payload: Any, now_ms: int, verified: Verified | None
    ) -> None:
        """Host: an invitee's node answered (``ga``) for one of its users."""
        unit = SignedUnit.from_wire(payload)
        env = open_unit(unit, expected_origin=peer, verified=verified)
        group = env.group
        if group is None or group.host != self._identity.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "not a group hosted here")
        if env.kind not in ("accept", "decline"):
            raise ProtocolError(ErrorCode.BAD_FRAME, "an answer is accept or decline")
        record_dedup(w, unit.by, env.id, now_ms)  # a replay is refused here
        item = self._require_hosted(w, group)
        accept = env.kind == "accept"
        self._take_answer(w, group, item, member_text(env.sender), accept, now_ms)

    def _forget_departed(self, w: WriteTxn, group: GroupAddress, departed: set[str]) -> None:
        """Local users who left or were removed need a new consent to rejoin."""
        for text in departed:
            member = parse_member(text)
            if member.node == self._identity.id:
                consent.drop(w, member.user, group)

    def _consented(self, w: WriteTxn, user: str, group: GroupAddress) -> bool:
        """Whether local ``user`` agreed to ``group`` (hosted elsewhere)."""
        row = consent.row(w, user, group)
        return row is not None and row["s"] == consent.ACCEPTED

    # ------------------------------------------------------------ federation
    def _inbound(
        self,
        w: WriteTxn,
        peer: bytes,
        kind: str,
        payload: Any,
        now_ms: int,
        verified: Verified | None = None,
    ) -> None:
        """A group item from ``peer``, applied in its own child transaction
        (PeerRegistry.apply_inbound): a refusal raised here writes nothing.
        ``verified``: signatures checked before (node/peers.check_signatures)."""
        if kind == "gr":
            self._apply_record(w, peer, payload, verified)
            return
        if kind == "gi":
            self._invited_here(w, peer, payload, now_ms, verified)
            return
        if kind == "ga":
            self._answered(w, peer, payload, now_ms, verified)
            return
        unit = SignedUnit.from_wire(payload)
        env = open_unit(unit, expected_origin=peer, verified=verified)
        if env.group is None or env.group.host != self._identity.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "not a group hosted here")
        group = env.group
        item = self._require_hosted(w, group)
        sender = member_text(env.sender)
        if sender not in item["members"]:
            raise ProtocolError(ErrorCode.FORBIDDEN, "not a member of the group")
        sendable = env.kind == "text" or env.kind in ACTION_KINDS
        if not ((kind == "gs" and sendable) or (kind == "gl" and env.kind == "leave")):
            raise ProtocolError(ErrorCode.BAD_FRAME, "unexpected group item")
        record_dedup(w, unit.by, env.id, now_ms)  # a replay is refused here
        if kind == "gs":
            self._commit_record(w, group, item, set(item["members"]), now_ms, unit=unit)
        else:
            before = set(item["members"])
            self._apply_membership(w, group, item, before, before - {sender}, sender, now_ms)

    def _apply_record(
        self, w: WriteTxn, peer: bytes, payload: Any, verified: Verified | None = None
    ) -> None:
        record = open_group_record(payload, peer, verified)
        group = record.group
        if node_id_bytes(group.host) != peer:
            raise ProtocolError(ErrorCode.FORBIDDEN, "group records come only from their host")
        key = peer + group.name.encode()
        raw = w.txn.get(key, db=w.db("group_views"))
        view: dict[str, Any] = (
            cbor2.loads(raw) if raw is not None else {"members": [], "gseq": 0, "title": ""}
        )
        if record.kind != KIND_MESSAGE and record.event.get("action") == ACTION_SNAPSHOT:
            self._apply_snapshot(w, key, group, view, record.gseq, record.members, record.event)
            return
        if record.gseq <= view["gseq"]:
            return  # already applied
        if record.kind == KIND_MESSAGE:
            assert record.unit is not None
            env = open_unit(record.unit, verified=verified)  # the origin's signature, too
            if env.group != group:
                raise ProtocolError(ErrorCode.FORBIDDEN, "inner envelope is for another group")
            if record.gseq > view["gseq"] + 1:
                # A gap: a record never arrived (withdrawn by age, or not
                # queued while this node was not trusted), so the member list
                # may be stale. Ask the host for a snapshot (GroupSync).
                view["resync"] = True
            recipients = set(view["members"])
            event = None
        else:
            recipients = set(view["members"]) | set(record.members)
            view["members"] = list(record.members)
            view.pop("resync", None)  # a membership record carries the whole list
            event = record.event
            if "title" in event and isinstance(event["title"], str):
                view["title"] = event["title"]
            if isinstance(event.get("owner"), str):
                view["owner"] = event["owner"]
        view["gseq"] = record.gseq
        w.txn.put(key, cbor2.dumps(view), db=w.db("group_views"))
        queued = _queue_record(group, record.gseq, record.unit, event)
        blocked = blocked_check(w, env.sender) if record.kind == KIND_MESSAGE else None
        for text in sorted(recipients):
            member = parse_member(text)
            # Only users who agreed get the host's records (group consent).
            if member.node == self._identity.id and self._consented(w, member.user, group):
                local = w.get_user(member.user)
                if local is None:
                    continue
                if blocked is not None and blocked(local.uid):
                    continue  # only the blocker's copy is dropped (node/blocks.py)
                try:
                    w.append_to_uid(local.uid, member.user, queued)
                except ActionRefused:
                    # Not the target's sender: counted and logged, left out of
                    # the queue; the host's order (gseq) goes on regardless.
                    continue
        if record.kind != KIND_MESSAGE:
            self._forget_departed(w, group, recipients - set(view["members"]))

    def _apply_snapshot(
        self,
        w: WriteTxn,
        key: bytes,
        group: GroupAddress,
        view: dict[str, Any],
        gseq: int,
        members: tuple[str, ...],
        event: dict[str, Any],
    ) -> None:
        """The host's current member list (node/group_sync.py), at its current gseq.

        Local users whose membership it changes get a ``snapshot`` event.
        """
        if gseq < view["gseq"]:
            return  # older than what was applied since
        before, after = set(view["members"]), set(members)
        view.update(members=list(members), gseq=gseq)
        view.pop("resync", None)
        if isinstance(event.get("title"), str):
            view["title"] = event["title"]
        if isinstance(event.get("owner"), str):
            view["owner"] = event["owner"]
        w.txn.put(key, cbor2.dumps(view), db=w.db("group_views"))
        if before == after:
            return
        shown = {"action": ACTION_SNAPSHOT, "members": list(members)}
        for text in sorted(before | after):
            member = parse_member(text)
            # Only users who agreed to the group hear of it (group consent).
            if member.node == self._identity.id and self._consented(w, member.user, group):
                w.append_to_queue(member.user, _queue_record(group, gseq, None, shown))
        self._forget_departed(w, group, before - after)


def _outbox_bytes(payload: dict[str, bytes]) -> int:
    """About what an outbox entry with ``payload`` stores (key, framing, payload)."""
    return 64 + sum(len(v) for v in payload.values())


def _queue_record(
    group: GroupAddress, gseq: int, unit: SignedUnit | None, event: dict[str, Any] | None
) -> bytes:
    if unit is not None:
        return cbor2.dumps({"unit": unit.to_wire(), "g": gseq})
    return event_record({"type": "group", "group": group.to_wire(), "gseq": gseq, **(event or {})})
