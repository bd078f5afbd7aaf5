"""LAN discovery with mDNS (zeroconf): announce this node, browse for others.

What mDNS says is only a hint: a discovered node is a URL and a claimed id;
nothing is trusted until its key is proven in the federation handshake.

zeroconf runs its own threads (its event loop and the browser's handler
thread). Its callbacks reach trio through one small wrapper, ``_Bridge``, that
never raises and drops events when the bounded channel is full. Every other
call into zeroconf runs in a worker thread with a bounded time.

Interfaces: ``None`` (or empty) means zeroconf's default, every interface;
except that a node listening on one address (not a wildcard) announces and
browses only on that address's interface, so a loopback-only node never tells
the LAN about a service the LAN cannot reach.
Interfaces given by name or address that cannot be resolved are an error,
never a silent fallback to every interface.

TXT record of ``_chinwag._tcp.local.``::

    id=<node id text>  name=<node name>  v=<protocol>  path=/
    users=<users online>  conns=<connections>
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from chinwag.protocol.addresses import check_node_name, is_node_id_text
from chinwag.protocol.errors import ProtocolError

log = logging.getLogger(__name__)

SERVICE_TYPE = "_chinwag._tcp.local."
PROTOCOL_VERSION = 1
#: How often the TXT record's load is compared with the node's and re-sent.
REANNOUNCE_EVERY = 10.0
#: One service lookup (SRV/TXT/addresses) waits at most this long.
RESOLVE_TIMEOUT_MS = 2000
#: zeroconf callbacks waiting for the trio side; more are dropped (and counted).
EVENT_QUEUE = 256
#: Service names tracked at once: a LAN flooding announcements cannot grow memory.
MAX_SERVICES = 256
#: Lookups in flight at once (each one holds a worker thread).
RESOLVERS = 4
#: Unregistering (goodbye packets) and closing zeroconf take at most this long.
CLOSE_TIMEOUT = 5.0

_INT = re.compile(r"[0-9]{1,9}")
_VERSION = re.compile(r"[1-9][0-9]{0,3}")
_PATH = re.compile(r"/[A-Za-z0-9._~/-]{0,99}")
_MAX_SERVICE_NAME = 255


class DiscoveryError(Exception):
    """mDNS cannot run as asked (unknown interface, no socket): a clear one-liner."""


@dataclass(frozen=True)
class DiscoveredNode:
    """A node seen on the LAN. Only a hint: nothing in it is trusted."""

    node_id: str  # lowercase unpadded base32 node id text (52 chars), TXT "id"
    name: str  # TXT "name"
    url: str  # http(s)://ADDR:PORT (+ TXT "path" if not "/"; https if TXT tls=1)
    protocol: int  # TXT "v"
    users_online: int  # TXT "users"
    connections: int  # TXT "conns"


# ---------------------------------------------------------------- parsing


def parse_txt(properties: Mapping[bytes, bytes | None]) -> dict[str, str] | None:
    """Decode a TXT record into text keys and values; None if it is not text.

    Keys are case-insensitive (RFC 6763): they come back lowercased, and the
    first of two spellings of one key wins. A key without ``=`` maps to None,
    which no required field accepts.
    """
    out: dict[str, str] = {}
    try:
        for raw_key, raw_value in properties.items():
            if not isinstance(raw_key, bytes) or not 0 < len(raw_key) <= 9:
                continue  # not one of ours; unknown keys are allowed and ignored
            key = raw_key.decode("ascii").lower()
            if raw_value is None or key in out:
                continue
            if not isinstance(raw_value, bytes) or len(raw_value) > 255:
                return None
            out[key] = raw_value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return out


def _pick_address(addresses: Iterable[str]) -> str | None:
    """The address to dial: the first usable IPv4, else the first usable IPv6."""
    v4: list[str] = []
    v6: list[str] = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
            continue
        if ip.version == 6 and ip.is_link_local:
            continue  # unusable without a scope id
        (v4 if ip.version == 4 else v6).append(str(ip))
    found = v4 or v6
    return found[0] if found else None


def parse_record(
    properties: Mapping[bytes, bytes | None], addresses: Iterable[str], port: int | None
) -> DiscoveredNode | None:
    """A node from the parts of a service record, or None if anything is malformed."""
    txt = parse_txt(properties)
    if txt is None:
        return None
    node_id = txt.get("id", "")
    if not is_node_id_text(node_id):
        return None
    try:
        name = check_node_name(txt.get("name", ""))
    except ProtocolError:
        return None
    version, users, conns = txt.get("v", ""), txt.get("users", ""), txt.get("conns", "")
    if not (_VERSION.fullmatch(version) and _INT.fullmatch(users) and _INT.fullmatch(conns)):
        return None
    path = txt.get("path", "/")
    if _PATH.fullmatch(path) is None:
        return None
    if not isinstance(port, int) or not 0 < port < 65536:
        return None
    host = _pick_address(addresses)
    if host is None:
        return None
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if txt.get("tls") == "1" else "http"
    url = f"{scheme}://{shown}:{port}" + ("" if path == "/" else path)
    return DiscoveredNode(node_id, name, url, int(version), int(users), int(conns))


def parse_info(info: ServiceInfo) -> DiscoveredNode | None:
    """A node from a resolved zeroconf service record, or None if malformed."""
    try:
        addresses = info.parsed_addresses()
        properties = info.properties or {}
        port = info.port
    except Exception:  # a record zeroconf itself cannot render: malformed
        return None
    return parse_record(properties, addresses, port)


def recommend(nodes: Sequence[DiscoveredNode]) -> DiscoveredNode | None:
    """The node a new user should pick: the lowest load (users online, then connections)."""
    if not nodes:
        return None
    return min(nodes, key=lambda n: (n.users_online, n.connections, n.name, n.node_id))


# ---------------------------------------------------------------- interfaces


def resolve_interfaces(interfaces: Iterable[str]) -> list[str]:
    """Interface names or IP addresses to the addresses zeroconf binds to.

    An IP literal is kept as it is; a name becomes that interface's IPv4
    addresses. Raises ``DiscoveryError`` for anything that does not resolve:
    mDNS must never fall back to every interface because of a typo.
    """
    import ifaddr  # zeroconf's own dependency

    adapters: list[Any] | None = None
    out: list[str] = []
    for item in interfaces:
        try:
            out.append(str(ipaddress.ip_address(item)))
            continue
        except ValueError:
            pass
        if adapters is None:
            adapters = list(ifaddr.get_adapters())
        matches = [a for a in adapters if item in (a.name, a.nice_name)]
        if not matches:
            raise DiscoveryError(f"no network interface named {item!r}")
        found = [str(ip.ip) for a in matches for ip in a.ips if ip.is_IPv4]
        if not found:
            raise DiscoveryError(f"interface {item!r} has no IPv4 address; give an address")
        out.extend(found)
    if not out:
        raise DiscoveryError("no interfaces given")
    return list(dict.fromkeys(out))


def _host_ip(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The listening address as an IP, None for a wildcard (or no) host."""
    if not host or host in ("0.0.0.0", "::", "*"):
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise DiscoveryError(f"cannot resolve the listening host {host!r}: {exc}") from exc
    return ipaddress.ip_address(infos[0][4][0])


