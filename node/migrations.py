"""Store schema versions and the forward migrations between them.

The store records its layout version in ``meta: b"schema" -> version(4)``.
At start a node reads it before writing anything (:func:`read_schema`):

- no ``meta`` database: a new store, stamped with :data:`SCHEMA_VERSION`;
- a ``meta`` database without ``schema``: version 1 (the layout before the
  key existed);
- a version above :data:`SCHEMA_VERSION`: :class:`StoreTooNew`, and nothing
  is written, so the newer chinwag that made it can still open it;
- a lower version: the store takes a backup first (``DATA/backups/``,
  node/store.py) and then runs every step from that version up, each in the
  same write transaction as the new stamp, so a crash leaves either the old
  version or the new one, never half of a step.

A step is a plain function of the write transaction and the named
databases. It must only go forward and must be correct on any store of its
``from_version`` (it runs once, but may see a store that a crash left right
after the previous step's commit).

Adding a version: append a :class:`Migration` to :data:`MIGRATIONS` (the
schema version follows from the list), describe it in
docs/architecture.md, and add a test that upgrades a store of the previous
layout (tests/node/test_migrations.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lmdb

from .version import VERSION

_U32 = struct.Struct(">I")

SCHEMA_KEY = b"schema"
#: ``meta: b"writer" -> utf-8 text``: the chinwag version that last opened the
#: store (schema 2 on). A newer node's refusal names it.
WRITER_KEY = b"writer"


class SchemaError(Exception):
    """The store cannot be opened at this version; the message says why and what to do."""


class StoreTooNew(SchemaError):
    """The data directory was written by a newer chinwag than this one."""

    def __init__(self, found: int, supported: int, writer: str | None) -> None:
        by = f"chinwag {writer}" if writer else "a newer chinwag"
        super().__init__(
            f"this data directory was written by {by} (store schema {found}); "
            f"this chinwag ({chinwag_version()}) reads store schema {supported} and older. "
            "Run that version or a newer one, or restore a backup taken by this version."
        )
        self.found = found
        self.supported = supported
        self.writer = writer


class MigrationFailed(SchemaError):
    """The store needs a migration that could not go ahead (e.g. its backup)."""


@dataclass(frozen=True)
class Migration:
    """One step: turns a store of ``from_version`` into ``from_version + 1``."""

    from_version: int
    summary: str
    #: ``apply(txn, dbs, node_id)``: the node's own id, for steps that must
    #: tell the node's users' addresses from others (schema 3).
    apply: Callable[[lmdb.Transaction[bytes], dict[str, Any], str], None]


def _v1_to_v2(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], node_id: str) -> None:
    """Schema 2 adds ``meta: writer`` (set at every open, not here).

    No existing row changes shape, so this step only moves the stamp; it is
    the first real step of the chain and keeps the machinery exercised.
    """


def _v2_to_v3(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], node_id: str) -> None:
    """Schema 3 adds the conversation, read-marker and search index
    (node/history_index.py), kept by every queue append from now on: build it
    for the queues that exist. Read markers start at 0 (everything unread)."""
    from .history_index import rebuild_all  # the index module imports nothing of ours

    rebuild_all(txn, dbs, node_id)


def _v3_to_blobs(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], node_id: str) -> None:
    """The blob tables (node/blob_index.py: blobs, blob_refs, blob_uploads,
    blob_grants, blob_wanted, blob_quota) are created empty at open. No
    message of an older store has attachments (they were refused), so there
    are no references to count: this step only moves the stamp, and keeps
    an older chinwag (which would not count references) off the store."""


def _v4_to_v5(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], node_id: str) -> None:
    """Schema 5 adds the message-id index of actions on messages
    (node/actions_store.py), kept by every queue append from now on: build it
    for the queues that exist, so older messages can be edited, deleted,
    reacted and replied to."""
    from .actions_store import rebuild_all

    rebuild_all(txn, dbs)


def _v5_to_v6(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], node_id: str) -> None:
    """Schema 6 drops the ``conv_recent`` table (conversations newest first):
    the conversation list is now the ``conv`` rows sorted when asked for, and
    every queue append writes two rows fewer. It adds ``index_log`` (entries
    waiting to be merged into ``conv_seq`` and ``terms``), which starts empty:
    schema 5 wrote those at once. Nothing else changes shape. The store opens
    a retired table for its migration only if the file has it."""
    db = dbs.pop("conv_recent", None)
    if db is not None:
        txn.drop(db, delete=True)


def _v6_to_v7(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], node_id: str) -> None:
    """Schema 7 kept the search postings by epoch (256 queue entries) before
    the term (``postings``: uid | seq >> 8 | term hash | seq) instead of
    ``terms`` (uid | term hash | seq). Schema 8 packs them further, so this
    step copies ``terms`` straight into schema 8's ``epoch_terms`` blocks
    (the file never gets a ``postings`` table) and drops it; nothing is
    tokenized again."""
    from .history_index import move_postings_to_blocks

    old = dbs.pop("terms", None)
    if old is not None:
        move_postings_to_blocks(txn, old, dbs["epoch_terms"], schema=6)
        txn.drop(old, delete=True)


def _v7_to_v8(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], node_id: str) -> None:
    """Schema 8 packs a user's search postings of one epoch into one
    ``epoch_terms`` row (uid | epoch -> term hash | seq & 0xFF, 5 bytes a
    posting): a merge of the index log writes one row per user and epoch
    instead of one per posting, and a search reads one row per epoch. The
    ``postings`` rows are copied over and the table dropped. ``index_log``
    rows hold the entries of one write each, with a count of term hashes
    per entry: the waiting rows (one entry each) are rewritten."""
    from .history_index import move_postings_to_blocks, upgrade_log_rows

    upgrade_log_rows(txn, dbs)
    old = dbs.pop("postings", None)
    if old is not None:
        move_postings_to_blocks(txn, old, dbs["epoch_terms"], schema=7)
        txn.drop(old, delete=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "stamp only; schema 2 adds meta 'writer' (set at each open)", _v1_to_v2),
    Migration(2, "conversation, read-marker and search index built from the queues", _v2_to_v3),
    Migration(3, "blob tables for attachments (created empty)", _v3_to_blobs),
    Migration(4, "message-id index for edit/delete/react/reply built from the queues", _v4_to_v5),
    Migration(5, "drop conv_recent; add index_log (index rows merged in batches)", _v5_to_v6),
    Migration(6, "search postings keyed by epoch before term (terms -> epoch_terms)", _v6_to_v7),
    Migration(7, "search postings packed per user and epoch; index_log rows per write", _v7_to_v8),
)

#: The layout this code writes: one past the last migration's source.
SCHEMA_VERSION = MIGRATIONS[-1].from_version + 1 if MIGRATIONS else 1


def chinwag_version() -> str:
    """The installed chinwag's version (node/version.py)."""
    return VERSION


