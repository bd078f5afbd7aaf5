"""Group consent on one node: a stranger's add is an invitation; a contact's is direct."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from chinwag.node.client import ChatClient, ClientError, api_call, connect

TIMEOUT = 10


async def next_frame(client: ChatClient, predicate: Any) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        while True:
            frame = await client.messages.receive()
            if predicate(frame):
                return frame


def is_action(action: str) -> Any:
    return lambda f: f.get("kind") == "event" and f["body"].get("action") == action


def queued(node: Any, user: str) -> list[bytes]:
    return [e.record for e in node.node.store.read_queue(user, 0, 1000)]


async def test_a_stranger_add_is_an_invitation_and_nothing_arrives_before_accept(
    start_node,
) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await b.sync(0)
        await a.group("create", name="club", title="Book club")
        info = await a.group("add", group="#club@home", members=["bob@home"])
        assert info["members"] == 1  # bob is invited, not a member
        invitation = await next_frame(b, is_action("invited"))
        assert invitation["body"]["title"] == "Book club"
        assert invitation["body"]["by"] == f"alice@{node.running.identity.id}"
        listed = await b.group("invites")
        assert listed["invites"] == [
            {
                "group": "#club@home",
                "name": "club",
                "host": node.running.identity.id,
                "title": "Book club",
                "by": "alice@home",
            }
        ]
        assert (await b.group("list"))["groups"] == []
        members = await a.group("members", group="#club@home")
        assert members["invited"] == ["bob@home"]
        # Nothing of the group enters bob's queue before he accepts.
        head = node.node.store.queue_head("bob")
        await a.send("#club@home", "before")
        with pytest.raises(ClientError) as refused:
            await b.send("#club@home", "let me in")
        assert refused.value.code == "forbidden"
        assert node.node.store.queue_head("bob") == head

        await b.group("accept", group="#club@home")
        joined = await next_frame(b, is_action("members"))
        assert joined["body"]["added"] == [f"bob@{node.running.identity.id}"]
        await a.send("#club@home", "after")
        got = await next_frame(b, lambda f: f.get("kind") == "text")
        assert got["body"]["text"] == "after"
        assert (await b.group("invites"))["invites"] == []
        assert (await a.group("members", group="#club@home"))["invited"] == []
        # An invitation is answered once.
        with pytest.raises(ClientError) as again:
            await b.group("accept", group="#club@home")
        assert again.value.code == "not_found"


async def test_a_declined_invitation_leaves_nothing(start_node) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await a.group("create", name="club")
        await a.group("add", group="#club@home", members=["bob@home"])
        await b.group("decline", group="#club@home")
        assert (await b.group("invites"))["invites"] == []
        assert (await a.group("members", group="#club@home"))["invited"] == []
        head = node.node.store.queue_head("bob")
        await a.send("#club@home", "not for bob")
        with pytest.raises(ClientError):
            await b.group("accept", group="#club@home")
    assert node.node.store.queue_head("bob") == head


async def test_removing_an_invitee_withdraws_the_invitation(start_node) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await a.group("create", name="club")
        await a.group("add", group="#club@home", members=["bob@home"])
        await a.group("remove", group="#club@home", members=["bob@home"])
        assert (await b.group("invites"))["invites"] == []
        with pytest.raises(ClientError):
            await b.group("accept", group="#club@home")


async def test_a_contact_add_is_direct(start_node) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    # bob has alice in his contacts: her add makes him a member in one step.
    await api_call(node.url, "POST", "/api/contacts", {"address": "alice"}, bob)
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await b.sync(0)
        await a.group("create", name="club")
        info = await a.group("add", group="#club@home", members=["bob@home"])
        assert info["members"] == 2
        await a.send("#club@home", "welcome")
        got = await next_frame(b, lambda f: f.get("kind") == "text")
        assert got["body"]["text"] == "welcome"
        assert (await b.group("invites"))["invites"] == []


async def test_invitations_count_toward_the_cap(start_node) -> None:
    node = await start_node(name="home", group_cap=3)
    alice = await node.user("alice")
    for name in ("bob", "carol", "dave"):
        await node.user(name)
    async with connect(node.url, alice) as a:
        await a.group("create", name="club")
        await a.group("add", group="#club@home", members=["bob@home", "carol@home"])
        with pytest.raises(ClientError) as full:
            await a.group("add", group="#club@home", members=["dave@home"])
        assert full.value.code == "group_full"
