"""Member nodes that missed group records recover the host's member list.

A record can be missed when the host withdrew it by age while the member
node was away (the host reports it and queues a fresh snapshot), or when the
host queued nothing for the node while it was not trusted (the member node
sees the gap in ``gseq`` and asks the host for a snapshot with ``gsync``).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from chinwag.node.admin import admin_request
from chinwag.node.app import NodeSeams
from chinwag.node.client import ChatClient, ClientError, connect

from ..conftest import ShiftedClock
from .test_federation import TIMEOUT, eventually, linked, peer_add
from .test_groups import befriend, group_event, member_of, until_joined
from .test_outbox_age import DAY_S


async def _event(client: ChatClient, kind: str) -> dict[str, Any]:
    """Skip to the next node event of ``type`` ``kind``."""
    with trio.fail_after(TIMEOUT):
        while True:
            frame = await client.messages.receive()
            if frame.get("kind") == "event" and frame["body"].get("type") == kind:
                return frame["body"]


async def _members(client: ChatClient, group: str) -> set[str]:
    return {m["address"] for m in (await client.group("members", group=group))["members"]}


async def test_record_withdrawn_by_age_is_reported_and_resent_as_a_snapshot(
    start_node, tmp_path
) -> None:
    clock = ShiftedClock()
    h1 = await start_node(name="w1", seams=NodeSeams(federation_now_ms=clock), outbox_max_age=DAY_S)
    m2_dir = tmp_path / "member"
    m2 = await start_node(data_dir=m2_dir, name="w2")
    await linked(h1, m2)
    k2 = m2.node.identity.key.public
    bob, carol = await m2.user("bob"), await m2.user("carol")
    for token in (bob, carol):  # so alice's adds need no invitation
        await befriend(m2, token, "alice@w1")
    async with connect(h1.url, await h1.user("alice")) as alice:
        await alice.sync(0)
        await alice.group("create", name="club")
        await alice.group("add", group="#club@w1", members=["bob@w2", "carol@w2"])
        # Remote users are invited (``gi``) and w2 accepts for them (``ga``):
        # the outbox is empty for a moment once the invitations are acked,
        # before the answers come back and queue the membership records.
        # Wait until both joined, then until those records were acked.
        await until_joined(alice, member_of(m2, "bob"), member_of(m2, "carol"))
        await eventually(lambda: h1.node.registry.outbox_depth(k2) == 0)
        await m2.stop()
        with trio.fail_after(TIMEOUT):
            await h1.node.federation.wait_linked(k2, linked=False)
        # Both records for w2 (carol's removal, a message) wait in the
        # outbox, then expire there.
        await alice.group("remove", group="#club@w1", members=["carol@w2"])
        sent = await alice.send("#club@w1", "hello")
        clock.shift(2 * DAY_S)
        h1.node.federation.poke(k2)
        # The withdrawn removal is reported to alice too.
        failed = await _event(alice, "delivery_failed")
        while failed["id"] != sent.id:
            assert failed["code"] == "timeout"
            failed = await _event(alice, "delivery_failed")
        assert failed["code"] == "timeout"
        assert failed["group"] == {"name": "club", "host": h1.running.identity.id}
        assert failed["node"] == m2.running.identity.id
        clock.shift(0)
    m2 = await start_node(data_dir=m2_dir, name="w2")
    await peer_add(h1, m2)  # its new port
    async with connect(m2.url, carol) as c, connect(m2.url, bob) as b:
        await c.sync(0)
        snapshot = await group_event(c, "snapshot")
        assert snapshot["body"]["group"]["name"] == "club"
        await b.sync(0)
        assert await _members(b, "#club@w1") == {"alice@w1", "bob@w2"}
        with pytest.raises(ClientError) as info:
            await c.group("members", group="#club@w1")
        assert info.value.code == "forbidden"


async def test_gap_in_gseq_asks_the_host_for_a_snapshot(start_node) -> None:
    h1, m2 = await start_node(name="s1"), await start_node(name="s2")
    await linked(h1, m2)
    k2 = m2.node.identity.key.public
    m2_id = m2.running.identity.id
    bob_token, carol_token = await m2.user("bob"), await m2.user("carol")
    for token in (bob_token, carol_token):  # so alice's adds need no invitation
        await befriend(m2, token, "alice@s1")
    async with (
        connect(h1.url, await h1.user("alice")) as alice,
        connect(m2.url, bob_token) as bob,
        connect(m2.url, carol_token) as carol,
    ):
        await alice.group("create", name="club")
        await alice.group("add", group="#club@s1", members=["bob@s2", "carol@s2"])
        for client in (bob, carol):
            await client.sync(0)
            await group_event(client, "members")
        # Each saw its own join, so both records were queued; the host learns
        # that s2 applied them only when s2's ack arrives, which can be later.
        await eventually(lambda: h1.node.registry.outbox_depth(k2) == 0)
        # While s2 is blocked, the host queues nothing for it: s2 misses
        # carol's removal.
        data = h1.node.config.data_dir
        await admin_request(data, "peers.block", {"id": m2_id})
        await alice.group("remove", group="#club@s1", members=["carol@s2"])
        assert h1.node.registry.outbox_depth(k2) == 0
        await admin_request(data, "peers.approve", {"id": m2_id})
        with trio.fail_after(TIMEOUT):
            await h1.node.federation.wait_linked(k2)
        # The next record shows s2 the gap; it asks for a snapshot.
        await alice.send("#club@s1", "after")
        snapshot = await group_event(bob, "snapshot")
        assert sorted(snapshot["body"]["members"]) == sorted(
            [f"alice@{h1.running.identity.id}", f"bob@{m2_id}"]
        )
        assert await _members(bob, "#club@s1") == {"alice@s1", "bob@s2"}
        with pytest.raises(ClientError) as info:
            await carol.group("members", group="#club@s1")
        assert info.value.code == "forbidden"
