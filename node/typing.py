"""Typing indicators: soft state, never stored, coalesced per (peer node, conversation).

A device sends ``typing {conv, state}``; the other side's live devices get
``typing {conv, user, state}``. The rules:

* **Rate**: a device's ``start`` frames pass a token bucket of one per
  ``typing_min_interval`` with a burst of :data:`START_BURST` (so a start
  right after a stop still shows); more are dropped silently and counted
  (``dropped``). A ``stop`` is forwarded only after a start that passed, so
  a device makes at most two frames per interval. A client renews its
  ``start`` every few seconds while the user types.
* **Expiry**: a ``start`` holds ``typing_expiry`` seconds at the typist's
  node unless renewed; then the node sends ``stop`` itself (``expired``).
  Clients expire a ``start`` after the same time too (a lost ``stop``).
  A message sent by the typist clears the state without a ``stop``: the
  receiving clients clear the line when the message arrives.
* **Delivery**: only to live sessions (``Hub.offer``): never stored, never
  pushed. A blocker never gets the typing of a user they blocked.
* **Links**: changes bound for one peer node wait ``typing_flush`` seconds
  and leave as **one** ``typing`` link frame per conversation, holding the
  latest state of each typist (not a frame per device or recipient).
  1:1 typing goes to the recipient's node. Group typing goes through the
  group's host like group messages: a member node sends to the host, the host
  delivers to its own members and forwards to every other member node once.
  A member node takes group typing only from the host's link; the host
  takes it only from a member's own node.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from chinwag.protocol.addresses import GroupAddress, UserAddress, node_id_bytes, node_id_text
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import typing_frame
from chinwag.protocol.link import MAX_TYPING_ITEMS, LinkFrame, TypingItem, TypingUpdate

from .config import NodeConfig
from .hub import Hub
from .peer_link import PeerLinked
from .ratelimit import TokenBucket

#: Starts a device may send at once before its rate applies.
START_BURST = 2

#: A conversation as typing sees it: a user (1:1) or a group.
Target = UserAddress | GroupAddress
#: Where a link frame goes: a local user of the peer (1:1) or a group.
_LinkConv = tuple[str, str] | GroupAddress


class Resolver(Protocol):
    def resolve_user(self, text: str) -> UserAddress: ...
    def resolve_group(self, text: str) -> GroupAddress: ...
    def node_label(self, node_id: str) -> str | None: ...


class GroupMembers(Protocol):
    def info(self, group: GroupAddress) -> Any: ...


class BlockLists(Protocol):
    def blocks(self, blocker: str, sender: UserAddress) -> bool: ...


@dataclass(frozen=True)
class TypingStats:
    #: ``typing`` frames from this node's devices.
    received: int
    #: Starts over a device's rate, dropped silently.
    dropped: int
    #: Starts that ran out at this node (a ``stop`` was sent for them).
    expired: int
    #: ``typing`` frames offered to live local devices.
    delivered: int
    #: Link frames sent and received.
    link_frames_sent: int
    link_frames_received: int
    #: Link items refused (typist not of the peer's node, not a member, not our group).
    refused: int


class Typing(PeerLinked):
    """Takes typing from devices and links; delivers it to devices and links."""

    frame_kind = "typing"

    def __init__(
        self,
        config: NodeConfig,
        node_id: str,
        hub: Hub,
        resolver: Resolver,
        groups: GroupMembers,
        blocks: BlockLists | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        super().__init__()
        self._config = config
        self._node_id = node_id
        self._hub = hub
        self._resolver = resolver
        self._groups = groups
        self._blocks = blocks
        self._clock = clock
        self._buckets: weakref.WeakKeyDictionary[Any, TokenBucket] = weakref.WeakKeyDictionary()
        #: (typist, conversation) -> when the start runs out.
        self._active: dict[tuple[str, Target], float] = {}
        self._armed = trio.Event()
        #: peer node id -> conversation -> typist -> latest state.
        self._pending: dict[str, dict[_LinkConv, dict[UserAddress, str]]] = {}
        self._nursery: trio.Nursery | None = None
        self._received = self._dropped = self._expired = self._delivered = 0
        self._frames_sent = self._frames_received = self._refused = 0

    def statistics(self) -> TypingStats:
        return TypingStats(
            self._received,
            self._dropped,
            self._expired,
            self._delivered,
            self._frames_sent,
            self._frames_received,
            self._refused,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._expire_forever()

    # ------------------------------------------------------------ devices
    def from_device(self, user: str, device: object, conv: str, state: str) -> None:
        """A ``typing`` frame from ``device`` (its session) of local ``user``."""
        self._received += 1
        now = self._clock()
        if state == "start":
            bucket = self._buckets.get(device)
            if bucket is None:
                rate = 1.0 / max(0.001, self._config.typing_min_interval)
                bucket = self._buckets[device] = TokenBucket(rate, START_BURST, now)
            if bucket.take(now) > 0:
                self._dropped += 1
                return
        target = self._resolve(conv)
        me = UserAddress(user, self._node_id)
        if isinstance(target, GroupAddress):
            info = self._groups.info(target)
            if info is None or f"{user}@{self._node_id}" not in info.members:
                raise ProtocolError(ErrorCode.FORBIDDEN, "you are not a member of this group")
        elif target == me:
            return
        elif self._blocks is not None and self._blocks.blocks(user, target):
            return  # a blocker's typing never goes to the user they blocked
        key = (user, target)
        if state == "start":
            if not self._active:
                self._armed.set()
            self._active[key] = now + self._config.typing_expiry
        elif self._active.pop(key, None) is None:
            return  # not typing there: nothing to stop
        self._emit(me, target, state)

    def message_sent(self, user: str, to: str) -> None:
        """``user`` sent a message to ``to``: their typing there ends (the
        receivers clear it when the message arrives; no ``stop`` is sent)."""
        if not self._active:
            return
        try:
            target = self._resolve(to)
        except ProtocolError:
            return
        self._active.pop((user, target), None)

    def _resolve(self, conv: str) -> Target:
        if conv.startswith("#"):
            return self._resolver.resolve_group(conv)
        return self._resolver.resolve_user(conv)

    # ------------------------------------------------------------ fan-out
    def _emit(self, typist: UserAddress, target: Target, state: str) -> None:
        if isinstance(target, UserAddress):
            if target.node == self._node_id:
                self._deliver(target.user, f"{typist.user}@{typist.node}", typist, state)
            else:
                self._queue(target.node, (target.user, ""), typist, state)
            return
        self._group(target, typist, state, came_from=None)

    def _group(
        self, group: GroupAddress, typist: UserAddress, state: str, came_from: str | None
    ) -> None:
        info = self._groups.info(group)
        if info is None:
            return
        conv = f"#{group.name}@{group.host}"
        nodes: set[str] = set()
        for member in info.members:
            user, _, node = member.partition("@")
            if node == self._node_id:
                if user != typist.user or node != typist.node:
                    self._deliver(user, conv, typist, state)
            else:
                nodes.add(node)
        if group.host == self._node_id:
            # The host forwards once to every other member node.
            for node in sorted(nodes - {typist.node, came_from or ""}):
                self._queue(node, group, typist, state)
        elif typist.node == self._node_id:
            self._queue(group.host, group, typist, state)

    def _deliver(self, user: str, conv: str, typist: UserAddress, state: str) -> None:
        if self._blocks is not None and self._blocks.blocks(user, typist):
            return
        address = {"u": typist.user, "n": typist.node}
        label = self._resolver.node_label(typist.node)
        if label:
            address["name"] = label
        self._hub.offer(user, typing_frame(conv, address, state))
        self._delivered += 1

    def _queue(self, node: str, conv: _LinkConv, typist: UserAddress, state: str) -> None:
        if not self._is_linked(node_id_bytes(node)):
            return  # soft state: nobody to tell now, and nothing is kept
        first = node not in self._pending
        self._pending.setdefault(node, {}).setdefault(conv, {})[typist] = state
        if first and self._nursery is not None:
            self._nursery.start_soon(self._flush_after, node)

    async def _flush_after(self, node: str) -> None:
        # Changes in the window share a frame per conversation (latest state wins).
        await trio.sleep(self._config.typing_flush)
        convs = self._pending.pop(node, {})
        key = node_id_bytes(node)
        for conv, typists in convs.items():
            items = [TypingItem(a.user, a.node, s) for a, s in typists.items()]
            for start in range(0, len(items), MAX_TYPING_ITEMS):
                chunk = tuple(items[start : start + MAX_TYPING_ITEMS])
                if isinstance(conv, GroupAddress):
                    frame = TypingUpdate(None, conv, chunk)
                else:
                    frame = TypingUpdate(conv[0], None, chunk)
                await self._send_quietly(key, frame)

    async def _send_quietly(self, key: bytes, frame: LinkFrame) -> None:
        # A lost frame is soft state: it expires at the clients.
        if await self._send_soft(key, frame):
            self._frames_sent += 1

    # ------------------------------------------------------------ links
    def on_frame(self, key: bytes, frame: TypingUpdate) -> None:
        """A ``typing`` frame from a linked peer (checked by protocol/link.py)."""
        self._frames_received += 1
        peer = node_id_text(key)
        if frame.to is not None:
            for item in frame.items:
                if item.node != peer:
                    self._refused += 1
                    continue
                typist = UserAddress(item.user, item.node)
                self._deliver(frame.to, f"{item.user}@{item.node}", typist, item.state)
            return
        group = frame.group
        assert group is not None
        if group.host != self._node_id and group.host != peer:
            self._refused += len(frame.items)
            return
        info = self._groups.info(group) if group.host == self._node_id else None
        for item in frame.items:
            typist = UserAddress(item.user, item.node)
            if info is not None and (
                item.node != peer or f"{item.user}@{item.node}" not in info.members
            ):
                self._refused += 1  # the host takes a member's typing from its node only
                continue
            self._group(group, typist, item.state, came_from=peer)

    # ------------------------------------------------------------ expiry
    async def _expire_forever(self) -> None:
        while True:
            if not self._active:
                self._armed = trio.Event()
                await self._armed.wait()
                continue
            # Every start gets the same expiry, so a later one never runs out
            # before the soonest known now: sleeping until it is enough.
            await trio.sleep_until(min(self._active.values()))
            now = self._clock()
            for key, deadline in list(self._active.items()):
                if deadline <= now:
                    del self._active[key]
                    self._expired += 1
                    user, target = key
                    self._emit(UserAddress(user, self._node_id), target, "stop")
