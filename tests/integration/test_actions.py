"""Actions on messages across nodes (issue 17): a group spanning three nodes
and 1:1 over a link; edits and deletes seen on every node and device, live
and after a restart; deleted text gone from every store and search index;
forged actions refused and counted."""

from __future__ import annotations

from typing import Any

import trio

from chinwag.node.client import ChatClient, connect, login, signup
from chinwag.protocol.actions import delete_body, edit_body
from chinwag.protocol.addresses import GroupAddress, UserAddress
from chinwag.protocol.envelope import Envelope, NodeKey, sign_envelope
from chinwag.protocol.group_record import make_group_record

from .procs import spawn_node
from .rogue import rogue_link, trust_rogue
from .test_federation import linked
from .test_groups import befriend, member_of, three_nodes, until_joined

TIMEOUT = 20
SECRET = "zanzibar-walrus-quartet"


async def until_kind(client: ChatClient, kind: str, target: int | None = None) -> dict[str, Any]:
    """Skip live frames up to the next one of ``kind`` (about ``target``)."""
    with trio.fail_after(TIMEOUT):
        while True:
            frame = await client.messages.receive()
            if frame.get("kind") != kind:
                continue
            if target is None or int(frame["body"].get("target", frame.get("id"))) == target:
                return frame


async def message_in_page(client: ChatClient, conv: str, msg_id: int) -> dict[str, Any]:
    page = await client.history(conv)
    (msg,) = [m for m in page["msgs"] if m.get("id") is not None and int(m["id"]) == msg_id]
    return msg


def queue_records(node: Any) -> list[bytes]:
    """Every record of every queue of ``node``, read through the store."""

    def read(view: Any) -> list[bytes]:
        return [bytes(value) for _key, value in view.txn.cursor(db=view.db("queue"))]

    return node.node.store.read(read)


async def test_group_edit_react_reply_delete_on_three_nodes(start_node) -> None:
    n1, n2, n3 = await three_nodes(start_node)
    tokens = {
        "alice": await n1.user("alice"),
        "bob": await n2.user("bob"),
        "carol": await n3.user("carol", "laptop"),
        "carol2": await n3.user("carol", "phone"),
    }
    for node, name in ((n2, "bob"), (n3, "carol")):
        await befriend(node, tokens[name], "alice@g1")
    group = "#team@g1"
    conv = f"#team@{n1.running.identity.id}"
    async with (
        connect(n1.url, tokens["alice"]) as alice,
        connect(n2.url, tokens["bob"]) as bob,
        connect(n3.url, tokens["carol"]) as carol,
        connect(n3.url, tokens["carol2"]) as carol2,
    ):
        clients = [alice, bob, carol, carol2]
        await alice.group("create", name="team")
        await alice.group("add", group=group, members=["bob@g2", "carol@g3"])
        for client in clients:
            await client.sync(0)
        await until_joined(alice, member_of(n2, "bob"), member_of(n3, "carol"))
        for client, node, name in ((bob, n2, "bob"), (carol, n3, "carol"), (carol2, n3, "carol")):
            await until_joined(client, member_of(node, name))

        sent = await bob.send(group, f"the {SECRET} plan")
        for client in clients:
            await until_kind(client, "text", sent.id)
        await bob.edit(sent.id, f"the revised {SECRET} plan")
        for client in clients:
            frame = await until_kind(client, "edit", sent.id)
            assert frame["body"]["text"] == f"the revised {SECRET} plan"
            msg = await message_in_page(client, conv, sent.id)
            assert msg["edited"] is True and msg["body"]["text"].startswith("the revised")
            assert len((await client.search("revised"))["hits"]) == 1

        await carol.react(sent.id, "👍")
        await carol2.react(sent.id, "👍")  # the same user from another device
        await alice.react(sent.id, "👍")
        for client in clients:
            # Three react envelopes were sent (carol's second device repeats
            # hers); wait until both users' have arrived, in whatever order.
            reactors: set[str] = set()
            while reactors != {"alice", "carol"}:
                reactors.add((await until_kind(client, "react", sent.id))["from"]["u"])
            msg = await message_in_page(client, conv, sent.id)
            assert sorted(u["u"] for u in msg["reactions"]["👍"]) == ["alice", "carol"]

        reply = await alice.send(group, "sounds good", reply_to=sent.id)
        for client in clients:
            frame = await until_kind(client, "text", reply.id)
            assert frame["body"]["reply_to"]["excerpt"] == f"the revised {SECRET} plan"
            assert frame["body"]["reply_to"]["from"]["u"] == "bob"

        await bob.delete(sent.id)
        for client in clients:
            frame = await until_kind(client, "delete", sent.id)
            msg = await message_in_page(client, conv, sent.id)
            assert msg["deleted"] is True and "text" not in msg["body"]
            quoting = await message_in_page(client, conv, reply.id)
            assert quoting["body"]["reply_to"]["excerpt"] == ""
            assert quoting["body"]["text"] == "sounds good"
            assert (await client.search(SECRET))["hits"] == []
    for node in (n1, n2, n3):
        assert not [r for r in queue_records(node) if SECRET.encode() in r], node
        assert node.node.status()["actions"]["refused"] == 0

    # After a restart the tombstone is still what every page and sync shows.
    data_dir = n3.node.config.data_dir
    await n3.stop()
    n3 = await start_node(data_dir=data_dir)
    async with connect(n3.url, tokens["carol"]) as carol:
        msg = await message_in_page(carol, conv, sent.id)
        assert msg["deleted"] is True
        assert (await carol.search(SECRET))["hits"] == []
        head = await carol.sync(0)
        frames: list[dict[str, Any]] = []
        with trio.fail_after(TIMEOUT):
            while not frames or frames[-1]["seq"] < head:
                frames.append(await carol.messages.receive())
        assert not [f for f in frames if SECRET in repr(f)]
        kinds = [f["kind"] for f in frames if f.get("id") is not None]
        assert {"edit", "react", "delete"} <= set(kinds)