@dataclass(frozen=True)
class SchemaInfo:
    """What a store says about its layout before anything is written."""

    version: int | None  # None: a new, empty store
    writer: str | None


def read_schema(env: lmdb.Environment) -> SchemaInfo:
    """The schema of ``env``, from a read transaction (no write, no db created)."""
    with env.begin() as txn:
        try:
            meta = env.open_db(b"meta", txn=txn, create=False)
        except lmdb.NotFoundError:
            return SchemaInfo(None, None)
        raw = txn.get(SCHEMA_KEY, db=meta)
        writer = txn.get(WRITER_KEY, db=meta)
    version = 1 if raw is None else _U32.unpack(raw)[0]
    return SchemaInfo(version, None if writer is None else bytes(writer).decode("utf-8", "replace"))


def check_supported(info: SchemaInfo, supported: int = SCHEMA_VERSION) -> None:
    """Raise :class:`StoreTooNew` for a store past ``supported``."""
    if info.version is not None and info.version > supported:
        raise StoreTooNew(info.version, supported, info.writer)


def plan(
    found: int, target: int = SCHEMA_VERSION, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[Migration]:
    """The steps from ``found`` to ``target``, in order (empty when current)."""
    steps = {m.from_version: m for m in migrations}
    chain = []
    for version in range(found, target):
        step = steps.get(version)
        if step is None:
            raise RuntimeError(f"no migration from store schema {version}")
        chain.append(step)
    return chain


def stamp(txn: lmdb.Transaction[bytes], meta: Any, version: int) -> None:
    """Write the schema version and this chinwag's version into ``meta``."""
    txn.put(SCHEMA_KEY, _U32.pack(version), db=meta)
    if version >= 2:
        txn.put(WRITER_KEY, chinwag_version().encode("utf-8"), db=meta)
