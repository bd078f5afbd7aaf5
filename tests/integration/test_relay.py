"""Introductions and the relay hop, between real nodes on loopback.

The star: a hub trusted by every leaf and trusting every leaf; the leaves
are not linked to each other and cannot be (their URLs are loopback ones,
known to each other only by gossip, which is never dialled).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from chinwag.node.admin import admin_request
from chinwag.node.client import ChatClient, ClientError, connect
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.envelope import Envelope, NodeKey, sign_envelope
from chinwag.protocol.errors import ErrorCode, ProtocolError

from .procs import run_cli
from .rogue import rogue_link, trust_rogue
from .test_federation import TIMEOUT, eventually, linked, peer_add, peer_status

LEAVES = ("leaf3", "leaf5", "leaf7")
COUNT = 20


async def admin(node: Any, cmd: str, **args: Any) -> dict[str, Any]:
    return await admin_request(node.node.config.data_dir, cmd, args)


def state_of(node: Any, other: Any) -> str | None:
    record = node.node.registry.get(other.node.identity.key.public)
    return None if record is None else record.state


async def star(
    start_node: Any, hub_config: dict[str, Any] | None = None, **leaf_config: Any
) -> tuple[Any, dict[str, Any]]:
    hub = await start_node(name="hub", **(hub_config or {}))
    leaves = {name: await start_node(name=name, **leaf_config) for name in LEAVES}
    for leaf in leaves.values():
        await linked(hub, leaf)
    return hub, leaves


async def take_introductions(hub: Any, leaves: dict[str, Any]) -> None:
    for leaf in leaves.values():
        await admin(leaf, "peers.trust_introductions", id=hub.running.identity.id)
    for leaf in leaves.values():
        for other in leaves.values():
            if other is not leaf:
                await eventually(lambda a=leaf, b=other: state_of(a, b) == "trusted")


async def next_frame(client: ChatClient, kind: str = "text") -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        while True:
            frame = await client.messages.receive()
            if frame["kind"] == kind:
                return frame


async def test_leaf_to_leaf_through_the_hub_exactly_once(start_node) -> None:
    hub, leaves = await star(start_node)
    leaf3, leaf7 = leaves["leaf3"], leaves["leaf7"]
    # Before any introduction, leaf7's name means nothing on leaf3.
    async with connect(leaf3.url, await leaf3.user("alice")) as alice:
        await alice.sync(0)
        with pytest.raises(ClientError) as info:
            await alice.send("bob@leaf7", "too early")
        assert info.value.code == "no_such_node"
    await take_introductions(hub, leaves)
    bob_token = await leaf7.user("bob")
    async with (
        connect(leaf3.url, await leaf3.user("alice")) as alice,
        connect(leaf7.url, bob_token) as bob,
    ):
        await alice.sync(0)
        await bob.sync(0)
        # The name resolves through the pin the hub's introduction made.
        sent = [await alice.send("bob@leaf7", f"through the hub {i}") for i in range(COUNT)]
        got = [await next_frame(bob) for _ in range(COUNT)]
        assert [f["id"] for f in got] == [s.id for s in sent]  # once each, in order
        assert got[0]["origin"] == leaf3.running.identity.id
        assert got[0]["from"]["name"] == "leaf3"
        assert got[-1]["body"]["text"] == f"through the hub {COUNT - 1}"
    # It went through the hub: no link between the leaves, one relay hop.
    assert not leaf3.node.federation.is_linked(leaf7.node.identity.key.public)
    assert leaf3.node.status()["relay"]["sent_via_relay"] == COUNT
    assert hub.node.status()["relay"]["relayed"] == COUNT
    assert leaf7.node.status()["relay"]["delivered"] == COUNT
    assert leaf7.node.store.queue_head("bob") == COUNT


async def test_a_tampering_relay_is_refused_at_the_destination(start_node) -> None:
    leaf7 = await start_node(name="leaf7")
    await leaf7.user("bob")
    relay, origin, stranger = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    await trust_rogue(leaf7, relay)
    await trust_rogue(leaf7, origin)  # trusted, never dialled (nobody listens there)
    bob = UserAddress("bob", leaf7.running.identity.id)

    def unit(key: NodeKey, msg_id: int) -> dict[str, bytes]:
        env = Envelope(msg_id, UserAddress("carol", key.id), bob, None, 1, "text", {"text": "hi"})
        return sign_envelope(key, env).to_wire()

    tampered = unit(origin, 1)
    tampered["env"] = tampered["env"].replace(b"hi", b"yo")
    async with rogue_link(leaf7, relay) as link:
        await link.push(
            [
                {"o": 1, "k": "rd", "u": tampered},
                {"o": 2, "k": "rd", "u": unit(stranger, 2)},
                {"o": 3, "k": "rd", "u": unit(origin, 3)},
                {"o": 4, "k": "rd", "u": unit(origin, 3)},  # a replay
            ]
        )
        ack = await link.receive("ack")
    codes = {r["oseq"]: r["code"] for r in ack["rejected"]}
    assert ack["upto"] == 4
    assert codes == {1: "bad_signature", 2: "forbidden", 4: "conflict"}
    assert leaf7.node.store.queue_head("bob") == 1
    assert leaf7.node.status()["relay"]["delivered"] == 1


async def test_no_route_reports_delivery_failed_within_the_bound(start_node) -> None:
    # route_timeout 0.5 s: the no-route pass runs every 0.125 s.
    node = await start_node(name="lonely", route_timeout=0.5)
    natted = NodeKey.generate()
    # A node behind a NAT dials in once: proven, pending, then approved; it
    # has no URL of its own and no introducer, so no route exists.
    async with rogue_link(node, natted, resume=False):
        await eventually(lambda: node.node.federation.statistics().pending_requests == 1)
    await admin(node, "peers.approve", id=natted.id)
    async with connect(node.url, await node.user("alice")) as alice:
        await alice.sync(0)
        sent = await alice.send(f"bob@{natted.id}", "nobody carries this")
        started = trio.current_time()
        event = (await next_frame(alice, "event"))["body"]
        assert trio.current_time() - started < 0.5 + 2
    assert event["type"] == "delivery_failed"
    assert event["code"] == "no_route" and event["id"] == sent.id
    assert node.node.status()["relay"]["no_route"] == 1
    assert node.node.registry.outbox_depth(natted.public) == 0


async def test_the_relay_refuses_a_destination_it_does_not_know(start_node) -> None:
    hub, leaves = await star(start_node)
    leaf3, leaf7 = leaves["leaf3"], leaves["leaf7"]
    await take_introductions(hub, leaves)
    # The hub blocks leaf7; leaf3 still trusts it on the hub's earlier word.
    await admin(hub, "peers.block", id=leaf7.running.identity.id)
    async with connect(leaf3.url, await leaf3.user("alice")) as alice:
        await alice.sync(0)
        sent = await alice.send("bob@leaf7", "the hub will not carry this")
        event = (await next_frame(alice, "event"))["body"]
    assert event["type"] == "delivery_failed"
    assert event["code"] == "no_route" and event["id"] == sent.id


async def test_introduced_trust_and_its_revocation(start_node, tmp_path) -> None:
    hub, leaves = await star(start_node)
    leaf3, leaf5, leaf7 = leaves["leaf3"], leaves["leaf5"], leaves["leaf7"]
    hub_id = hub.running.identity.id
    # Blocking wins: leaf3 blocked leaf5 before any introduction.
    await admin(leaf3, "peers.add", peer=f"http://127.0.0.1:9#{leaf5.running.identity.id}")
    await admin(leaf3, "peers.block", id=leaf5.running.identity.id)
    # Off by default: nothing is trusted on the hub's word.
    assert state_of(leaf3, leaf7) in (None, "pending")
    result = await run_cli(
        ["peers", "trust-introductions", hub_id[:12], "--data", str(leaf3.node.config.data_dir)],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    await eventually(lambda: state_of(leaf3, leaf7) == "trusted")
    assert state_of(leaf3, leaf5) == "blocked"
    rows = (await admin(leaf3, "peers.list"))["peers"]
    # (In-memory link requests are listed too: the hub's first dial, refused.)
    listed = {p["node_id"]: p for p in rows if p["source"] != "inbound"}
    assert listed[hub_id]["introductions"] is True
    assert listed[leaf7.running.identity.id]["introduced_by"] == [hub_id]
    assert leaf3.node.router.resolve_node("leaf7") == leaf7.running.identity.id
    shown = await run_cli(["peers", "list", "--data", str(leaf3.node.config.data_dir)], tmp_path)
    assert "takes introductions" in shown.stdout.decode()
    assert f"introduced by {hub_id[:12]}" in shown.stdout.decode()

    # Off again: the trust the hub granted goes, the hub itself stays trusted.
    off = await admin(leaf3, "peers.trust_introductions", id=hub_id, on=False)
    assert off["revoked"] == [leaf7.running.identity.id]
    assert state_of(leaf3, leaf7) == "pending" and state_of(leaf3, hub) == "trusted"
    async with connect(leaf3.url, await leaf3.user("alice")) as alice:
        await alice.sync(0)
        with pytest.raises(ClientError) as info:
            await alice.send("bob@leaf7", "not any more")
        assert info.value.code == "forbidden"

    # On again, then blocking the introducer revokes as well.
    await admin(leaf3, "peers.trust_introductions", id=hub_id)
    await eventually(lambda: state_of(leaf3, leaf7) == "trusted")
    blocked = await admin(leaf3, "peers.block", id=hub_id)
    assert blocked["revoked"] == [leaf7.running.identity.id]
    assert state_of(leaf3, leaf7) == "pending"

    # Trust with another basis survives: leaf7 approved directly on leaf5.
    await admin(leaf5, "peers.trust_introductions", id=hub_id)
    await eventually(lambda: state_of(leaf5, leaf7) == "trusted")
    await admin(leaf5, "peers.approve", id=leaf7.running.identity.id)
    await admin(leaf5, "peers.trust_introductions", id=hub_id, on=False)
    assert state_of(leaf5, leaf7) == "trusted"


async def test_introductions_from_an_untrusted_sender_are_ignored(start_node) -> None:
    leaf = await start_node(name="leaf")
    rogue = NodeKey.generate()
    await trust_rogue(leaf, rogue)
    from chinwag.protocol.introduction import make_statement

    victim = NodeKey.generate()
    statement = make_statement(rogue, victim.public, "victim", 1)
    async with rogue_link(leaf, rogue) as link:
        # Introductions from this peer are off (the default): ignored.
        await link.send({"t": "intro", "statements": [statement]})
        await link.send({"t": "ping"})
        await link.receive("pong")
    assert leaf.node.registry.get(victim.public) is None
    assert leaf.node.status()["introductions"]["ignored"] == 1


async def test_a_hub_that_does_not_relay_says_no_route(start_node) -> None:
    hub = await start_node(name="hub", relay=False)
    leaf3, leaf7 = await start_node(name="leaf3"), await start_node(name="leaf7")
    for leaf in (leaf3, leaf7):
        await linked(hub, leaf)
        await admin(leaf, "peers.trust_introductions", id=hub.running.identity.id)
    await eventually(lambda: state_of(leaf3, leaf7) == "trusted")
    async with connect(leaf3.url, await leaf3.user("alice")) as alice:
        await alice.sync(0)
        sent = await alice.send("bob@leaf7", "no relay here")
        event = (await next_frame(alice, "event"))["body"]
    assert event["code"] == "no_route" and event["id"] == sent.id
    assert hub.node.status()["relay"]["relayed"] == 0


async def test_a_node_that_dials_in_keeps_its_messages(start_node) -> None:
    # Behind a NAT, no URL of its own, but it has linked: it dials in again
    # later, so its messages wait the full outbox_max_age, not route_timeout.
    node = await start_node(name="home", route_timeout=0.2)
    natted = NodeKey.generate()
    async with rogue_link(node, natted, resume=False):
        await eventually(lambda: node.node.federation.statistics().pending_requests == 1)
    await admin(node, "peers.approve", id=natted.id)
    async with rogue_link(node, natted):
        await eventually(lambda: node.node.federation.is_linked(natted.public))
    await eventually(lambda: not node.node.federation.is_linked(natted.public))
    async with connect(node.url, await node.user("alice")) as alice:
        await alice.sync(0)
        await alice.send(f"bob@{natted.id}", "for later")
    with trio.move_on_after(1.0):  # five no-route passes
        await trio.sleep_forever()
    assert await node.node.relay.expire_unroutable() == 0
    assert node.node.registry.outbox_depth(natted.public) == 1


async def test_the_relay_stores_and_forwards_while_the_destination_is_down(start_node) -> None:
    hub, leaves = await star(start_node)
    leaf3, leaf7 = leaves["leaf3"], leaves["leaf7"]
    await take_introductions(hub, leaves)
    bob_token = await leaf7.user("bob")
    leaf7_dir, leaf7_key = leaf7.node.config.data_dir, leaf7.node.identity.key.public
    await leaf7.stop()
    with trio.fail_after(TIMEOUT):
        await hub.node.federation.wait_linked(leaf7_key, linked=False)
    async with connect(leaf3.url, await leaf3.user("alice")) as alice:
        await alice.sync(0)
        sent = await alice.send("bob@leaf7", "kept by the hub")
    # The hub acked only after committing the unit to leaf7's outbox.
    hub_key = hub.node.identity.key.public
    await eventually(lambda: leaf3.node.registry.outbox_depth(hub_key) == 0)
    assert hub.node.registry.outbox_depth(leaf7_key) == 1
    # leaf7 comes back (a new port; it dials the hub, its seed): delivered once.
    leaf7 = await start_node(data_dir=leaf7_dir, name="leaf7")
    async with connect(leaf7.url, bob_token) as bob:
        await bob.sync(0)
        got = await next_frame(bob)
    assert got["id"] == sent.id and got["origin"] == leaf3.running.identity.id
    await eventually(lambda: hub.node.registry.outbox_depth(leaf7_key) == 0)
    assert leaf7.node.store.queue_head("bob") == 1


async def test_an_introduction_cannot_take_a_pinned_name(start_node) -> None:
    hub, leaves = await star(start_node)
    leaf3, leaf7 = leaves["leaf3"], leaves["leaf7"]
    impostor = NodeKey.generate()
    await trust_rogue(leaf3, impostor)
    async with rogue_link(leaf3, impostor, name="leaf7"):  # its handshake pins "leaf7"
        pass
    assert leaf3.node.registry.pinned("leaf7") == impostor.public
    await admin(leaf3, "peers.trust_introductions", id=hub.running.identity.id)
    await eventually(lambda: state_of(leaf3, leaves["leaf5"]) == "trusted")
    await eventually(lambda: leaf3.node.status()["introductions"]["refused"] >= 1)
    assert state_of(leaf3, leaf7) in (None, "pending")
    assert leaf3.node.router.resolve_node("leaf7") == impostor.id


async def test_a_repeated_introreq_is_answered_without_signing_again(start_node) -> None:
    """A trusted peer may ask for introductions at every link-up (or in a
    loop): each statement is signed once and the same bytes are sent again,
    so a request costs frames, not one Ed25519 signature per trusted node."""
    hub = await start_node(name="hub")
    asker = NodeKey.generate()
    await trust_rogue(hub, asker)
    known = [NodeKey.generate() for _ in range(3)]
    for i, key in enumerate(known):
        await hub.node.registry.upsert(key.public, state="trusted", source="admin", name=f"k{i}")
    async with rogue_link(hub, asker) as link:
        await link.send({"t": "introreq"})
        first = await link.receive("intro")
        signed = hub.node.status()["introductions"]["signed"]
        await link.send({"t": "introreq"})
        second = await link.receive("intro")
    assert len(first["statements"]) == 3 and signed >= 3
    assert second["statements"] == first["statements"]
    assert hub.node.status()["introductions"]["signed"] == signed


async def test_turning_introductions_on_while_the_link_closes(start_node, monkeypatch) -> None:
    # The link to the peer ends between the lookup and the send (CI saw it
    # once): the request is soft state, asked again at the next link-up, so
    # the admin call succeeds and the node goes on.
    from trio_websocket import ConnectionClosed

    from chinwag.node.link import Link
    from chinwag.protocol.link import IntroRequest

    hub, leaf = await start_node(name="hub"), await start_node(name="leaf")
    await linked(hub, leaf)
    real_send = Link.send

    async def closing_send(self: Link, frame: Any) -> None:
        if isinstance(frame, IntroRequest):
            raise ConnectionClosed(None)
        await real_send(self, frame)

    monkeypatch.setattr(Link, "send", closing_send)
    answer = await admin(leaf, "peers.trust_introductions", id=hub.running.identity.id)
    assert answer["introductions"] is True
    assert (await admin(leaf, "status"))["node_id"] == leaf.running.identity.id


async def test_an_admin_command_that_fails_unexpectedly_answers_internal(
    start_node, monkeypatch
) -> None:
    from chinwag.node.admin import AdminOps

    async def broken(self: AdminOps, args: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("a defect")

    monkeypatch.setattr(AdminOps, "user_list", broken)  # before the node binds its commands
    node = await start_node(name="solo")
    with pytest.raises(ProtocolError) as info:
        await admin(node, "user.list")
    assert info.value.code == ErrorCode.INTERNAL
    assert (await admin(node, "status"))["node_id"] == node.running.identity.id


async def test_approving_an_introduced_node_keeps_the_relay(start_node) -> None:
    """Approval makes trust direct, not reachability: a leaf approved on the
    hub's word still has no URL of its own, so its messages still go through
    the hub (which trusts both). Revoking the hub's introductions then leaves
    the approved leaf trusted, while one it never approved goes back to pending."""
    hub, leaves = await star(start_node, route_timeout=1.0)
    leaf3, leaf5, leaf7 = leaves["leaf3"], leaves["leaf5"], leaves["leaf7"]
    await take_introductions(hub, leaves)
    approved = await admin(leaf3, "peers.approve", id=leaf7.running.identity.id)
    assert approved["state"] == "trusted"
    bob_token = await leaf7.user("bob")
    async with (
        connect(leaf3.url, await leaf3.user("alice")) as alice,
        connect(leaf7.url, bob_token) as bob,
    ):
        await alice.sync(0)
        await bob.sync(0)
        sent = await alice.send("bob@leaf7", "approved, still through the hub")
        got = await next_frame(bob)
        assert got["id"] == sent.id
    assert leaf3.node.status()["relay"]["sent_via_relay"] == 1
    # The hub's introductions off: leaf5 (never approved) is revoked, the
    # approved leaf7 stays trusted.
    off = await admin(leaf3, "peers.trust_introductions", id=hub.running.identity.id, on=False)
    assert off["revoked"] == [leaf5.running.identity.id]
    assert state_of(leaf3, leaf7) == "trusted" and state_of(leaf3, leaf5) == "pending"


async def test_revoked_or_blocked_introduced_nodes_lose_their_link(start_node) -> None:
    """Introduced leaves that dial leaf3 themselves (leaf3's URL given by their
    admins) are linked to it. Revocation closes that link and the leaf is
    refused after it; a block of an introduced node survives the introducer's
    next statements."""
    hub, leaves = await star(start_node, backoff_min=0.1, backoff_max=0.3)
    leaf3, leaf5, leaf7 = leaves["leaf3"], leaves["leaf5"], leaves["leaf7"]
    await take_introductions(hub, leaves)
    key7, key5 = leaf7.node.identity.key.public, leaf5.node.identity.key.public
    await peer_add(leaf7, leaf3)
    await peer_add(leaf5, leaf3)
    with trio.fail_after(TIMEOUT):
        await leaf3.node.federation.wait_linked(key7)
        await leaf3.node.federation.wait_linked(key5)
    hub_id = hub.running.identity.id
    await admin(leaf3, "peers.block", id=leaf5.running.identity.id)
    off = await admin(leaf3, "peers.trust_introductions", id=hub_id, on=False)
    assert off["revoked"] == [leaf7.running.identity.id]
    with trio.fail_after(TIMEOUT):
        await leaf3.node.federation.wait_linked(key7, linked=False)
        await leaf3.node.federation.wait_linked(key5, linked=False)
    # leaf7 still trusts leaf3 and redials: refused, as any pending node is.
    await eventually(lambda: "pending" in peer_status(leaf7, leaf3)["last_error"])
    await eventually(lambda: "blocked" in peer_status(leaf5, leaf3)["last_error"])
    assert not leaf3.node.federation.is_linked(key7)
    # On again: the hub's statements bring leaf7 back, never the blocked leaf5.
    await admin(leaf3, "peers.trust_introductions", id=hub_id)
    with trio.fail_after(TIMEOUT):
        await leaf3.node.federation.wait_linked(key7)
    await eventually(lambda: leaf3.node.status()["introductions"]["refused"] >= 1)
    assert state_of(leaf3, leaf5) == "blocked"
    assert not leaf3.node.federation.is_linked(key5)


async def test_a_refusal_at_the_destination_reaches_the_sender(start_node) -> None:
    """The last hop refuses (no such user; an origin leaf7 does not trust):
    the relay sends the refusal back to the origin node, and the sender's
    device gets ``delivery_failed`` with the destination's code, not silence."""
    hub, leaves = await star(start_node)
    leaf3, leaf5, leaf7 = leaves["leaf3"], leaves["leaf5"], leaves["leaf7"]
    # leaf3 takes the hub's introductions; leaf7 does not, so on leaf7 the
    # origin leaf3 is a stranger.
    await admin(leaf3, "peers.trust_introductions", id=hub.running.identity.id)
    await admin(leaf5, "peers.trust_introductions", id=hub.running.identity.id)
    await eventually(lambda: state_of(leaf3, leaf7) == "trusted")
    await eventually(lambda: state_of(leaf5, leaf3) == "trusted")
    await leaf5.user("bob")
    async with connect(leaf3.url, await leaf3.user("alice")) as alice:
        await alice.sync(0)
        typo = await alice.send("nobody@leaf5", "to a user leaf5 does not have")
        event = (await next_frame(alice, "event"))["body"]
        assert event["type"] == "delivery_failed" and event["id"] == typo.id
        assert event["code"] == "no_such_user"
        assert event["node"] == leaf5.running.identity.id
        stranger = await alice.send("bob@leaf7", "leaf7 does not know leaf3")
        event = (await next_frame(alice, "event"))["body"]
        assert event["type"] == "delivery_failed" and event["id"] == stranger.id
        assert event["code"] == "forbidden"
        assert event["node"] == leaf7.running.identity.id
    assert leaf3.node.status()["relay"]["refused_back"] == 2
    assert hub.node.status()["relay"]["refusals_returned"] == 2


