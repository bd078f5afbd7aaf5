"""The LMDB store, on a real environment in a temporary directory."""

from __future__ import annotations

import stat
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
import trio.testing

from chinwag.node import store as store_module
from chinwag.node.store import SendResult, Store, StoreLocked, WriteTxn
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.envelope import NodeKey, SignedUnit, open_unit
from chinwag.protocol.errors import ErrorCode, ProtocolError

T0 = 1_750_000_000_000  # a wall-clock time in Unix ms
HOUR_MS = 3600 * 1000


@pytest.fixture
def key() -> NodeKey:
    return NodeKey.generate()


@asynccontextmanager
async def running(path: Path, key: NodeKey, **kwargs: Any) -> AsyncIterator[Store]:
    store = Store(path, key, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()


@pytest.fixture
async def store(tmp_path: Path, key: NodeKey) -> AsyncIterator[Store]:
    async with running(tmp_path, key) as opened:
        yield opened


def to(key: NodeKey, user: str) -> UserAddress:
    return UserAddress(user, key.id)


async def users(store: Store, *names: str) -> None:
    for name in names:
        await store.create_user(name, f"hash-of-{name}", T0)


def message_of(record: bytes, key: NodeKey) -> Any:
    item = cbor2.loads(record)
    return open_unit(SignedUnit.from_wire(item["unit"]), expected_origin=key.public)


# ---------------------------------------------------------------- users


async def test_create_get_list_remove_users(store: Store) -> None:
    alice = await store.create_user("alice", "h1", T0)
    assert (alice.name, alice.pw_hash, alice.created_ms) == ("alice", "h1", T0)
    assert store.get_user("alice") == alice
    assert store.get_user("nobody") is None
    assert store.get_user("Not A Name!") is None
    bob = await store.create_user("bob", "h2", T0 + 1)
    assert bob.uid != alice.uid
    assert [u.name for u in store.list_users()] == ["alice", "bob"]
    assert store.statistics().users == 2

    await store.remove_user("alice")
    assert store.get_user("alice") is None
    assert [u.name for u in store.list_users()] == ["bob"]
    with pytest.raises(ProtocolError) as info:
        await store.remove_user("alice")
    assert info.value.code == ErrorCode.NO_SUCH_USER


async def test_user_exists_and_bad_name(store: Store) -> None:
    await users(store, "alice")
    with pytest.raises(ProtocolError) as info:
        await store.create_user("alice", "other", T0)
    assert info.value.code == ErrorCode.USER_EXISTS
    assert store.get_user("alice").pw_hash == "hash-of-alice"  # type: ignore[union-attr]
    with pytest.raises(ProtocolError) as info:
        await store.create_user("Alice Smith", "h", T0)
    assert info.value.code == ErrorCode.BAD_REQUEST


async def test_remove_user_deletes_everything_and_uid_is_not_reused(
    store: Store, key: NodeKey
) -> None:
    await users(store, "alice", "bob")
    device = await store.create_session("alice", "laptop", b"t" * 32, T0)
    await store.add_contact("alice", "bob@kitchen")
    await store.send_direct("alice", device, "c1", to(key, "bob"), "hi", T0)
    old_uid = store.get_user("alice").uid  # type: ignore[union-attr]

    await store.remove_user("alice")
    assert store.get_session(b"t" * 32) is None
    assert store.queue_head("alice") == 0
    assert store.list_devices("alice") == []
    assert store.list_contacts("alice") == []
    assert store.queue_head("bob") == 1  # bob keeps his copy

    again = await store.create_user("alice", "h", T0)
    assert again.uid != old_uid
    assert store.read_queue("alice", 0, 10) == []
    # The old (device, cid) belongs to the old account: a fresh send.
    await store.create_session("alice", "laptop", b"u" * 32, T0)
    result = await store.send_direct("alice", "laptop", "c1", to(key, "bob"), "hi", T0)
    assert not result.duplicate


async def test_profile_and_password(store: Store) -> None:
    await users(store, "alice")
    record = await store.set_profile("alice", "Alice", None)
    assert (record.display_name, record.status_text) == ("Alice", "")
    record = await store.set_profile("alice", None, "away")
    assert (record.display_name, record.status_text) == ("Alice", "away")
    assert store.get_user("alice") == record

    await store.create_session("alice", "a", b"1" * 32, T0)
    await store.create_session("alice", "b", b"2" * 32, T0)
    await store.set_password("alice", "new-hash")
    assert store.get_user("alice").pw_hash == "new-hash"  # type: ignore[union-attr]
    assert store.get_session(b"1" * 32) is None
    assert store.get_session(b"2" * 32) is None
    with pytest.raises(ProtocolError) as info:
        await store.set_password("nobody", "h")
    assert info.value.code == ErrorCode.NO_SUCH_USER


async def test_contacts(store: Store) -> None:
    await users(store, "alice")
    await store.add_contact("alice", "carol@kitchen")
    await store.add_contact("alice", "bob@kitchen")
    await store.add_contact("alice", "bob@kitchen")  # idempotent
    assert store.list_contacts("alice") == ["bob@kitchen", "carol@kitchen"]
    await store.remove_contact("alice", "bob@kitchen")
    await store.remove_contact("alice", "bob@kitchen")  # absent: no error
    assert store.list_contacts("alice") == ["carol@kitchen"]
    with pytest.raises(ProtocolError) as info:
        await store.add_contact("alice", "x" * 300)
    assert info.value.code == ErrorCode.BAD_REQUEST


async def test_contacts_are_capped(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAX_CONTACTS_PER_USER", 3)
    await users(store, "alice")
    for name in ("a", "b", "c"):
        await store.add_contact("alice", f"{name}@kitchen")
    with pytest.raises(ProtocolError) as info:
        await store.add_contact("alice", "d@kitchen")
    assert info.value.code == ErrorCode.TOO_LARGE


# ---------------------------------------------------------------- sessions and devices


async def test_sessions_and_devices(store: Store) -> None:
    await users(store, "alice")
    assert await store.create_session("alice", "phone", b"a" * 32, T0) == "phone"
    session = store.get_session(b"a" * 32)
    assert session is not None
    assert (session.user, session.device, session.created_ms) == ("alice", "phone", T0)

    random_device = await store.create_session("alice", None, b"b" * 32, T0 + 1)
    assert random_device != "phone"
    assert store_module._DEVICE_RE.fullmatch(random_device)  # noqa: SLF001
    # Resuming a device keeps one device record.
    assert await store.create_session("alice", "phone", b"c" * 32, T0 + 2) == "phone"
    devices = {d.device: d for d in store.list_devices("alice")}
    assert set(devices) == {"phone", random_device}
    assert devices["phone"].created_ms == T0

    await store.revoke_session(b"a" * 32)
    await store.revoke_session(b"a" * 32)  # unknown: ignored
    assert store.get_session(b"a" * 32) is None
    assert store.get_session(b"c" * 32) is not None
    assert store.get_session(b"short") is None

    for bad in ("", "has space", "x" * 65, "ümlaut"):
        with pytest.raises(ProtocolError) as info:
            await store.create_session("alice", bad, b"d" * 32, T0)
        assert info.value.code == ErrorCode.BAD_REQUEST
    with pytest.raises(ProtocolError) as info:
        await store.create_session("nobody", None, b"d" * 32, T0)
    assert info.value.code == ErrorCode.NO_SUCH_USER


async def test_sessions_and_devices_are_capped(tmp_path: Path, key: NodeKey) -> None:
    async with running(tmp_path, key, max_sessions_per_user=3, max_devices_per_user=2) as store:
        await _sessions_and_devices_are_capped(store)


async def _sessions_and_devices_are_capped(store: Store) -> None:
    await users(store, "alice")
    for i in range(4):
        await store.create_session("alice", "one", bytes([i]) * 32, T0 + i)
    # The oldest session went.
    assert store.get_session(bytes([0]) * 32) is None
    assert all(store.get_session(bytes([i]) * 32) for i in (1, 2, 3))

    await store.create_session("alice", "two", b"\x10" * 32, T0 + 10)
    await store.create_session("alice", "three", b"\x11" * 32, T0 + 11)
    # Device "one" was the oldest: dropped with its sessions.
    assert {d.device for d in store.list_devices("alice")} == {"two", "three"}
    assert all(store.get_session(bytes([i]) * 32) is None for i in (1, 2, 3))
    assert store.get_session(b"\x10" * 32) is not None


async def test_ack_is_cumulative_and_capped_at_head(store: Store, key: NodeKey) -> None:
    await users(store, "alice", "bob")
    for i in range(3):
        await store.send_direct("alice", "x", None, to(key, "bob"), f"m{i}", T0)
    await store.create_session("bob", "phone", b"p" * 32, T0)

    def acked() -> int:
        (device,) = store.list_devices("bob")
        return device.acked

    await store.ack("bob", "phone", 2)
    assert acked() == 2
    await store.ack("bob", "phone", 1)  # never goes back
    assert acked() == 2
    await store.ack("bob", "phone", 99)  # never past the head
    assert acked() == 3
    await store.ack("bob", "gone", 1)  # unknown device: ignored


async def test_acks_ride_on_the_next_batch_without_a_commit_of_their_own(
    tmp_path: Path, key: NodeKey
) -> None:
    async with running(tmp_path, key, ack_flush_delay=60) as store:
        await users(store, "alice", "bob")
        await store.send_direct("alice", "x", None, to(key, "bob"), "m0", T0)
        await store.create_session("bob", "phone", b"p" * 32, T0)
        before = store.statistics()
        for seq in (1, 1, 1):  # three acks of one device: one cursor written
            await store.ack("bob", "phone", seq)
        assert store.statistics().commits == before.commits  # nothing committed yet
        assert store.list_devices("bob")[0].acked == 1  # but visible at once
        await store.send_direct("alice", "x", None, to(key, "bob"), "m1", T0)
        after = store.statistics()
        assert after.commits == before.commits + 1  # the send's, carrying the ack
        assert (after.acks - before.acks, after.acks_written - before.acks_written) == (3, 1)
        assert after.ack_commits == 0


async def test_idle_acks_are_written_within_the_flush_delay(tmp_path: Path, key: NodeKey) -> None:
    async with running(tmp_path, key, ack_flush_delay=0.05) as store:
        await users(store, "bob")
        await store.create_session("bob", "phone", b"p" * 32, T0)
        await store.send_direct("bob", "x", None, to(key, "bob"), "note to self", T0)
        await store.ack("bob", "phone", 1)
        with trio.fail_after(5):
            # The writer thread's own flush sets no trio event to await.
            while store.statistics().ack_commits < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert store.statistics().acks_written == 1
    async with running(tmp_path, key) as store:
        assert store.list_devices("bob")[0].acked == 1


async def test_acks_are_written_when_the_store_closes(tmp_path: Path, key: NodeKey) -> None:
    async with running(tmp_path, key, ack_flush_delay=3600) as store:
        await users(store, "alice", "bob")
        for i in range(3):
            await store.send_direct("alice", "x", None, to(key, "bob"), f"m{i}", T0)
        await store.create_session("bob", "phone", b"p" * 32, T0)
        await store.ack("bob", "phone", 2)
    async with running(tmp_path, key) as store:
        assert store.list_devices("bob")[0].acked == 2


_CRASH_SCRIPT = """
import os, sys, trio
from pathlib import Path
from chinwag.node.store import Store
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.envelope import NodeKey

T0 = 1_750_000_000_000

async def main():
    key = NodeKey.from_seed(bytes.fromhex(sys.argv[2]))
    store = Store(Path(sys.argv[1]), key, ack_flush_delay=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for name in ("alice", "bob"):
            await store.create_user(name, "h", T0)
        await store.create_session("bob", "phone", b"p" * 32, T0)
        for i in range(3):
            await store.send_direct("alice", "x", None, UserAddress("bob", key.id), str(i), T0)
        await store.ack("bob", "phone", 1)
        await store.send_direct("alice", "x", None, UserAddress("bob", key.id), "3", T0)
        await store.ack("bob", "phone", 3)  # not written yet: lost with the process
        os._exit(0)

trio.run(main)
"""


async def test_a_crash_loses_only_the_acks_not_yet_written(tmp_path: Path, key: NodeKey) -> None:
    await trio.run_process([sys.executable, "-c", _CRASH_SCRIPT, str(tmp_path), key.seed().hex()])
    async with running(tmp_path, key) as store:
        # The ack carried by the fourth send survived; the last one did not,
        # so the device is offered messages 2-4 again (it drops them by seq).
        assert store.list_devices("bob")[0].acked == 1
        assert store.queue_head("bob") == 4


# ---------------------------------------------------------------- messages


async def test_send_direct_writes_both_queues(tmp_path: Path, key: NodeKey) -> None:
    grown: list[frozenset[str]] = []
    async with running(tmp_path, key, on_commit=grown.append) as store:
        await users(store, "alice", "bob")
        results = [
            await store.send_direct("alice", "d1", f"c{i}", to(key, "bob"), f"hello {i}", T0 + i)
            for i in range(3)
        ]
        assert [r.seq for r in results] == [1, 2, 3]
        assert [r.ts for r in results] == [T0, T0 + 1, T0 + 2]
        assert not any(r.duplicate for r in results)
        ids = [r.id for r in results]
        assert ids == sorted(ids) and len(set(ids)) == 3

        for user in ("alice", "bob"):
            assert store.queue_head(user) == 3
            entries = store.read_queue(user, 0, 10)
            assert [e.seq for e in entries] == [1, 2, 3]
            envs = [message_of(e.record, key) for e in entries]
            assert [env.id for env in envs] == ids
            assert [env.text for env in envs] == ["hello 0", "hello 1", "hello 2"]
            assert all(env.sender == to(key, "alice") and env.to == to(key, "bob") for env in envs)
        assert grown == [frozenset({"alice", "bob"})] * 3


async def test_send_to_self_is_written_once(store: Store, key: NodeKey) -> None:
    await users(store, "alice")
    result = await store.send_direct("alice", "d1", None, to(key, "alice"), "note", T0)
    assert result.seq == 1
    assert store.queue_head("alice") == 1


async def test_sender_seq_is_the_senders_queue_position(store: Store, key: NodeKey) -> None:
    await users(store, "alice", "bob", "carol")
    await store.send_direct("carol", "d", None, to(key, "bob"), "first", T0)
    result = await store.send_direct("alice", "d", None, to(key, "bob"), "second", T0)
    assert result.seq == 1  # alice's queue
    assert store.queue_head("bob") == 2


async def test_cid_repeat_returns_original_and_writes_nothing(store: Store, key: NodeKey) -> None:
    await users(store, "alice", "bob")
    first = await store.send_direct("alice", "d1", "cid-1", to(key, "bob"), "hi", T0)
    commits = store.statistics().commits
    again = await store.send_direct("alice", "d1", "cid-1", to(key, "bob"), "hi", T0 + 5000)
    assert again == SendResult(first.id, first.seq, first.ts, duplicate=True)
    assert store.queue_head("alice") == store.queue_head("bob") == 1
    # Answered even when the target would now be refused.
    again = await store.send_direct("alice", "d1", "cid-1", to(key, "nobody"), "hi", T0)
    assert again.duplicate and again.id == first.id
    assert store.statistics().commits == commits + 2  # the commits wrote no message

    # The same cid from another device is another message.
    other = await store.send_direct("alice", "d2", "cid-1", to(key, "bob"), "hi", T0)
    assert not other.duplicate and other.id != first.id
    assert store.queue_head("bob") == 2


async def test_cids_expire_after_a_day(store: Store, key: NodeKey) -> None:
    await users(store, "alice", "bob")
    first = await store.send_direct("alice", "d1", "old", to(key, "bob"), "hi", T0)
    # A later send with a cid prunes entries older than 24 hours.
    await store.send_direct("alice", "d1", "new", to(key, "bob"), "hi", T0 + 25 * HOUR_MS)
    again = await store.send_direct("alice", "d1", "old", to(key, "bob"), "hi", T0 + 25 * HOUR_MS)
    assert not again.duplicate and again.id != first.id

    def cid_rows(view: Any) -> int:
        return int(view.txn.stat(view.db("cids"))["entries"])

    assert store.read(cid_rows) == 2


async def test_unknown_recipient_or_node_writes_nothing(store: Store, key: NodeKey) -> None:
    await users(store, "alice")
    with pytest.raises(ProtocolError) as info:
        await store.send_direct("alice", "d1", "c1", to(key, "nobody"), "hi", T0)
    assert info.value.code == ErrorCode.NO_SUCH_USER
    other_node = NodeKey.generate().id
    with pytest.raises(ProtocolError) as info:
        await store.send_direct("alice", "d1", "c2", UserAddress("bob", other_node), "hi", T0)
    assert info.value.code == ErrorCode.NO_SUCH_NODE
    assert store.queue_head("alice") == 0
    # The refused cid was not remembered: after creating bob it goes through.
    await users(store, "nobody")
    result = await store.send_direct("alice", "d1", "c1", to(key, "nobody"), "hi", T0)
    assert not result.duplicate and result.seq == 1


async def test_send_validation(store: Store, key: NodeKey) -> None:
    await users(store, "alice", "bob")
    cases = [
        ("x" * 65, "hi", ErrorCode.BAD_REQUEST),
        ("", "hi", ErrorCode.BAD_REQUEST),
        (None, "x" * (16 * 1024 + 1), ErrorCode.TOO_LARGE),
        (None, "\ud800", ErrorCode.BAD_REQUEST),
    ]
    for cid, text, code in cases:
        with pytest.raises(ProtocolError) as info:
            await store.send_direct("alice", "d1", cid, to(key, "bob"), text, T0)
        assert info.value.code == code
    with pytest.raises(ProtocolError) as info:
        await store.send_direct("alice", "no spaces", None, to(key, "bob"), "hi", T0)
    assert info.value.code == ErrorCode.BAD_REQUEST
    with pytest.raises(ProtocolError) as info:
        await store.send_direct("ghost", "d1", None, to(key, "bob"), "hi", T0)
    assert info.value.code == ErrorCode.NO_SUCH_USER
    assert store.queue_head("bob") == 0


# ---------------------------------------------------------------- the writer


async def hold_writer(store: Store, nursery: trio.Nursery) -> threading.Event:
    """Park the writer thread inside an operation until the event is set."""
    entered, gate = threading.Event(), threading.Event()

    def park(w: WriteTxn) -> None:
        entered.set()
        gate.wait(10)

    nursery.start_soon(store.transact, park)
    await trio.to_thread.run_sync(entered.wait, 10)
    return gate


async def test_group_commit_and_failures_isolated_in_a_batch(store: Store, key: NodeKey) -> None:
    await users(store, "alice", "bob")
    outcomes: dict[int, SendResult | ProtocolError] = {}

    async def send(i: int) -> None:
        target = "bob" if i % 3 else "nobody"  # every third one fails
        cid = "dup" if i in (4, 5) else f"c{i}"  # 5 repeats 4 within the batch
        try:
            outcomes[i] = await store.send_direct("alice", "d", cid, to(key, target), f"{i}", T0)
        except ProtocolError as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as nursery:
        gate = await hold_writer(store, nursery)
        for i in range(30):
            nursery.start_soon(send, i)
        await trio.testing.wait_all_tasks_blocked()
        assert store.statistics().pending == 31
        gate.set()

    stats = store.statistics()
    assert stats.pending == 0
    assert stats.largest_batch == 30
    failed = {i for i, o in outcomes.items() if isinstance(o, ProtocolError)}
    assert failed == set(range(0, 30, 3))
    assert all(outcomes[i].code == ErrorCode.NO_SUCH_USER for i in failed)  # type: ignore[union-attr]
    ok = {i: o for i, o in outcomes.items() if isinstance(o, SendResult)}
    # 4 and 5 share a cid: whichever ran second got the first one's result.
    first, second = sorted((ok[4], ok[5]), key=lambda r: r.duplicate)
    assert second == SendResult(first.id, first.seq, first.ts, duplicate=True)
    fresh = [o for o in ok.values() if not o.duplicate]
    assert sorted(o.seq for o in fresh) == list(range(1, 20))
    assert len({o.id for o in fresh}) == 19
    assert store.queue_head("alice") == store.queue_head("bob") == 19
    by_seq = {o.seq: o.id for o in fresh}
    entries = store.read_queue("bob", 0, 100)
    assert [message_of(e.record, key).id for e in entries] == [by_seq[s] for s in range(1, 20)]


async def test_unexpected_exception_is_internal_and_writer_survives(
    store: Store, key: NodeKey
) -> None:
    await users(store, "alice")

    def broken(w: WriteTxn) -> None:
        w.append_to_queue("alice", b"half-written")
        raise RuntimeError("bug")

    with pytest.raises(ProtocolError) as info:
        await store.transact(broken)
    assert info.value.code == ErrorCode.INTERNAL
    assert store.queue_head("alice") == 0  # rolled back
    result = await store.send_direct("alice", "d", None, to(key, "alice"), "still here", T0)
    assert result.seq == 1


async def test_transact_extension_point(store: Store, key: NodeKey) -> None:
    await users(store, "alice")

    def event(w: WriteTxn) -> tuple[int, int]:
        seq = w.append_to_queue("alice", store_module.event_record({"type": "hello"}))
        return seq, w.next_id(T0)

    seq, msg_id = await store.transact(event)
    assert seq == 1 and msg_id > 0
    (entry,) = store.read_queue("alice", 0, 10)
    assert cbor2.loads(entry.record) == {"event": {"type": "hello"}}


async def test_map_full_grows_and_retries(tmp_path: Path, key: NodeKey) -> None:
    async with running(tmp_path, key, map_size=1 << 20) as store:
        await users(store, "alice", "bob")
        text = "x" * (12 * 1024)
        results: list[SendResult] = []

        async def send(i: int) -> None:
            r = await store.send_direct("alice", "d", f"c{i}", to(key, "bob"), text, T0)
            results.append(r)

        for round_ in range(4):  # concurrent rounds: batches hit the full map
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(send, round_ * 50 + i)

        stats = store.statistics()
        assert stats.map_size > 1 << 20
        assert sorted(r.seq for r in results) == list(range(1, 201))
        assert len({r.id for r in results}) == 200
        assert store.queue_head("bob") == store.queue_head("alice") == 200
        entries = store.read_queue("bob", 0, 1000)
        assert [e.seq for e in entries] == list(range(1, 201))
        assert sorted(message_of(e.record, key).id for e in entries) == sorted(
            r.id for r in results
        )

    # The grown map is kept (LMDB opens at least the file's size).
    async with running(tmp_path, key, map_size=1 << 20) as store:
        assert store.queue_head("bob") == 200


async def test_ids_monotonic_across_restart(tmp_path: Path, key: NodeKey) -> None:
    async with running(tmp_path, key) as store:
        await users(store, "alice")
        first = await store.send_direct("alice", "d", None, to(key, "alice"), "a", T0)
    async with running(tmp_path, key) as store:
        # The wall clock stepped back an hour; ids still go up.
        later = await store.send_direct("alice", "d", None, to(key, "alice"), "b", T0 - HOUR_MS)
        assert later.id > first.id
        assert later.seq == 2
        assert [u.name for u in store.list_users()] == ["alice"]


async def test_second_store_on_the_same_dir_is_locked(
    store: Store, tmp_path: Path, key: NodeKey, nursery: trio.Nursery
) -> None:
    with pytest.raises(StoreLocked):
        await nursery.start(Store(tmp_path, key).run)
    await users(store, "alice")  # the first store is unharmed


async def test_lock_released_on_close(tmp_path: Path, key: NodeKey) -> None:
    async with running(tmp_path, key):
        pass
    async with running(tmp_path, key) as store:
        assert store.list_users() == []


async def test_closed_store_refuses(tmp_path: Path, key: NodeKey) -> None:
    async with running(tmp_path, key) as store:
        await users(store, "alice")
    with pytest.raises(ProtocolError) as info:
        await store.create_user("bob", "h", T0)
    assert info.value.code == ErrorCode.UNAVAILABLE
    with pytest.raises(ProtocolError) as info:
        store.get_user("alice")
    assert info.value.code == ErrorCode.UNAVAILABLE


async def test_file_modes(store: Store, tmp_path: Path) -> None:
    assert stat.S_IMODE((tmp_path / "db").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "db" / "data.mdb").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "store.lock").stat().st_mode) == 0o600


