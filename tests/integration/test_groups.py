"""Groups across three nodes: one order, one copy per node, cap, forbidden, removal."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from chinwag.node.client import ChatClient, ClientError, api_call, connect

from .test_federation import linked

TIMEOUT = 20


async def three_nodes(start_node: Any, **config: Any) -> list[Any]:
    nodes = [await start_node(name=f"g{i}", **config) for i in (1, 2, 3)]
    await linked(nodes[0], nodes[1])
    await linked(nodes[0], nodes[2])
    await linked(nodes[1], nodes[2])
    return nodes


async def texts_until(client: ChatClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` group text messages (membership events skipped)."""
    got: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT):
        while len(got) < count:
            frame = await client.messages.receive()
            if frame.get("kind") == "text":
                got.append(frame)
    return got


async def group_event(client: ChatClient, action: str) -> dict[str, Any]:
    """Skip to the next group event with ``action`` (e.g. ``members``)."""
    with trio.fail_after(TIMEOUT):
        while True:
            frame = await client.messages.receive()
            body = frame.get("body", {})
            if frame.get("kind") == "event" and body.get("action") == action:
                return frame


async def befriend(node: Any, token: str, *addresses: str) -> None:
    """Add contacts for ``token``'s user: their adds then need no invitation."""
    for address in addresses:
        await api_call(node.url, "POST", "/api/contacts", {"address": address}, token)


def member_of(node: Any, user: str) -> str:
    """A member address as group events carry it: ``user@<node id>``."""
    return f"{user}@{node.running.identity.id}"


async def until_joined(client: ChatClient, *members: str) -> None:
    """Skip group events until each of ``members`` (``user@<node id>``) was added."""
    waiting = set(members)
    while waiting:
        frame = await group_event(client, "members")
        waiting -= set(frame["body"]["added"])


def records_queued(host: Any, member_node: Any) -> int:
    """Group records the host ever queued for ``member_node`` (its outbox's last oseq)."""
    return host.node.registry.outbox_appended(member_node.node.identity.key.public)


def records_applied(member_node: Any, host: Any) -> int:
    """The last oseq from ``host`` that ``member_node`` applied.

    Read from the member node's store, where it is committed together with the
    queue entries, so it agrees with what the devices have been sent. (The
    link's ``received`` counter is bumped only when the commit is reported
    back to trio, which can be after a device already read the entry.)
    """
    return member_node.node.registry.applied_from(host.node.identity.key.public)


