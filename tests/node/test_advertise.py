"""Which URLs a node puts in its gossiped address record."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from chinwag.node.app import Node, advertised_urls
from chinwag.node.config import NodeConfig
from chinwag.node.identity import load_or_init_identity
from chinwag.protocol.address_record import open_record

MACHINE = ["127.0.0.1", "::1", "192.0.2.7", "169.254.3.4", "fd00::2", "fe80::1", "10.1.2.3"]


def machine() -> list[str]:
    return list(MACHINE)


def test_wildcard_ipv4_advertises_interface_addresses_never_loopback() -> None:
    assert advertised_urls("0.0.0.0", 7600, addresses=machine) == [
        "http://192.0.2.7:7600",
        "http://10.1.2.3:7600",
    ]


def test_wildcard_ipv6_advertises_both_families_capped_at_four() -> None:
    assert advertised_urls("::", 7600, addresses=machine) == [
        "http://192.0.2.7:7600",
        "http://10.1.2.3:7600",
        "http://[fd00::2]:7600",
    ]
    many = [f"10.0.0.{i}" for i in range(1, 10)]
    assert len(advertised_urls("0.0.0.0", 1, addresses=lambda: many)) == 4


def test_wildcard_with_only_loopback_advertises_nothing() -> None:
    assert advertised_urls("0.0.0.0", 7600, addresses=lambda: ["127.0.0.1", "::1"]) == []


def test_configured_public_urls_win() -> None:
    urls = ("https://chat.example.org/", "http://203.0.113.5:7600")
    assert advertised_urls("0.0.0.0", 7600, urls, addresses=machine) == [
        "https://chat.example.org",
        "http://203.0.113.5:7600",
    ]


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:7600"),  # loopback only: its one address
        ("192.0.2.7", "http://192.0.2.7:7600"),
        ("::1", "http://[::1]:7600"),
        ("kitchen.lan", "http://kitchen.lan:7600"),
    ],
)
def test_a_specific_host_is_advertised_as_is(host: str, url: str) -> None:
    assert advertised_urls(host, 7600, addresses=machine) == [url]


async def test_node_on_all_interfaces_gossips_no_loopback_address(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = NodeConfig(data_dir=tmp_path / "n", host="0.0.0.0", port=0, mdns=False)
    node = Node(config, load_or_init_identity(config.data_dir, "wild"))
    running = await nursery.start(node.run)
    try:
        assert running.url.startswith("http://127.0.0.1:")  # for the local user
        records = node.federation.gossip_for(b"\x00" * 32).records
        urls = [u for r in records for u in open_record(r).urls]
        assert urls == node.federation.own_urls
        for url in urls:
            parts = urlsplit(url)
            assert parts.port == running.port
            assert not ipaddress.ip_address(parts.hostname or "").is_loopback, url
    finally:
        nursery.cancel_scope.cancel()
