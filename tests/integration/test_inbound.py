"""Inbound federation entries from a hand-driven peer: rate limit, dedup, atomicity."""

from __future__ import annotations

from typing import Any

import trio

from chinwag.node.client import connect
from chinwag.node.peers import DEDUP_RETENTION_MS, _prune_dedup
from chinwag.node.store import WriteTxn
from chinwag.protocol.addresses import GroupAddress, UserAddress
from chinwag.protocol.envelope import Envelope, NodeKey, SignedUnit, sign_envelope

from .rogue import rogue_link, trust_rogue

DAY_MS = 24 * 3600 * 1000


def text_to(rogue: NodeKey, to: UserAddress, msg_id: int, text: str) -> SignedUnit:
    env = Envelope(
        id=msg_id,
        sender=UserAddress("mallory", rogue.id),
        to=to,
        group=None,
        ts=1,
        kind="text",
        body={"text": text},
    )
    return sign_envelope(rogue, env)


def group_item(rogue: NodeKey, group: GroupAddress, msg_id: int, kind: str) -> SignedUnit:
    env = Envelope(
        id=msg_id,
        sender=UserAddress("mallory", rogue.id),
        to=None,
        group=group,
        ts=1,
        kind=kind,
        body={"text": f"item {msg_id}"} if kind == "text" else {},
    )
    return sign_envelope(rogue, env)


def dedup_rows(node: Any, origin: bytes) -> dict[int, int | None]:
    """``(origin, id)`` dedup rows: id -> stored_ms of its age-index row (None if none)."""

    def fn(view: Any) -> dict[int, int | None]:
        rows: dict[int, int | None] = {}
        for key, value in view.txn.cursor(db=view.db("dedup")):
            if bytes(key[:32]) == origin:
                stored = bytes(value)
                indexed = view.txn.get(stored + bytes(key), db=view.db("dedup_times"))
                rows[int.from_bytes(key[32:], "big")] = (
                    int.from_bytes(stored, "big") if indexed is not None else None
                )
        return rows

    return node.node.store.read(fn)


async def until_acked(link: Any, upto: int) -> list[dict[str, Any]]:
    """Read acks until one covers ``upto``; return every rejection seen."""
    rejected: list[dict[str, Any]] = []
    while True:
        ack = await link.receive("ack")
        rejected += ack["rejected"]
        if ack["upto"] >= upto:
            return rejected


async def hosted_group_with_mallory(node: Any, rogue: NodeKey) -> GroupAddress:
    """``#club`` on ``node``: alice (owner); mallory on the rogue node is
    invited (her node accepts with :func:`accept_entry`)."""
    async with connect(node.url, await node.user("alice")) as alice:
        await alice.group("create", name="club")
        await alice.group("add", group="#club", members=[f"mallory@{rogue.id}"])
    return GroupAddress("club", node.running.identity.id)


def accept_entry(rogue: NodeKey, group: GroupAddress, oseq: int, msg_id: int) -> dict[str, Any]:
    """The rogue node's ``ga`` entry: mallory accepts her invitation."""
    return {"o": oseq, "k": "ga", "u": group_item(rogue, group, msg_id, "accept").to_wire()}


def members(node: Any, group: GroupAddress) -> set[str]:
    info = node.node.groups.info(group)
    assert info is not None
    return set(info.members)


async def test_per_peer_rate_limit_lets_no_more_than_its_rate_through(start_node) -> None:
    rate, burst, per_push, pushes = 200.0, 100, 100, 5
    node = await start_node(name="n1", peer_rate=rate, peer_burst=burst)
    await node.user("bob")
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    bob = UserAddress("bob", node.running.identity.id)
    total = per_push * pushes
    units = [text_to(rogue, bob, i + 1, f"m{i}") for i in range(total)]
    async with rogue_link(node, rogue) as link:
        started = trio.current_time()
        for p in range(pushes):
            await link.push(
                [
                    {"o": o + 1, "k": "m", "u": units[o].to_wire()}
                    for o in range(p * per_push, (p + 1) * per_push)
                ]
            )
        assert await until_acked(link, total) == []
        elapsed = trio.current_time() - started
    assert node.node.store.queue_head("bob") == total
    # The burst passes at once; the other 400 entries need 400 / 200 = 2 s.
    # (Sleeping without taking the tokens let about twice the rate through:
    # the same 500 entries were applied in about 1 s.) A lower bound on time
    # cannot be met early by a loaded machine, only late.
    assert elapsed >= (total - burst) / rate * 0.95


async def test_group_items_get_dedup_age_rows_and_are_pruned(start_node) -> None:
    node = await start_node(name="n1")
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    group = await hosted_group_with_mallory(node, rogue)
    bob = UserAddress("bob", node.running.identity.id)
    await node.user("bob")
    async with rogue_link(node, rogue) as link:
        entries = [
            accept_entry(rogue, group, 1, 9),
            {"o": 2, "k": "gs", "u": group_item(rogue, group, 10, "text").to_wire()},
            {"o": 3, "k": "m", "u": text_to(rogue, bob, 11, "direct").to_wire()},
            {"o": 4, "k": "gl", "u": group_item(rogue, group, 12, "leave").to_wire()},
        ]
        await link.push(entries)
        assert await until_acked(link, 4) == []
    assert f"mallory@{rogue.id}" not in members(node, group)  # the leave was applied
    rows = dedup_rows(node, rogue.public)
    # Every dedup row, group items (ga, gs, gl) included, has its age-index row ...
    assert set(rows) == {9, 10, 11, 12}
    assert all(stored is not None for stored in rows.values()), rows
    # ... so pruning past the retention removes them all.
    stored = max(s for s in rows.values() if s is not None)

    def prune(w: WriteTxn) -> None:
        for _ in range(len(rows)):
            _prune_dedup(w, stored + DEDUP_RETENTION_MS + DAY_MS)

    await node.node.store.transact(prune)
    assert dedup_rows(node, rogue.public) == {}


async def test_a_refused_entry_writes_nothing(start_node) -> None:
    node = await start_node(name="n1")
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    group = await hosted_group_with_mallory(node, rogue)
    leave = group_item(rogue, group, 20, "leave").to_wire()
    async with rogue_link(node, rogue) as link:
        await link.push([accept_entry(rogue, group, 1, 19)])
        assert await until_acked(link, 1) == []
        assert f"mallory@{rogue.id}" in members(node, group)
        # A leave envelope sent as a group *message* entry is refused ...
        await link.push([{"o": 2, "k": "gs", "u": leave}])
        assert await until_acked(link, 2) == [{"oseq": 2, "code": "bad_frame"}]
        # ... and left nothing behind: no dedup row for its (origin, id) ...
        assert set(dedup_rows(node, rogue.public)) == {19}
        assert f"mallory@{rogue.id}" in members(node, group)
        # ... so the same envelope in the right kind of entry is not a "replay".
        await link.push([{"o": 3, "k": "gl", "u": leave}])
        assert await until_acked(link, 3) == []
    assert f"mallory@{rogue.id}" not in members(node, group)
    assert set(dedup_rows(node, rogue.public)) == {19, 20}