async def test_group_on_three_nodes_one_order_one_copy_per_node(start_node) -> None:
    n1, n2, n3 = await three_nodes(start_node)
    tokens = {
        "alice": await n1.user("alice"),
        "bob": await n2.user("bob"),
        "carol": await n3.user("carol", "laptop"),
        "carol2": await n3.user("carol", "phone"),
        "dave": await n3.user("dave"),
    }
    # Each member has alice in their contacts, so her add needs no invitation:
    # their home nodes accept it at once.
    for node, name in ((n2, "bob"), (n3, "carol"), (n3, "dave")):
        await befriend(node, tokens[name], "alice@g1")
    async with (
        connect(n1.url, tokens["alice"]) as alice,
        connect(n2.url, tokens["bob"]) as bob,
        connect(n3.url, tokens["carol"]) as carol,
        connect(n3.url, tokens["carol2"]) as carol2,
        connect(n3.url, tokens["dave"]) as dave,
    ):
        created = await alice.group("create", name="team", title="The team")
        assert created["group"] == "#team@g1"
        info = await alice.group("add", group="#team@g1", members=["bob@g2", "carol@g3", "dave@g3"])
        assert info["members"] == 1  # remote invitees join when their nodes answer
        clients = [alice, bob, carol, carol2, dave]
        for client in clients:
            await client.sync(0)
        # Membership is settled on every node (alice's queue has the
        # "members" event of each join, and each member's queue its own,
        # which g2 and g3 apply from the host's record) before counting group
        # records: no fixed sleep, no polling.
        await until_joined(
            alice, member_of(n2, "bob"), member_of(n3, "carol"), member_of(n3, "dave")
        )
        for client, node, name in (
            (bob, n2, "bob"),
            (carol, n3, "carol"),
            (carol2, n3, "carol"),
            (dave, n3, "dave"),
        ):
            await until_joined(client, member_of(node, name))
        queued = (records_queued(n1, n2), records_queued(n1, n3))
        senders = [(alice, "a"), (bob, "b"), (carol, "c")]
        for round_ in range(5):
            for client, tag in senders:
                await client.send("#team@g1", f"{tag}{round_}")
        orders = []
        for client in clients:
            frames = await texts_until(client, 15)
            assert all(f["group"]["name"] == "team" for f in frames)
            orders.append([(f["origin"], f["id"]) for f in frames])
            assert sorted(f["body"]["text"] for f in frames) == sorted(
                f"{t}{r}" for r in range(5) for t in "abc"
            )
        assert all(order == orders[0] for order in orders), "members disagree on the order"
        # One record per message for each member node, though g3 has two
        # members (three devices). Counted where it is exact: records the host
        # queued, and records the member node applied. (Records *sent* can be
        # more: a link replaced by the one-link-per-pair rule resends what was
        # not yet acknowledged, and the receiver skips it by oseq.)
        assert records_queued(n1, n2) - queued[0] == 15
        assert records_queued(n1, n3) - queued[1] == 15
        assert records_applied(n2, n1) == records_queued(n1, n2)
        assert records_applied(n3, n1) == records_queued(n1, n3)
        members = await bob.group("members", group="#team@g1")
        assert {m["address"] for m in members["members"]} == {
            "alice@g1",
            "bob@g2",
            "carol@g3",
            "dave@g3",
        }
        assert all("status" in m for m in members["members"])


async def test_cap_forbidden_removal_and_leave(start_node) -> None:
    n1, n2, n3 = await three_nodes(start_node, group_cap=3)
    alice = await n1.user("alice")
    tokens = {
        name: await node.user(name) for node, name in ((n2, "bob"), (n3, "carol"), (n3, "dave"))
    }
    for node, name in ((n2, "bob"), (n3, "carol"), (n3, "dave")):
        await befriend(node, tokens[name], "alice@g1")
    async with (
        connect(n1.url, alice) as a,
        connect(n2.url, tokens["bob"]) as b,
        connect(n3.url, tokens["carol"]) as c,
        connect(n3.url, tokens["dave"]) as d,
    ):
        await a.group("create", name="club")
        await a.sync(0)
        await a.group("add", group="#club@g1", members=["bob@g2", "carol@g3"])
        # Open invitations count toward the cap, as members do.
        with pytest.raises(ClientError) as info:
            await a.group("add", group="#club@g1", members=["dave@g3"])
        assert info.value.code == "group_full"
        await until_joined(a, member_of(n2, "bob"), member_of(n3, "carol"))
        await c.sync(0)
        await until_joined(c, member_of(n3, "carol"))  # g3 holds the member list now
        with pytest.raises(ClientError) as info:
            await a.group("add", group="#club@g1", members=["dave@g3"])
        assert info.value.code == "group_full"
        # A non-member's message is refused (by dave's own node, which holds
        # the group's member list since carol, on the same node, is a member).
        await d.sync(0)
        with pytest.raises(ClientError) as info:
            await d.send("#club@g1", "let me in")
        assert info.value.code == "forbidden"
        with pytest.raises(ClientError) as info:
            await b.group("add", group="#club@g1", members=["dave@g3"])
        assert info.value.code == "forbidden"
        # Removal: carol stops receiving at once.
        for client in (a, b, c):
            await client.sync(0)
        await a.send("#club@g1", "before")
        assert [f["body"]["text"] for f in await texts_until(c, 1)] == ["before"]
        await a.group("remove", group="#club@g1", members=["carol@g3"])
        await a.send("#club@g1", "after")
        assert [f["body"]["text"] for f in await texts_until(b, 2)] == ["before", "after"]
        # Bob leaves from his own node; the host applies it.
        await b.group("leave", group="#club@g1")
        with trio.fail_after(TIMEOUT):
            while (await a.group("members", group="#club@g1"))["members"] != [  # noqa: ASYNC110
                {
                    "address": "alice@g1",
                    "status": "online",
                    "last_active_at": pytest.approx(0, abs=1e15),
                }
            ]:
                await trio.sleep(0.05)
    carol_queue = [e for e in n3.node.store.read_queue("carol", 0, 1000) if b"after" in e.record]
    assert carol_queue == []


