"""The composition root: builds every service of a node and runs them.

This is the only module that knows every service; each service gets the few
collaborators it needs in its constructor.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from chinwag.protocol.address_record import MAX_RECORD_URLS
from chinwag.protocol.addresses import node_id_bytes
from chinwag.protocol.envelope import check_public_key
from chinwag.protocol.errors import ProtocolError
from chinwag.protocol.fingerprint import fingerprint
from chinwag.protocol.frames import WireFormat

from .actions import ActionOps
from .admin import AdminOps, AdminServer
from .admission import Ticket
from .blob_fetch import BlobLinks
from .blob_http import BlobRoutes
from .blobs import BlobService
from .blocks import Blocks
from .config import NodeConfig
from .dialcheck import Resolver
from .discovery import DiscoveredNode, Discovery
from .federation import Federation, FederationRegistry
from .group_ops import GroupOps
from .group_sync import GroupSync
from .groups import Groups
from .history_ops import HistoryOps
from .http_api import HttpApi
from .hub import Hub
from .identity import NodeIdentity, ensure_data_dir, load_or_init_identity
from .introductions import IntroductionService, set_trust_introductions
from .invitations import InvitationDesk, Invitations, InvitedPeers
from .logs import event
from .metrics import Metrics
from .passwords import KdfCost, PasswordHasher
from .peers import BLOCKED, TRUSTED, PeerRegistry, check_url
from .presence import Presence
from .push import Push
from .quota import QuotaPolicy
from .readbudget import ReadBudgets
from .receipts import ReceiptService
from .relay import Relay
from .router import Router
from .seeds import read_peers_file
from .server import Server
from .sessions import DeviceSession
from .signals import Signals, SoftLinks
from .store import Store
from .typing import Typing
from .version import VERSION
from .webclient import WebClient

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


#: Hosts that mean "every interface".
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def interface_addresses() -> list[str]:
    """Every IP address of this machine's interfaces (IPv6 without scope)."""
    import ifaddr  # zeroconf's own dependency

    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            out.append(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return out


def _usable_from_elsewhere(text: str, family: int) -> bool:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return ip.version == family and not (
        ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast
    )


def advertised_urls(
    host: str,
    port: int,
    public_urls: tuple[str, ...] = (),
    addresses: Callable[[], list[str]] = interface_addresses,
    scheme: str = "http",
) -> list[str]:
    """The URLs this node puts in its gossiped address record.

    * ``public_urls`` (``NodeConfig.public_urls``), when configured: exactly those.
    * A wildcard host (``0.0.0.0``, ``::``): a URL per non-loopback,
      non-link-local interface address of that family (``::`` gives IPv4
      and IPv6), never a loopback one, since a peer that dialled it would reach
      itself. No such address: nothing is advertised.
    * Any other host (an address, loopback included, or a name): that host.

    At most :data:`~chinwag.protocol.address_record.MAX_RECORD_URLS`.
    """
    if public_urls:
        urls = [check_url(url) for url in public_urls]
    elif host in WILDCARD_HOSTS:
        families = (4,) if host == "0.0.0.0" else (4, 6)
        try:
            found = addresses()
        except Exception:  # no interface list: advertise nothing rather than fail
            log.exception("cannot list this machine's addresses")
            found = []
        urls = []
        for family in families:
            for text in found:
                if _usable_from_elsewhere(text, family):
                    shown = f"[{text}]" if family == 6 else text
                    urls.append(f"{scheme}://{shown}:{port}")
    else:
        shown = f"[{host}]" if ":" in host else host
        urls = [f"{scheme}://{shown}:{port}"]
    return list(dict.fromkeys(urls))[:MAX_RECORD_URLS]


@dataclass(frozen=True)
class RunningNode:
    """What a started node tells its caller."""

    identity: NodeIdentity
    port: int
    url: str
    #: The ``--metrics-listen`` port, when /metrics has a listener of its own.
    metrics_port: int | None = None


@dataclass(frozen=True)
class NodeSeams:
    """What a test fixture may put in place of the real thing.

    Production code never builds one: a node made without it runs on the
    real clock, the real resolver and the real peer registry.
    """

    #: The wall clock (Unix ms) federation ages outbox entries by (and
    #: invitations expire by).
    federation_now_ms: Callable[[], int] = wall_clock_ms
    #: Name resolution for gossiped URLs (node/dialcheck.py).
    getaddrinfo: Resolver | None = None
    #: Wraps the peer registry federation links commit through.
    wrap_registry: Callable[[PeerRegistry], FederationRegistry] | None = None
    #: Argon2id cost of new password hashes; None is the production cost
    #: (test fixtures pass a cheap one: tests create many users).
    kdf_cost: KdfCost | None = None


class Node:
    """A chinwag node: store, hub, router, HTTP/WebSocket server."""

    def __init__(
        self,
        config: NodeConfig,
        identity: NodeIdentity | None = None,
        seams: NodeSeams | None = None,
    ) -> None:
        seams = seams or NodeSeams()
        ensure_data_dir(config.data_dir)
        self.config = config
        self.identity = identity or load_or_init_identity(config.data_dir)
        self.hub = Hub()
        self.store = Store(
            config.data_dir,
            self.identity.key,
            map_size=config.map_size,
            on_commit=self.hub.queues_grew,
            max_sessions_per_user=config.max_sessions_per_user,
            max_devices_per_user=config.max_devices_per_user,
            quota=QuotaPolicy(config.user_quota_bytes, int(config.user_quota_window * 1000)),
            min_free_bytes=config.min_free_bytes,
            ack_flush_delay=config.ack_flush_delay,
            search_stage_max=config.search_stage_max,
        )
        # A revoked session (logout, password change, user removal, eviction)
        # ends its live WebSockets too.
        self.store.on_revoked = self._sessions_revoked
        self.registry = PeerRegistry(
            self.store,
            outbox_max_entries=config.outbox_max_entries,
            outbox_max_bytes=config.outbox_max_bytes,
        )
        # Sends to other nodes go direct or through one relay (node/relay.py).
        self.relay = Relay(
            config,
            self.registry,
            self.identity.key.public,
            linked=lambda key: self.federation.is_linked(key),
            ever_linked=lambda key: self.federation.ever_linked(key),
            now_ms=seams.federation_now_ms,
        )
        self.store.remote_sink = self.relay
        self.registry.relay_inbound = self.relay.inbound
        self.registry.relay_refused = self.relay.refused
        self.router = Router(self.identity, self.store, wall_clock_ms, registry=self.registry)
        self.blocks = Blocks(
            self.store, self.router.resolve_user, self.router.display, config.max_blocks_per_user
        )
        self.presence = Presence(
            config,
            self.identity,
            self.store,
            self.hub,
            self.router.resolve_node,
            self.router.node_label,
            wall_clock_ms,
            blocks=self.blocks,
        )
        self.blocks.observe(self.presence.block_changed)
        link_registry = (
            self.registry if seams.wrap_registry is None else seams.wrap_registry(self.registry)
        )
        self.introductions = IntroductionService(
            self.identity,
            self.store,
            self.registry,
            seams.federation_now_ms,
            send=lambda key, frame: self.federation.send_to(key, frame),
            changed=self._introduced,
        )
        self.groups = Groups(self.identity, self.store, self.registry, config.group_cap)
        self.router.groups = self.groups
        self.invitations = Invitations(
            self.store, config.max_invitations, now_ms=seams.federation_now_ms
        )
        # Attachments: uploads, downloads, reclaim (node/blobs.py), and blobs
        # fetched from and served to other nodes (node/blob_fetch.py).
        self.blobs = BlobService(config, self.store)
        self.blob_links = BlobLinks(
            config,
            self.store,
            self.blobs.files,
            send=lambda key, frame: self.federation.send_to(key, frame),
            is_linked=lambda key: self.federation.is_linked(key),
        )
        self.store.on_blobs_wanted = self.blob_links.poke
        self.typing = Typing(
            config,
            self.identity.id,
            self.hub,
            self.router,
            self.groups,
            self.blocks,
        )
        self.receipts = ReceiptService(
            config, self.identity.id, self.store, self.hub, self.router, self.blocks
        )
        self.registry.on_delivered = self.receipts.delivered
        self.federation = Federation(
            config,
            self.identity,
            link_registry,
            presence=SoftLinks(self.presence, self.typing, self.receipts),
            now_ms=seams.federation_now_ms,
            getaddrinfo=seams.getaddrinfo,
            group_sync=GroupSync(self.identity, self.store, self.registry),
            admit=InvitedPeers(
                self.invitations,
                self.registry,
                self.invitations.now_ms,
                grant_introductions=self._grant_introductions,
            ).admit,
            introductions=self.introductions,
            blobs=self.blob_links,
        )
        # Every commit that grew a peer's outbox wakes that link.
        self.store.on_outbox = self.federation.outbox_grew
        self.presence.attach(self.federation.send_to, self.federation.is_linked)
        self.typing.attach(self.federation.send_to, self.federation.is_linked)
        self.receipts.attach(self.federation.send_to, self.federation.is_linked)
        self.group_ops = GroupOps(self.groups, self.router, self.presence)
        self.history_ops = HistoryOps(
            config,
            self.store,
            self.router,
            self.hub,
            self.identity.id,
            on_read=self.receipts.read_moved,
        )
        self.action_ops = ActionOps(
            self.store,
            self.identity.id,
            self.groups,
            seams.federation_now_ms,
            config.delete_window,
        )
        self.signals = Signals(self.typing, self.receipts, self.history_ops.canonical)
        self.passwords = PasswordHasher(
            seams.kdf_cost,
            threads=config.kdf_threads,
            # One thread must stay open to everyone: the reserve is at most threads - 1.
            reserved=max(0, min(config.kdf_reserved, config.kdf_threads - 1)),
            queue=config.kdf_queue,
        )
        self.api = HttpApi(
            config,
            self.identity,
            self.store,
            self.hub,
            presence=self.presence,
            passwords=self.passwords,
            invitations=self.invitations,
            profile_extras=self.receipts,
        )
        BlobRoutes(self.api, self.store, self.blobs).register()
        self.push = Push(config, self.store, self.hub, self.router.node_label)
        self.push.register_routes(self.api)
        self.blocks.register_routes(self.api)
        WebClient().register_routes(self.api)
        self.metrics = Metrics(self)
        if config.metrics_listen is None:
            self.api.add_route("GET", "/metrics", self.metrics.route)
        self.server = Server(config, self.api, self._on_websocket)
        self.read_budgets = ReadBudgets(config.read_rate, config.read_burst)
        self.admin = AdminServer(
            config.data_dir,
            AdminOps(
                self.store,
                status=self.status,
                registry=self.registry,
                poke=self.federation.poke,
                pending=self.federation.pending,
                invitations=InvitationDesk(
                    self.invitations,
                    self.identity,
                    self.registry,
                    self.federation,
                    self._invitation_url,
                    self.invitations.now_ms,
                ),
                links=self.federation.peer_status,
                request_introductions=self.introductions.request,
                user_removed=self._user_removed,
            ),
        )
        self.started_at = 0.0
        self._port = 0
        #: The URL printed at start (None until listening).
        self.url: str | None = None
        self._nursery: trio.Nursery | None = None

    def _user_removed(self, name: str) -> None:
        """A removed user's in-memory settings go (a new account may take the name)."""
        self.blocks.forget(name)
        self.receipts.forget(name)

    def _invitation_url(self) -> str:
        """Where an invitation tells the other side to go: the first advertised URL."""
        own = self.federation.own_urls
        return own[0] if own else self._url(self._port)

    def _sessions_revoked(self, token_hashes: frozenset[bytes]) -> None:
        log.info(
            "%d session(s) revoked",
            len(token_hashes),
            extra=event("sessions_revoked", count=len(token_hashes)),
        )
        self.hub.sessions_revoked(token_hashes)

    async def _grant_introductions(self, key: bytes) -> None:
        """A peer invitation made with ``--introductions`` was used by ``key``."""
        await set_trust_introductions(self.store, key, True)

    def _introduced(self, key: bytes, name: str) -> None:
        """An introducer's statement made ``key`` trusted here."""
        self.federation.poke(key)
        self.presence.name_pinned(name)

    def _load(self) -> tuple[int, int]:
        stats = self.hub.statistics()
        return stats.users_online, stats.connections

    def _discovered(self, node_id: str, node: DiscoveredNode | None) -> None:
        """mDNS saw a node: a hint only; its key is proven by the handshake."""
        if node is not None and self._nursery is not None:
            self._nursery.start_soon(self._learn, node)

    async def _learn(self, node: DiscoveredNode) -> None:
        try:
            key = check_public_key(node_id_bytes(node.node_id))
            if key == self.identity.key.public:
                return
            await self.registry.upsert(
                key,
                state=TRUSTED if self.config.trust_lan else None,
                urls=(node.url,),
                source="mdns",
                now_ms=wall_clock_ms(),
            )
        except ProtocolError as exc:
            log.info("ignoring discovered node %s: %s", node.node_id[:12], exc.message)
            return
        self.federation.poke(key)

    async def _load_seeds(self) -> None:
        """Seed peers (flags and DATA/peers) are trusted with their pinned key."""
        seeds = list(self.config.seeds) + read_peers_file(self.config.data_dir)
        for url, node_id in seeds:
            try:
                key = check_public_key(node_id_bytes(node_id))
                if key == self.identity.key.public:
                    continue
                record = self.registry.get(key)
                state = None if record is not None and record.state == BLOCKED else TRUSTED
                await self.registry.upsert(
                    key, state=state, urls=(url,), source="seed", now_ms=wall_clock_ms()
                )
            except ProtocolError as exc:
                # One seed that cannot be taken must not keep the node down.
                log.error("seed peer %s not added: %s", node_id[:12], exc.message)

    def status(self) -> dict[str, Any]:
        """What ``chinwag status`` shows: a view over the services' statistics."""
        hub = self.hub.statistics()
        store = self.store.statistics()
        queues = []
        for record in self.store.list_users():
            head = self.store.queue_head(record.name)
            devices = self.store.list_devices(record.name)
            behind = max((head - d.acked for d in devices), default=0)
            queues.append({"user": record.name, "head": head, "max_unacked": behind})
        return {
            "node_id": self.identity.id,
            "name": self.identity.name,
            "fingerprint": fingerprint(self.identity.key.public),
            "version": VERSION,
            # Who holds the data directory, for a second `run` that finds it in use.
            "pid": os.getpid(),
            "url": self.url,
            "uptime_s": round(trio.current_time() - self.started_at, 1),
            "connections": hub.connections,
            "users_online": hub.users_online,
            "users": store.users,
            "queues": queues,
            "store": {
                "commits": store.commits,
                "ops": store.ops,
                "largest_batch": store.largest_batch,
                "pending": store.pending,
                "map_size": store.map_size,
            },
            "peers": self.federation.peer_status(),
            "passwords": dataclasses.asdict(self.passwords.statistics()),
            "federation": dataclasses.asdict(self.federation.statistics()),
            "introductions": dataclasses.asdict(self.introductions.statistics()),
            "relay": dataclasses.asdict(self.relay.statistics()),
            "gossip": dataclasses.asdict(self.federation.gossip_statistics()),
            "blobs": {
                **dataclasses.asdict(self.blobs.statistics()),
                "links": dataclasses.asdict(self.blob_links.statistics()),
            },
            "actions": dataclasses.asdict(self.store.action_stats.view()),
            "typing": dataclasses.asdict(self.typing.statistics()),
            "receipts": dataclasses.asdict(self.receipts.statistics()),
        }

    async def _on_websocket(
        self, ws: WebSocketConnection, fmt: WireFormat | None, path: str, ticket: Ticket
    ) -> None:
        if path == "/federation":
            await self.federation.accept(ws, on_authenticated=ticket.link_authenticated)
            return
        if fmt is None:
            return
        session = DeviceSession(
            ws,
            fmt,
            self.config,
            self.identity,
            self.store,
            self.hub,
            self.router,
            budgets=self.read_budgets,
            on_authenticated=ticket.authenticated,
        )
        session.group_ops = self.group_ops
        session.history_ops = self.history_ops
        session.action_ops = self.action_ops
        session.signals = self.signals
        self.hub.connections += 1
        try:
            await session.run()
        finally:
            self.hub.connections -= 1

    async def run(
        self, *, task_status: trio.TaskStatus[RunningNode] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the store, listen, and report the URL once ready."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.store.run)
            await self._load_seeds()
            await nursery.start(self.presence.run)
            await nursery.start(self.typing.run)
            await nursery.start(self.receipts.run)
            await nursery.start(self.push.run)
            await nursery.start(self.blobs.run)
            await nursery.start(self.admin.run)
            port = await nursery.start(self.server.run)
            self._port = port
            self.federation.advertise(
                advertised_urls(
                    self.config.host, port, self.config.public_urls, scheme=self.config.scheme
                )
            )
            if not self.federation.own_urls:
                log.info("no usable address to advertise: peers must be told this node's URL")
            await nursery.start(self.federation.run)
            await nursery.start(self.relay.run)
            await nursery.start(self.blob_links.run)
            if self.config.mdns:
                self._nursery = nursery
                discovery = Discovery(
                    node_id=self.identity.id,
                    name=self.identity.name,
                    port=port,
                    host=self.config.host,
                    tls=self.config.tls_cert is not None,
                    interfaces=self.config.mdns_interfaces,
                    load=self._load,
                    on_change=self._discovered,
                )
                await nursery.start(discovery.run)
            if self.config.metrics_listen is not None:
                host, wanted = self.config.metrics_listen
                metrics_port = await nursery.start(self.metrics.serve, host, wanted)
            else:
                metrics_port = None
            self.started_at = trio.current_time()
            url = self.url = self._url(port)
            log.info(
                "chinwag %s node %s (%s) started at %s",
                VERSION,
                self.identity.name,
                self.identity.id,
                url,
                extra=event(
                    "node_started",
                    version=VERSION,
                    node_id=self.identity.id,
                    node_name=self.identity.name,
                    url=url,
                ),
            )
            task_status.started(RunningNode(self.identity, port, url, metrics_port))
            try:
                await trio.sleep_forever()
            finally:
                log.info(
                    "chinwag %s node %s stopping (was at %s)",
                    VERSION,
                    self.identity.name,
                    url,
                    extra=event("node_stopped", version=VERSION, url=url),
                )

    def _url(self, port: int) -> str:
        """The URL to open on this machine (printed at start; not advertised)."""
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        if host in WILDCARD_HOSTS:
            shown = "127.0.0.1"
        return f"{self.config.scheme}://{shown}:{port}"