async def test_a_relayed_message_withdrawn_by_age_is_reported_to_the_sender(start_node) -> None:
    # The hub keeps a unit for a destination that stays away at most its
    # outbox_max_age (1 s here): then the refusal goes back, code timeout.
    hub_config = {"outbox_max_age": 1.0, "outbox_prune_interval": 0.2}
    hub, leaves = await star(start_node, hub_config)
    leaf3, leaf7 = leaves["leaf3"], leaves["leaf7"]
    await take_introductions(hub, leaves)
    leaf7_key = leaf7.node.identity.key.public
    await leaf7.stop()
    with trio.fail_after(TIMEOUT):
        await hub.node.federation.wait_linked(leaf7_key, linked=False)
    async with connect(leaf3.url, await leaf3.user("alice")) as alice:
        await alice.sync(0)
        sent = await alice.send("bob@leaf7", "nobody comes for this")
        event = (await next_frame(alice, "event"))["body"]
    assert event["type"] == "delivery_failed" and event["id"] == sent.id
    assert event["code"] == "timeout" and event["node"] == leaf7.running.identity.id
    assert hub.node.registry.outbox_depth(leaf7_key) == 0


async def test_a_refusal_is_taken_only_for_own_units_from_their_relay(start_node) -> None:
    """An ``rf`` entry turns into ``delivery_failed`` only for a unit this
    node signed, sent back by a relay towards that destination."""
    import dataclasses

    from chinwag.node.peers import peer_in, put_peer
    from chinwag.node.store import WriteTxn

    home = await start_node(name="home")
    relay, other, destination = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    await trust_rogue(home, relay)
    await trust_rogue(home, destination)

    def via_relay(w: WriteTxn) -> None:  # the destination was introduced by the relay
        row = peer_in(w, destination.public)
        assert row is not None
        put_peer(w, dataclasses.replace(row, introducers=(relay.public,)))

    await home.node.store.transact(via_relay)
    await home.user("alice")
    to = UserAddress("bob", destination.id)

    def refusal(key: NodeKey, msg_id: int, code: bytes = b"no_such_user") -> dict[str, bytes]:
        env = Envelope(msg_id, UserAddress("alice", key.id), to, None, 1, "text", {"text": "x"})
        return {**sign_envelope(key, env).to_wire(), "to": destination.public, "code": code}

    own = home.node.identity.key
    stray = {**refusal(own, 5), "to": other.public}  # not a destination of this relay
    async with rogue_link(home, relay) as link:
        await link.push(
            [
                {"o": 1, "k": "rf", "x": refusal(other, 1)},  # another node's unit
                {"o": 2, "k": "rf", "x": refusal(own, 2, b"Bad Code")},
                {"o": 3, "k": "rf", "x": stray},
                {"o": 4, "k": "rf", "x": refusal(own, 4)},
            ]
        )
        ack = await link.receive("ack")
    assert {r["oseq"]: r["code"] for r in ack["rejected"]} == {
        1: "forbidden",
        2: "bad_frame",
        3: "forbidden",
    }
    assert home.node.status()["relay"]["refused_back"] == 1
    async with connect(home.url, await home.user("alice")) as alice:
        await alice.sync(0)
        event = (await next_frame(alice, "event"))["body"]
    assert event["type"] == "delivery_failed" and event["id"] == 4
    assert event["code"] == "no_such_user" and event["node"] == destination.id
