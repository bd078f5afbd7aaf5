"""Storage quotas: a user's sends stop at the quota; a low disk stops sends."""

from __future__ import annotations

import pytest
import trio

from chinwag.node.client import ClientError, api_call, connect
from chinwag.node.quota import DiskReserve, QuotaPolicy
from chinwag.protocol.errors import ErrorCode, ProtocolError

TIMEOUT = 20
KIB = 1024


async def send_until_refused(client, to: str, text: str, limit: int) -> tuple[int, ClientError]:
    """Send until an error; return how many were accepted and the error."""
    with trio.fail_after(TIMEOUT):
        for count in range(limit):
            try:
                await client.send(to, text)
            except ClientError as exc:
                return count, exc
    raise AssertionError(f"no refusal within {limit} sends")


async def test_group_fan_out_is_charged_to_the_sender_and_stops_at_the_quota(start_node) -> None:
    # 10 members, 4 KiB texts: each send stores 11 copies (~46 KiB). A quota
    # of 1 MiB stops it after about 22 sends, where without one 549 MB were
    # written in 15 s (issue 11).
    node = await start_node(name="home", user_quota_bytes=1024 * KIB)
    name = node.running.identity.name
    alice = await node.user("alice")
    members = [f"m{i}" for i in range(10)]
    for member in members:
        # Each member has alice as a contact: her add makes them members at once.
        token = await node.user(member)
        await api_call(node.url, "POST", "/api/contacts", {"address": "alice"}, token)
    async with connect(node.url, alice) as a:
        await a.group("create", name="big")
        await a.group("add", group=f"#big@{name}", members=[f"{m}@{name}" for m in members])
        sent, error = await send_until_refused(a, f"#big@{name}", "x" * (4 * KIB), 200)
    assert error.code == "quota_exceeded"
    assert 15 <= sent <= 24, sent
    head = node.node.store.queue_head("m0")
    # 1:1 sends draw on the same quota: what is left (under one group send,
    # ~46 KiB) holds at most two more 8 KiB texts (two copies each).
    async with connect(node.url, alice) as a:
        direct, error = await send_until_refused(a, "m1", "d" * (8 * KIB), 10)
    assert error.code == "quota_exceeded" and direct <= 2
    # Nothing of a refused send was stored.
    assert node.node.store.queue_head("m0") == head
    # The quota is per user: a member still sends into the same group.
    async with connect(node.url, await node.user("m0")) as m0:
        await m0.send(f"#big@{name}", "still here")
    assert node.node.store.queue_head("m0") == head + 1


async def test_the_used_quota_survives_a_restart(start_node, tmp_path) -> None:
    data = tmp_path / "quota"
    node = await start_node(data_dir=data, user_quota_bytes=64 * KIB)
    alice = await node.user("alice")
    await node.user("bob")
    async with connect(node.url, alice) as a:
        sent, error = await send_until_refused(a, "bob", "y" * (8 * KIB), 20)
    assert error.code == "quota_exceeded" and sent >= 2
    await node.stop()
    node = await start_node(data_dir=data, user_quota_bytes=64 * KIB)
    async with connect(node.url, alice) as a:
        with pytest.raises(ClientError) as refused:
            await a.send("bob", "y" * (8 * KIB))
    assert refused.value.code == "quota_exceeded"


async def test_below_the_free_space_reserve_sends_are_unavailable(start_node) -> None:
    # A reserve larger than any disk: the node is always "low".
    node = await start_node(min_free_bytes=1 << 62)
    alice = await node.user("alice")  # sign-up and log-in still work
    await node.user("bob")
    async with connect(node.url, alice) as a:
        with pytest.raises(ClientError) as refused:
            await a.send("bob", "hello")
        assert refused.value.code == "unavailable"
        with pytest.raises(ClientError) as refused:
            await a.group("create", name="g")
        assert refused.value.code == "unavailable"
    assert node.node.store.queue_head("bob") == 0


async def test_no_quota_when_configured_off(start_node) -> None:
    node = await start_node(user_quota_bytes=0)
    alice = await node.user("alice")
    await node.user("bob")
    async with connect(node.url, alice) as a:
        for _ in range(20):
            await a.send("bob", "z" * (8 * KIB))
    assert node.node.store.queue_head("bob") == 20


# ---------------------------------------------------------------- the policy


def test_the_bucket_drains_over_the_window() -> None:
    policy = QuotaPolicy(bytes_per_window=1000, window_ms=10_000)
    row = policy.charge(None, 600, now_ms=0)
    row = policy.charge(row, 400, now_ms=0)
    with pytest.raises(ProtocolError) as over:
        policy.charge(row, 1, now_ms=0)
    assert over.value.code is ErrorCode.QUOTA_EXCEEDED
    # A tenth of the window later, a tenth of the quota is free again.
    row = policy.charge(row, 100, now_ms=1_000)
    with pytest.raises(ProtocolError):
        policy.charge(row, 1, now_ms=1_000)
    # After a whole window it is empty.
    row = policy.charge(row, 1000, now_ms=11_000)
    assert QuotaPolicy.used(row) == 1000


def test_a_clock_going_back_drains_nothing() -> None:
    policy = QuotaPolicy(bytes_per_window=1000, window_ms=10_000)
    row = policy.charge(None, 1000, now_ms=50_000)
    with pytest.raises(ProtocolError):
        policy.charge(row, 1, now_ms=0)
    with pytest.raises(ProtocolError):
        policy.charge(row, 1, now_ms=50_000)


def test_one_charge_over_the_whole_quota_is_refused() -> None:
    with pytest.raises(ProtocolError):
        QuotaPolicy(bytes_per_window=100, window_ms=1000).charge(None, 101, now_ms=0)


def test_the_disk_is_asked_at_most_once_a_second(tmp_path) -> None:
    now = [0.0]
    reserve = DiskReserve(tmp_path, 1 << 62, clock=lambda: now[0])
    for _ in range(100):
        with pytest.raises(ProtocolError) as low:
            reserve.check()
        assert low.value.code is ErrorCode.UNAVAILABLE
    assert reserve.checks == 1
    now[0] = 1.5
    with pytest.raises(ProtocolError):
        reserve.check()
    assert reserve.checks == 2
    DiskReserve(tmp_path, 1).check()  # a small reserve: plenty of room
