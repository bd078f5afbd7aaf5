"""Group re-sync: a member node that missed group records gets a snapshot.

Records can go missing on the way to a member node: the host withdraws them
by age from the outbox of a node that stayed away (``PeerRegistry
.expire_outbox``), and queues nothing for a node that is not trusted while it
is pending or blocked. Membership records carry the whole member list, so
what a member node needs to heal is one fresh list: a **snapshot**, the same
signed membership record a node gets when it gains its first member, with
event ``{"action": "snapshot"}`` and the group's *current* ``gseq`` (no new
``gseq`` is used: nothing happened in the group).

Host side:

* a withdrawn record is reported (a ``delivery_failed`` event, code
  ``timeout``, to its origin sender when that sender is local) and a snapshot
  of its group is queued for the peer in the same transaction;
* a ``gsync {group, after}`` link frame from a member node queues a snapshot
  into that node's outbox (at most one per group and node every
  :data:`GSYNC_MIN_INTERVAL_MS`).

Member side (node/groups.py ``_apply_record``): a message record whose
``gseq`` is beyond the last applied + 1 marks the view ``resync``;
:meth:`GroupSync.wants_resync` turns marked views into ``gsync`` frames for
the host's link, and a snapshot (or any later membership record) clears the
mark.

A node with no members left in the group gets a snapshot with an empty
member list and no title: it learns that its users are out, not who is in.
"""

from __future__ import annotations

import logging
from typing import Any

import cbor2

from chinwag.protocol.addresses import GroupAddress, node_id_text
from chinwag.protocol.envelope import open_unit
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.group_record import make_group_record, open_group_record
from chinwag.protocol.link import GroupSync as GsyncFrame

from .groups import ACTION_SNAPSHOT, parse_member
from .identity import NodeIdentity
from .peers import PeerRegistry, report_failed
from .store import Store, WriteTxn

log = logging.getLogger(__name__)

#: A member node asks again for the same group's snapshot after this long.
RESYNC_RETRY_MS = 30_000
#: The host answers at most one ``gsync`` per (node, group) this often.
GSYNC_MIN_INTERVAL_MS = 5_000
#: ``gsync`` frames sent at once on one link.
MAX_GSYNC_PER_CALL = 64
#: (node, group) pairs remembered for the two intervals above.
MAX_TRACKED = 4096


def snapshot_record(
    w: WriteTxn, group: GroupAddress, item: dict[str, Any], node_id: str
) -> dict[str, bytes]:
    """The host's signed snapshot of hosted ``group`` for member node ``node_id``."""
    members = list(item["members"])
    event: dict[str, Any] = {"action": ACTION_SNAPSHOT}
    if any(parse_member(text).node == node_id for text in members):
        event["title"] = item.get("title", "")
        event["owner"] = item.get("owner", "")
    else:
        members = []  # the node's users are out; it is not told who is in, nor the title
    return make_group_record(w.node_key, group, item["gseq"], members=members, event=event)


class GroupSync:
    """Snapshots for member nodes that missed records; the ``gsync`` frame."""

    def __init__(self, identity: NodeIdentity, store: Store, registry: PeerRegistry) -> None:
        self._identity = identity
        self._store = store
        self._registry = registry
        #: When this node last asked a host for a group, and last answered a node.
        self._asked: dict[tuple[bytes, str], int] = {}
        self._answered: dict[tuple[bytes, str], int] = {}
        registry.group_withdrawn = self._withdrawn

    # ------------------------------------------------------------ host side
    def queue_snapshot(self, w: WriteTxn, name: str, node_id: str, now_ms: int) -> bool:
        """Queue a snapshot of hosted group ``name`` for ``node_id``, if it can be."""
        raw = w.txn.get(name.encode(), db=w.db("groups"))
        if raw is None or not self._registry.is_trusted(w, node_id):
            return False
        item = cbor2.loads(raw)
        group = GroupAddress(name, self._identity.id)
        record = snapshot_record(w, group, item, node_id)
        try:
            self._registry.append_item(w, node_id, "gr", record, "", now_ms)
        except ProtocolError as exc:
            # A full outbox: nothing was written; the member node asks again.
            log.info("no snapshot of #%s for %s: %s", name, node_id[:12], exc.message)
            return False
        return True

    def _withdrawn(self, w: WriteTxn, peer: bytes, payloads: list[Any], now_ms: int) -> None:
        """Records withdrawn by age from ``peer``'s outbox (in that transaction)."""
        names: set[str] = set()
        for payload in payloads:
            try:
                record = open_group_record(payload, self._identity.key.public)
            except ProtocolError:
                continue
            names.add(record.group.name)
            if record.unit is None:
                continue
            try:
                sender = open_unit(record.unit).sender
            except ProtocolError:
                continue
            if sender.node == self._identity.id:
                # One event per member node the message did not reach, as for 1:1.
                report_failed(w, sender.user, record.unit, str(ErrorCode.TIMEOUT), peer)
        for name in sorted(names):
            self.queue_snapshot(w, name, node_id_text(peer), now_ms)

    async def on_gsync_request(
        self, peer: bytes, group: GroupAddress, after: int, now_ms: int
    ) -> bool:
        """``gsync {group, after}`` from member node ``peer``: queue it a snapshot.

        ``after`` is the last ``gseq`` the node applied; a snapshot is the
        whole member list whatever it is. Returns whether one was queued.
        """
        if group.host != self._identity.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "gsync for a group not hosted here")
        if after < 0:
            raise ProtocolError(ErrorCode.BAD_FRAME, "gsync after is a gseq")
        key = (peer, group.name)
        last = self._answered.get(key)
        if last is not None and 0 <= now_ms - last < GSYNC_MIN_INTERVAL_MS:
            return False  # one answered a moment ago is still on its way
        _remember(self._answered, key, now_ms)
        node_id = node_id_text(peer)

        def op(w: WriteTxn) -> bool:
            return self.queue_snapshot(w, group.name, node_id, now_ms)

        return await self._store.transact(op)

    # ------------------------------------------------------------ member side
    def wants_resync(self, host: bytes, now_ms: int, *, again: bool = False) -> list[GsyncFrame]:
        """``gsync`` frames for ``host``'s groups whose view saw a gap.

        A group is asked for again only after :data:`RESYNC_RETRY_MS`, or at
        once with ``again`` (a new link: an earlier answer may have been lost).
        """

        def fn(view: Any) -> list[tuple[str, int]]:
            out: list[tuple[str, int]] = []
            cursor = view.txn.cursor(db=view.db("group_views"))
            if not cursor.set_range(host):
                return out
            for k, v in cursor:
                if not bytes(k).startswith(host):
                    break
                item = cbor2.loads(v)
                if item.get("resync"):
                    out.append((bytes(k[32:]).decode(), item["gseq"]))
            return out

        frames: list[GsyncFrame] = []
        for name, gseq in self._store.read(fn):
            key = (host, name)
            last = self._asked.get(key)
            if not again and last is not None and 0 <= now_ms - last < RESYNC_RETRY_MS:
                continue
            _remember(self._asked, key, now_ms)
            group = GroupAddress(name, node_id_text(host))
            frames.append(GsyncFrame(group, gseq))
            if len(frames) >= MAX_GSYNC_PER_CALL:
                break
        return frames


def _remember(table: dict[tuple[bytes, str], int], key: tuple[bytes, str], now_ms: int) -> None:
    if len(table) >= MAX_TRACKED and key not in table:
        table.clear()  # forgetting only allows one early repeat
    table[key] = now_ms