def _machine_addresses() -> list[str]:
    import ifaddr

    found = [
        str(ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if ip.is_IPv4 and not ipaddress.ip_address(str(ip.ip)).is_loopback
    ]
    return found or ["127.0.0.1"]


def _instance_name(name: str, node_id: str) -> str:
    """A DNS-SD instance label (<= 63 bytes, no dots) unique per node id."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower())[:40].strip("-") or "chinwag"
    return f"{label}-{node_id[:16]}.{SERVICE_TYPE}"


# ---------------------------------------------------------------- zeroconf -> trio


class _Bridge:
    """zeroconf's browser thread -> trio: never raises, drops on a full channel."""

    def __init__(
        self,
        token: trio.lowlevel.TrioToken,
        channel: trio.MemorySendChannel[tuple[str, bool]],
    ) -> None:
        self._token = token
        self._channel = channel
        self.dropped = 0

    def __call__(self, **kwargs: Any) -> None:
        try:
            name = kwargs.get("name")
            if not isinstance(name, str) or len(name) > _MAX_SERVICE_NAME:
                self.dropped += 1
                return
            removed = kwargs.get("state_change") is ServiceStateChange.Removed
            self._token.run_sync_soon(self._deliver, (name, removed))
        except Exception:  # trio already gone (RunFinishedError), or anything else
            self.dropped += 1

    def _deliver(self, event: tuple[str, bool]) -> None:
        # Runs on the trio thread; an exception here would crash trio itself.
        try:
            self._channel.send_nowait(event)
        except Exception:  # WouldBlock (full), Closed/BrokenResourceError (shut down)
            self.dropped += 1


Resolver = Callable[[str], Awaitable[ServiceInfo | None]]


class _Tracker:
    """The current set of LAN nodes, kept from (name, removed) events.

    Lookups run concurrently (``RESOLVERS`` at once); a generation number per
    service name makes the latest event win, so a slow lookup finishing after
    a newer one (or after the removal) changes nothing.
    """

    def __init__(
        self,
        *,
        own_id: str | None,
        resolve: Resolver,
        on_change: Callable[[str, DiscoveredNode | None], None] | None = None,
        resolvers: int = RESOLVERS,
    ) -> None:
        self._own_id = own_id
        self._resolve = resolve
        self._on_change = on_change
        self._resolvers = resolvers
        self._gen: dict[str, int] = {}
        self._by_service: dict[str, str] = {}
        self._nodes: dict[str, DiscoveredNode] = {}
        self._queued: set[str] = set()
        self._send, self._receive = trio.open_memory_channel[str](MAX_SERVICES)
        self._pending = 0  # lookups queued or running
        self._idle = trio.Event()
        self._idle.set()
        self.malformed = 0
        self.unresolved = 0
        self.overflow = 0

    def nodes(self) -> list[DiscoveredNode]:
        return sorted(self._nodes.values(), key=lambda n: (n.name, n.node_id))

    def event(self, name: str, removed: bool) -> None:
        """A service appeared, changed or went away (trio thread, never blocks)."""
        if removed:
            self._gen.pop(name, None)
            self._unbind(name)
            return
        if name not in self._gen and len(self._gen) >= MAX_SERVICES:
            self.overflow += 1
            return
        self._gen[name] = self._gen.get(name, 0) + 1
        if name in self._queued:
            return  # its lookup has not started yet; it will see this generation
        try:
            self._send.send_nowait(name)
        except trio.WouldBlock:
            self.overflow += 1
            return
        self._queued.add(name)
        if self._pending == 0:
            self._idle = trio.Event()
        self._pending += 1

    async def settled(self) -> None:
        """Return once no lookup is queued or running."""
        await self._idle.wait()

    async def run(self, events: trio.MemoryReceiveChannel[tuple[str, bool]]) -> None:
        """Apply events until the channel closes (or the caller cancels)."""
        async with trio.open_nursery() as nursery:
            for _ in range(self._resolvers):
                nursery.start_soon(self._resolver)
            async for name, removed in events:
                self.event(name, removed)
            nursery.cancel_scope.cancel()

    async def _resolver(self) -> None:
        async for name in self._receive:
            self._queued.discard(name)
            try:
                await self._lookup(name)
            finally:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()

    async def _lookup(self, name: str) -> None:
        gen = self._gen.get(name)
        if gen is None:
            return  # removed before its lookup began
        try:
            info = await self._resolve(name)
            node = parse_info(info) if info is not None else None
            bad = info is not None and node is None
        except Exception:  # e.g. a name zeroconf refuses: malformed
            info, node, bad = None, None, True
        if self._gen.get(name) != gen:
            return  # a newer event (or the removal) has overtaken this lookup
        if bad:
            self.malformed += 1
            self._unbind(name)
        elif node is None:
            self.unresolved += 1  # no answer in time: keep what we knew
        elif node.node_id == self._own_id:
            self._unbind(name)
        else:
            self._bind(name, node)

    def _bind(self, name: str, node: DiscoveredNode) -> None:
        old = self._by_service.get(name)
        self._by_service[name] = node.node_id
        if old is not None and old != node.node_id:
            self._drop_if_unclaimed(old)
        if self._nodes.get(node.node_id) != node:
            self._nodes[node.node_id] = node
            self._notify(node.node_id, node)

    def _unbind(self, name: str) -> None:
        node_id = self._by_service.pop(name, None)
        if node_id is not None:
            self._drop_if_unclaimed(node_id)

    def _drop_if_unclaimed(self, node_id: str) -> None:
        if node_id in self._by_service.values():
            return  # another service name still claims this id
        if self._nodes.pop(node_id, None) is not None:
            self._notify(node_id, None)

    def _notify(self, node_id: str, node: DiscoveredNode | None) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(node_id, node)
        except Exception:
            log.exception("mDNS: on_change failed for %s", node_id[:12])


# ---------------------------------------------------------------- zeroconf helpers


# Linux socket options (not in Python's socket module): 0 = a socket gets only
# the multicast groups it joined itself, on the interfaces it joined them on.
_IP_MULTICAST_ALL = 49
_IPV6_MULTICAST_ALL = 29


def _only_joined_groups(zc: Zeroconf) -> int:
    """Keep zeroconf's listening socket to the interfaces it was given.

    zeroconf listens on one wildcard socket and joins the mDNS group on the
    chosen interfaces only; but Linux by default (``IP_MULTICAST_ALL``) hands
    that socket the group's packets from *any* interface where any process
    (avahi, another node) joined it. Turn that off. Best effort: the engine's
    reader list is zeroconf-internal. Returns how many sockets were set.
    """
    if not sys.platform.startswith("linux"):
        return 0
    done = 0
    for reader in list(getattr(zc.engine, "readers", ())):
        sock = getattr(reader, "sock", None)  # a socket, or asyncio's TransportSocket
        if sock is None or not hasattr(sock, "setsockopt"):
            continue
        try:
            if sock.family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            elif sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
                sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            done += 1
        except OSError:
            log.debug("mDNS: cannot set IP_MULTICAST_ALL on %s", sock, exc_info=True)
    if not done:
        log.debug("mDNS: no zeroconf socket found to restrict to its interfaces")
    return done


async def _open_zeroconf(interfaces: list[str] | None) -> Zeroconf:
    def make() -> Zeroconf:
        if not interfaces:
            return Zeroconf()
        zc = Zeroconf(interfaces=interfaces)
        _only_joined_groups(zc)
        return zc

    try:
        return await trio.to_thread.run_sync(make)
    except Exception as exc:
        where = ", ".join(interfaces) if interfaces else "all interfaces"
        raise DiscoveryError(f"mDNS cannot start on {where}: {exc}") from exc


def _resolver_for(zc: Zeroconf) -> Resolver:
    async def resolve(name: str) -> ServiceInfo | None:
        return await trio.to_thread.run_sync(
            zc.get_service_info, SERVICE_TYPE, name, RESOLVE_TIMEOUT_MS, abandon_on_cancel=True
        )

    return resolve


async def _close(zc: Zeroconf, browser: ServiceBrowser | None) -> None:
    """Stop browsing, send goodbyes, close: shielded, at most ``CLOSE_TIMEOUT``."""

    def close() -> None:
        try:
            if browser is not None:
                browser.cancel()
        except Exception:
            log.debug("mDNS: browser cancel failed", exc_info=True)
        try:
            zc.close()  # unregisters our services first (goodbye packets)
        except Exception:
            log.debug("mDNS: close failed", exc_info=True)

    with trio.move_on_after(CLOSE_TIMEOUT, shield=True) as scope:
        await trio.to_thread.run_sync(close, abandon_on_cancel=True)
    if scope.cancelled_caught:
        log.warning("mDNS: zeroconf did not close within %.0f s; left behind", CLOSE_TIMEOUT)


# ---------------------------------------------------------------- the node's discovery


class Discovery:
    """Announces this node (with its load) and keeps the list of LAN nodes current."""

    def __init__(
        self,
        *,
        node_id: str,
        name: str,
        port: int,
        interfaces: Sequence[str] | None,
        load: Callable[[], tuple[int, int]],
        on_change: Callable[[str, DiscoveredNode | None], None],
        host: str | None = None,
        tls: bool = False,
        reannounce_every: float = REANNOUNCE_EVERY,
    ) -> None:
        """``load()`` gives (users online, connections); ``on_change(node_id, node)``
        runs on the trio thread, ``node`` None when the node went away. Our own
        node id is skipped. ``host`` is the listening address (announced when
        it is not a wildcard); ``tls`` announces ``tls=1`` so peers dial https."""
        self._node_id = node_id
        self._name = name
        self._port = port
        self._interfaces = list(interfaces) if interfaces else None
        self._host = host
        self._tls = tls
        self._load = load
        self._reannounce_every = reannounce_every
        self._tracker = _Tracker(own_id=node_id, resolve=self._resolve, on_change=on_change)
        self._zc: Zeroconf | None = None
        self._bridge: _Bridge | None = None
        self._announced = (0, 0)
        self.reannounced = 0

    def nodes(self) -> list[DiscoveredNode]:
        """The nodes seen now (not us), sorted by name."""
        return self._tracker.nodes()

    def statistics(self) -> dict[str, int]:
        return {
            "nodes": len(self._tracker.nodes()),
            "malformed": self._tracker.malformed,
            "unresolved": self._tracker.unresolved,
            "dropped": (self._bridge.dropped if self._bridge else 0) + self._tracker.overflow,
            "reannounced": self.reannounced,
        }

    async def _resolve(self, name: str) -> ServiceInfo | None:
        assert self._zc is not None
        return await _resolver_for(self._zc)(name)

    def _plan(self) -> tuple[list[str] | None, list[str]]:
        """(interfaces for zeroconf, addresses to announce)."""
        host = _host_ip(self._host)
        if self._interfaces:
            interfaces: list[str] | None = resolve_interfaces(self._interfaces)
        elif host is not None:
            # Listening on one address: announce and browse only on its interface
            # (a loopback-only node stays off the LAN).
            interfaces = [str(host)]
        else:
            interfaces = None
        if host is not None:
            addresses = [str(host)]
        elif interfaces:
            addresses = interfaces
        else:
            addresses = _machine_addresses()
        return interfaces, addresses

    def _current_load(self) -> tuple[int, int]:
        try:
            users, conns = self._load()
            return max(0, min(int(users), 999_999_999)), max(0, min(int(conns), 999_999_999))
        except Exception:
            log.exception("mDNS: load() failed; announcing the last value")
            return self._announced

    def _service_info(
        self, name: str, server: str, addresses: list[str], load: tuple[int, int]
    ) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            name,
            server=server,
            port=self._port,
            properties={
                "id": self._node_id,
                "name": self._name,
                "v": str(PROTOCOL_VERSION),
                "path": "/",
                "tls": "1" if self._tls else "0",
                "users": str(load[0]),
                "conns": str(load[1]),
            },
            parsed_addresses=addresses,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, browse, keep the list current; ``started()`` once registered.

        Raises ``DiscoveryError`` before ``started()`` if mDNS cannot run as
        asked. On cancellation: goodbye packets and close, in bounded time.
        """
        interfaces, addresses = await trio.to_thread.run_sync(self._plan)
        zc = self._zc = await _open_zeroconf(interfaces)
        browser: ServiceBrowser | None = None
        try:
            self._announced = self._current_load()
            name = _instance_name(self._name, self._node_id)
            info = self._service_info(
                name, name.removesuffix(SERVICE_TYPE) + "local.", addresses, self._announced
            )
            try:
                await trio.to_thread.run_sync(
                    lambda: zc.register_service(info, allow_name_change=True),
                    abandon_on_cancel=True,
                )
            except Exception as exc:
                raise DiscoveryError(f"mDNS cannot register this node: {exc}") from exc
            send, receive = trio.open_memory_channel[tuple[str, bool]](EVENT_QUEUE)
            self._bridge = _Bridge(trio.lowlevel.current_trio_token(), send)
            browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[self._bridge])
            log.info("mDNS: announced as %s on %s", info.name, ", ".join(addresses))
            task_status.started()
            async with trio.open_nursery() as nursery:
                # info.name: zeroconf may have renamed us after a name conflict.
                nursery.start_soon(self._reannounce, zc, info, addresses)
                await self._tracker.run(receive)
        finally:
            await _close(zc, browser)
            self._zc = None

    async def _reannounce(
        self, zc: Zeroconf, registered: ServiceInfo, addresses: list[str]
    ) -> None:
        name, server = registered.name, registered.server or registered.name
        while True:
            await trio.sleep(self._reannounce_every)
            load = self._current_load()
            if load == self._announced:
                continue
            info = self._service_info(name, server, addresses, load)
            try:
                await trio.to_thread.run_sync(zc.update_service, info, abandon_on_cancel=True)
            except Exception as exc:  # try again at the next tick
                log.warning("mDNS: re-announcing the load failed: %s", exc)
                continue
            self._announced = load
            self.reannounced += 1


async def discover_once(timeout: float, interfaces: Sequence[str] | None) -> list[DiscoveredNode]:
    """Browse for ``timeout`` seconds; return the nodes seen, sorted by name.

    Needs no node. ``interfaces`` None (or empty): every interface; else names
    or addresses, and an unknown one raises ``DiscoveryError``.
    """
    zc_interfaces = resolve_interfaces(interfaces) if interfaces else None
    zc = await _open_zeroconf(zc_interfaces)
    browser: ServiceBrowser | None = None
    try:
        tracker = _Tracker(own_id=None, resolve=_resolver_for(zc))
        send, receive = trio.open_memory_channel[tuple[str, bool]](EVENT_QUEUE)
        bridge = _Bridge(trio.lowlevel.current_trio_token(), send)
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[bridge])
        return await browse_window(tracker, receive, timeout, RESOLVE_TIMEOUT_MS / 1000)
    finally:
        await _close(zc, browser)


async def browse_window(
    tracker: _Tracker,
    events: trio.MemoryReceiveChannel[tuple[str, bool]],
    window: float,
    settle: float,
) -> list[DiscoveredNode]:
    """Follow ``events`` for ``window`` seconds, then up to ``settle`` more for
    lookups already under way: a node seen near the end of the window is listed
    rather than dropped because its lookup was still in flight.
    """
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker.run, events)
        await trio.sleep(window)
        with trio.move_on_after(settle):
            await tracker.settled()
        nursery.cancel_scope.cancel()
    return tracker.nodes()
