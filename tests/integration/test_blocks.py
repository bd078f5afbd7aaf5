"""Blocking a user: messages, group copies and presence, on one node and across nodes."""

from __future__ import annotations

from typing import Any

import pytest

from chinwag.node.admin import admin_request
from chinwag.node.client import ChatClient, ClientError, api_call, connect
from chinwag.protocol.addresses import UserAddress

from ..conftest import PASSWORD
from .procs import run_cli
from .test_federation import linked
from .test_groups import befriend, member_of, texts_until, until_joined

TIMEOUT = 15
FAST = {"presence_grace": 0.1, "heartbeat_interval": 0.2}


async def block(node: Any, token: str, address: str) -> dict[str, Any]:
    return await api_call(node.url, "POST", "/api/blocks", {"address": address}, token)


async def unblock(node: Any, token: str, address: str) -> dict[str, Any]:
    return await api_call(node.url, "DELETE", "/api/blocks", {"address": address}, token)


async def next_text(client: ChatClient) -> dict[str, Any]:
    return (await texts_until(client, 1))[0]


async def test_local_block_refuses_messages_and_unblock_restores(start_node) -> None:
    node = await start_node(name="home")
    alice, bob, carol = [await node.user(n) for n in ("alice", "bob", "carol")]
    listed = await block(node, alice, "bob")
    assert listed["address"] == "bob@home" and listed["node"] == node.running.identity.id
    got = await api_call(node.url, "GET", "/api/blocks", token=alice)
    assert [b["address"] for b in got["blocks"]] == ["bob@home"]
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await a.sync(0)
        await b.sync(0)
        # The blocked sender gets its ok and its own copy: it never learns.
        ack = await b.send("alice", "you there?")
        own = await next_text(b)
        assert own["id"] == ack.id and own["body"]["text"] == "you there?"
        async with connect(node.url, carol) as c:
            await c.send("alice", "marker")
        # The first message alice gets is carol's: bob's never reached her queue.
        assert (await next_text(a))["body"]["text"] == "marker"
        await unblock(node, alice, "bob@home")
        await b.send("alice", "again")
        assert (await next_text(a))["body"]["text"] == "again"
    got = await api_call(node.url, "GET", "/api/blocks", token=alice)
    assert got["blocks"] == []


async def test_block_refuses_bad_addresses(start_node) -> None:
    node = await start_node(name="home")
    alice = await node.user("alice")
    for address, code in (
        ("alice", "bad_request"),
        ("#team", "bad_request"),
        ("x@nowhere", "no_such_node"),
    ):
        with pytest.raises(ClientError) as info:
            await block(node, alice, address)
        assert info.value.code == code
    with pytest.raises(ClientError) as info:
        await api_call(node.url, "GET", "/api/blocks")
    assert info.value.code == "unauthorized"


async def test_block_holds_across_nodes_for_direct_and_group_messages(start_node) -> None:
    n1, n2 = await start_node(name="b1"), await start_node(name="b2")
    await linked(n1, n2)
    alice, carol = await n1.user("alice"), await n1.user("carol")
    bob = await n2.user("bob")
    await block(n1, alice, "bob@b2")
    await befriend(n2, bob, "alice@b1")
    await befriend(n1, carol, "alice@b1")
    async with (
        connect(n1.url, alice) as a,
        connect(n1.url, carol) as c,
        connect(n2.url, bob) as b,
    ):
        for client in (a, b, c):
            await client.sync(0)
        await b.send("alice@b1", "direct from bob")
        assert (await next_text(b))["body"]["text"] == "direct from bob"
        await a.group("create", name="club")
        await a.group("add", group="#club@b1", members=["bob@b2", "carol"])
        await until_joined(a, member_of(n2, "bob"), member_of(n1, "carol"))
        await until_joined(b, member_of(n2, "bob"))
        await b.send("#club@b1", "group from bob")
        # carol (not blocking) gets bob's group message; alice's copy is dropped.
        assert (await next_text(c))["body"]["text"] == "group from bob"
        await c.send("alice", "marker")
        assert (await next_text(a))["body"]["text"] == "marker"
        # Nothing was refused on the link: the sender's node is not told.
        stats = [p for p in n1.node.status()["peers"] if p["node_id"] == n2.running.identity.id]
        assert stats[0]["refused"] == 0
        await unblock(n1, alice, "bob@b2")
        await b.send("alice@b1", "after unblock")
        assert (await next_text(a))["body"]["text"] == "after unblock"


