"""Link requests from unknown keys: nothing durable before proof, bounded after.

Before: every hello from an unknown key (nothing signed yet) upserted a
durable ``pending`` peer row; 4,096 of them (MAX_PEERS) locked out every new
peer, and a restart with a new ``--peer`` seed then ended the node at start.
"""

from __future__ import annotations

from typing import Any

import trio

from chinwag.node.admin import admin_request
from chinwag.node.client import open_ws
from chinwag.node.peers import MAX_PEERS
from chinwag.protocol.addresses import node_id_text
from chinwag.protocol.envelope import NodeKey
from chinwag.protocol.handshake import FED_SUBPROTOCOL, DialerHandshake, decode_refusal

from .test_federation import TIMEOUT, linked

#: Load loop bounds: as many unproven hellos as fit in this time, at most COUNT.
HELLO_COUNT = 10_000
HELLO_SECONDS = 8.0


async def _hello(node: Any, key: NodeKey, *, confirm: bool) -> bytes | None:
    """One dial by a fresh key: hello, then (maybe) the signed confirm.

    Returns the node's answer to the confirm (a refusal), or None.
    """
    url = node.url.replace("http://", "ws://") + "/federation"
    async with open_ws(url, subprotocols=[FED_SUBPROTOCOL]) as ws:
        hs = DialerHandshake(key, "stranger", node.node.identity.key.public)
        with trio.fail_after(TIMEOUT):
            await ws.send_message(hs.start())
            welcome = await ws.get_message()
            assert isinstance(welcome, bytes)
            confirm_bytes = hs.receive_welcome(welcome)  # the node did not refuse yet
            if not confirm:
                return None
            await ws.send_message(confirm_bytes)
            answer = await ws.get_message()
            assert isinstance(answer, bytes)
            return answer


async def test_unproven_hellos_store_nothing_and_proven_ones_stay_bounded(start_node) -> None:
    node = await start_node(name="target", max_pending_peers=8)
    sent = 0
    with trio.move_on_after(HELLO_SECONDS):
        while sent < HELLO_COUNT:
            await _hello(node, NodeKey.generate(), confirm=False)
            sent += 1
    assert sent >= 200, sent  # enough to have locked a node out in an older life
    assert node.node.registry.all() == []
    stats = node.node.federation.statistics()
    assert stats.pending_requests == 0
    # Proven strangers: refused after their confirm, kept in memory, bounded.
    keys = [NodeKey.generate() for _ in range(20)]
    for key in keys:
        answer = await _hello(node, key, confirm=True)
        refusal = decode_refusal(answer or b"")
        assert refusal is not None and "pending" in refusal.message
    assert node.node.registry.all() == []
    stats = node.node.federation.statistics()
    assert (stats.pending_requests, stats.pending_capacity) == (8, 8)
    assert stats.pending_evicted == 12
    listed = await admin_request(node.node.config.data_dir, "peers.list", {})
    pending_ids = {p["node_id"] for p in listed["peers"] if p["state"] == "pending"}
    assert pending_ids == {k.id for k in keys[-8:]}  # the oldest went first
    # An admin's decision always gets through: approve a request held only in
    # memory, and add a new peer.
    approved = await admin_request(node.node.config.data_dir, "peers.approve", {"id": keys[-1].id})
    assert approved["state"] == "trusted"
    assert node.node.registry.get(keys[-1].public) is not None
    assert node.node.federation.statistics().pending_requests == 7
    other = await start_node(name="friend")
    await linked(node, other)


async def test_full_peer_table_still_takes_admin_peers_and_new_seeds(start_node, tmp_path) -> None:
    node = await start_node(name="full")
    registry = node.node.registry

    async def fill(start: int) -> None:
        for _ in range(start, MAX_PEERS, 64):
            await registry.upsert(NodeKey.generate().public, source="gossip", now_ms=1)

    async with trio.open_nursery() as nursery:
        for lane in range(64):
            nursery.start_soon(fill, lane)
    assert len(registry.all()) == MAX_PEERS
    friend = await start_node(name="friend")
    # An admin's peers add past the cap.
    await admin_request(
        node.node.config.data_dir,
        "peers.add",
        {"peer": f"{friend.url}#{friend.running.identity.id}"},
    )
    assert registry.get(friend.node.identity.key.public) is not None
    # A restart with a new seed: the node starts and trusts it.
    data_dir = node.node.config.data_dir
    await node.stop()
    seed = NodeKey.generate()
    restarted = await start_node(
        data_dir=data_dir, name="full", seeds=(("http://127.0.0.1:9", seed.id),)
    )
    assert not restarted.stopped.is_set()
    record = restarted.node.registry.get(seed.public)
    assert record is not None and record.state == "trusted"


async def test_a_request_then_added_by_hand_is_listed_once(start_node) -> None:
    """An unknown node asks (held pending in memory); the admin then trusts it
    with ``peers add URL#ID`` rather than ``approve``: ``peers list`` shows
    it once, trusted, and the in-memory request is gone."""
    node = await start_node(name="target")
    stranger = NodeKey.generate()
    await _hello(node, stranger, confirm=True)
    assert node.node.federation.statistics().pending_requests == 1
    stranger_id = node_id_text(stranger.public)
    await admin_request(
        node.node.config.data_dir, "peers.add", {"peer": f"http://127.0.0.1:9#{stranger_id}"}
    )
    listed = (await admin_request(node.node.config.data_dir, "peers.list", {}))["peers"]
    rows = [p for p in listed if p["node_id"] == stranger_id]
    assert [p["state"] for p in rows] == ["trusted"]
    assert node.node.federation.statistics().pending_requests == 0