async def test_one_to_one_across_nodes_and_forged_actions(start_node) -> None:
    home, away = await start_node(name="home"), await start_node(name="away")
    await linked(home, away)
    bob_token, alice_token = await home.user("bob"), await away.user("alice")
    carol_token = await home.user("carol")
    home_id, away_id = home.running.identity.id, away.running.identity.id
    async with connect(home.url, bob_token) as b, connect(away.url, alice_token) as a:
        await b.sync(0)
        sent = await a.send(f"bob@{home_id}", f"psst {SECRET}")
        await until_kind(b, "text", sent.id)
        await a.edit(sent.id, f"hush {SECRET}")
        assert (await until_kind(b, "edit", sent.id))["body"]["text"] == f"hush {SECRET}"
        await b.react(sent.id, "🤫")
        await a.sync(0)
        await until_kind(a, "react", sent.id)
        msg = await message_in_page(a, f"bob@{home_id}", sent.id)
        assert [u["u"] for u in msg["reactions"]["🤫"]] == ["bob"]

        # A trusted but rogue node forges actions on alice's message to bob.
        rogue = NodeKey.generate()
        await trust_rogue(home, rogue)
        mallory = UserAddress("mallory", rogue.id)
        bob = UserAddress("bob", home_id)

        def forged(msg_id: int, kind: str, body: dict[str, Any]) -> dict[str, Any]:
            env = Envelope(msg_id, mallory, bob, None, 1, kind, body)
            return sign_envelope(rogue, env).to_wire()

        async with rogue_link(home, rogue) as link:
            await link.push(
                [
                    {"o": 1, "k": "m", "u": forged(10, "delete", delete_body(sent.id))},
                    {"o": 2, "k": "m", "u": forged(11, "edit", edit_body(sent.id, "owned"))},
                ]
            )
            ack = await link.receive("ack")
        assert {r["code"] for r in ack["rejected"]} == {"forbidden"}
        assert len(ack["rejected"]) == 2
        assert home.node.status()["actions"]["refused"] == 2
        msg = await message_in_page(b, f"alice@{away_id}", sent.id)
        assert msg["body"]["text"] == f"hush {SECRET}" and "deleted" not in msg

        # Another user of the same node may not delete it either.
        async with connect(home.url, carol_token) as c:
            await c.sync(0)
            try:
                await c.delete(sent.id)
            except Exception as exc:  # noqa: BLE001 - carol's queue does not hold it
                assert getattr(exc, "code", None) == "not_found"

        await a.delete(sent.id)
        await until_kind(b, "delete", sent.id)
        msg = await message_in_page(b, f"alice@{away_id}", sent.id)
        assert msg["deleted"] is True
    for node in (home, away):
        assert not [r for r in queue_records(node) if SECRET.encode() in r]


