"""The store's online copy (``chinwag backup``) against a writer that grows the map."""

from __future__ import annotations

import shutil
from pathlib import Path

import lmdb
import trio

from chinwag.node.migrations import SCHEMA_VERSION
from chinwag.node.store import Store
from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.envelope import NodeKey

T0 = 1_750_000_000_000


def queue_entries(db_dir: Path) -> int:
    env = lmdb.open(str(db_dir), max_dbs=64, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return txn.stat(env.open_db(b"queue", txn=txn, create=False))["entries"]
    finally:
        env.close()


async def test_copies_run_while_the_writer_grows_the_map(tmp_path: Path) -> None:
    """A resize waits for a running copy (it needs no read transaction open),
    and every copy is a whole store as of one commit."""
    key = NodeKey.generate()
    store = Store(tmp_path / "data", key, map_size=256 * 1024)
    text = "x" * 8000
    sent = 0
    copies: list[int] = []

    def copier(done: trio.Event, token: trio.lowlevel.TrioToken) -> None:
        n = 0
        while not trio.from_thread.run_sync(done.is_set, trio_token=token) and n < 500:
            target = tmp_path / f"copy{n}"
            target.mkdir()
            assert store.copy_snapshot(target) == SCHEMA_VERSION
            entries = queue_entries(target)
            assert entries % 2 == 0  # both copies of each message, or neither
            copies.append(entries)
            shutil.rmtree(target)
            n += 1

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            for name in ("alice", "bob"):
                await store.create_user(name, "hash", T0)
            start_map = store.statistics().map_size
            done = trio.Event()
            token = trio.lowlevel.current_trio_token()
            nursery.start_soon(trio.to_thread.run_sync, copier, done, token)
            bob = UserAddress("bob", key.id)
            for n in range(400):
                await store.send_direct("alice", "laptop", None, bob, text, T0 + n)
                sent += 1
            done.set()
            grown = store.statistics().map_size
            nursery.cancel_scope.cancel()
    assert grown >= 8 * start_map
    assert len(copies) >= 2 and copies == sorted(copies)
    assert max(copies) <= 2 * sent
