"""Gossiped address records: a newer record is never replaced by an older one."""

from __future__ import annotations

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
