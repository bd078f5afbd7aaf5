"""The outbox age bound: entries for an unreachable peer expire, reported once.

Time is injected: the sender's federation clock is moved past
``outbox_max_age`` instead of waiting for it.
"""

from __future__ import annotations

from typing import Any

import trio

from chinwag.node.app import NodeSeams
from chinwag.node.client import ChatClient, connect
from chinwag.node.link import wall_ms

from ..conftest import ShiftedClock
from .test_federation import TIMEOUT, drain, eventually, linked, peer_add, peer_status

DAY_S = 24 * 3600.0


async def _next_event(client: ChatClient) -> dict[str, Any]:
    (frame,) = await drain(client, 1)
    assert frame["kind"] == "event", frame
    return frame["body"]


async def test_expired_entry_fails_once_and_the_link_resumes_after_it(start_node) -> None:
    clock = ShiftedClock()
    n1 = await start_node(name="o1", seams=NodeSeams(federation_now_ms=clock), outbox_max_age=DAY_S)
    n2 = await start_node(name="o2")
    n2_dir = n2.node.config.data_dir
    await linked(n1, n2)
    k2 = n2.node.identity.key.public
    bob_token = await n2.user("bob")
    await n2.stop()
    with trio.fail_after(TIMEOUT):
        await n1.node.federation.wait_linked(k2, linked=False)
    async with connect(n1.url, await n1.user("alice")) as alice:
        await alice.sync(0)
        old = await alice.send("bob@o2", "too late")
        assert (await drain(alice, 1))[0]["id"] == old.id
        status = peer_status(n1, n2)
        assert status["outbox"] == 1 and status["outbox_oldest_s"] is not None
        # Not old enough yet: a link attempt keeps it.
        assert await n1.node.federation.expire(k2) == 0
        # Two days later, the next link attempt withdraws it.
        clock.shift(2 * DAY_S)
        n1.node.federation.poke(k2)
        event = await _next_event(alice)
        assert event["type"] == "delivery_failed"
        assert event["code"] == "timeout" and event["id"] == old.id
        assert event["to"] == {"u": "bob", "n": n2.running.identity.id}
        assert event["node"] == n2.running.identity.id
        status = peer_status(n1, n2)
        assert status["outbox"] == 0 and status["outbox_oldest_s"] is None
        # Exactly once: further passes find nothing, and nothing more is queued.
        assert await n1.node.federation.expire(k2) == 0
        assert n1.node.store.queue_head("alice") == 2
        # A fresh message is delivered once the peer is back: the receiver is
        # told to skip the withdrawn oseq instead of waiting for it.
        clock.shift(0)
        fresh = await alice.send("bob@o2", "still here?")
        n2 = await start_node(data_dir=n2_dir, name="o2")
        await peer_add(n1, n2)  # its new port
        async with connect(n2.url, bob_token) as bob:
            await bob.sync(0)
            (got,) = await drain(bob, 1)
            assert got["id"] == fresh.id and got["body"]["text"] == "still here?"
        await eventually(lambda: n1.node.registry.outbox_depth(k2) == 0)
    assert n2.node.store.queue_head("bob") == 1  # the withdrawn one never arrived
    assert n2.node.registry.applied_from(n1.node.identity.key.public) == 2


async def test_periodic_pass_expires_without_a_link_attempt(start_node) -> None:
    # Back-off so long that no further link attempt happens in this test: only
    # the periodic pass can expire the entry.
    clock = ShiftedClock()
    n1 = await start_node(
        name="p1",
        seams=NodeSeams(federation_now_ms=clock),
        outbox_max_age=DAY_S,
        outbox_prune_interval=0.05,
        backoff_min=3600.0,
        backoff_max=3600.0,
    )
    n2 = await start_node(name="p2")
    await linked(n1, n2)
    k2 = n2.node.identity.key.public
    await n2.stop()
    with trio.fail_after(TIMEOUT):
        await n1.node.federation.wait_linked(k2, linked=False)
    async with connect(n1.url, await n1.user("carol")) as carol:
        await carol.sync(0)
        sent = [await carol.send("dave@p2", f"m{i}") for i in range(3)]
        await drain(carol, 3)
        clock.shift(2 * DAY_S)
        events = [await _next_event(carol) for _ in range(3)]
        assert [e["id"] for e in events] == [s.id for s in sent]
        assert {e["code"] for e in events} == {"timeout"}
    assert n1.node.registry.outbox_depth(k2) == 0


async def test_expiry_is_bounded_per_pass(start_node) -> None:
    n1 = await start_node(name="b1", outbox_max_age=DAY_S)
    n2 = await start_node(name="b2")
    await linked(n1, n2)
    k2 = n2.node.identity.key.public
    await n2.stop()
    async with connect(n1.url, await n1.user("erin")) as erin:
        await erin.sync(0)
        for i in range(5):
            await erin.send("frank@b2", f"m{i}")
    registry = n1.node.registry
    later = wall_ms() + int(2 * DAY_S * 1000)
    assert await registry.expire_outbox(k2, later, int(DAY_S * 1000), limit=2) == 2
    assert registry.outbox_depth(k2) == 3
    assert await registry.expire_outbox(k2, later, int(DAY_S * 1000), limit=2) == 2
    assert await registry.expire_outbox(k2, later, int(DAY_S * 1000), limit=2) == 1
    assert registry.outbox_depth(k2) == 0
    assert n1.node.store.queue_head("erin") == 10  # 5 sent + 5 delivery_failed
