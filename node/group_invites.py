"""Group consent on the invitee's home node: invitations and acceptances.

A user is put into a group only with their consent: the owner's ``add`` makes
them a member at once only when they have the owner in their contacts;
otherwise they get an invitation to accept or decline. The invitee's *home
node* decides, since it owns the contacts (node/groups.py has the flow).

Layout (``group_invites`` db, on the invitee's home node)::

    uid(4) | host(32) | name (utf-8) -> cbor {s: "i" | "a", by: "user@<node id>", title, ms}

``s`` is ``i`` while the invitation waits for an answer and ``a`` once the
user accepted (or was added by a contact). For a group hosted elsewhere the
``a`` row is what lets the host's records into the user's queue: this node
fans a remote group's records out only to local members it holds an ``a``
row for, so a host can never add a user here without their consent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import cbor2

from chinwag.protocol.addresses import GroupAddress, node_id_bytes, node_id_text

from .store import WriteTxn, event_record

INVITED = "i"
ACCEPTED = "a"
#: Open invitations one user may hold; the oldest is dropped past it.
MAX_INVITES_PER_USER = 256

_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class Invite:
    group: GroupAddress
    by: str
    title: str
    ms: int


def _key(uid: int, group: GroupAddress) -> bytes:
    return _U32.pack(uid) + node_id_bytes(group.host) + group.name.encode()


def row(view: Any, user: str, group: GroupAddress) -> dict[str, Any] | None:
    """``user``'s row for ``group`` (``{s, by, title, ms}``), or None."""
    record = view.get_user(user)
    if record is None:
        return None
    raw = view.txn.get(_key(record.uid, group), db=view.db("group_invites"))
    return None if raw is None else dict(cbor2.loads(raw))


def put(
    w: WriteTxn, user: str, group: GroupAddress, status: str, by: str, title: str, now_ms: int
) -> None:
    """Store ``user``'s row; a new invitation drops the oldest past the cap."""
    uid = w.require_user(user).uid
    db = w.db("group_invites")
    if status == INVITED:
        open_ = [(k, cbor2.loads(v)) for k, v in _rows(w, uid)]
        open_ = [(k, v) for k, v in open_ if v["s"] == INVITED]
        if len(open_) >= MAX_INVITES_PER_USER:
            oldest = min(open_, key=lambda kv: kv[1]["ms"])[0]
            w.txn.delete(oldest, db=db)
    item = {"s": status, "by": by, "title": title, "ms": now_ms}
    w.txn.put(_key(uid, group), cbor2.dumps(item), db=db)


def drop(w: WriteTxn, user: str, group: GroupAddress) -> None:
    record = w.get_user(user)
    if record is not None:
        w.txn.delete(_key(record.uid, group), db=w.db("group_invites"))


def invites(view: Any, user: str) -> list[Invite]:
    """``user``'s open invitations, oldest first."""
    record = view.get_user(user)
    if record is None:
        return []
    out = []
    for key, raw in _rows(view, record.uid):
        item = cbor2.loads(raw)
        if item["s"] == INVITED:
            group = GroupAddress(bytes(key[36:]).decode(), node_id_text(bytes(key[4:36])))
            out.append(Invite(group, item["by"], item["title"], item["ms"]))
    return sorted(out, key=lambda invite: invite.ms)


def invitation_event(group: GroupAddress, by: str, title: str) -> bytes:
    """The queue record telling the invitee (``by`` is ``user@<node id>``)."""
    return event_record(
        {"type": "group", "group": group.to_wire(), "action": "invited", "by": by, "title": title}
    )


def _rows(view: Any, uid: int) -> list[tuple[bytes, bytes]]:
    prefix = _U32.pack(uid)
    cursor = view.txn.cursor(db=view.db("group_invites"))
    out: list[tuple[bytes, bytes]] = []
    if not cursor.set_range(prefix):
        return out
    for key, value in cursor:
        if not key.startswith(prefix):
            break
        out.append((bytes(key), bytes(value)))
    return out
