"""Peer records and outboxes: what an admin said stays, every outbox writer is bounded."""

from __future__ import annotations

import pytest
import trio

from chinwag.node.admin import admin_request
from chinwag.node.client import ClientError, connect
from chinwag.node.federation import wall_ms
from chinwag.protocol.address_record import make_record
from chinwag.protocol.envelope import NodeKey

from .rogue import rogue_link, trust_rogue
from .test_federation import TIMEOUT, eventually, linked, peer_add, peer_status
from .test_groups import befriend, group_event, member_of, until_joined


async def test_gossip_never_displaces_an_admin_url(start_node) -> None:
    n1, n2 = await start_node(name="u1"), await start_node(name="u2")
    await peer_add(n1, n2)  # the admin's URL for u2
    rogue = NodeKey.generate()
    await trust_rogue(n1, rogue)
    # Three newer address records for u2 (signed by u2: gossip can carry any
    # URL its subject signed), 12 URLs in all: more than a peer record keeps.
    ts = wall_ms()
    records = [
        make_record(
            n2.node.identity.key,
            [f"http://gossip{i}-{j}.invalid:7600" for j in range(4)],
            ts + i,
        )
        for i in range(3)
    ]
    async with rogue_link(n1, rogue) as link:
        for record in records:
            await link.send({"t": "gossip", "records": [record]})
        # Frames are handled in order: the pong says the gossip was applied.
        await link.send({"t": "ping"})
        await link.receive("pong")
    urls = peer_status(n1, n2)["urls"]
    assert n2.url in urls, urls
    assert urls[0] == n2.url  # dialled first
    assert len(urls) == 8
    # Gossip still fills the rest, newest first.
    assert urls[1:5] == [f"http://gossip2-{j}.invalid:7600" for j in range(4)]


async def _refused(send: object, code: str) -> None:
    with pytest.raises(ClientError) as info:
        await send  # type: ignore[misc]
    assert info.value.code == code, info.value.message


async def _down(n1: object, n2: object) -> None:
    await n2.stop()  # type: ignore[attr-defined]
    with trio.fail_after(TIMEOUT):
        await n1.node.federation.wait_linked(  # type: ignore[attr-defined]
            n2.node.identity.key.public,  # type: ignore[attr-defined]
            linked=False,
        )


async def test_group_fan_out_to_a_full_outbox_is_refused_before_ok(start_node) -> None:
    h1 = await start_node(name="f1", outbox_max_entries=3)
    m2, m3 = await start_node(name="f2"), await start_node(name="f3")
    await linked(h1, m2)
    await linked(h1, m3)
    k2 = m2.node.identity.key.public
    carol_token = await m3.user("carol")
    # Contacts of alice, so her adds need no invitation.
    await befriend(m2, await m2.user("bob"), "alice@f1")
    await befriend(m3, carol_token, "alice@f1")
    async with (
        connect(h1.url, await h1.user("alice")) as alice,
        connect(m3.url, carol_token) as carol,
    ):
        await alice.group("create", name="club")
        await alice.group("add", group="#club@f1", members=["bob@f2", "carol@f3"])
        # Both joins (alice's first members event may be carol's alone: f2's
        # answer for bob can still be on its way with f2's outbox empty), then
        # f3 has carol's and f2 has acked bob's.
        await alice.sync(0)
        await until_joined(alice, member_of(m2, "bob"), member_of(m3, "carol"))
        await carol.sync(0)
        await group_event(carol, "members")
        await eventually(lambda: h1.node.registry.outbox_depth(k2) == 0)
        await _down(h1, m2)
        for i in range(3):
            await alice.send("#club@f1", f"m{i}")
        assert peer_status(h1, m2)["outbox"] == 3
        head = h1.node.store.queue_head("alice")
        # The host's own fan-out: refused before any ok, nothing written.
        await _refused(alice.send("#club@f1", "one too many"), "unavailable")
        assert h1.node.store.queue_head("alice") == head
        assert peer_status(h1, m2)["outbox"] == 3
        # A member's send relayed through the host: the host refuses the
        # entry, and the sender hears of it as a delivery_failed event.
        sent = await carol.send("#club@f1", "from carol")
        with trio.fail_after(TIMEOUT):
            while True:
                frame = await carol.messages.receive()
                if frame.get("kind") == "event" and frame["body"].get("type") == (
                    "delivery_failed"
                ):
                    break
        assert frame["body"]["id"] == sent.id and frame["body"]["code"] == "unavailable"
        assert peer_status(h1, m2)["outbox"] == 3


async def test_outbox_bound_counts_bytes(start_node) -> None:
    n1 = await start_node(name="y1", outbox_max_bytes=40_000)
    n2 = await start_node(name="y2")
    await linked(n1, n2)
    await _down(n1, n2)
    async with connect(n1.url, await n1.user("alice")) as alice:
        text = "x" * 10_000
        for _ in range(3):
            await alice.send("bob@y2", text)
        await _refused(alice.send("bob@y2", text), "unavailable")
        # Small messages still fit in what is left.
        await alice.send("bob@y2", "short")
    assert peer_status(n1, n2)["outbox"] == 4
    assert 30_000 < peer_status(n1, n2)["outbox_bytes"] <= 40_000


async def test_nothing_is_queued_for_a_peer_that_is_not_trusted(start_node) -> None:
    n1, n2 = await start_node(name="t1"), await start_node(name="t2")
    k2 = n2.node.identity.key.public
    # t2 dials t1, which has never heard of it: t2's request is pending at t1
    # (held in memory only, see test_link_requests.py).
    await peer_add(n2, n1)
    await eventually(lambda: n1.node.federation.statistics().pending_requests == 1)
    async with connect(n1.url, await n1.user("alice")) as alice:
        # A stranger's request gives it no row: the node stays unknown here.
        await _refused(alice.send(f"bob@{n2.running.identity.id}", "hi"), "no_such_node")
        assert n1.node.registry.outbox_appended(k2) == 0
        # Trusted, a member added, then blocked: group fan-out skips it.
        await peer_add(n1, n2)
        with trio.fail_after(TIMEOUT):
            await n1.node.federation.wait_linked(k2)
        await alice.group("create", name="club")
        await alice.group("add", group="#club@t1", members=["bob@t2"])
        queued = n1.node.registry.outbox_appended(k2)
        await admin_request(n1.node.config.data_dir, "peers.block", {"id": n2.running.identity.id})
        await alice.sync(0)
        await alice.send("#club@t1", "not for a blocked node")
        await _refused(alice.send("bob@t2", "hi"), "forbidden")
        assert n1.node.registry.outbox_appended(k2) == queued
