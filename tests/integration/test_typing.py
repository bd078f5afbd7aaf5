"""Typing: appears, stops, expires, is rate-limited, crosses links once per node, obeys blocks."""

from __future__ import annotations

from typing import Any

import pytest

from chinwag.node.client import ChatClient, ClientError, api_call, connect

from .test_federation import eventually, linked_one_way
from .test_groups import befriend, member_of, three_nodes, until_joined

TIMEOUT = 15


def typing_of(client: ChatClient, conv: str, typist: str) -> str | None:
    frame = client.typing_states.get((conv, typist))
    return None if frame is None else frame["state"]


async def wait_typing(client: ChatClient, conv: str, typist: str, state: str) -> None:
    await client.wait_signal(lambda: typing_of(client, conv, typist) == state, TIMEOUT)


def addr(node: Any, user: str) -> str:
    return f"{user}@{node.running.identity.id}"


async def typing_call(client: ChatClient, conv: str, state: str) -> dict[str, Any]:
    """A ``typing`` frame with a rid: its ``ok`` says the node handled it."""
    return await client.call({"t": "typing", "conv": conv, "state": state})


async def test_typing_start_stop_and_expiry_on_one_node(start_node) -> None:
    node = await start_node(name="home", typing_expiry=0.5)
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        head = (await b.convs())["convs"]
        await a.typing("bob", "start")
        await wait_typing(b, addr(node, "alice"), addr(node, "alice"), "start")
        frame = b.typing_states[(addr(node, "alice"), addr(node, "alice"))]
        assert frame["user"]["name"] == "home"
        await a.typing("bob@home", "stop")
        await wait_typing(b, addr(node, "alice"), addr(node, "alice"), "stop")
        # A start that is not renewed runs out at the typist's node.
        b.typing_states.clear()
        await typing_call(a, "bob", "start")
        await wait_typing(b, addr(node, "alice"), addr(node, "alice"), "start")
        await wait_typing(b, addr(node, "alice"), addr(node, "alice"), "stop")
        stats = node.node.typing.statistics()
        assert stats.expired == 1
        # Never stored: no conversation appeared in anyone's queue.
        assert (await b.convs())["convs"] == head == []
        assert node.node.store.queue_head("bob") == 0


async def test_typing_is_rate_limited_per_device_and_counted(start_node) -> None:
    node = await start_node(name="home", typing_min_interval=60.0)
    alice = await node.user("alice")
    await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, alice) as a2:
        for _ in range(5):
            await typing_call(a, "bob", "start")
        await typing_call(a2, "bob", "start")  # another device has its own rate
    stats = node.node.typing.statistics()
    assert stats.received == 6
    assert stats.dropped == 3  # a burst of two, then one per minute


async def test_typing_refuses_bad_conversations(start_node) -> None:
    node = await start_node(name="home")
    alice = await node.user("alice")
    async with connect(node.url, alice) as a:
        with pytest.raises(ClientError) as info:
            await typing_call(a, "bob@nowhere", "start")
        assert info.value.code == "no_such_node"
        with pytest.raises(ClientError) as info:
            await a.call({"t": "typing", "conv": "bob", "state": "maybe"})
        assert info.value.code == "bad_frame"
        await a.group("create", name="solo")
        async with connect(node.url, await node.user("eve")) as e:
            with pytest.raises(ClientError) as info:
                await typing_call(e, "#solo", "start")
            assert info.value.code == "forbidden"


async def test_typing_crosses_a_link_and_a_blocker_never_sees_it(start_node) -> None:
    n1, n2 = await start_node(name="t1"), await start_node(name="t2")
    # Typing is soft state, sent on the link of the moment: a link that is
    # replaced (one link per pair) just after it went out would lose it.
    await linked_one_way(n1, n2)
    alice = await n1.user("alice")
    bob, carol = await n2.user("bob"), await n2.user("carol")
    await api_call(n2.url, "POST", "/api/blocks", {"address": "alice@t1"}, carol)
    async with connect(n1.url, alice) as a, connect(n2.url, bob) as b, connect(n2.url, carol) as c:
        await a.typing("bob@t2", "start")
        await wait_typing(b, addr(n1, "alice"), addr(n1, "alice"), "start")
        assert n2.node.typing.statistics().link_frames_received == 1
        # carol blocked alice: her node drops alice's typing; bob's reaches her.
        await typing_call(a, "carol@t2", "start")
        await b.typing("carol", "start")
        await wait_typing(c, addr(n2, "bob"), addr(n2, "bob"), "start")
        await eventually(lambda: n2.node.typing.statistics().link_frames_received == 2)
        assert (addr(n1, "alice"), addr(n1, "alice")) not in c.typing_states
        # Nor does carol's typing go to alice: nothing leaves her node for it.
        sent = n2.node.typing.statistics().link_frames_sent
        await typing_call(c, "alice@t1", "start")
        assert n2.node.typing.statistics().link_frames_sent == sent
        assert (addr(n2, "carol"), addr(n2, "carol")) not in a.typing_states


async def test_group_typing_goes_once_per_member_node_through_the_host(start_node) -> None:
    n1, n2, n3 = await three_nodes(start_node)
    tokens = {
        "alice": await n1.user("alice"),
        "bob": await n2.user("bob"),
        "carol": await n3.user("carol"),
        "dave": await n3.user("dave"),
    }
    for node, name in ((n2, "bob"), (n3, "carol"), (n3, "dave")):
        await befriend(node, tokens[name], "alice@g1")
    async with (
        connect(n1.url, tokens["alice"]) as alice,
        connect(n2.url, tokens["bob"]) as bob,
        connect(n3.url, tokens["carol"]) as carol,
        connect(n3.url, tokens["dave"]) as dave,
    ):
        await alice.group("create", name="team")
        await alice.group("add", group="#team@g1", members=["bob@g2", "carol@g3", "dave@g3"])
        for client in (alice, bob, carol, dave):
            await client.sync(0)
        await until_joined(
            alice, member_of(n2, "bob"), member_of(n3, "carol"), member_of(n3, "dave")
        )
        for client, node, name in ((bob, n2, "bob"), (carol, n3, "carol"), (dave, n3, "dave")):
            await until_joined(client, member_of(node, name))
        conv = f"#team@{n1.running.identity.id}"
        await bob.typing("#team@g1", "start")
        for client in (alice, carol, dave):
            await wait_typing(client, conv, addr(n2, "bob"), "start")
        # bob's node sent one frame (to the host); the host one to g3, for
        # two members there; g3 got one.
        assert n2.node.typing.statistics().link_frames_sent == 1
        assert n1.node.typing.statistics().link_frames_sent == 1
        assert n3.node.typing.statistics().link_frames_received == 1
        assert (conv, addr(n2, "bob")) not in bob.typing_states
        await carol.typing("#team@g1", "start")
        await bob.typing("#team@g1", "stop")
        await wait_typing(dave, conv, addr(n3, "carol"), "start")
        await wait_typing(dave, conv, addr(n2, "bob"), "stop")
        await wait_typing(alice, conv, addr(n3, "carol"), "start")
        await wait_typing(bob, conv, addr(n3, "carol"), "start")
