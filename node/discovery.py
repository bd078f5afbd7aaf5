"""LAN discovery with mDNS (zeroconf): announce this node, browse for others.

What mDNS says is only a hint: a discovered node is a URL and a claimed id;
nothing is trusted until its key is proven in the federation handshake.
zeroconf runs its own threads; its callbacks reach trio through one small
wrapper that never raises and drops events when the bounded channel is full.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from chinwag.protocol.addresses import check_node_name, is_node_id_text
from chinwag.protocol.errors import ProtocolError

log = logging.getLogger(__name__)

SERVICE_TYPE = "_chinwag._tcp.local."
REANNOUNCE_EVERY = 10.0
INFO_TIMEOUT_MS = 2000
EVENT_QUEUE = 256


@dataclass(frozen=True)
class DiscoveredNode:
    node_id: str
    name: str
    url: str
    protocol: int
    users_online: int
    connections: int


def parse_info(info: ServiceInfo) -> DiscoveredNode | None:
    """A node from a service record, or None if anything in it is malformed."""
    try:
        props = {
            k.decode("ascii"): (v or b"").decode("utf-8")
            for k, v in (info.properties or {}).items()
        }
        node_id = props["id"]
        if not is_node_id_text(node_id):
            return None
        name = check_node_name(props.get("name", ""))
        protocol = int(props.get("v", "0"))
        users = int(props.get("users", "0"))
        conns = int(props.get("conns", "0"))
        path = props.get("path", "/")
        if not path.startswith("/") or len(path) > 100:
            return None
        addresses = info.parsed_addresses(IPVersion.V4Only) or info.parsed_addresses()
        if not addresses or not info.port:
            return None
        host = addresses[0]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{info.port}" + ("" if path == "/" else path.rstrip("/"))
        return DiscoveredNode(node_id, name, url, protocol, max(0, users), max(0, conns))
    except (KeyError, ValueError, UnicodeDecodeError, ProtocolError):
        return None


def recommend(nodes: list[DiscoveredNode]) -> DiscoveredNode | None:
    """The node a new user should pick: the least loaded."""
    if not nodes:
        return None
    return min(nodes, key=lambda n: (n.users_online, n.connections, n.name))


def interface_addresses(interfaces: tuple[str, ...] | list[str]) -> list[str]:
    """Interface names or IPs to the IPv4 addresses zeroconf binds to."""
    out: list[str] = []
    for item in interfaces:
        try:
            ipaddress.ip_address(item)
            out.append(item)
            continue
        except ValueError:
            pass
        try:
            import fcntl
            import struct

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                packed = fcntl.ioctl(
                    sock.fileno(), 0x8915, struct.pack("256s", item.encode()[:15])
                )  # SIOCGIFADDR
            out.append(socket.inet_ntoa(packed[20:24]))
        except OSError:
            log.warning("mDNS: interface %s has no IPv4 address; skipped", item)
    return out


class _Bridge:
    """zeroconf thread -> trio: never raises, drops on a full channel."""

    def __init__(self, token: trio.lowlevel.TrioToken, channel: trio.MemorySendChannel[Any]):
        self._token = token
        self._channel = channel
        self.dropped = 0

    def __call__(self, **kwargs: Any) -> None:
        try:
            self._token.run_sync_soon(self._deliver, kwargs)
        except Exception:  # trio already gone, or anything else: never raise here
            self.dropped += 1

    def _deliver(self, event: dict[str, Any]) -> None:
        try:
            self._channel.send_nowait(event)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1


class Discovery:
    """Announces this node and keeps the list of LAN nodes current."""

    def __init__(
        self,
        *,
        node_id: str,
        name: str,
        port: int,
        host: str,
        interfaces: tuple[str, ...],
        load: Callable[[], tuple[int, int]],
        on_change: Callable[[str, DiscoveredNode | None], None],
    ) -> None:
        self._node_id = node_id
        self._name = name
        self._port = port
        self._host = host
        self._interfaces = interfaces
        self._load = load
        self._on_change = on_change
        self._nodes: dict[str, DiscoveredNode] = {}
        self._by_service: dict[str, str] = {}
        self.malformed = 0

    def nodes(self) -> list[DiscoveredNode]:
        return list(self._nodes.values())

    def _addresses(self) -> list[str]:
        if self._interfaces:
            return interface_addresses(self._interfaces)
        if self._host not in ("0.0.0.0", "", "::"):
            return [self._host]
        import ifaddr  # zeroconf's own dependency

        found = [
            str(ip.ip)
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
            if ip.is_IPv4 and not str(ip.ip).startswith("127.")
        ]
        return found or ["127.0.0.1"]

    def _info(self, load: tuple[int, int]) -> ServiceInfo:
        props = {
            "id": self._node_id,
            "name": self._name,
            "v": "1",
            "path": "/",
            "users": str(load[0]),
            "conns": str(load[1]),
        }
        return ServiceInfo(
            SERVICE_TYPE,
            f"{self._name}-{self._node_id[:8]}.{SERVICE_TYPE}",
            port=self._port,
            properties=props,
            parsed_addresses=self._addresses(),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        zc_interfaces: Any = interface_addresses(self._interfaces) if self._interfaces else None
        zc = await trio.to_thread.run_sync(
            lambda: Zeroconf(interfaces=zc_interfaces) if zc_interfaces else Zeroconf()
        )
        send, receive = trio.open_memory_channel[dict[str, Any]](EVENT_QUEUE)
        bridge = _Bridge(trio.lowlevel.current_trio_token(), send)
        load = self._load()
        info = self._info(load)
        browser: ServiceBrowser | None = None
        try:
            await trio.to_thread.run_sync(zc.register_service, info)
            browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[bridge])
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reannounce, zc, info, load)
                limiter = trio.CapacityLimiter(4)
                async for event in receive:
                    nursery.start_soon(self._handle, zc, event, limiter)
        finally:
            with trio.move_on_after(5) as scope:
                scope.shield = True
                if browser is not None:
                    await trio.to_thread.run_sync(browser.cancel)
                await trio.to_thread.run_sync(zc.unregister_all_services)
                await trio.to_thread.run_sync(zc.close)

    async def _reannounce(self, zc: Zeroconf, info: ServiceInfo, load: tuple[int, int]) -> None:
        while True:
            await trio.sleep(REANNOUNCE_EVERY)
            now = self._load()
            if now != load:
                load = now
                info = self._info(load)
                await trio.to_thread.run_sync(zc.update_service, info)

    async def _handle(
        self, zc: Zeroconf, event: dict[str, Any], limiter: trio.CapacityLimiter
    ) -> None:
        name = event.get("name")
        change = event.get("state_change")
        if not isinstance(name, str):
            return
        if change is ServiceStateChange.Removed:
            node_id = self._by_service.pop(name, None)
            if node_id is not None and self._nodes.pop(node_id, None) is not None:
                self._on_change(node_id, None)
            return
        info = await trio.to_thread.run_sync(
            lambda: zc.get_service_info(SERVICE_TYPE, name, INFO_TIMEOUT_MS), limiter=limiter
        )
        node = parse_info(info) if info is not None else None
        if node is None:
            self.malformed += 1
            return
        if node.node_id == self._node_id:
            return
        self._by_service[name] = node.node_id
        if self._nodes.get(node.node_id) != node:
            self._nodes[node.node_id] = node
            self._on_change(node.node_id, node)


async def discover_once(timeout: float, interfaces: list[str] | None) -> list[DiscoveredNode]:
    """Browse for ``timeout`` seconds; return the nodes seen (no node needed)."""
    addresses = interface_addresses(interfaces) if interfaces else None
    zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=addresses) if addresses else Zeroconf()
    )
    names: set[str] = set()

    def handler(**kwargs: Any) -> None:
        if kwargs.get("state_change") is not ServiceStateChange.Removed:
            names.add(kwargs["name"])

    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[handler])
        await trio.sleep(timeout)
        await trio.to_thread.run_sync(browser.cancel)
        found: dict[str, DiscoveredNode] = {}
        for name in sorted(names):
            info = await trio.to_thread.run_sync(
                zc.get_service_info, SERVICE_TYPE, name, INFO_TIMEOUT_MS
            )
            node = parse_info(info) if info is not None else None
            if node is not None:
                found[node.node_id] = node
        return sorted(found.values(), key=lambda n: n.name)
    finally:
        await trio.to_thread.run_sync(zc.close)
