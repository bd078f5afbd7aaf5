"""The index entries of a write batch (node/store.py, node/history_index.py).

The writer stages every queue append's index entry and writes a batch's
entries once, before its commit; an operation that reads the index first
flushes the batch's entries so far into its own transaction. These tests
put several operations in one batch (the writer parked until all are
queued) and look at the index afterwards through its read functions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
import trio.testing

from chinwag.node import history_index as hi
from chinwag.node.store import Store, WriteTxn
from chinwag.protocol.errors import ErrorCode, ProtocolError

from .test_store import T0, hold_writer, key, store, to, users

__all__ = ["key", "store"]  # fixtures


async def in_one_batch(store: Store, *calls: Callable[[], Awaitable[Any]]) -> None:
    """Run ``calls`` as operations of one write batch, in this order: the
    writer is parked until every one of them is queued."""
    async with trio.open_nursery() as nursery:
        gate = await hold_writer(store, nursery)
        for call in calls:
            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
        gate.set()


def _dbs(view: Any) -> dict[str, Any]:
    return {name: view.db(name) for name in hi.DB_NAMES}


def conversation(store: Store, user: str, peer: str) -> tuple[hi.ConvRow | None, list[int]]:
    """``user``'s row and seqs (newest first) of the conversation with ``peer``."""
    conv = f"{peer}@{store.node_key.id}"

    def read(view: Any) -> tuple[hi.ConvRow | None, list[int]]:
        uid = view.require_user(user).uid
        dbs = _dbs(view)
        return hi.get_conv(view.txn, dbs, uid, conv), list(
            hi.conv_seqs(view.txn, dbs, uid, conv, None)
        )

    return store.read(read)


def search(store: Store, user: str, word: str) -> list[int]:
    def read(view: Any) -> list[int]:
        uid = view.require_user(user).uid
        return list(hi.search_seqs(view.txn, _dbs(view), uid, [word], None, None, 100))

    return store.read(read)


async def test_an_operation_failing_after_a_flush_gives_the_entries_back(
    store: Store, key: Any
) -> None:
    await users(store, "alice", "bob")
    failed: list[ProtocolError] = []

    def flush_then_fail(w: WriteTxn) -> None:
        w.flush_index()  # writes "one"'s entries into this doomed transaction
        raise ProtocolError(ErrorCode.BAD_REQUEST, "changed my mind")

    async def doomed() -> None:
        try:
            await store.transact(flush_then_fail)
        except ProtocolError as exc:
            failed.append(exc)

    await in_one_batch(
        store,
        partial(store.send_direct, "alice", "d", "c1", to(key, "bob"), "one", T0),
        doomed,
        partial(store.send_direct, "alice", "d", "c2", to(key, "bob"), "two", T0),
    )
    assert [e.code for e in failed] == [ErrorCode.BAD_REQUEST]
    row, seqs = conversation(store, "bob", "alice")
    assert row is not None and (row.total, row.last, row.unread) == (2, 2, 2)
    assert seqs == [2, 1]
    assert search(store, "bob", "one") == [1]
    assert search(store, "alice", "two") == [2]


async def test_a_reader_in_the_batch_sees_the_entries_before_it(store: Store, key: Any) -> None:
    await users(store, "alice", "bob")
    seen: list[tuple[int, int] | None] = []

    def read_conv(w: WriteTxn) -> None:
        w.flush_index()
        row = hi.get_conv(w.txn, _dbs(w), w.require_user("bob").uid, f"alice@{key.id}")
        seen.append(None if row is None else (row.total, row.last))

    await in_one_batch(
        store,
        partial(store.send_direct, "alice", "d", "c1", to(key, "bob"), "one", T0),
        partial(store.transact, read_conv),
        partial(store.send_direct, "alice", "d", "c2", to(key, "bob"), "two", T0),
    )
    assert seen == [(1, 1)]
    row, seqs = conversation(store, "bob", "alice")
    assert row is not None and (row.total, row.last) == (2, 2)
    assert seqs == [2, 1]


async def test_removing_a_user_in_the_batch_of_their_messages_leaves_no_index(
    store: Store, key: Any
) -> None:
    await users(store, "alice", "bob")
    uid = store.read(lambda view: view.require_user("bob").uid)
    await in_one_batch(
        store,
        partial(store.send_direct, "alice", "d", "c1", to(key, "bob"), "hello", T0),
        partial(store.remove_user, "bob"),
    )

    def bob_rows(view: Any) -> list[Any]:
        dbs = _dbs(view)
        convs, _ = hi.recent_convs(view.txn, dbs, uid, None, 10)
        found = list(hi.search_seqs(view.txn, dbs, uid, ["hello"], None, None, 100))
        return [*convs, *found]

    assert store.read(bob_rows) == []
    assert search(store, "alice", "hello") == [1]


