"""Peer records and outboxes: what an admin said stays, every outbox writer is bounded."""

from __future__ import annotations

from chinwag.node.federation import wall_ms
from chinwag.protocol.address_record import make_record
from chinwag.protocol.envelope import NodeKey

from .rogue import rogue_link, trust_rogue
from .test_federation import peer_add, peer_status


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