async def test_read_queue_paging(store: Store, key: NodeKey) -> None:
    await users(store, "alice", "bob")
    for i in range(25):
        await store.send_direct("alice", "d", None, to(key, "bob"), f"m{i}", T0)
    pages = []
    after = 0
    while page := store.read_queue("bob", after, 10):
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert [e.seq for e in store.read_queue("bob", 23, 10)] == [24, 25]
    assert store.read_queue("bob", 25, 10) == []
    assert store.read_queue("bob", 0, 0) == []
    assert store.read_queue("bob", 1 << 70, 10) == []
    assert store.read_queue("nobody", 0, 10) == []
    # Queues of different users do not bleed into each other.
    assert [e.seq for e in store.read_queue("alice", 20, 100)] == [21, 22, 23, 24, 25]


# ---------------------------------------------------------------- effects and nesting


def _rows(store: Store, db: str, prefix: bytes) -> list[bytes]:
    def fn(view: Any) -> list[bytes]:
        return [bytes(k) for k, _ in view.txn.cursor(db=view.db(db)) if bytes(k).startswith(prefix)]

    return store.read(fn)


async def test_remove_user_deletes_presence_and_push_rows(store: Store) -> None:
    await users(store, "alice", "bob")
    uids = {n: store.get_user(n).uid.to_bytes(4, "big") for n in ("alice", "bob")}  # type: ignore[union-attr]

    def rows_for_both(w: WriteTxn) -> None:
        for uid in uids.values():
            w.txn.put(uid, cbor2.dumps({"s": "offline", "l": T0}), db=w.db("presence"))
            w.txn.put(uid + b"phone\x00" + b"u" * 16, cbor2.dumps({}), db=w.db("push_endpoints"))

    await store.transact(rows_for_both)
    await store.remove_user("alice")
    assert _rows(store, "presence", uids["alice"]) == []
    assert _rows(store, "push_endpoints", uids["alice"]) == []
    assert len(_rows(store, "presence", uids["bob"])) == 1  # bob's stay
    assert len(_rows(store, "push_endpoints", uids["bob"])) == 1


