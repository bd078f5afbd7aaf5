"""Gossiped address records: a newer record is never replaced by an older one."""

from __future__ import annotations

import dataclasses

from chinwag.node.introductions import set_trust_introductions
from chinwag.node.peers import peer_in, put_peer
from chinwag.node.store import WriteTxn
from chinwag.protocol.address_record import make_record
from chinwag.protocol.envelope import NodeKey
from chinwag.protocol.link import Gossip


async def test_an_older_record_does_not_replace_a_newer_one(start_node) -> None:
    node = await start_node(name="rec")
    fed = node.node.federation
    other = NodeKey.generate()
    newer = make_record(other, ["http://192.0.2.2:7600"], ts=2_000)
    older = make_record(other, ["http://192.0.2.1:7600"], ts=1_000)
    await fed.learn_gossip(Gossip((newer,)))
    await fed.learn_gossip(Gossip((older,)))
    # Records are passed on for trusted nodes only: trust it to see its record.
    await node.node.registry.set_state(other.public, "trusted")
    assert newer in fed.gossip_for(b"").records
    assert node.node.registry.get(other.public).urls == ("http://192.0.2.2:7600",)
    # A newer one still replaces it.
    newest = make_record(other, ["http://192.0.2.3:7600"], ts=3_000)
    await fed.learn_gossip(Gossip((newest,)))
    assert newest in fed.gossip_for(b"").records
    assert newer not in fed.gossip_for(b"").records
    assert "http://192.0.2.3:7600" in node.node.registry.get(other.public).urls


async def test_a_held_record_costs_no_verification_and_no_commit(start_node) -> None:
    node = await start_node(name="held")
    fed = node.node.federation
    keys = [NodeKey.generate() for _ in range(5)]
    records = [make_record(k, [f"http://192.0.2.{i}:7600"], ts=1_000) for i, k in enumerate(keys)]
    commits = node.node.store.statistics().commits
    await fed.learn_gossip(Gossip(tuple(records)))
    # Five new nodes: five verifications, one transaction for all of them.
    assert node.node.store.statistics().commits == commits + 1
    stats = fed.gossip_statistics()
    assert (stats.records_verified, stats.records_learned) == (5, 5)
    for _ in range(3):
        await fed.learn_gossip(Gossip(tuple(records)))
    stats = fed.gossip_statistics()
    assert (stats.records_verified, stats.records_skipped) == (5, 15)
    assert node.node.store.statistics().commits == commits + 1
    # A newer record with the same URLs is verified and kept, but the peer
    # row does not change: nothing is written.
    again = make_record(keys[0], ["http://192.0.2.0:7600"], ts=2_000)
    await fed.learn_gossip(Gossip((again,)))
    assert fed.gossip_statistics().records_learned == 6
    assert node.node.store.statistics().commits == commits + 1


async def test_digests_send_only_what_the_other_side_lacks(start_node) -> None:
    from chinwag.protocol.link import DigestEntry, GossipDigest

    node = await start_node(name="dig")
    fed = node.node.federation
    keys = [NodeKey.generate() for _ in range(3)]
    records = [make_record(k, [f"http://192.0.2.{i}:7600"], ts=10) for i, k in enumerate(keys)]
    await fed.learn_gossip(Gossip(tuple(records)))
    for key in keys:
        await node.node.registry.set_state(key.public, "trusted")
    own = node.node.identity.key.public
    summary = fed.gossip_summary()
    # A peer with the same records answers nothing.
    assert fed.on_gossip_summary(summary) == []
    # A peer that lacks one record and holds another older is sent those two.
    have = (
        DigestEntry(keys[0].public, 10),
        DigestEntry(keys[1].public, 9),
        DigestEntry(own, 2**62),
    )
    replies = fed.on_gossip_digest(b"\x01" * 32, GossipDigest(have))
    assert len(replies) == 1 and isinstance(replies[0], Gossip)
    assert sorted(r["sig"] for r in replies[0].records) == sorted(
        [records[1]["sig"], records[2]["sig"]]
    )
    # A peer that holds a newer record is asked for it with our digest, once.
    newer = (*have[::2], DigestEntry(keys[1].public, 11), DigestEntry(keys[2].public, 10))
    replies = fed.on_gossip_digest(b"\x01" * 32, GossipDigest(newer))
    assert [type(r) for r in replies] == [GossipDigest]
    assert replies[0].reply is True
    assert fed.on_gossip_digest(b"\x01" * 32, GossipDigest(newer, reply=True)) == []


async def test_gossiped_urls_keep_the_trust_and_introducers_of_the_row(start_node) -> None:
    """Learning a node's URLs by gossip rewrites its row's URLs only: the
    introducers it was trusted on and the trust-introductions flag stay (a
    merge once rebuilt the row without them, so an introduced node lost its
    relay route and its messages waited for a direct link that never came)."""
    node = await start_node(name="here")
    registry = node.node.registry
    introducer, introduced = NodeKey.generate(), NodeKey.generate()
    await registry.upsert(introducer.public, state="trusted", source="admin", now_ms=1)
    await set_trust_introductions(node.node.store, introducer.public, True)
    await registry.upsert(introduced.public, state="trusted", source="admin", now_ms=1)

    def give(w: WriteTxn) -> None:  # trusted on the introducer's word
        row = peer_in(w, introduced.public)
        assert row is not None
        put_peer(w, dataclasses.replace(row, introducers=(introducer.public,)))

    await node.node.store.transact(give)
    for key in (introducer.public, introduced.public):
        await registry.learn_gossiped([(key, ("http://127.0.0.1:9",))], now_ms=2)
    assert registry.get(introducer.public).trust_introductions is True
    row = registry.get(introduced.public)
    assert row.introducers == (introducer.public,)
    assert row.gossip_urls == ("http://127.0.0.1:9",)
