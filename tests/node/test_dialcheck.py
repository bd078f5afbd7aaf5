"""Dialling checks for gossiped addresses (node/dialcheck.py) and their provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from chinwag.node.dialcheck import (
    GLOBAL,
    PRIVATE,
    REFUSED,
    classify,
    open_ws_at,
    resolve_for_dial,
)
from chinwag.node.peers import PeerRegistry
from chinwag.node.store import Store
from chinwag.protocol.envelope import NodeKey
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.handshake import FED_SUBPROTOCOL


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", REFUSED),
        ("127.8.9.10", REFUSED),
        ("::1", REFUSED),
        ("169.254.1.2", REFUSED),
        ("fe80::1%eth0", REFUSED),
        ("0.0.0.0", REFUSED),
        ("::", REFUSED),
        ("224.0.0.251", REFUSED),
        ("ff02::fb", REFUSED),
        ("::ffff:127.0.0.1", REFUSED),
        ("2002:7f00:1::", REFUSED),  # 6to4 of 127.0.0.1
        ("64:ff9b::7f00:1", REFUSED),  # NAT64 of 127.0.0.1
        ("240.0.0.1", REFUSED),
        ("169.254.169.254", REFUSED),  # cloud metadata
        ("::ffff:169.254.169.254", REFUSED),
        ("::ffff:a9fe:a9fe", REFUSED),
        ("64:ff9b::a9fe:a9fe", REFUSED),  # NAT64 of the metadata address
        ("2002:a9fe:a9fe::", REFUSED),  # 6to4 of it
        ("0.1.2.3", REFUSED),  # "this network": Linux connects it locally
        ("fec0::1", PRIVATE),  # deprecated site-local: never global
        ("100.64.0.1", PRIVATE),
        ("10.1.2.3", PRIVATE),
        ("192.168.1.7", PRIVATE),
        ("172.16.0.1", PRIVATE),
        ("fd00::7", PRIVATE),
        ("::ffff:192.168.1.7", PRIVATE),
        ("93.184.216.34", GLOBAL),
        ("2606:4700::1111", GLOBAL),
        ("not an address", REFUSED),
    ],
)
def test_classify(address: str, kind: str) -> None:
    assert classify(address) == kind


def fake_dns(*addresses: str) -> Any:
    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [(2, 1, 6, "", (address, port)) for address in addresses]

    return getaddrinfo


async def test_every_resolved_address_is_checked() -> None:
    # A name with one public and one loopback address is refused as a whole.
    with pytest.raises(ProtocolError) as info:
        await resolve_for_dial(
            "mixed.test", 7600, allow_private=True, getaddrinfo=fake_dns("93.184.216.34", "::1")
        )
    assert info.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(ProtocolError):
        await resolve_for_dial(
            "lan.test", 7600, allow_private=False, getaddrinfo=fake_dns("192.168.1.7")
        )
    assert (
        await resolve_for_dial(
            "lan.test", 7600, allow_private=True, getaddrinfo=fake_dns("192.168.1.7")
        )
        == "192.168.1.7"
    )
    assert (
        await resolve_for_dial(
            "pub.test", 7600, allow_private=False, getaddrinfo=fake_dns("93.184.216.34")
        )
        == "93.184.216.34"
    )


async def test_one_refused_address_refuses_the_name() -> None:
    """The one rule (push and federation): not "the first allowed address"."""
    for addresses, allow_private in (
        (("93.184.216.34", "10.0.0.7"), False),
        (("93.184.216.34", "169.254.169.254"), True),
        (("10.0.0.7", "::ffff:169.254.169.254"), True),
    ):
        with pytest.raises(ProtocolError) as info:
            await resolve_for_dial(
                "mixed.test",
                443,
                allow_private=allow_private,
                getaddrinfo=fake_dns(*addresses),
                label="push endpoint",
            )
        assert info.value.code is ErrorCode.FORBIDDEN
        assert info.value.message.startswith("not dialling push endpoint 'mixed.test'")


async def test_localhost_by_name_is_refused() -> None:
    with pytest.raises(ProtocolError):
        await resolve_for_dial("localhost", 7600, allow_private=True)


async def test_the_checked_address_is_the_one_connected(start_node) -> None:
    node = await start_node(name="target")
    port = node.running.port
    # The URL's host name never resolves: only the given address is used, and
    # the name travels in the Host header.
    url = f"http://no-such-host.invalid:{port}"
    with trio.fail_after(10):
        async with open_ws_at(
            url,
            "127.0.0.1",
            "/federation",
            subprotocols=[FED_SUBPROTOCOL],
            max_message_size=1 << 20,
            connect_timeout=5,
            disconnect_timeout=1,
        ) as ws:
            assert ws.subprotocol == FED_SUBPROTOCOL


async def test_gossiped_urls_are_tracked_until_vouched_for(tmp_path: Path) -> None:
    key = NodeKey.generate()
    peer = NodeKey.generate().public
    async with trio.open_nursery() as nursery:
        store = Store(tmp_path, key)
        await nursery.start(store.run)
        registry = PeerRegistry(store)
        record = await registry.upsert(peer, urls=("http://a:1", "http://b:2"), source="gossip")
        assert record.gossip_urls == ("http://a:1", "http://b:2")
        assert not record.first_hand
        record = await registry.upsert(peer, urls=("http://a:1",), source="admin")
        assert record.gossip_urls == ("http://b:2",)
        assert record.first_hand
        # Gossip repeating a first-hand URL does not demote it.
        record = await registry.upsert(peer, urls=("http://a:1", "http://c:3"), source="gossip")
        assert set(record.gossip_urls) == {"http://b:2", "http://c:3"}
        assert registry.get(peer) == record
        nursery.cancel_scope.cancel()
