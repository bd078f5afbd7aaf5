"""What a node logs about peers, links, forged envelopes and outboxes (JSON format).

In-process nodes share one log file (the ``json_log`` fixture); each event
names the peer it is about, which tells the two sides apart.
"""

from __future__ import annotations

import pytest
import trio

from chinwag.node import store as store_module
from chinwag.node.admin import admin_request
from chinwag.node.app import NodeSeams
from chinwag.node.client import ClientError, connect, open_ws
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.codec import encode_cbor
from chinwag.protocol.envelope import (
    CONTEXT_ENVELOPE,
    Envelope,
    NodeKey,
    SignedUnit,
    encode_envelope,
)
from chinwag.protocol.handshake import FED_SUBPROTOCOL, DialerHandshake

from ..conftest import ShiftedClock
from .logwatch import JsonLog, json_log_fixture  # noqa: F401 - the fixture
from .test_federation import TIMEOUT, drain, peer_add

DAY_S = 24 * 3600.0


async def test_pending_approved_link_up_down_and_blocked_are_logged(
    start_node, json_log: JsonLog
) -> None:
    n1, n2 = await start_node(name="lg1"), await start_node(name="lg2")
    id1, id2 = n1.running.identity.id, n2.running.identity.id
    # n2 trusts n1 and dials it; n1 has never heard of n2.
    await peer_add(n2, n1)
    pending = await json_log.wait_for("peer_pending", peer=id2)
    assert pending["peer_name"] == "lg2" and pending["level"] == "info"
    assert f"peers approve {id2}" in pending["msg"]
    # n2 sees the refusal as a failed link, said in words.
    failed = await json_log.wait_for("link_failed", peer=id1)
    assert "pending" in failed["reason"] and "Error" not in failed["reason"]

    await admin_request(n1.node.config.data_dir, "peers.approve", {"id": id2})
    approved = await json_log.wait_for("peer_approved", peer=id2)
    assert approved["peer_name"] == "lg2"
    up1 = await json_log.wait_for("link_up", peer=id2)
    up2 = await json_log.wait_for("link_up", peer=id1)
    assert {up1["direction"], up2["direction"]} == {"dialled", "accepted"}

    await n1.stop()
    down = await json_log.wait_for("link_down", peer=id1)
    # A node that stops closes its links properly (close code 1000).
    assert down["reason"] == "link closed (closed normally)", down
    # n2 redials the stopped node at its URL: refused by the OS, said in words.
    await json_log.wait_for("link_failed", peer=id1, reason="connection refused")

    await admin_request(n2.node.config.data_dir, "peers.block", {"id": id1})
    blocked = await json_log.wait_for("peer_blocked", peer=id1)
    assert blocked["logger"] == "chinwag.node.admin" and blocked["peer_name"] == "lg1"


async def test_a_dialled_node_with_another_key_is_logged_as_a_key_mismatch(
    start_node, json_log: JsonLog
) -> None:
    n1, n2 = await start_node(name="km1"), await start_node(name="km2")
    impostor_id = NodeKey.generate().id
    # n1 pins a key for n2's URL that n2 does not hold.
    await admin_request(n1.node.config.data_dir, "peers.add", {"peer": f"{n2.url}#{impostor_id}"})
    failed = await json_log.wait_for("link_failed", peer=impostor_id)
    assert failed["reason"] == "their key does not match the pinned key", failed


