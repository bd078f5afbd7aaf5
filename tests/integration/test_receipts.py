"""Receipts: delivered and read, 1:1 on one node and across a link, groups, turned off."""

from __future__ import annotations

from typing import Any

from chinwag.node.client import ChatClient, api_call, connect

from .test_federation import linked
from .test_groups import befriend, member_of, texts_until, until_joined

TIMEOUT = 15


def addr(node: Any, user: str) -> str:
    return f"{user}@{node.running.identity.id}"


async def wait_receipt(client: ChatClient, conv: str, member: str, field: str, value: int) -> None:
    def reached() -> bool:
        return client.receipt_states.get((conv, member), {}).get(field, 0) >= value

    await client.wait_signal(reached, TIMEOUT)


def listed(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{r['user']['u']}@{r['user']['n']}": r for r in state["receipts"]}


async def test_read_receipt_on_one_node_one_per_marker_move(start_node) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await b.sync(0)
        acks = [await a.send("bob", f"m{i}") for i in range(3)]
        got = await texts_until(b, 3)
        await b.read("alice", got[-1]["seq"])
        conv = addr(node, "bob")
        await wait_receipt(a, conv, addr(node, "bob"), "read_id", acks[-1].id)
        assert node.node.receipts.statistics().read_made == 1  # one marker move, one receipt
        # Moving the marker over nothing new from alice makes no receipt.
        await b.read("alice", got[-1]["seq"])
        assert node.node.receipts.statistics().read_made == 1
    async with connect(node.url, alice) as again:
        state = await again.receipts("bob")
        assert state["conv"] == conv and state["read_receipts"] is True
        assert listed(state)[addr(node, "bob")]["read_id"] == acks[-1].id


async def test_delivered_and_read_across_a_link_survive_a_reconnect(start_node) -> None:
    n1, n2 = await start_node(name="r1"), await start_node(name="r2")
    await linked(n1, n2)
    alice, bob = await n1.user("alice"), await n2.user("bob")
    conv = addr(n2, "bob")
    async with connect(n1.url, alice) as a, connect(n2.url, bob) as b:
        await b.sync(0)
        first = await a.send("bob@r2", "one")
        second = await a.send("bob@r2", "two")
        await wait_receipt(a, conv, conv, "delivered_id", second.id)
        got = await texts_until(b, 2)
        await b.read("alice@r1", got[0]["seq"])
        await wait_receipt(a, conv, conv, "read_id", first.id)
        assert a.receipt_states[conv, conv]["read_id"] == first.id
        await b.read("alice@r1", got[1]["seq"])
        await wait_receipt(a, conv, conv, "read_id", second.id)
        assert n2.node.receipts.statistics().link_frames_sent == 2
    async with connect(n1.url, alice) as again:
        row = listed(await again.receipts("bob@r2"))[conv]
        assert row["delivered_id"] == second.id and row["read_id"] == second.id


async def test_group_read_by_members_on_two_nodes(start_node) -> None:
    n1, n2 = await start_node(name="h1"), await start_node(name="m2")
    await linked(n1, n2)
    alice, carol = await n1.user("alice"), await n1.user("carol")
    bob = await n2.user("bob")
    await befriend(n2, bob, "alice@h1")
    await befriend(n1, carol, "alice@h1")
    async with (
        connect(n1.url, alice) as a,
        connect(n1.url, carol) as c,
        connect(n2.url, bob) as b,
    ):
        for client in (a, b, c):
            await client.sync(0)
        await a.group("create", name="club")
        await a.group("add", group="#club@h1", members=["bob@m2", "carol"])
        await until_joined(a, member_of(n2, "bob"), member_of(n1, "carol"))
        await until_joined(b, member_of(n2, "bob"))
        sent = await a.send("#club@h1", "hello club")
        conv = f"#club@{n1.running.identity.id}"
        for reader in (b, c):
            msg = (await texts_until(reader, 1))[0]
            await reader.read("#club@h1", msg["seq"])
        await wait_receipt(a, conv, addr(n2, "bob"), "read_id", sent.id)
        await wait_receipt(a, conv, addr(n1, "carol"), "read_id", sent.id)
        state = listed(await a.receipts("#club@h1"))
        read_by = [m for m, r in state.items() if r.get("read_id", 0) >= sent.id]
        assert sorted(read_by) == sorted([addr(n2, "bob"), addr(n1, "carol")])


async def test_a_blocker_sends_no_read_receipt_to_the_blocked(start_node) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await a.sync(0)
        await b.send("alice", "before the block")
        msg = (await texts_until(a, 1))[0]
        await api_call(node.url, "POST", "/api/blocks", {"address": "bob"}, alice)
        await a.read("bob", msg["seq"])
        assert node.node.receipts.statistics().read_made == 0
        assert (await b.receipts("alice"))["receipts"] == []


async def test_read_receipts_off_send_none_and_show_none(start_node) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    profile = await api_call(node.url, "GET", "/api/profile", token=bob)
    assert profile["read_receipts"] is True
    profile = await api_call(node.url, "PUT", "/api/profile", {"read_receipts": False}, bob)
    assert profile["read_receipts"] is False
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await a.sync(0)
        await b.sync(0)
        await a.send("bob", "hi")
        msg = (await texts_until(b, 1))[0]
        await b.read("alice", msg["seq"])
        assert node.node.receipts.statistics().read_made == 0
        # bob, who sends none, sees none either.
        reply = await b.send("alice", "hello back")
        got = await texts_until(a, 2)
        await a.read("bob", got[-1]["seq"])
        assert node.node.receipts.statistics().read_made == 1
        state = await b.receipts("alice")
        assert state["read_receipts"] is False
        assert all("read_id" not in r for r in state["receipts"])
        assert reply.id not in [v.get("read_id") for v in b.receipt_states.values()]
