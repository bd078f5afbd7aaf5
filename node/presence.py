"""Presence: who is online, published to contacts, coalesced per remote node.

A user is online while any of their devices is connected (a device silent
past the heartbeat deadline is dropped), and offline after a short grace once
the last one goes. The home node keeps ``status`` and ``last_active_at`` (in
LMDB) and publishes changes to the user's watchers: local contacts directly,
and each remote node that watches through **one** subscription per (watcher
node, watched user), however many of its users watch; that node fans out.

Presence is soft state: sent only on live links, coalesced to the latest
value per user, a link-up resends the whole subscription set and gets a
snapshot, and a link down past the silence timeout marks that node's users
offline at the watcher.

On demand (``presence_query``, sent by a client when it opens a group): a
remote user nobody here watches is followed for ``presence_query_ttl``
seconds through the same ``sub``/``unsub`` frames, a **lease** of this node on
that user, renewed by each ask. The users who asked hear its changes while
it lasts. However many viewers open the group, the remote node sees one
subscription per (node, user), so the cost is per node, not per viewer.

Presence items also carry the user's display name (``dn``, from the profile),
so a name set on one node is shown on every node that follows the user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cbor2
import trio

from chinwag.protocol.addresses import UserAddress, node_id_bytes, node_id_text, parse_target
from chinwag.protocol.errors import ProtocolError
from chinwag.protocol.link import LinkFrame, PresenceItem, PresenceUpdate, Sub, Unsub

from .config import NodeConfig
from .hub import Hub
from .identity import NodeIdentity
from .peer_link import PeerLinked
from .store import Store, WriteTxn

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"
MAX_SUB_USERS = 1024
MAX_SUBS_PER_PEER = 100_000

Watched = tuple[str, str]  # (user, node id)


class BlockLists(Protocol):
    """What presence needs from the users' block lists (node/blocks.py)."""

    def blocks(self, blocker: str, sender: UserAddress) -> bool: ...
    def hidden_from(self, user: str, node_id: str) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class PresenceState:
    status: str
    last_active_at: int | None
    #: From the user's profile; "" when none is set (or not known yet).
    display_name: str = ""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "last_active_at": self.last_active_at}
        if self.display_name:
            out["display_name"] = self.display_name
        return out


UNKNOWN = PresenceState(OFFLINE, None)


@dataclass
class PresenceStats:
    subscriptions_sent: int = 0
    subscriptions_received: int = 0
    updates_sent: int = 0
    updates_received: int = 0
    #: Remote users followed on demand now, and the subscriptions they cost.
    leases: int = 0
    lease_subscriptions: int = 0