async def test_remote_member_node_restarts_and_catches_up(start_node, tmp_path) -> None:
    n1 = await start_node(name="h1")
    data3 = tmp_path / "member-node"
    n3 = await start_node(data_dir=data3, name="m3")
    await linked(n1, n3)
    alice = await n1.user("alice")
    carol = await n3.user("carol")
    await befriend(n3, carol, "alice@h1")
    async with connect(n1.url, alice) as a:
        await a.sync(0)
        await a.group("create", name="ops")
        await a.group("add", group="#ops@h1", members=["carol@m3"])
        await until_joined(a, member_of(n3, "carol"))
        await a.send("#ops@h1", "m0")
        await n3.stop()
        for i in range(1, 40):
            await a.send("#ops@h1", f"m{i}")
    n3 = await start_node(data_dir=data3, name="m3")
    async with connect(n3.url, carol) as c:
        await c.sync(0)
        frames = await texts_until(c, 40)
    assert [f["body"]["text"] for f in frames] == [f"m{i}" for i in range(40)]


async def test_group_send_retried_with_its_cid_is_stored_once(start_node) -> None:
    """A resend with the same cid gets the original ok and stores nothing,
    on the host and from a member on another node (through its home outbox)."""
    n1, n2 = await start_node(name="h1"), await start_node(name="m2")
    await linked(n1, n2)
    bob_token = await n2.user("bob")
    await befriend(n2, bob_token, "alice@h1")
    async with (
        connect(n1.url, await n1.user("alice")) as alice,
        connect(n2.url, bob_token) as bob,
    ):
        await alice.group("create", name="club")
        await alice.group("add", group="#club@h1", members=["bob@m2"])
        for client in (alice, bob):
            await client.sync(0)
            await group_event(client, "members")
        # On the host: the same ok (id, seq, ts), and one copy in the queue.
        first = await alice.send("#club@h1", "from alice", cid="alice-1")
        again = await alice.send("#club@h1", "from alice", cid="alice-1")
        assert again == first and first.seq > 0
        # From another node: the same ok, seq 0 (durable in the home outbox),
        # and one entry queued for the host.
        host = n1.node.identity.key.public
        queued = n2.node.registry.outbox_appended(host)
        sent = await bob.send("#club@h1", "from bob", cid="bob-1")
        resent = await bob.send("#club@h1", "from bob", cid="bob-1")
        assert resent == sent and sent.seq == 0
        assert n2.node.registry.outbox_appended(host) == queued + 1
        # The outbox is in order and the host orders the group: a duplicate
        # would arrive before this marker.
        await bob.send("#club@h1", "bob's marker", cid="bob-2")
        expected = ["from alice", "from bob", "bob's marker"]
        for client in (alice, bob):
            frames = await texts_until(client, 3)
            assert [f["body"]["text"] for f in frames] == expected
        assert frames[0]["id"] == first.id and frames[1]["id"] == sent.id
    alice_texts = [e for e in n1.node.store.read_queue("alice", 0, 100) if b"from " in e.record]
    assert len(alice_texts) == 2