async def test_a_forged_group_delete_is_left_out_of_member_queues(start_node) -> None:
    """A host's record carrying a delete by eve of mallory's message: bob's
    node refuses it (counted), keeps the message, and the group goes on."""
    node = await start_node(name="m2")
    bob_token = await node.user("bob")
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    await befriend(node, bob_token, f"mallory@{rogue.id}")  # bob accepts mallory's invitation
    group = GroupAddress("club", rogue.id)
    mallory, eve = UserAddress("mallory", rogue.id), UserAddress("eve", rogue.id)
    bob = member_of(node, "bob")

    def unit(msg_id: int, sender: UserAddress, kind: str, body: dict[str, Any]) -> Any:
        env = Envelope(msg_id, sender, None, group, 1, kind, body)
        return sign_envelope(rogue, env)

    invite = unit(1, mallory, "invite", {"invitee": bob, "title": "club"}).to_wire()
    joined = {"action": "members", "by": f"mallory@{rogue.id}", "added": [bob], "removed": []}
    members = [f"mallory@{rogue.id}", f"eve@{rogue.id}", bob]
    records = [
        make_group_record(rogue, group, 1, members=members, event=joined),
        make_group_record(rogue, group, 2, unit=unit(2, mallory, "text", {"text": "mine"})),
        make_group_record(rogue, group, 3, unit=unit(3, eve, "delete", delete_body(2))),
        make_group_record(rogue, group, 4, unit=unit(4, mallory, "edit", edit_body(2, "still"))),
    ]
    async with connect(node.url, bob_token) as b:
        await b.sync(0)
        async with rogue_link(node, rogue) as link:
            entries = [{"o": 1, "k": "gi", "u": invite}]
            entries += [{"o": n + 2, "k": "gr", "r": r} for n, r in enumerate(records)]
            await link.push(entries)
            with trio.fail_after(TIMEOUT):
                ack = await link.receive("ack")
                while ack["upto"] < len(entries):
                    ack = await link.receive("ack")
            assert ack.get("rejected", []) == []
            await until_kind(b, "edit", 2)
        assert node.node.status()["actions"]["refused"] == 1
        kinds = [f["kind"] for f in await drain_queue(node.url, bob_token)]
        assert "delete" not in kinds and kinds.count("edit") == 1
        msg = await message_in_page(b, f"#club@{rogue.id}", 2)
        assert msg["body"]["text"] == "still" and "deleted" not in msg


async def drain_queue(url: str, token: str) -> list[dict[str, Any]]:
    """Every entry of the user's queue, from a sync on a fresh connection."""
    async with connect(url, token) as client:
        head = await client.sync(0)
        frames: list[dict[str, Any]] = []
        with trio.fail_after(TIMEOUT):
            while not frames or frames[-1]["seq"] < head:
                frames.append(await client.messages.receive())
    return frames


async def test_acknowledged_actions_survive_sigkill_of_a_node_process(nursery, tmp_path) -> None:
    password = "actions-crash-password"
    data = tmp_path / "node"
    proc = await spawn_node(nursery, data)
    await signup(proc.url, "alice", password)
    await signup(proc.url, "bob", password)
    alice = await login(proc.url, "alice", password)
    bob = await login(proc.url, "bob", password)
    async with connect(proc.url, alice.token) as a:
        edited = await a.send("bob", f"first {SECRET}")
        deleted = await a.send("bob", f"second {SECRET}")
        await a.edit(edited.id, "first, edited")
        await a.react(edited.id, "👍")
        await a.delete(deleted.id)
    await proc.kill()

    proc = await spawn_node(nursery, data)
    async with connect(proc.url, bob.token) as b:
        page = {int(m["id"]): m for m in (await b.history("alice"))["msgs"]}
        assert page[edited.id]["body"]["text"] == "first, edited" and page[edited.id]["edited"]
        assert list(page[edited.id]["reactions"]) == ["👍"]
        assert page[deleted.id]["deleted"] is True
        assert (await b.search(SECRET))["hits"] == []
    await proc.kill()