class Presence(PeerLinked):
    """Keeps and publishes presence; the federation hands it link events."""

    frame_kind = "presence"

    def __init__(
        self,
        config: NodeConfig,
        identity: NodeIdentity,
        store: Store,
        hub: Hub,
        resolve_node: Callable[[str | None], str],
        node_label: Callable[[str], str | None],
        now_ms: Callable[[], int],
        blocks: BlockLists | None = None,
    ) -> None:
        super().__init__()
        self._config = config
        self._blocks = blocks
        #: Per remote user: the users here it blocked (shown it as offline).
        self._remote_hidden: dict[Watched, frozenset[str]] = {}
        self._identity = identity
        self._store = store
        self._hub = hub
        self._resolve_node = resolve_node
        self._node_label = node_label
        self._now_ms = now_ms
        self._local: dict[str, PresenceState] = {}
        self._remote: dict[Watched, PresenceState] = {}
        self._watchers: dict[Watched, set[str]] = {}
        #: Contacts whose node label is not pinned yet: label -> {(watcher, address)}.
        #: They are watched as soon as the label is pinned (name_pinned).
        self._unresolved: dict[str, set[tuple[str, str]]] = {}
        self._subscribers: dict[str, set[bytes]] = {}
        #: On-demand follows of remote users: until when (ms), and who asked.
        self._leases: dict[Watched, int] = {}
        self._askers: dict[Watched, set[str]] = {}
        self._outgoing: dict[bytes, dict[str, PresenceState]] = {}
        self._wake = trio.Event()
        self._grace: dict[str, trio.CancelScope] = {}
        self._down: dict[bytes, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self.stats = PresenceStats()

    # ------------------------------------------------------------ wiring
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for record in self._store.list_users():
            for address in self._store.list_contacts(record.name):
                self._watch(record.name, address)
        self._hub.observe_presence(self._device_change)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                nursery.start_soon(self._expire_leases)
                await self._flusher()
        finally:
            # Links still ending during shutdown report link_down after this.
            self._nursery = None

    # ------------------------------------------------------------ local state
    def state_of_local(self, user: str) -> PresenceState:
        state = self._local.get(user)
        if state is None:
            raw = self._store.read(lambda view: _get_presence(view, view.get_user(user)))
            state = self._local[user] = raw or UNKNOWN
            record = self._store.get_user(user)
            if record is not None and record.display_name:
                state = self._local[user] = replace(state, display_name=record.display_name)
            if state.status == ONLINE and not self._hub.is_online(user):
                # Stored as online by a node that crashed: it is not online now.
                state = self._local[user] = replace(state, status=OFFLINE)
        return state

    def state_of(self, user: str, node_id: str) -> PresenceState:
        if node_id == self._identity.id:
            return self.state_of_local(user)
        return self._remote.get((user, node_id), UNKNOWN)

    def state_of_address(self, address: str, viewer: str | None = None) -> PresenceState:
        """The state of ``address`` as local user ``viewer`` may see it."""
        watched = self._parse(address)
        if watched is None or (viewer is not None and self._hides(viewer, *watched)):
            return UNKNOWN
        return self.state_of(*watched)

    def _hides(self, watcher: str, user: str, node_id: str) -> bool:
        """Whether ``user@node_id`` must look offline to local ``watcher``:
        either blocked the other (node/blocks.py)."""
        if self._blocks is None:
            return False
        ours = self._identity.id
        if self._blocks.blocks(watcher, UserAddress(user, node_id)):
            return True
        if node_id == ours:
            return self._blocks.blocks(user, UserAddress(watcher, ours))
        return watcher in self._remote_hidden.get((user, node_id), ())

    def block_changed(self, blocker: str, address: UserAddress, blocked: bool) -> None:
        """``blocker`` (local) blocked or unblocked ``address``: show both
        sides the presence they may now see."""
        ours = self._identity.id
        watched = (address.user, address.node)
        if blocker in self._watchers.get(watched, ()):
            self._publish(address.user, address.node, self.state_of(*watched), {blocker})
        if address.node == ours:
            if address.user in self._watchers.get((blocker, ours), ()):
                self._publish(blocker, ours, self.state_of_local(blocker), {address.user})
            return
        key = node_id_bytes(address.node)
        if key in self._subscribers.get(blocker, ()):
            self._outgoing.setdefault(key, {})[blocker] = self.state_of_local(blocker)
            self._wake.set()

    def _device_change(self, user: str, online: bool) -> None:
        if online:
            scope = self._grace.pop(user, None)
            if scope is not None:
                scope.cancel()
            current = self.state_of_local(user)
            if current.status != ONLINE:
                self._set_local(
                    user, replace(current, status=ONLINE, last_active_at=self._now_ms())
                )
        elif self._nursery is not None and user not in self._grace:
            try:
                self._nursery.start_soon(self._offline_after_grace, user)
            except RuntimeError:
                # The node is shutting down (its nursery takes no new tasks);
                # a stored "online" is read as offline at the next start.
                pass

    async def _offline_after_grace(self, user: str) -> None:
        with trio.CancelScope() as scope:
            self._grace[user] = scope
            await trio.sleep(self._config.presence_grace)
            if not self._hub.is_online(user):
                offline = replace(self.state_of_local(user), status=OFFLINE)
                self._set_local(user, replace(offline, last_active_at=self._now_ms()))
        if self._grace.get(user) is scope:
            del self._grace[user]

    def _set_local(self, user: str, state: PresenceState) -> None:
        self._local[user] = state
        if self._nursery is not None:
            self._nursery.start_soon(self._persist, user, state)
        self._publish(user, self._identity.id, state)
        for peer in self._subscribers.get(user, ()):
            self._outgoing.setdefault(peer, {})[user] = state
        self._wake.set()

    def profile_changed(self, user: str, display_name: str) -> None:
        """``user`` set a display name: their watchers and subscribers hear it."""
        current = self.state_of_local(user)
        if current.display_name != display_name:
            self._set_local(user, replace(current, display_name=display_name))

    async def _persist(self, user: str, state: PresenceState) -> None:
        def op(w: WriteTxn) -> None:
            record = w.get_user(user)
            if record is not None:
                w.txn.put(
                    record.uid.to_bytes(4, "big"),
                    cbor2.dumps({"s": state.status, "l": state.last_active_at}),
                    db=w.db("presence"),
                )

        try:
            await self._store.transact(op)
        except ProtocolError as exc:
            log.info("presence of %s not persisted: %s", user, exc.message)

    def _publish(
        self, user: str, node_id: str, state: PresenceState, to: set[str] | None = None
    ) -> None:
        """Offer ``state`` to the watchers of ``user@node_id`` (or to ``to`` only)."""
        if to is None:
            watchers = self._watchers.get((user, node_id), set()) | self._askers.get(
                (user, node_id), set()
            )
        else:
            watchers = to
        if not watchers:
            return
        address: dict[str, str] = {"u": user, "n": node_id}
        label = self._node_label(node_id)
        if label:
            address["name"] = label
        frame = {"t": "presence", "user": address, **state.to_wire()}
        hidden: dict[str, Any] | None = None
        for watcher in watchers:
            if self._hides(watcher, user, node_id):
                if hidden is None:
                    hidden = {"t": "presence", "user": address, **UNKNOWN.to_wire()}
                self._hub.offer(watcher, hidden)
            else:
                self._hub.offer(watcher, frame)

    # ------------------------------------------------------------ contacts
    def _parse(self, address: str) -> Watched | None:
        try:
            target = parse_target(address)
            if target.is_group:
                return None  # presence is of users
            return target.name, self._resolve_node(target.node)
        except ProtocolError:
            return None

    def contact_added(self, watcher: str, address: str) -> None:
        self._watch(watcher, address)

    def name_pinned(self, label: str) -> None:
        """A node label was pinned: watch the contacts that were waiting for it."""
        for watcher, address in sorted(self._unresolved.pop(label, ())):
            self._watch(watcher, address)

    def contact_removed(self, watcher: str, address: str) -> None:
        label = _label_of(address)
        if label is not None and label in self._unresolved:
            self._unresolved[label].discard((watcher, address))
            if not self._unresolved[label]:
                del self._unresolved[label]
        watched = self._parse(address)
        if watched is None:
            return
        watchers = self._watchers.get(watched)
        if watchers is None:
            return
        watchers.discard(watcher)
        if not watchers:
            del self._watchers[watched]
            user, node_id = watched
            if node_id != self._identity.id and watched not in self._leases:
                self._remote.pop(watched, None)
                self._queue_frame(node_id, Unsub((user,)))

    def _watch(self, watcher: str, address: str) -> None:
        watched = self._parse(address)
        if watched is None:
            label = _label_of(address)
            if label is not None:
                self._unresolved.setdefault(label, set()).add((watcher, address))
            return
        first = watched not in self._watchers
        self._watchers.setdefault(watched, set()).add(watcher)
        user, node_id = watched
        if node_id == self._identity.id:
            self._publish(user, node_id, self.state_of_local(user), {watcher})
        elif first and watched in self._leases:
            # Followed on demand already (subscribed): the state is known here,
            # and the remote node would not send it again until it changes.
            if watched in self._remote:
                self._publish(user, node_id, self._remote[watched], {watcher})
        elif first:
            # One subscription per (this node, watched user), however many
            # watch; its snapshot is published to every watcher by then.
            self._queue_frame(node_id, Sub((user,)))
        elif watched in self._remote:
            # Watched already: the status is known here and will not be sent
            # again until it changes, so the new watcher is told now.
            self._publish(user, node_id, self._remote[watched], {watcher})

    def _queue_frame(self, node_id: str, frame: Sub | Unsub) -> None:
        key = node_id_bytes(node_id)
        if self._nursery is not None and self._send is not None and self._is_linked(key):
            if isinstance(frame, Sub):
                self.stats.subscriptions_sent += len(frame.users)
            self._nursery.start_soon(self._send_quietly, key, frame)

    async def _send_quietly(self, key: bytes, frame: LinkFrame) -> None:
        # A lost frame is soft state: the next link-up resends it all.
        await self._send_soft(key, frame)

    # ------------------------------------------------------------ links
    def link_up(self, key: bytes) -> None:
        node_id = node_id_text(key)
        scope = self._down.pop(key, None)
        if scope is not None:
            scope.cancel()
        followed = set(self._watchers) | set(self._leases)
        users = sorted(u for (u, n) in followed if n == node_id)
        for start in range(0, len(users), MAX_SUB_USERS):
            chunk = users[start : start + MAX_SUB_USERS]
            self._queue_frame(node_id, Sub(tuple(chunk), reset=start == 0))

    def link_down(self, key: bytes) -> None:
        for subscribers in self._subscribers.values():
            subscribers.discard(key)
        self._outgoing.pop(key, None)
        if self._nursery is not None and key not in self._down:
            self._nursery.start_soon(self._offline_after_silence, key)

    async def _offline_after_silence(self, key: bytes) -> None:
        node_id = node_id_text(key)
        with trio.CancelScope() as scope:
            self._down[key] = scope
            await trio.sleep(self._config.presence_timeout)
            for (user, node), state in list(self._remote.items()):
                if node == node_id and state.status == ONLINE:
                    offline = PresenceState(OFFLINE, state.last_active_at)
                    self._remote[user, node] = offline
                    self._publish(user, node, offline)
        if self._down.get(key) is scope:
            del self._down[key]

    def on_frame(self, key: bytes, frame: Sub | Unsub | PresenceUpdate) -> None:
        """A ``sub``, ``unsub`` or ``presence`` frame from a linked peer
        (already checked by protocol/link.py)."""
        if isinstance(frame, PresenceUpdate):
            node_id = node_id_text(key)
            for item in frame.items:
                watched = (item.user, node_id)
                if watched not in self._watchers and watched not in self._leases:
                    continue
                state = PresenceState(item.status, item.last_active_at, item.display_name)
                self.stats.updates_received += 1
                hide = frozenset(item.hide)
                watched = (item.user, node_id)
                if self._remote.get(watched) != state or self._remote_hidden.get(watched) != hide:
                    self._remote[watched] = state
                    if hide:
                        self._remote_hidden[watched] = hide
                    else:
                        self._remote_hidden.pop(watched, None)
                    self._publish(item.user, node_id, state)
            return
        if isinstance(frame, Sub):
            if frame.reset:
                for subscribers in self._subscribers.values():
                    subscribers.discard(key)
            snapshot = self._outgoing.setdefault(key, {})
            for user in frame.users:
                if self._store.get_user(user) is None:
                    continue
                subscribers = self._subscribers.setdefault(user, set())
                if len(subscribers) >= MAX_SUBS_PER_PEER:
                    continue
                subscribers.add(key)
                self.stats.subscriptions_received += 1
                snapshot[user] = self.state_of_local(user)
            self._wake.set()
        else:
            for user in frame.users:
                self._subscribers.get(user, set()).discard(key)

    # ------------------------------------------------------------ on demand
    def query(self, asker: str, addresses: list[str]) -> list[tuple[Watched, PresenceState]]:
        """What is known now of each address; remote users nobody here follows
        are followed for a while (one ``sub`` per node for all of them), and
        ``asker`` gets ``presence`` frames as their states arrive."""
        now = self._now_ms()
        until = now + int(self._config.presence_query_ttl * 1000)
        out: list[tuple[Watched, PresenceState]] = []
        wanted: dict[str, list[str]] = {}
        for address in addresses:
            watched = self._parse(address)
            if watched is None:
                continue
            user, node_id = watched
            hidden = self._hides(asker, user, node_id)  # a block: shown offline
            out.append((watched, UNKNOWN if hidden else self.state_of(user, node_id)))
            if node_id == self._identity.id or watched in self._watchers:
                continue  # known here already, and kept up to date
            if watched not in self._leases:
                if len(self._leases) >= self._config.presence_query_max:
                    continue
                wanted.setdefault(node_id, []).append(user)
            self._leases[watched] = until
            self._askers.setdefault(watched, set()).add(asker)
        for node_id, users in wanted.items():
            for start in range(0, len(users), MAX_SUB_USERS):
                chunk = tuple(users[start : start + MAX_SUB_USERS])
                self.stats.lease_subscriptions += len(chunk)
                self._queue_frame(node_id, Sub(chunk))
        self.stats.leases = len(self._leases)
        return out

    async def _expire_leases(self) -> None:
        """End on-demand follows nobody asked for again within the TTL."""
        while True:
            await trio.sleep(max(self._config.presence_query_ttl / 4, 0.05))
            now = self._now_ms()
            ended: dict[str, list[str]] = {}
            for watched, until in list(self._leases.items()):
                if until > now:
                    continue
                del self._leases[watched]
                self._askers.pop(watched, None)
                if watched in self._watchers:
                    continue  # a contact now: followed the usual way
                self._remote.pop(watched, None)
                ended.setdefault(watched[1], []).append(watched[0])
            for node_id, users in ended.items():
                for start in range(0, len(users), MAX_SUB_USERS):
                    self._queue_frame(node_id, Unsub(tuple(users[start : start + MAX_SUB_USERS])))
            self.stats.leases = len(self._leases)

    def subscribers_of(self, user: str) -> int:
        return len(self._subscribers.get(user, ()))

    async def _flusher(self) -> None:
        """Send coalesced updates: per peer, the latest state of each user."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            outgoing, self._outgoing = self._outgoing, {}
            for key, states in outgoing.items():
                if not states or self._send is None or not self._is_linked(key):
                    continue
                node_id = node_id_text(key)
                items = [
                    PresenceItem(
                        u,
                        s.status,
                        s.last_active_at,
                        s.display_name,
                        self._hidden_at(u, node_id),
                    )
                    for u, s in states.items()
                ]
                for chunk in _chunks(items):
                    self.stats.updates_sent += len(chunk)
                    await self._send_quietly(key, PresenceUpdate(chunk))

    def _hidden_at(self, user: str, node_id: str) -> tuple[str, ...]:
        if self._blocks is None:
            return ()
        return self._blocks.hidden_from(user, node_id)[: MAX_SUB_USERS - 1]


def _chunks(items: list[PresenceItem]) -> list[tuple[PresenceItem, ...]]:
    """Items in frames of at most MAX_SUB_USERS names (users and hides)."""
    out: list[tuple[PresenceItem, ...]] = []
    chunk: list[PresenceItem] = []
    names = 0
    for item in items:
        size = 1 + len(item.hide)
        if chunk and names + size > MAX_SUB_USERS:
            out.append(tuple(chunk))
            chunk, names = [], 0
        chunk.append(item)
        names += size
    if chunk:
        out.append(tuple(chunk))
    return out


def _label_of(address: str) -> str | None:
    """The node label of a well-formed contact address that did not resolve."""
    try:
        target = parse_target(address)
    except ProtocolError:
        return None
    return target.node if target.node and not target.is_group else None


def _get_presence(view: Any, record: Any) -> PresenceState | None:
    if record is None:
        return None
    raw = view.txn.get(record.uid.to_bytes(4, "big"), db=view.db("presence"))
    if raw is None:
        return None
    item = cbor2.loads(raw)
    return PresenceState(item["s"], item["l"], record.display_name)