async def test_forged_envelopes_are_logged_as_refused(start_node, json_log: JsonLog) -> None:
    n1 = await start_node(name="fg1")
    await n1.user("bob")
    rogue, other = NodeKey.generate(), NodeKey.generate()
    await admin_request(
        n1.node.config.data_dir, "peers.add", {"peer": f"http://127.0.0.1:9#{rogue.id}"}
    )
    bob = UserAddress("bob", n1.running.identity.id)
    # Signed by the rogue node, but "from" a user of another node.
    forged_env = encode_envelope(
        Envelope(
            id=1,
            sender=UserAddress("carol", other.id),
            to=bob,
            group=None,
            ts=1,
            kind="text",
            body={"text": "secret words"},
        )
    )
    forged = SignedUnit(forged_env, rogue.sign(CONTEXT_ENVELOPE, forged_env), rogue.public)
    url = n1.url.replace("http://", "ws://") + "/federation"
    async with open_ws(url, subprotocols=[FED_SUBPROTOCOL]) as ws:
        hs = DialerHandshake(rogue, "rogue", n1.node.identity.key.public)
        with trio.fail_after(TIMEOUT):
            await ws.send_message(hs.start())
            await ws.send_message(hs.receive_welcome(await ws.get_message()))
            cipher = hs.result().cipher
            await ws.send_message(cipher.seal(encode_cbor({"t": "resume", "applied": 0})))
            push = {"t": "push", "entries": [{"o": 1, "k": "m", "u": forged.to_wire()}]}
            await ws.send_message(cipher.seal(encode_cbor(push)))
            refused = await json_log.wait_for("envelopes_refused", peer=rogue.id)
    assert refused["level"] == "warning"
    assert refused["count"] == 1 and refused["codes"] == "forbidden"
    # Never the message text.
    assert "secret words" not in json_log.path.read_text()


async def test_outbox_expiry_is_logged(start_node, json_log: JsonLog) -> None:
    clock = ShiftedClock()
    n1 = await start_node(
        name="ox1",
        seams=NodeSeams(federation_now_ms=clock),
        outbox_max_age=DAY_S,
        outbox_prune_interval=0.05,
        backoff_min=3600.0,
        backoff_max=3600.0,
    )
    n2 = await start_node(name="ox2")
    await peer_add(n1, n2)
    await peer_add(n2, n1)
    k2, id2 = n2.node.identity.key.public, n2.running.identity.id
    with trio.fail_after(TIMEOUT):
        await n1.node.federation.wait_linked(k2)
    await n2.stop()
    with trio.fail_after(TIMEOUT):
        await n1.node.federation.wait_linked(k2, linked=False)
    async with connect(n1.url, await n1.user("carol")) as carol:
        await carol.sync(0)
        for i in range(2):
            await carol.send("dave@ox2", f"m{i}")
        await drain(carol, 2)
        clock.shift(2 * DAY_S)
        expired = await json_log.wait_for("outbox_expired", peer=id2)
    assert expired["count"] == 2


async def test_a_disk_below_the_reserve_is_logged_once_as_a_storage_error(
    start_node, json_log: JsonLog
) -> None:
    # No disk has this much free: every charged write is refused.
    node = await start_node(name="sd1", min_free_bytes=1 << 62)
    async with connect(node.url, await node.user("alice")) as alice:
        for _ in range(3):
            with pytest.raises(ClientError) as refused:
                await alice.send("alice", "no room")
            assert refused.value.code == "unavailable"
        logged = await json_log.wait_for("storage_error", reason="disk space below the reserve")
    assert logged["level"] == "error" and logged["min_free_bytes"] == 1 << 62
    assert logged["free_bytes"] < 1 << 62
    # Once when it happens, not once per refused write.
    assert len(json_log.find("storage_error")) == 1
    assert "no room" not in json_log.path.read_text()


async def test_a_store_that_cannot_grow_is_logged_as_a_storage_error(
    start_node, json_log: JsonLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small map that may not grow: the store fills after a few dozen sends.
    monkeypatch.setattr(store_module, "MAX_MAP_SIZE", 2 << 20)
    node = await start_node(name="sd2", map_size=2 << 20, min_free_bytes=0)
    text = "x" * 8000
    async with connect(node.url, await node.user("alice")) as alice:
        with trio.fail_after(TIMEOUT), pytest.raises(ClientError) as full:
            for _ in range(1000):
                await alice.send("alice", text)
        assert full.value.code == "unavailable"
        logged = await json_log.wait_for("storage_error", reason="store full")
    assert logged["level"] == "error"