async def test_revoked_sessions_are_reported_after_the_commit(store: Store) -> None:
    reported: list[frozenset[bytes]] = []
    store.on_revoked = reported.append
    await users(store, "alice", "bob")
    hashes = {name: bytes([i]) * 32 for i, name in enumerate(("a1", "a2", "a3", "b1"), 1)}
    for name, digest in hashes.items():
        await store.create_session("alice" if name[0] == "a" else "bob", None, digest, T0)
    assert reported == []
    await store.revoke_session(hashes["a1"])
    await store.revoke_session(b"\x09" * 32)  # unknown: nothing to report
    await store.set_password("alice", "new-hash")
    await store.remove_user("bob")
    assert reported == [
        frozenset({hashes["a1"]}),
        frozenset({hashes["a2"], hashes["a3"]}),
        frozenset({hashes["b1"]}),
    ]


async def test_nested_child_rolls_back_alone(store: Store) -> None:
    await users(store, "alice", "bob")

    def op(w: WriteTxn) -> None:
        w.append_to_queue("alice", b"kept")
        with pytest.raises(ProtocolError), w.nested() as child:
            child.append_to_queue("bob", b"rolled back")
            raise ProtocolError(ErrorCode.FORBIDDEN, "refused")
        with w.nested() as child:
            child.append_to_queue("alice", b"kept too")

    grown: list[frozenset[str]] = []
    store._on_commit = grown.append  # noqa: SLF001
    await store.transact(op)
    assert [e.record for e in store.read_queue("alice", 0, 10)] == [b"kept", b"kept too"]
    assert store.read_queue("bob", 0, 10) == []
    assert grown == [frozenset({"alice"})]  # the rolled-back child's effects are gone too


