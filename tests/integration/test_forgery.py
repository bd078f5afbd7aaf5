"""A trusted but malicious peer: forged, tampered and replayed envelopes are refused."""

from __future__ import annotations

from typing import Any

import trio

from chinwag.node.admin import admin_request
from chinwag.node.client import connect, open_ws
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.codec import decode_cbor, encode_cbor
from chinwag.protocol.envelope import (
    CONTEXT_ENVELOPE,
    Envelope,
    NodeKey,
    SignedUnit,
    encode_envelope,
    sign_envelope,
)
from chinwag.protocol.handshake import FED_SUBPROTOCOL, DialerHandshake

TIMEOUT = 15


def envelope(sender: UserAddress, to: UserAddress, msg_id: int, text: str) -> Envelope:
    return Envelope(
        id=msg_id, sender=sender, to=to, group=None, ts=1, kind="text", body={"text": text}
    )


async def test_forged_tampered_and_replayed_envelopes(start_node) -> None:
    n1 = await start_node(name="n1")
    bob_token = await n1.user("bob")
    rogue = NodeKey.generate()
    other = NodeKey.generate()
    await admin_request(
        n1.node.config.data_dir, "peers.add", {"peer": f"http://127.0.0.1:9#{rogue.id}"}
    )
    bob = UserAddress("bob", n1.running.identity.id)
    good = sign_envelope(rogue, envelope(UserAddress("mallory", rogue.id), bob, 1, "legit"))
    # Signed by the rogue node, but "from" a user of another node.
    forged_env = encode_envelope(envelope(UserAddress("carol", other.id), bob, 2, "forged"))
    forged = SignedUnit(forged_env, rogue.sign(CONTEXT_ENVELOPE, forged_env), rogue.public)
    tampered_env = bytearray(
        sign_envelope(rogue, envelope(UserAddress("mallory", rogue.id), bob, 3, "tamper")).env
    )
    tampered_env[-2] ^= 0x01
    tampered = SignedUnit(
        bytes(tampered_env),
        rogue.sign(CONTEXT_ENVELOPE, b"something else"),
        rogue.public,
    )
    url = n1.url.replace("http://", "ws://") + "/federation"
    async with open_ws(url, subprotocols=[FED_SUBPROTOCOL]) as ws:
        hs = DialerHandshake(rogue, "rogue", n1.node.identity.key.public)
        with trio.fail_after(TIMEOUT):
            await ws.send_message(hs.start())
            await ws.send_message(hs.receive_welcome(await ws.get_message()))
            cipher = hs.result().cipher

            async def send(frame: dict[str, Any]) -> None:
                await ws.send_message(cipher.seal(encode_cbor(frame)))

            async def receive(kind: str) -> dict[str, Any]:
                while True:
                    frame = decode_cbor(cipher.open(await ws.get_message()))
                    assert isinstance(frame, dict)
                    if frame["t"] == kind:
                        return frame

            await send({"t": "resume", "applied": 0})
            assert (await receive("resume"))["applied"] == 0
            entries = [good, forged, tampered, good]  # the last one is a replay
            await send(
                {
                    "t": "push",
                    "entries": [
                        {"o": i + 1, "k": "m", "u": u.to_wire()} for i, u in enumerate(entries)
                    ],
                }
            )
            ack = await receive("ack")
    assert ack["upto"] == 4
    codes = {r["oseq"]: r["code"] for r in ack["rejected"]}
    assert codes == {2: "forbidden", 3: "bad_signature", 4: "conflict"}
    status = next(p for p in n1.node.status()["peers"] if p["node_id"] == rogue.id)
    assert status["refused"] == 3 and status["received"] == 1
    async with connect(n1.url, bob_token) as client:
        assert await client.sync(0) == 1  # only the legitimate one was stored
        frame = await client.next_message(TIMEOUT)
        assert frame["body"]["text"] == "legit"
