"""Several push frames in flight on one link (node/link.py: checker, committer).

A node reads the next push while it checks the signatures of one in a
worker thread and commits the ones before it, the waiting frames in one
transaction. Still: every entry committed exactly once, in oseq order; a
refused entry is named in exactly one ack (at most 256 per ack); a malformed
entry anywhere in a frame ends the link and commits nothing of that frame.
"""

from __future__ import annotations

from typing import Any

import trio

from chinwag.node.client import connect
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.envelope import NodeKey, SignedUnit
from chinwag.protocol.link import MAX_REJECTED

from .rogue import RogueLink, rogue_link, trust_rogue
from .test_federation import TIMEOUT, drain
from .test_inbound import text_to


def entries(rogue: NodeKey, bob: UserAddress, first: int, count: int, forged: set[int]) -> list:
    """Push entries ``first..first+count-1``; those in ``forged`` carry a bad signature."""
    out = []
    for oseq in range(first, first + count):
        unit = text_to(rogue, bob, oseq, f"m{oseq}")
        if oseq in forged:
            unit = SignedUnit(env=unit.env, sig=bytes([unit.sig[0] ^ 1]) + unit.sig[1:], by=unit.by)
        out.append({"o": oseq, "k": "m", "u": unit.to_wire()})
    return out


async def acks_until(link: RogueLink, upto: int) -> list[dict[str, Any]]:
    acks = []
    with trio.fail_after(TIMEOUT):
        while not acks or acks[-1]["upto"] < upto:
            acks.append(await link.receive("ack"))
    return acks


async def test_frames_in_flight_commit_once_in_order(start_node) -> None:
    node = await start_node(name="target")
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    await node.user("bob")
    bob = UserAddress("bob", node.running.identity.id)
    total = 8 * 256
    # More refusals than one ack may name, spread over every frame.
    forged = {oseq for oseq in range(1, total + 1) if oseq % 3 == 0}
    async with rogue_link(node, rogue) as link:
        # Every frame sent at once: none waits for an ack.
        for first in range(1, total + 1, 256):
            await link.push(entries(rogue, bob, first, 256, forged))
        acks = await acks_until(link, total)
    ups = [a["upto"] for a in acks]
    assert ups == sorted(ups) and ups[-1] == total
    rejected = [r for a in acks for r in a["rejected"]]
    assert all(len(a["rejected"]) <= MAX_REJECTED for a in acks)
    assert all(r["oseq"] <= a["upto"] for a in acks for r in a["rejected"])
    assert sorted(r["oseq"] for r in rejected) == sorted(forged)  # each named once
    assert {r["code"] for r in rejected} == {"bad_signature"}
    good = [oseq for oseq in range(1, total + 1) if oseq not in forged]
    assert node.node.store.queue_head("bob") == len(good)
    async with connect(node.url, await node.user("bob", "d2")) as client:
        await client.sync(0)
        got = await drain(client, len(good))
    assert [f["body"]["text"] for f in got] == [f"m{oseq}" for oseq in good]


async def test_malformed_entry_in_a_multi_entry_frame_ends_only_the_link(start_node) -> None:
    node = await start_node(name="target")
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    await node.user("bob")
    bob = UserAddress("bob", node.running.identity.id)
    async with rogue_link(node, rogue) as link:
        await link.push(entries(rogue, bob, 1, 100, set()))
        bad = entries(rogue, bob, 101, 100, set())
        bad[50]["o"] = True  # a bool is not an oseq: the whole frame is refused
        await link.push(bad)
        assert await link.closed() == 1008
    # The first frame may have committed before the link ended, never the
    # second; the next link resumes from what was applied.
    head = node.node.store.queue_head("bob")
    assert head in (0, 100)
    async with rogue_link(node, rogue, resume=False) as link:
        await link.send({"t": "resume", "applied": 0})
        applied = (await link.receive("resume"))["applied"]
        assert applied == head
        await link.push(entries(rogue, bob, applied + 1, 200 - applied, set()))
        acks = await acks_until(link, 200)
    assert acks[-1] == {"t": "ack", "upto": 200, "rejected": []}
    assert node.node.store.queue_head("bob") == 200
    async with connect(node.url, await node.user("bob", "d2")) as client:
        await client.sync(0)
        got = await drain(client, 200)
    assert [f["body"]["text"] for f in got] == [f"m{oseq}" for oseq in range(1, 201)]


async def test_a_full_inbound_pipeline_pushes_back_and_loses_nothing(start_node) -> None:
    """With one push frame held at a time (``link_inbound_frames=1``), a peer
    pushing many frames at once is read only as fast as they commit: all of
    them still arrive once and in order."""
    node = await start_node(name="target", link_inbound_frames=1)
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    await node.user("bob")
    bob = UserAddress("bob", node.running.identity.id)
    async with rogue_link(node, rogue) as link:
        for first in range(1, 8 * 64 + 1, 64):
            await link.push(entries(rogue, bob, first, 64, set()))
        acks = await acks_until(link, 8 * 64)
    assert all(a["rejected"] == [] for a in acks)
    assert node.node.store.queue_head("bob") == 8 * 64
