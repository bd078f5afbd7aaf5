"""Group consent across nodes: the invitee's home node decides."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from chinwag.node.client import ChatClient, ClientError, connect
from chinwag.protocol.addresses import GroupAddress
from chinwag.protocol.envelope import NodeKey
from chinwag.protocol.group_record import make_group_record

from .rogue import rogue_link, trust_rogue
from .test_federation import linked
from .test_groups import befriend, member_of, texts_until, until_joined

TIMEOUT = 20


async def next_event(client: ChatClient, action: str) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        while True:
            frame = await client.messages.receive()
            if frame.get("kind") == "event" and frame["body"].get("action") == action:
                return frame


async def until_invited(host_client: ChatClient, group: str, invited: list[str]) -> None:
    """Poll the host's member list until its open invitations are ``invited``
    (a decline tells no one but the host, so there is no event to await)."""
    with trio.fail_after(TIMEOUT):
        while (await host_client.group("members", group=group))["invited"] != invited:  # noqa: ASYNC110
            await trio.sleep(0.02)


async def test_a_stranger_on_another_node_is_invited_and_joins_on_accept(start_node) -> None:
    n1, n2 = await start_node(name="h1"), await start_node(name="m2")
    await linked(n1, n2)
    alice, bob = await n1.user("alice"), await n2.user("bob")
    async with connect(n1.url, alice) as a, connect(n2.url, bob) as b:
        await a.sync(0)
        await b.sync(0)
        await a.group("create", name="club", title="Club")
        await a.group("add", group="#club@h1", members=["bob@m2"])
        invitation = await next_event(b, "invited")
        assert invitation["body"]["by"] == member_of(n1, "alice")
        assert invitation["body"]["title"] == "Club"
        assert (await b.group("invites"))["invites"] == [
            {
                "group": "#club@h1",
                "name": "club",
                "host": n1.running.identity.id,
                "title": "Club",
                "by": "alice@h1",
            }
        ]
        assert (await a.group("members", group="#club@h1"))["invited"] == ["bob@m2"]
        # Before bob accepts, nothing of the group reaches his node or queue.
        head = n2.node.store.queue_head("bob")
        await a.send("#club@h1", "before")
        await b.group("accept", group="#club@h1")
        await until_joined(a, member_of(n2, "bob"))
        await until_joined(b, member_of(n2, "bob"))
        await a.send("#club@h1", "after")
        assert [f["body"]["text"] for f in await texts_until(b, 1)] == ["after"]
    texts = [e.record for e in n2.node.store.read_queue("bob", head, 100)]
    assert not any(b"before" in record for record in texts)
    assert n2.node.groups.invites("bob") == []


async def test_a_declined_remote_invitation_is_withdrawn_at_the_host(start_node) -> None:
    n1, n2 = await start_node(name="h1"), await start_node(name="m2")
    await linked(n1, n2)
    alice, bob = await n1.user("alice"), await n2.user("bob")
    async with connect(n1.url, alice) as a, connect(n2.url, bob) as b:
        await b.sync(0)
        await a.group("create", name="club")
        await a.group("add", group="#club@h1", members=["bob@m2"])
        await next_event(b, "invited")
        await b.group("decline", group="#club@h1")
        await until_invited(a, "#club@h1", [])
        assert (await a.group("members", group="#club@h1"))["members"][0]["address"] == "alice@h1"
        with pytest.raises(ClientError) as gone:
            await b.group("accept", group="#club@h1")
        assert gone.value.code == "not_found"


async def test_a_contact_on_another_node_joins_in_one_step(start_node) -> None:
    n1, n2 = await start_node(name="h1"), await start_node(name="m2")
    await linked(n1, n2)
    alice, bob = await n1.user("alice"), await n2.user("bob")
    await befriend(n2, bob, "alice@h1")
    async with connect(n1.url, alice) as a, connect(n2.url, bob) as b:
        await a.sync(0)
        await b.sync(0)
        await a.group("create", name="club")
        await a.group("add", group="#club@h1", members=["bob@m2"])
        await until_joined(a, member_of(n2, "bob"))
        await a.send("#club@h1", "hello bob")
        assert [f["body"]["text"] for f in await texts_until(b, 1)] == ["hello bob"]
        assert (await b.group("invites"))["invites"] == []


async def test_a_host_adding_without_an_invitation_reaches_no_queue(start_node) -> None:
    """The invitee's node decides: a host that sends a membership record
    naming bob, with no invitation answered, gets nothing into his queue."""
    node = await start_node(name="m2")
    await node.user("bob")
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    group = GroupAddress("spam", rogue.id)
    bob = member_of(node, "bob")
    members = [f"mallory@{rogue.id}", bob]
    event = {"action": "members", "by": f"mallory@{rogue.id}", "added": [bob], "removed": []}
    record = make_group_record(rogue, group, 1, members=members, event=event)
    async with rogue_link(node, rogue) as link:
        await link.push([{"o": 1, "k": "gr", "r": record}])
        with trio.fail_after(TIMEOUT):
            while (await link.receive("ack"))["upto"] < 1:
                pass
    assert node.node.store.queue_head("bob") == 0
