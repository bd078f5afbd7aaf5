"""What a member on another node sees of a group: its title and owner, node
labels in events, display names, and members' presence fetched on demand."""

from __future__ import annotations

import trio

from chinwag.node.client import api_call, connect

from .test_federation import eventually, linked
from .test_groups import befriend, group_event, member_of

TIMEOUT = 15
FAST = {"presence_grace": 0.1, "heartbeat_interval": 0.2}


async def test_remote_member_gets_title_owner_and_labelled_events(start_node) -> None:
    n1 = await start_node(name="kitchen", **FAST)
    n2 = await start_node(name="attic", **FAST)
    await linked(n1, n2)
    alice, bob = await n1.user("alice"), await n2.user("bob")
    await befriend(n2, bob, "alice@kitchen")
    async with connect(n1.url, alice) as a, connect(n2.url, bob) as b:
        await b.sync(0)
        await a.group("create", name="team", title="Team Kitchen")
        await a.group("add", group="#team", members=["bob@attic"])
        frame = await group_event(b, "members")
        # The event names members by node id; the node adds its labels for them.
        assert frame["labels"][n1.node.identity.id] == "kitchen"
        assert frame["labels"][n2.node.identity.id] == "attic"
        assert frame["body"]["added"] == [member_of(n2, "bob")]
        listed = await b.group("list")
        (group,) = listed["groups"]
        assert group["title"] == "Team Kitchen"
        assert group["owner"] == "alice@kitchen"
        members = await b.group("members", group=f"#team@{n1.node.identity.id}")
        assert members["title"] == "Team Kitchen"
        assert members["owner"] == "alice@kitchen"


async def test_presence_query_follows_a_remote_member_once_per_node(start_node) -> None:
    n1 = await start_node(name="n1", **FAST)
    n2 = await start_node(name="n2", presence_query_ttl=2.0, **FAST)
    await linked(n1, n2)
    carol = await n1.user("carol")
    await api_call(n1.url, "PUT", "/api/profile", {"display_name": "Carol C."}, carol)
    viewers = [await n2.user(f"v{i}") for i in range(3)]
    address = f"carol@{n1.node.identity.id}"
    async with connect(n1.url, carol):
        await eventually(lambda: n1.node.presence.state_of_local("carol").status == "online")
        async with (
            connect(n2.url, viewers[0]) as v0,
            connect(n2.url, viewers[1]) as v1,
            connect(n2.url, viewers[2]) as v2,
        ):
            # Groups and unknown nodes are no one's presence: left out.
            odd = await v0.call({"t": "presence_query", "users": ["#team@n1", "x@nowhere"]})
            assert odd["users"] == []
            reply = await v0.call({"t": "presence_query", "users": [address]})
            (item,) = reply["users"]
            assert item["user"] == {"u": "carol", "n": n1.node.identity.id, "name": "n1"}
            # Not a contact of anyone on n2: the state follows as a frame.
            frame = await v0.wait_presence("carol@n1", "online", TIMEOUT)
            assert frame["display_name"] == "Carol C."
            # Later viewers are answered from n2's state at once.
            for client in (v1, v2):
                reply = await client.call({"t": "presence_query", "users": [address]})
                assert reply["users"][0]["status"] == "online"
                assert reply["users"][0]["display_name"] == "Carol C."
            # One subscription of n2 to carol, however many viewers asked.
            assert n1.node.presence.subscribers_of("carol") == 1
            assert n2.node.presence.stats.lease_subscriptions == 1
    # Nobody asks again: the follow ends, n1 has no subscriber left.
    await eventually(lambda: n1.node.presence.subscribers_of("carol") == 0)
    assert n2.node.presence.stats.leases == 0


async def test_group_members_asks_remote_presence_on_demand(start_node) -> None:
    n1 = await start_node(name="h1", **FAST)
    n2 = await start_node(name="h2", **FAST)
    await linked(n1, n2)
    alice, bob = await n1.user("alice"), await n2.user("bob")
    await befriend(n2, bob, "alice@h1")
    async with connect(n1.url, alice) as a, connect(n2.url, bob) as b:
        await b.sync(0)
        await a.group("create", name="crew")
        await a.group("add", group="#crew", members=["bob@h2"])
        await group_event(b, "members")
        # bob is not alice's contact: n1 follows him only on demand.
        await a.group("members", group="#crew")
        frame = await a.wait_presence("bob@h2", "online", TIMEOUT)
        assert frame["status"] == "online"
        assert n2.node.presence.subscribers_of("bob") == 1


async def test_a_new_display_name_reaches_watchers_on_both_nodes(start_node) -> None:
    n1 = await start_node(name="p1", **FAST)
    n2 = await start_node(name="p2", **FAST)
    await linked(n1, n2)
    dora, local, remote = await n1.user("dora"), await n1.user("lou"), await n2.user("rem")
    await api_call(n1.url, "POST", "/api/contacts", {"address": "dora"}, local)
    async with (
        connect(n1.url, local) as lou,
        connect(n2.url, remote) as rem,
        connect(n1.url, dora),
    ):
        await lou.wait_presence("dora@p1", "online", TIMEOUT)
        await rem.call({"t": "presence_query", "users": ["dora@p1"]})
        await rem.wait_presence("dora@p1", "online", TIMEOUT)
        await api_call(n1.url, "PUT", "/api/profile", {"display_name": "Dora E."}, dora)
        for client in (lou, rem):
            with trio.fail_after(TIMEOUT):
                while client.presence["dora@p1"].get("display_name") != "Dora E.":
                    await client.presence_changed().wait()
        # A contact added while the user is followed on demand: told at once.
        await api_call(n2.url, "POST", "/api/contacts", {"address": "dora@p1"}, remote)
        listed = await api_call(n2.url, "GET", "/api/contacts", token=remote)
        assert listed["contacts"][0]["status"] == "online"
        assert listed["contacts"][0]["display_name"] == "Dora E."