async def test_outbox_growth_is_reported_after_its_commit_and_only_then(
    store: Store, key: NodeKey
) -> None:
    """A link must be woken only when the entry is readable; a failed op wakes nothing."""
    from chinwag.node.peers import TRUSTED, PeerRegistry

    registry = PeerRegistry(store)
    store.remote_sink = registry
    peer = NodeKey.generate()
    await registry.upsert(peer.public, state=TRUSTED, urls=("http://127.0.0.1:9",))
    await users(store, "alice")
    seen: list[tuple[str, list[int]]] = []
    store.on_outbox = lambda node_id: seen.append(
        (node_id, [e.oseq for e in registry.read_outbox(peer.public, 0, 10)])
    )

    def failing(w: WriteTxn) -> None:
        registry.append_item(w, peer.id, "m", {"x": b"1"}, "alice", T0)
        raise ProtocolError(ErrorCode.FORBIDDEN, "rolled back")

    errors: list[ProtocolError] = []

    async def expect_failure() -> None:
        try:
            await store.transact(failing)
        except ProtocolError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        gate = await hold_writer(store, nursery)  # both ops in one batch
        nursery.start_soon(expect_failure)
        nursery.start_soon(store.send_direct, "alice", "d", None, to(peer, "carol"), "hi", T0)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == []
        gate.set()
    assert [e.code for e in errors] == [ErrorCode.FORBIDDEN]
    # Reported once, for the committed entry, which was already readable.
    assert seen == [(peer.id, [1])]
