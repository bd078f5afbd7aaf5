"""Gossip at rest: linked nodes that learned nothing new sign, verify and write nothing."""

from __future__ import annotations

import itertools
from typing import Any

import trio

from chinwag.node.admin import admin_request

from .test_federation import TIMEOUT, eventually, peer_add, peer_status

FAST = {"heartbeat_interval": 0.05, "gossip_interval": 0.05}


def _gossip(node: Any) -> dict[str, int]:
    return dict(node.node.status()["gossip"])


def _commits(node: Any) -> int:
    return int(node.node.status()["store"]["commits"])


async def _mesh(nodes: list[Any]) -> None:
    for a, b in itertools.combinations(nodes, 2):
        await peer_add(a, b)
        await peer_add(b, a)
    with trio.fail_after(TIMEOUT):
        for a, b in itertools.permutations(nodes, 2):
            await a.node.federation.wait_linked(b.node.identity.key.public)


async def test_idle_gossip_between_five_nodes_writes_nothing(start_node) -> None:
    nodes = [await start_node(name=f"q{i}", **FAST) for i in range(5)]
    await _mesh(nodes)
    # Converged: every node holds the other four records, and the latest
    # rounds on its links matched (one hash, from the dialling side).
    for node in nodes:
        await eventually(lambda node=node: _gossip(node)["records_learned"] >= 4)
    await _rounds(nodes, 8)
    before = [(_commits(n), _gossip(n)) for n in nodes]
    await _rounds(nodes, 20)
    for node, (commits, stats) in zip(nodes, before, strict=True):
        after = _gossip(node)
        assert _commits(node) == commits, "idle gossip committed to the store"
        # Every round matched: no digest, no record, no signature checked.
        assert after["summaries"] - stats["summaries"] == (
            after["summaries_matched"] - stats["summaries_matched"]
        )
        assert after["digests_sent"] == stats["digests_sent"]
        assert after["records_verified"] == stats["records_verified"]
        assert after["records_sent"] == stats["records_sent"]


async def _rounds(nodes: list[Any], count: int) -> None:
    """Wait until every node took part in ``count`` more gossip rounds (as
    the side that sends the ``gsum`` or the one that receives it)."""

    def rounds(node: Any) -> int:
        stats = _gossip(node)
        return stats["rounds"] + stats["summaries"]

    marks = [rounds(n) for n in nodes]
    for node, mark in zip(nodes, marks, strict=True):
        await eventually(lambda node=node, mark=mark: rounds(node) >= mark + count)


async def test_a_restarted_node_record_spreads_by_digest_and_is_written_once(
    start_node, tmp_path
) -> None:
    nodes = [await start_node(name=f"r{i}", **FAST) for i in range(3)]
    await _mesh(nodes)
    for node in nodes:
        await eventually(lambda node=node: _gossip(node)["records_learned"] >= 2)
    # A newcomer linked to one node only: the others learn its record from
    # that node's digest answer, verify it once, and write its row once.
    late = await start_node(name="r3", **FAST)
    await peer_add(late, nodes[0])
    await peer_add(nodes[0], late)
    key = late.node.identity.key.public
    for node in nodes[1:]:
        await eventually(lambda node=node: node.node.registry.get(key) is not None)
        assert node.node.registry.get(key).urls == (late.url,)
    stats = [_gossip(n) for n in nodes]
    await _rounds(nodes, 20)
    for node, mark in zip(nodes, stats, strict=True):
        assert _gossip(node)["records_learned"] == mark["records_learned"]


async def test_a_link_between_different_heartbeats_stays_up(start_node) -> None:
    # Only a side that heard nothing for a tick pings: a peer with a much
    # shorter deadline than ours must still hear from us in time.
    # The slow side dials (the quick one knows it only at an address that
    # refuses), so the quick side answers pings it gets only every 10 s.
    quick = await start_node(name="hq", heartbeat_interval=0.1, heartbeat_deadline=0.3)
    slow = await start_node(name="hs")
    await admin_request(
        quick.node.config.data_dir,
        "peers.add",
        {"peer": f"http://127.0.0.1:9#{slow.running.identity.id}"},
    )
    await peer_add(slow, quick)
    with trio.fail_after(TIMEOUT):
        await quick.node.federation.wait_linked(slow.node.identity.key.public)
    error = peer_status(slow, quick)["last_error"]
    await trio.sleep(1.5)  # five deadlines of the quick side: no event marks "no drop"
    assert quick.node.federation.statistics().links == 1
    assert peer_status(slow, quick)["last_error"] == error


async def test_an_idle_link_ticks_three_times_slower_than_devices(start_node) -> None:
    """An idle full mesh pays a ping and a pong per link per tick on every
    node, so links tick at 3x the device heartbeat (docs/performance.md): at
    a 0.1 s device heartbeat an idle link carries about one frame a side per
    0.3 s, not per 0.1 s, and stays up (deadline 3 x 0.3 s)."""
    a = await start_node(name="ta", heartbeat_interval=0.1, heartbeat_deadline=0.3)
    b = await start_node(name="tb", heartbeat_interval=0.1, heartbeat_deadline=0.3)
    assert abs(a.node.config.link_interval - 0.3) < 1e-9
    await _mesh([a, b])
    await trio.sleep(0.5)  # past the link's start-up frames (resume, gossip)

    def frames() -> int:
        status = peer_status(a, b)
        return int(status["frames_sent"]) + int(status["frames_received"])

    before = frames()
    await trio.sleep(3.0)  # a window to count ticks in; nothing to await
    ticked = frames() - before
    # One ping and one pong per 0.3 s is 20 frames in 3 s (more load only
    # means fewer); ticking at the device interval gave about 60.
    assert 4 <= ticked <= 30, ticked
    assert a.node.federation.statistics().links == 1
    assert peer_status(a, b)["link"] == "linked"
