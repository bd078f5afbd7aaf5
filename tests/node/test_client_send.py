"""The client library under the node's per-device rate limit (node/client.py)."""

from __future__ import annotations

import trio

from chinwag.node.client import ClientError, SendAck, connect


async def test_send_in_order_waits_out_rate_limits_and_keeps_order(start_node) -> None:
    node = await start_node(send_rate=200, send_burst=5)
    bob = await node.user("bob")
    texts = [f"m{i:03d}" for i in range(60)]
    async with connect(node.url, await node.user("alice")) as alice:
        with trio.fail_after(20):
            outcomes = [o async for o in alice.send_in_order("bob", texts)]
            # A flood of plain sends is refused in part; send() itself waits instead.
            refused = await alice.send_many([("bob", "x", None) for _ in range(20)])
            assert any(isinstance(r, ClientError) and r.code == "rate_limited" for r in refused)
            last = await alice.send("bob", "after the flood")
    assert [index for index, _ in outcomes] == list(range(len(texts)))
    acks = [ack for _, ack in outcomes]
    assert all(isinstance(ack, SendAck) for ack in acks)
    seqs = [ack.seq for ack in acks if isinstance(ack, SendAck)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(texts)
    async with connect(node.url, bob) as b:
        await b.sync(0)
        got = [(await b.next_message(10))["body"]["text"] for _ in range(len(texts))]
    assert got == texts and last.seq > seqs[-1]


async def test_send_in_order_reports_other_errors_and_goes_on(start_node) -> None:
    node = await start_node()
    await node.user("bob")
    async with connect(node.url, await node.user("alice")) as alice:
        with trio.fail_after(10):
            outcomes = [o async for o in alice.send_in_order("bob", ["a", "x" * 20_000, "b"])]
    assert [index for index, _ in outcomes] == [0, 1, 2]
    assert isinstance(outcomes[0][1], SendAck) and isinstance(outcomes[2][1], SendAck)
    error = outcomes[1][1]
    assert isinstance(error, ClientError) and error.code == "too_large"
