"""Delivery and read receipts, derived from outbox acks and read markers.

A receipt says how far one member has a sender's messages of one
conversation: every message of the sender with an id up to ``delivered_id``
is on the member's node, up to ``read_id`` read by the member. Ids of one
sender all come from the sender's node and grow with time, so one number per
(member, conversation) covers every message (no state per message).

* **Delivered** (1:1 only): a message to a user of this node is delivered
  when it is stored (the client shows ✓✓ for such a message at once). For a
  remote recipient it is delivered when the recipient's node acknowledged
  the push on the link: the outbox ack (node/peers.py ``outbox_ack``) hands
  the acknowledged entries here.
* **Read**: when a user's read marker moves (``read``, node/history_ops.py),
  the newest message of each other sender at or before the marker gives that
  sender a read receipt: one update per marker move and sender, never one per
  message. Local senders get it at once; a remote sender's node gets a
  ``receipt`` link frame (soft state, coalesced per peer node, kept while the
  link is down, at most ``receipts_pending_max`` items, oldest dropped).
* **Stored at the sender's node** (``receipts`` database), so the state
  survives reconnects: a device asks ``receipts {conv}`` when it opens a
  conversation and gets ``receipt`` frames live after that.
* **Off switch**: a user with ``read_receipts`` off (profile) sends none and
  is shown none (neither stored nor offered).
* **Blocks**: nothing reaches a user from someone they blocked.

Layout::

    receipts: uid(4) | conv (utf-8)  -> cbor {"user@<node id>": [delivered_id, read_id]}
              uid(4) | 0x00          -> cbor {"rr": bool}   (the user's setting)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import cbor2
import trio

from chinwag.protocol.addresses import GroupAddress, UserAddress, node_id_bytes, node_id_text
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import Receipts, receipt_frame
from chinwag.protocol.link import (
    MAX_RECEIPT_ITEMS,
    ReceiptItem,
    ReceiptUpdate,
)

from . import history_index as index
from .config import NodeConfig
from .hub import Hub
from .peer_link import PeerLinked
from .store import Store, WriteTxn

log = logging.getLogger(__name__)

DB_NAME = "receipts"
#: Queue entries looked at behind a moved read marker (newest first).
SCAN_LIMIT = 256
_SETTING = b"\x00"


class Resolver(Protocol):
    def node_label(self, node_id: str) -> str | None: ...


class BlockLists(Protocol):
    def blocks(self, blocker: str, sender: UserAddress) -> bool: ...


@dataclass(frozen=True)
class ReceiptStats:
    #: Read receipts made here from marker moves (local and remote senders).
    read_made: int
    #: Receipts applied to a local sender (read or delivered).
    applied: int
    #: Receipt link frames sent and received.
    link_frames_sent: int
    link_frames_received: int
    #: Items dropped from the pending set (a peer unlinked too long).
    pending_dropped: int


def _conv_key(uid: int, conv: str) -> bytes:
    return uid.to_bytes(4, "big") + conv.encode()


class ReceiptService(PeerLinked):
    """Makes, forwards, stores and shows receipts."""

    frame_kind = "receipt"

    def __init__(
        self,
        config: NodeConfig,
        node_id: str,
        store: Store,
        hub: Hub,
        resolver: Resolver,
        blocks: BlockLists | None = None,
    ) -> None:
        super().__init__()
        self._config = config
        self._node_id = node_id
        self._store = store
        self._hub = hub
        self._resolver = resolver
        self._blocks = blocks
        self._settings: dict[str, bool] = {}
        #: (reader, conv, sender) -> the last read_id made, so an unmoved
        #: position is not sent again.
        self._made: dict[tuple[str, str, UserAddress], int] = {}
        #: peer node id -> (reader, to, group) -> read_id, waiting for the link.
        self._pending: dict[str, dict[tuple[str, str, GroupAddress | None], int]] = {}
        self._pending_count = 0
        self._nursery: trio.Nursery | None = None
        self._read_made = self._applied = self._sent = self._received = self._dropped = 0

    def statistics(self) -> ReceiptStats:
        return ReceiptStats(
            self._read_made, self._applied, self._sent, self._received, self._dropped
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # ------------------------------------------------------------ setting
    def enabled(self, user: str) -> bool:
        """Whether ``user`` sends and sees read receipts (on by default)."""
        cached = self._settings.get(user)
        if cached is None:

            def read(view: Any) -> bool:
                record = view.get_user(user)
                if record is None:
                    return True
                raw = view.txn.get(_conv_key(record.uid, "") + _SETTING, db=view.db(DB_NAME))
                return True if raw is None else bool(cbor2.loads(raw).get("rr", True))

            cached = self._store.read(read)
            if len(self._settings) > 100_000:
                self._settings.clear()
            self._settings[user] = cached
        return cached

    def forget(self, user: str) -> None:
        """Drop what is cached of ``user`` (removed)."""
        self._settings.pop(user, None)

    async def set_enabled(self, user: str, on: bool) -> None:
        def op(w: WriteTxn) -> None:
            uid = w.require_user(user).uid
            w.txn.put(_conv_key(uid, "") + _SETTING, cbor2.dumps({"rr": on}), db=w.db(DB_NAME))

        await self._store.transact(op)
        self._settings[user] = on

    # ------------------------------------------------------------ profile (HTTP)
    def profile_fields(self, user: str) -> dict[str, Any]:
        return {"read_receipts": self.enabled(user)}

    async def update_profile(self, user: str, body: dict[str, Any]) -> None:
        if "read_receipts" not in body:
            return
        value = body["read_receipts"]
        if not isinstance(value, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'read_receipts' is true or false")
        await self.set_enabled(user, value)

    # ------------------------------------------------------------ requests
    def state(self, user: str, conv: str) -> dict[str, Any]:
        """The ``ok`` fields of ``receipts {conv}`` (``conv`` canonical)."""

        def read(view: Any) -> dict[str, list[int]]:
            uid = view.require_user(user).uid
            raw = view.txn.get(_conv_key(uid, conv), db=view.db(DB_NAME))
            return {} if raw is None else dict(cbor2.loads(raw))

        rows = self._store.read(read)
        show_read = self.enabled(user)
        out = []
        for member, (delivered, read_id) in sorted(rows.items()):
            name, _, node = member.partition("@")
            item: dict[str, Any] = {"user": self._address(UserAddress(name, node))}
            if delivered:
                item["delivered_id"] = delivered
            if read_id and show_read:
                item["read_id"] = read_id
            if len(item) > 1:
                out.append(item)
        return {"conv": conv, "read_receipts": show_read, "receipts": out}

    def _address(self, address: UserAddress) -> dict[str, str]:
        wire = address.to_wire()
        label = self._resolver.node_label(address.node)
        if label:
            wire["name"] = label
        return wire

    async def handle(self, user: str, request: Receipts, canonical: str) -> dict[str, Any]:
        del request
        return self.state(user, canonical)

    # ------------------------------------------------------------ read markers
    def read_moved(self, reader: str, conv: str, read_seq: int) -> None:
        """``reader``'s marker of ``conv`` moved to ``read_seq``: one receipt per
        other sender whose newest message at or before it is newer than the
        last one made."""
        if not self.enabled(reader):
            return
        owner = f"{reader}@{self._node_id}"

        def read(view: Any) -> dict[UserAddress, int]:
            record = view.get_user(reader)
            if record is None:
                return {}
            dbs = {name: view.db(name) for name in index.DB_NAMES}
            queue = view.db("queue")
            newest: dict[UserAddress, int] = {}
            for count, seq in enumerate(
                index.conv_seqs(view.txn, dbs, record.uid, conv, read_seq + 1)
            ):
                if count >= SCAN_LIMIT or (not conv.startswith("#") and newest):
                    break
                raw = view.txn.get(_queue_key(record.uid, seq), db=queue)
                found = _sender_and_id(bytes(raw)) if raw is not None else None
                if found is None:
                    continue
                sender, msg_id = found
                if f"{sender.user}@{sender.node}" != owner and sender not in newest:
                    newest[sender] = msg_id
            return newest

        group = _group_of(conv)
        for sender, msg_id in self._store.read(read).items():
            if self._blocks is not None and self._blocks.blocks(reader, sender):
                continue  # a blocker's reading is never told to the user they blocked
            made = (reader, conv, sender)
            if self._made.get(made, 0) >= msg_id:
                continue
            if len(self._made) > 100_000:
                self._made.clear()
            self._made[made] = msg_id
            self._read_made += 1
            me = UserAddress(reader, self._node_id)
            if sender.node == self._node_id:
                their_conv = conv if group is not None else f"{reader}@{self._node_id}"
                self.apply(sender.user, their_conv, me, read_id=msg_id)
            else:
                self._queue(sender.node, (reader, sender.user, group), msg_id)

    def _queue(self, node: str, key: tuple[str, str, GroupAddress | None], read_id: int) -> None:
        pending = self._pending.setdefault(node, {})
        if key not in pending:
            self._pending_count += 1
            while self._pending_count > self._config.receipts_pending_max:
                self._drop_oldest()
        pending[key] = max(read_id, pending.get(key, 0))
        if self._is_linked(node_id_bytes(node)) and self._nursery is not None:
            self._nursery.start_soon(self._flush, node)

    def _drop_oldest(self) -> None:
        for node, items in self._pending.items():
            if items:
                items.pop(next(iter(items)))
                self._pending_count -= 1
                self._dropped += 1
                if not items:
                    del self._pending[node]
                return
        self._pending_count = 0

    async def _flush(self, node: str) -> None:
        items = self._pending.pop(node, {})
        self._pending_count -= len(items)
        listed = [ReceiptItem(r, u, g, i) for (r, u, g), i in items.items()]
        key = node_id_bytes(node)
        for start in range(0, len(listed), MAX_RECEIPT_ITEMS):
            chunk = tuple(listed[start : start + MAX_RECEIPT_ITEMS])
            # A lost frame is soft state: the next marker move sends again.
            if await self._send_soft(key, ReceiptUpdate(chunk)):
                self._sent += 1

    def link_up(self, key: bytes) -> None:
        node = node_id_text(key)
        if node in self._pending and self._nursery is not None:
            self._nursery.start_soon(self._flush, node)

    def on_frame(self, key: bytes, frame: ReceiptUpdate) -> None:
        """Read receipts from the readers' node (each reader is a user of it)."""
        self._received += 1
        peer = node_id_text(key)
        for item in frame.items:
            reader = UserAddress(item.reader, peer)
            conv = _group_text(item.group) if item.group else f"{item.reader}@{peer}"
            self.apply(item.to, conv, reader, read_id=item.read_id)

    # ------------------------------------------------------------ delivered
    def delivered(self, items: list[tuple[str, UserAddress, int]]) -> None:
        """Acknowledged 1:1 pushes: (local sender, recipient, newest id) each."""
        for sender, recipient, msg_id in items:
            self.apply(sender, f"{recipient.user}@{recipient.node}", recipient, delivered_id=msg_id)

    # ------------------------------------------------------------ storing, showing
    def apply(
        self,
        owner: str,
        conv: str,
        member: UserAddress,
        *,
        delivered_id: int | None = None,
        read_id: int | None = None,
    ) -> None:
        """Record how far ``member`` has local ``owner``'s messages in ``conv``."""
        if self._blocks is not None and self._blocks.blocks(owner, member):
            return
        if read_id is not None and not self.enabled(owner):
            read_id = None
        if delivered_id is None and read_id is None:
            return
        self._applied += 1
        frame = receipt_frame(
            conv, self._address(member), delivered_id=delivered_id, read_id=read_id
        )
        if self._nursery is not None:
            self._nursery.start_soon(self._persist, owner, conv, member, frame)

    async def _persist(
        self, owner: str, conv: str, member: UserAddress, frame: dict[str, Any]
    ) -> None:
        """Store the position, then show it: a device that saw the ``receipt``
        frame gets at least that state from ``receipts {conv}`` afterwards."""
        text = f"{member.user}@{member.node}"
        delivered_id, read_id = frame.get("delivered_id", 0), frame.get("read_id", 0)

        def op(w: WriteTxn) -> None:
            record = w.get_user(owner)
            if record is None:
                return
            key, db = _conv_key(record.uid, conv), w.db(DB_NAME)
            raw = w.txn.get(key, db=db)
            rows = {} if raw is None else cbor2.loads(raw)
            old = rows.get(text, [0, 0])
            rows[text] = [max(old[0], delivered_id), max(old[1], read_id)]
            w.txn.put(key, cbor2.dumps(rows), db=db)

        try:
            await self._store.transact(op)
        except ProtocolError as exc:
            log.info("receipt for %s not stored: %s", owner, exc.message)
        self._hub.offer(owner, frame)


def _queue_key(uid: int, seq: int) -> bytes:
    return uid.to_bytes(4, "big") + seq.to_bytes(8, "big")


def _group_of(conv: str) -> GroupAddress | None:
    if not conv.startswith("#"):
        return None
    name, _, host = conv[1:].partition("@")
    return GroupAddress(name, host)


def _group_text(group: GroupAddress) -> str:
    return f"#{group.name}@{group.host}"


def _sender_and_id(record: bytes) -> tuple[UserAddress, int] | None:
    """The sender and id of a queue record's message (None for an event).

    Records were verified when stored, so plain CBOR decoding is enough.
    """
    try:
        item = cbor2.loads(record)
        if "unit" not in item:
            return None
        env = cbor2.loads(item["unit"]["env"])
        sender = env["from"]
        return UserAddress(sender["u"], sender["n"]), int(env["id"])
    except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError):
        return None