async def test_block_hides_presence_both_ways_locally(start_node) -> None:
    node = await start_node(name="home", **FAST)
    alice, bob = await node.user("alice"), await node.user("bob")
    await befriend(node, alice, "bob")
    await befriend(node, bob, "alice")
    # A device is told of changes after it connects (the list comes from
    # /api/contacts): bob connects first and sees alice come online.
    async with connect(node.url, bob) as b, connect(node.url, alice) as a:
        await b.wait_presence("alice@home", "online", TIMEOUT)
        await block(node, alice, "bob")
        # The blocker looks offline to the blocked user, and the other way round.
        await b.wait_presence("alice@home", "offline", TIMEOUT)
        await a.wait_presence("bob@home", "offline", TIMEOUT)
        contacts = await api_call(node.url, "GET", "/api/contacts", token=bob)
        assert contacts["contacts"][0]["status"] == "offline"
        # Asked on demand (a group being opened), the same answer.
        asked = await b.call({"t": "presence_query", "users": ["alice"]})
        assert [u["status"] for u in asked["users"]] == ["offline"]
        await unblock(node, alice, "bob")
        await b.wait_presence("alice@home", "online", TIMEOUT)
        await a.wait_presence("bob@home", "online", TIMEOUT)


async def test_block_hides_presence_across_nodes(start_node) -> None:
    n1, n2 = await start_node(name="p1", **FAST), await start_node(name="p2", **FAST)
    await linked(n1, n2)
    alice = await n1.user("alice")
    bob, dan = await n2.user("bob"), await n2.user("dan")
    await befriend(n2, bob, "alice@p1")
    await befriend(n2, dan, "alice@p1")
    await befriend(n1, alice, "bob@p2")
    async with connect(n2.url, bob) as b, connect(n2.url, dan) as d, connect(n1.url, alice) as a:
        await b.wait_presence("alice@p1", "online", TIMEOUT)
        await d.wait_presence("alice@p1", "online", TIMEOUT)
        await block(n1, alice, "bob@p2")
        await b.wait_presence("alice@p1", "offline", TIMEOUT)
        await a.wait_presence("bob@p2", "offline", TIMEOUT)
        # dan, on the same node as bob, still sees alice online.
        contacts = await api_call(n2.url, "GET", "/api/contacts", token=dan)
        assert contacts["contacts"][0]["status"] == "online"
        contacts = await api_call(n2.url, "GET", "/api/contacts", token=bob)
        assert contacts["contacts"][0]["status"] == "offline"
        await unblock(n1, alice, "bob@p2")
        await b.wait_presence("alice@p1", "online", TIMEOUT)
        await a.wait_presence("bob@p2", "online", TIMEOUT)


async def test_cli_block_add_list_remove_and_receipts_off(start_node, tmp_path) -> None:
    node = await start_node(name="home")
    await node.user("alice")
    await node.user("bob")
    common = ["--server", node.url, "--user", "alice"]

    added = await run_cli(["block", "add", "bob", *common], tmp_path, password=PASSWORD)
    assert added.returncode == 0, added.stderr
    assert added.stdout.decode().strip() == "blocked bob@home"
    listed = await run_cli(["block", "list", *common], tmp_path, password=PASSWORD)
    assert listed.stdout.decode().split() == ["bob@home"]
    removed = await run_cli(["block", "remove", "bob@home", *common], tmp_path, password=PASSWORD)
    assert removed.stdout.decode().strip() == "unblocked bob@home"
    listed = await run_cli(["block", "list", "--json", *common], tmp_path, password=PASSWORD)
    assert listed.stdout == b""
    missing = await run_cli(["block", "add", *common], tmp_path, password=PASSWORD)
    assert missing.returncode != 0
    off = await run_cli(["receipts", "off", *common], tmp_path, password=PASSWORD)
    assert off.stdout.decode().strip() == "read receipts off"
    shown = await run_cli(["receipts", *common], tmp_path, password=PASSWORD)
    assert shown.stdout.decode().strip() == "read receipts off"
    assert not node.node.receipts.enabled("alice")


async def test_a_new_account_with_a_removed_users_name_has_no_blocks(start_node) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    await block(node, alice, "bob")
    assert node.node.blocks.blocks("alice", UserAddress("bob", node.running.identity.id))
    await admin_request(node.node.config.data_dir, "user.remove", {"user": "alice"})
    alice = await node.user("alice")
    got = await api_call(node.url, "GET", "/api/blocks", token=alice)
    assert got["blocks"] == []
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await a.sync(0)
        await b.send("alice", "hello, new alice")
        assert (await next_text(a))["body"]["text"] == "hello, new alice"
