"""A link's faults end at most that link: bad frames, local failures, bugs.

A test-made rogue peer (trusted, real handshake, sealed link) sends every
link frame type with missing, extra, wrong-typed and out-of-range fields,
and random bytes after a valid seal; a real second node stays linked and
local users keep chatting throughout.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio

from chinwag.node.app import NodeSeams
from chinwag.node.client import connect
from chinwag.node.peers import PeerRegistry
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.codec import encode_cbor
from chinwag.protocol.envelope import NodeKey
from chinwag.protocol.errors import ErrorCode, ProtocolError

from .logwatch import JsonLog, json_log_fixture  # noqa: F401 - the fixture
from .rogue import rogue_link, trust_rogue
from .test_federation import TIMEOUT, drain, eventually, linked
from .test_inbound import text_to

HOST = "a" * 52


def status_of(node: Any, key: NodeKey | bytes) -> dict[str, Any]:
    node_id = key.id if isinstance(key, NodeKey) else None
    for peer in node.node.status()["peers"]:
        if node_id is not None and peer["node_id"] == node_id:
            return peer
        if node_id is None and peer["node_id"] == _id(key):
            return peer
    raise AssertionError("no such peer")


def _id(key: Any) -> str:
    from chinwag.protocol.addresses import node_id_text

    return node_id_text(key)


async def test_an_ack_rejected_item_without_code_ends_only_that_link(start_node) -> None:
    """The reported crash: KeyError out of the link task ended the node."""
    node = await start_node(name="target")
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    async with rogue_link(node, rogue) as link:
        await link.send({"t": "ack", "upto": 1, "rejected": [{"oseq": 1}]})
        assert await link.closed() == 1008
    assert not node.stopped.is_set()
    status = status_of(node, rogue)
    assert status["bad_frames"] == 1
    assert status["last_error"].startswith("peer: bad_frame:"), status
    # The node still serves: a new link from the same peer works.
    async with rogue_link(node, rogue) as link:
        await link.send({"t": "ping"})
        assert (await link.receive("pong"))["t"] == "pong"


UNIT = {"env": b"e", "sig": b"s" * 64, "by": b"k" * 32}
GOOD_ENTRY = {"o": 1, "k": "m", "u": UNIT}

#: Every link frame type, broken every way: missing, extra, wrong-typed,
#: out-of-range fields, unknown or misplaced frames.
BAD_FRAMES: list[dict[str, Any]] = [
    {"t": "resume", "applied": 0},  # a second resume
    {"t": "push"},
    {"t": "push", "entries": [GOOD_ENTRY], "extra": 1},
    {"t": "push", "entries": "entries"},
    {"t": "push", "entries": []},
    {"t": "push", "entries": [{"o": -1, "k": "m", "u": UNIT}]},
    {"t": "push", "entries": [{"o": 1, "k": "m"}]},
    {"t": "push", "entries": [{"o": 1, "k": "zz", "u": UNIT}]},
    {"t": "push", "entries": [{"o": 1, "k": "m", "u": {"env": 1}}]},
    {"t": "push", "entries": [GOOD_ENTRY], "skip": "x"},
    {"t": "ack", "upto": 1, "rejected": [{"oseq": 1}]},
    {"t": "ack"},
    {"t": "ack", "upto": "1", "rejected": []},
    {"t": "ack", "upto": -5, "rejected": []},
    {"t": "ack", "upto": 1, "rejected": [{"oseq": 1, "code": None}]},
    {"t": "ack", "upto": 1, "rejected": [{"oseq": 9, "code": "forbidden"}]},
    {"t": "ack", "upto": 1, "rejected": [], "more": True},
    {"t": "ping", "x": 1},
    {"t": "pong", "x": 1},
    {"t": "gossip"},
    {"t": "gossip", "records": [1, 2]},
    {"t": "gossip", "records": [{"rec": b"x", "sig": b"y"}] * 65},
    {"t": "sub", "users": "alice"},
    {"t": "sub", "users": ["NOT VALID"]},
    {"t": "sub", "users": [], "reset": "yes"},
    {"t": "unsub"},
    {"t": "unsub", "users": [7]},
    {"t": "presence", "items": [{"u": "al", "status": "busy", "last_active_at": 1}]},
    {"t": "presence", "items": [{"u": "al"}]},
    {"t": "presence", "items": "x"},
    {"t": "gsync", "group": {"host": HOST, "name": "club"}},
    {"t": "gsync", "group": "club", "after": 0},
    {"t": "gsync", "group": {"host": HOST, "name": "club"}, "after": -1},
    {"t": "hello"},
    {"t": None},
    {"no_type": 1},
]


async def test_rogue_peer_sends_every_frame_broken(start_node) -> None:
    node = await start_node(name="target")
    other = await start_node(name="other")
    await linked(node, other)
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    garbage = [os.urandom(n) for n in (0, 1, 7, 64, 300)] + [encode_cbor([1, 2, 3])]
    async with connect(node.url, await node.user("alice")) as alice:
        await alice.sync(0)
        for frame in BAD_FRAMES:
            async with rogue_link(node, rogue) as link:
                await link.send(frame)
                assert await link.closed() == 1008, frame
        for data in garbage:
            async with rogue_link(node, rogue) as link:
                await link.send_plain(data)
                assert await link.closed() == 1008, data
        # Before resume: anything else is out of place.
        async with rogue_link(node, rogue, resume=False) as link:
            await link.send({"t": "ping"})
            assert await link.closed() == 1008
        status = status_of(node, rogue)
        assert status["bad_frames"] == len(BAD_FRAMES) + len(garbage) + 1
        assert status["local_failures"] == 0 and status["internal_errors"] == 0
        # Nothing else was disturbed: the node is up, the other link never
        # dropped, and local and federated messages flow.
        assert not node.stopped.is_set()
        assert status_of(other, node.node.identity.key.public)["bad_frames"] == 0
        assert node.node.federation.is_linked(other.node.identity.key.public)
        await alice.send("alice", "to myself")
        async with connect(other.url, await other.user("bob")) as bob:
            await bob.sync(0)
            ack = await bob.send("alice@target", "still linked")
            await drain(bob, 1)
        frames = await drain(alice, 2)
        assert [f["body"]["text"] for f in frames] == ["to myself", "still linked"]
        assert frames[1]["id"] == ack.id


async def test_valid_frames_after_bad_ones_still_deliver(start_node) -> None:
    node = await start_node(name="target")
    rogue = NodeKey.generate()
    await trust_rogue(node, rogue)
    await node.user("bob")
    bob = UserAddress("bob", node.running.identity.id)
    async with rogue_link(node, rogue) as link:
        await link.send({"t": "push", "entries": [{"o": 1, "k": "m", "u": {"env": 3}}]})
        assert await link.closed() == 1008
    async with rogue_link(node, rogue) as link:
        unit = text_to(rogue, bob, 1, "fine").to_wire()
        await link.push([{"o": 1, "k": "m", "u": unit}])
        ack = await link.receive("ack")
    assert ack["upto"] == 1 and ack["rejected"] == []
    assert node.node.store.queue_head("bob") == 1


# ---------------------------------------------------------------- local failures
class FlakyCommits:
    """Wraps the peer registry a node's links commit through: the next
    ``fail_next`` inbound commits fail as a full disk would."""

    def __init__(self, registry: PeerRegistry, error: BaseException) -> None:
        self._registry = registry
        self._error = error
        self.fail_next = 0
        self.armed = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)

    async def apply_inbound(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise self._error
        return await self._registry.apply_inbound(*args, **kwargs)


@pytest.mark.parametrize(
    ("error", "counter", "prefix"),
    [
        (ProtocolError(ErrorCode.UNAVAILABLE, "disk full"), "local_failures", "local: unavailable"),
        (KeyError("bug"), "internal_errors", "internal:"),
    ],
    ids=["disk_full", "bug"],
)
async def test_one_failed_inbound_commit_heals_itself(
    start_node, json_log: JsonLog, error: BaseException, counter: str, prefix: str
) -> None:
    flaky: list[FlakyCommits] = []

    def wrap(registry: PeerRegistry) -> Any:
        flaky.append(FlakyCommits(registry, error))
        return flaky[0]

    fast = {"backoff_min": 0.2, "backoff_max": 1.0}
    n1 = await start_node(name="s1", **fast)
    n2 = await start_node(name="s2", seams=NodeSeams(wrap_registry=wrap), **fast)
    await linked(n1, n2)
    k1 = n1.node.identity.key.public
    async with (
        connect(n1.url, await n1.user("alice")) as alice,
        connect(n2.url, await n2.user("bob")) as bob,
    ):
        await bob.sync(0)
        await alice.send("bob@s2", "m0")
        assert [f["body"]["text"] for f in await drain(bob, 1)] == ["m0"]
        flaky[0].fail_next = 1
        sent = [await alice.send("bob@s2", f"m{i}") for i in range(1, 6)]
        got = await drain(bob, 5)
        assert [f["body"]["text"] for f in got] == [f"m{i}" for i in range(1, 6)]
        assert [f["id"] for f in got] == [s.id for s in sent]
        assert [f["seq"] for f in got] == [2, 3, 4, 5, 6]
    status = status_of(n2, k1)
    assert status[counter] == 1 and status["bad_frames"] == 0, status
    # What ended the failed link, in words, as s2 logged it. (Not status's
    # last_error: that is the latest end of any link, and while both nodes
    # redial, a second link closed by the one-link-per-pair rule can end
    # after the failed one, e.g. "link closed (connection lost)".)
    down = json_log.find("link_down", peer=n1.running.identity.id, kind=prefix.split(":")[0])
    assert [d["reason"][: len(prefix)] for d in down] == [prefix], down
    assert n2.node.store.queue_head("bob") == 6  # exactly once each
    await eventually(lambda: n1.node.registry.outbox_depth(n2.node.identity.key.public) == 0)
    with trio.fail_after(TIMEOUT):
        await n2.node.federation.wait_linked(k1)
