"""Gossiped address records: a newer record is never replaced by an older one."""

from __future__ import annotations

from chinwag.protocol.address_record import make_record
from chinwag.protocol.envelope import NodeKey


async def test_an_older_record_does_not_replace_a_newer_one(start_node) -> None:
    node = await start_node(name="rec")
    fed = node.node.federation
    other = NodeKey.generate()
    newer = make_record(other, ["http://192.0.2.2:7600"], ts=2_000)
    older = make_record(other, ["http://192.0.2.1:7600"], ts=1_000)
    await fed.learn_gossip([newer])
    await fed.learn_gossip([older])
    assert fed._records[other.public] == newer  # noqa: SLF001
    assert node.node.registry.get(other.public).urls == ("http://192.0.2.2:7600",)
    # A newer one still replaces it.
    newest = make_record(other, ["http://192.0.2.3:7600"], ts=3_000)
    await fed.learn_gossip([newest])
    assert fed._records[other.public] == newest  # noqa: SLF001
    assert "http://192.0.2.3:7600" in node.node.registry.get(other.public).urls
