"""Federation links and the per-address connection cap; sockets left behind."""

from __future__ import annotations

from typing import Any

import trio

from chinwag.node.admin import admin_request

from ..node.test_abuse import host_port, http_exchange
from .test_federation import TIMEOUT, peer_add

WELL_KNOWN = b"GET /.well-known/chinwag HTTP/1.1\r\nhost: x\r\n\r\n"


async def _inbound_only(hub: Any, leaf: Any) -> None:
    """``hub`` trusts ``leaf`` at an address that refuses, so the link that
    comes up is the one ``leaf`` dials: inbound at the hub, from 127.0.0.1."""
    await admin_request(
        hub.node.config.data_dir,
        "peers.add",
        {"peer": f"http://127.0.0.1:9#{leaf.running.identity.id}"},
    )
    await peer_add(leaf, hub)


async def test_links_beyond_the_per_address_cap_are_accepted(start_node) -> None:
    hub = await start_node(name="cap", max_connections_per_address=2)
    leaves = [await start_node(name=f"cl{i}") for i in range(5)]
    for leaf in leaves:
        await _inbound_only(hub, leaf)
    with trio.fail_after(TIMEOUT):
        for leaf in leaves:
            await hub.node.federation.wait_linked(leaf.node.identity.key.public)
    assert hub.node.federation.statistics().links == 5
    # Connections that have not authenticated still count: two held open,
    # and a third from the same address is refused.
    host, port = host_port(hub.url)
    held = [await trio.open_tcp_stream(host, port) for _ in range(2)]
    try:
        with trio.fail_after(TIMEOUT):
            response = await http_exchange(hub.url, WELL_KNOWN)
    finally:
        for stream in held:
            await stream.aclose()
    assert response.status_code == 429
