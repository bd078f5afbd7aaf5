"""Federation between real nodes on loopback: links, trust, delivery, forgery."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from chinwag.node.admin import admin_request
from chinwag.node.client import ChatClient, ClientError, connect

from .procs import run_cli

TIMEOUT = 15


async def peer_add(node: Any, other: Any) -> None:
    await admin_request(
        node.node.config.data_dir, "peers.add", {"peer": f"{other.url}#{other.running.identity.id}"}
    )


async def linked(a: Any, b: Any) -> None:
    """Both nodes trust each other and the link is up."""
    await peer_add(a, b)
    await peer_add(b, a)
    with trio.fail_after(TIMEOUT):
        await a.node.federation.wait_linked(b.node.identity.key.public)
        await b.node.federation.wait_linked(a.node.identity.key.public)


async def linked_one_way(a: Any, b: Any) -> None:
    """Both trust each other and the link is up, but only ``b`` dials: ``a``
    knows ``b`` at an address that refuses.

    With both dialling (:func:`linked`), a second link can replace the first
    after both sides saw one (one link per pair): an entry pushed on the first
    is pushed again on the second, and a soft frame (typing) sent on it is lost.
    """
    await admin_request(
        a.node.config.data_dir, "peers.add", {"peer": f"http://127.0.0.1:9#{b.running.identity.id}"}
    )
    await peer_add(b, a)
    with trio.fail_after(TIMEOUT):
        await a.node.federation.wait_linked(b.node.identity.key.public)
        await b.node.federation.wait_linked(a.node.identity.key.public)


async def drain(client: ChatClient, count: int) -> list[dict[str, Any]]:
    got = []
    with trio.fail_after(TIMEOUT):
        while len(got) < count:
            got.append(await client.messages.receive())
    return got


def peer_status(node: Any, other: Any) -> dict[str, Any]:
    for peer in node.node.status()["peers"]:
        if peer["node_id"] == other.running.identity.id:
            return peer
    raise AssertionError("peer not listed")


async def test_three_nodes_exchange_both_ways_with_multi_device(start_node) -> None:
    nodes = [await start_node(name=f"n{i}") for i in range(3)]
    await linked(nodes[0], nodes[1])
    await linked(nodes[1], nodes[2])
    await linked(nodes[0], nodes[2])
    users = {}
    for i, node in enumerate(nodes):
        users[i] = (await node.user(f"u{i}", "laptop"), await node.user(f"u{i}", "phone"))
    async with trio.open_nursery() as nursery:
        clients: dict[tuple[int, int], ChatClient] = {}

        async def open_client(i: int, d: int, task_status: Any) -> None:
            async with connect(nodes[i].url, users[i][d]) as client:
                await client.sync(0)
                clients[i, d] = client
                task_status.started()
                await trio.sleep_forever()

        for i in range(3):
            for d in range(2):
                await nursery.start(open_client, i, d)
        for i in range(3):
            for j in range(3):
                if i != j:
                    await clients[i, 0].send(f"u{j}@n{j}", f"from {i} to {j}")
        for i in range(3):
            for d in range(2):
                frames = await drain(clients[i, d], 4)  # 2 sent (own copies) + 2 received
                got = {f["body"]["text"] for f in frames}
                expected = {f"from {i} to {j}" for j in range(3) if j != i}
                expected |= {f"from {j} to {i}" for j in range(3) if j != i}
                assert got == expected
                incoming = [f for f in frames if f["to"]["u"] == f"u{i}"]
                assert {f["from"]["name"] for f in incoming} == {
                    f"n{j}" for j in range(3) if j != i
                }
        nursery.cancel_scope.cancel()
    # One copy per message per remote node: one outbox entry, stored once.
    # (Not the push counter ``sent``: an entry pushed on a link that lost the
    # one-link-per-pair race is pushed again on the winner, and dropped there
    # as a duplicate.)
    k1 = nodes[1].node.identity.key.public
    assert nodes[0].node.registry.outbox_appended(k1) == 1
    assert peer_status(nodes[1], nodes[0])["received"] == 1


async def test_unknown_node_and_unknown_remote_user(start_node) -> None:
    n1, n2 = await start_node(name="n1"), await start_node(name="n2")
    await linked(n1, n2)
    token = await n1.user("alice")
    async with connect(n1.url, token) as alice:
        await alice.sync(0)
        with pytest.raises(ClientError) as info:
            await alice.send("bob@nowhere", "x")
        assert info.value.code == "no_such_node"
        ack = await alice.send("zed@n2", "to nobody")
        frames = await drain(alice, 2)
        assert frames[0]["id"] == ack.id
        event = frames[1]
        assert event["kind"] == "event" and event["body"]["type"] == "delivery_failed"
        assert event["body"]["code"] == "no_such_user" and event["body"]["id"] == ack.id


async def eventually(predicate: Any, timeout: float = TIMEOUT) -> None:
    """Poll a condition that has no event of its own (another node's state)."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 (bounded poll of state with no event)
            await trio.sleep(0.02)


async def test_pending_peer_links_after_cli_approve(start_node, tmp_path) -> None:
    n1, n2 = await start_node(name="n1"), await start_node(name="n2")
    n2_key = n2.node.identity.key.public
    # n2 trusts n1 and dials it; n1 has never heard of n2: pending, refused
    # after n2 proved its key, and held in memory only (no durable row).
    await peer_add(n2, n1)
    await eventually(lambda: n1.node.federation.statistics().pending_requests == 1)
    assert n1.node.registry.get(n2_key) is None
    await eventually(lambda: "pending" in peer_status(n2, n1)["last_error"])
    assert not n1.node.federation.is_linked(n2_key)
    listed = await run_cli(
        ["peers", "list", "--json", "--data", str(n1.node.config.data_dir)], tmp_path
    )
    assert '"pending"' in listed.stdout.decode()
    result = await run_cli(
        ["peers", "approve", n2.running.identity.id[:12], "--data", str(n1.node.config.data_dir)],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    with trio.fail_after(TIMEOUT):
        await n1.node.federation.wait_linked(n2_key)


async def test_known_name_with_a_new_key_is_refused(start_node) -> None:
    n1, n2 = await start_node(name="n1"), await start_node(name="n2")
    await linked(n1, n2)
    impostor = await start_node(name="n2")  # same name, new key
    imp_key = impostor.node.identity.key.public
    await peer_add(n1, impostor)  # even an admin's trust does not move the pin
    await peer_add(impostor, n1)
    await eventually(lambda: "another node key" in peer_status(impostor, n1)["last_error"])
    assert not n1.node.federation.is_linked(imp_key)
    assert n1.node.registry.pinned("n2") == n2.node.identity.key.public


async def test_blocked_peer_cannot_deliver(start_node, tmp_path) -> None:
    n1, n2 = await start_node(name="n1"), await start_node(name="n2")
    await linked(n1, n2)
    n2_key = n2.node.identity.key.public
    await admin_request(n1.node.config.data_dir, "peers.block", {"id": n2.running.identity.id})
    with trio.fail_after(TIMEOUT):
        await n1.node.federation.wait_linked(n2_key, linked=False)
    await n1.user("alice")
    async with connect(n2.url, await n2.user("bob")) as bob:
        ack = await bob.send("alice@n1", "blocked?")
        assert ack.seq == 1  # durable in n2's outbox
    await eventually(lambda: "blocked" in peer_status(n2, n1)["last_error"])
    assert n1.node.store.queue_head("alice") == 0
    assert peer_status(n2, n1)["outbox"] == 1


async def test_gossip_spreads_addresses_but_not_trust(start_node) -> None:
    fast = {"heartbeat_interval": 0.2, "gossip_interval": 0.2}
    n1, n2, n3 = [await start_node(name=f"g{i}", **fast) for i in (1, 2, 3)]
    await linked(n1, n2)
    await linked(n2, n3)
    k1, k3 = n1.node.identity.key.public, n3.node.identity.key.public
    # n1 and n3 learn of each other through n2, with addresses, as pending only.
    await eventually(lambda: n1.node.registry.get(k3) is not None)
    await eventually(lambda: n3.node.registry.get(k1) is not None)
    assert n1.node.registry.get(k3).state == "pending"
    assert n1.node.registry.get(k3).urls == (n3.url,)
    assert n1.node.registry.get(k3).gossip_urls == (n3.url,)
    assert not n1.node.federation.is_linked(k3)
    # Approved, but the only URLs are gossiped loopback ones: never dialled.
    await admin_request(n1.node.config.data_dir, "peers.approve", {"id": n3.running.identity.id})
    await admin_request(n3.node.config.data_dir, "peers.approve", {"id": n1.running.identity.id})
    await eventually(lambda: "not dialling gossiped" in peer_status(n1, n3)["last_error"])
    await eventually(lambda: "not dialling gossiped" in peer_status(n3, n1)["last_error"])
    assert not n1.node.federation.is_linked(k3)
    # The admin giving the same URL first-hand makes it dialable.
    await peer_add(n1, n3)
    assert n1.node.registry.get(k3).gossip_urls == ()
    with trio.fail_after(TIMEOUT):
        await n1.node.federation.wait_linked(k3)
