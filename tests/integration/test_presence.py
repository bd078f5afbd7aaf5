"""Presence: local and remote contacts, coalesced subscriptions, node down."""

from __future__ import annotations

import trio

from chinwag.node.client import api_call, connect

from .test_federation import eventually, linked

TIMEOUT = 15
#: A frame already due, not one after some later change.
AT_ONCE = 3
FAST = {"presence_grace": 0.1, "heartbeat_interval": 0.2}


async def add_contact(node, token: str, address: str) -> None:
    await api_call(node.url, "POST", "/api/contacts", {"address": address}, token)


async def test_local_contact_sees_online_offline_and_last_active(start_node) -> None:
    node = await start_node(name="home", **FAST)
    alice = await node.user("alice")
    bob = await node.user("bob")
    await add_contact(node, alice, "bob")
    async with connect(node.url, alice) as a:
        async with connect(node.url, bob):
            online = await a.wait_presence("bob@home", "online", TIMEOUT)
            assert online["last_active_at"] > 0
        offline = await a.wait_presence("bob@home", "offline", TIMEOUT)
        assert offline["last_active_at"] >= online["last_active_at"]
    listed = await api_call(node.url, "GET", "/api/contacts", token=alice)
    assert listed["contacts"][0]["status"] == "offline"
    assert listed["contacts"][0]["last_active_at"] == offline["last_active_at"]


async def test_remote_watchers_share_one_subscription(start_node) -> None:
    n1 = await start_node(name="w1", **FAST)
    n2 = await start_node(name="h2", **FAST)
    await linked(n1, n2)
    carol = await n2.user("carol")
    watchers = [await n1.user(f"w{i}") for i in range(20)]
    for token in watchers:
        await add_contact(n1, token, "carol@h2")
    await eventually(lambda: n2.node.presence.subscribers_of("carol") == 1)
    assert n2.node.presence.stats.subscriptions_received == 1
    assert n1.node.presence.stats.subscriptions_sent == 1
    async with connect(n1.url, watchers[0]) as w0, connect(n1.url, watchers[7]) as w7:
        async with connect(n2.url, carol):
            await w0.wait_presence("carol@h2", "online", TIMEOUT)
            await w7.wait_presence("carol@h2", "online", TIMEOUT)
        await w0.wait_presence("carol@h2", "offline", TIMEOUT)
    # One update per change crossed the link, not one per watcher.
    assert n2.node.presence.stats.updates_sent <= 4


async def test_node_down_marks_its_users_offline_after_silence(start_node) -> None:
    n1 = await start_node(name="a1", presence_timeout=0.5, **FAST)
    n2 = await start_node(name="b2", **FAST)
    await linked(n1, n2)
    dave = await n2.user("dave")
    watcher = await n1.user("erin")
    await add_contact(n1, watcher, "dave@b2")
    await eventually(lambda: n2.node.presence.subscribers_of("dave") == 1)
    async with connect(n1.url, watcher) as e, connect(n2.url, dave):
        await e.wait_presence("dave@b2", "online", TIMEOUT)
        await n2.stop()  # the whole node goes away, dave never says goodbye
        with trio.fail_after(TIMEOUT):
            await e.wait_presence("dave@b2", "offline", TIMEOUT)


async def test_contact_added_by_label_before_the_pin_is_watched_once_pinned(start_node) -> None:
    n1 = await start_node(name="w3", **FAST)
    n2 = await start_node(name="attic", **FAST)
    watcher = await n1.user("gina")
    # n1 has never heard of "attic": the contact is stored, not yet resolvable.
    await add_contact(n1, watcher, "hank@attic")
    hank = await n2.user("hank")
    await linked(n1, n2)  # the handshake pins "attic"
    await eventually(lambda: n2.node.presence.subscribers_of("hank") == 1)
    async with connect(n1.url, watcher) as g, connect(n2.url, hank):
        await g.wait_presence("hank@attic", "online", TIMEOUT)


async def test_a_second_watcher_gets_the_current_status_at_once(start_node) -> None:
    n1 = await start_node(name="s1", **FAST)
    n2 = await start_node(name="s2", **FAST)
    await linked(n1, n2)
    carol = await n2.user("carol")
    first, second = await n1.user("wa"), await n1.user("wb")
    local = await n1.user("wl")
    async with (
        connect(n2.url, carol),
        connect(n1.url, first) as a,
        connect(n1.url, second) as b,
        connect(n1.url, local) as c,
    ):
        await add_contact(n1, first, "carol@s2")
        await a.wait_presence("carol@s2", "online", TIMEOUT)
        # carol's status does not change from here on: the second watcher of
        # an already watched user must be told by its own node at once.
        await add_contact(n1, second, "carol@s2")
        await b.wait_presence("carol@s2", "online", AT_ONCE)
        # The same for a user of the watcher's own node who is online.
        await add_contact(n1, local, "wa")
        await c.wait_presence("wa@s1", "online", AT_ONCE)