async def test_a_read_marker_is_kept_by_the_next_batch_of_messages(store: Store, key: Any) -> None:
    """The writer keeps a copy of the ``conv`` rows it wrote; an operation
    that moves a marker changes a row behind that copy, so the next batch
    must read the row again, not write the marker back to 0."""
    await users(store, "alice", "bob")
    await store.send_direct("alice", "d", "c1", to(key, "bob"), "one", T0)

    def mark(w: WriteTxn) -> None:
        w.flush_index()
        hi.mark_read(w.txn, _dbs(w), w.require_user("bob").uid, f"alice@{key.id}", 1)

    await store.transact(mark)
    await store.send_direct("alice", "d", "c2", to(key, "bob"), "two", T0)
    row, seqs = conversation(store, "bob", "alice")
    assert row is not None and (row.read_seq, row.total, row.unread) == (1, 2, 1)
    assert seqs == [2, 1]


async def test_a_read_marker_is_kept_by_messages_later_in_its_batch(store: Store, key: Any) -> None:
    await users(store, "alice", "bob")
    await store.send_direct("alice", "d", "c1", to(key, "bob"), "one", T0)

    def mark(w: WriteTxn) -> None:
        w.flush_index()
        hi.mark_read(w.txn, _dbs(w), w.require_user("bob").uid, f"alice@{key.id}", 1)

    await in_one_batch(
        store,
        partial(store.transact, mark),
        partial(store.send_direct, "alice", "d", "c2", to(key, "bob"), "two", T0),
    )
    row, _ = conversation(store, "bob", "alice")
    assert row is not None and (row.read_seq, row.total, row.unread) == (1, 2, 1)


def _record(store: Store, user: str, seq: int) -> bytes:
    [entry] = store.read_queue(user, seq - 1, 1)
    return entry.record


async def test_an_entry_appended_in_a_nested_transaction_is_indexed(store: Store, key: Any) -> None:
    """Inbound link entries are applied one nested transaction each
    (node/peers.py): their index entries go with the operation's."""
    await users(store, "alice", "bob")
    await store.send_direct("alice", "d", "c1", to(key, "bob"), "one", T0)
    record = _record(store, "bob", 1)

    def nested_append(w: WriteTxn) -> None:
        with w.nested() as child:
            child.append_to_queue("bob", record)

    await store.transact(nested_append)
    row, seqs = conversation(store, "bob", "alice")
    assert row is not None and (row.total, row.last) == (2, 2)
    assert seqs == [2, 1]


async def test_a_flush_in_a_nested_transaction_sees_and_gives_back_every_entry(
    store: Store, key: Any
) -> None:
    await users(store, "alice", "bob")
    await store.send_direct("alice", "d", "c1", to(key, "bob"), "one", T0)
    record = _record(store, "bob", 1)
    seen: list[int] = []

    def op(w: WriteTxn) -> None:
        w.append_to_queue("bob", record)  # the operation's own entry, staged
        with w.nested() as child:
            child.flush_index()
            row = hi.get_conv(child.txn, _dbs(child), child.require_user("bob").uid, conv)
            assert row is not None
            seen.append(row.total)
        w.append_to_queue("bob", record)  # staged: the next flush takes it
        try:
            with w.nested() as child:
                child.append_to_queue("bob", record)
                child.flush_index()
                raise ProtocolError(ErrorCode.BAD_REQUEST, "rolled back")
        except ProtocolError:
            pass
        w.append_to_queue("bob", record)

    conv = f"alice@{key.id}"
    await in_one_batch(
        store,
        partial(store.send_direct, "alice", "d", "c2", to(key, "bob"), "two", T0),
        partial(store.transact, op),
    )
    assert seen == [3]  # "one", "two" (an earlier operation) and the op's own
    row, seqs = conversation(store, "bob", "alice")
    # bob's queue: 1 one, 2 two, 3 and 4 the op's, 5 rolled back (seq reused), 5 the op's last
    assert row is not None and (row.total, row.last) == (5, 5)
    assert seqs == [5, 4, 3, 2, 1]
