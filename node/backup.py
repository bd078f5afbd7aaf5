"""Backups of a data directory and restoring them.

A backup is a directory::

    DEST/backup.json     the manifest (format, versions, node id, time, files)
    DEST/db/data.mdb     LMDB's own compacting copy of the store
    DEST/node.key, ...   the data directory's other top-level files (node key,
                         node.json, seed peers, config), mode 0600
    DEST/blobs/...       the blobs directory, when there is one (not blobs/tmp/,
                         the files of uploads and fetches still running)

The store copy comes from one LMDB read transaction (``env.copy(compact=True)``),
so it is the store as of one commit; writers go on meanwhile (only a map
resize waits for the copy, node/store.py). Everything is written into a
hidden sibling ``.DEST.partial-XXXX`` and renamed onto DEST at the end, so a
directory named DEST is always a finished backup; a crash leaves only the
hidden partial one. Every file's SHA-256 is in the manifest and checked by
:func:`restore_backup`.

This module does blocking file I/O: the node runs it in a worker thread.
It knows nothing of the Store; the caller passes ``copy_db``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lmdb

from .identity import IdentityError, load_identity
from .migrations import SCHEMA_VERSION, chinwag_version, read_schema

MANIFEST = "backup.json"
FORMAT = "chinwag-backup"
FORMAT_VERSION = 1
DB_DIR = "db"
BLOBS_DIR = "blobs"
#: Under ``blobs/``: files of uploads and fetches not finished (node/blob_files.py).
BLOBS_TMP = "tmp"
#: Top-level files of a data directory that belong to the running process,
#: not to its state (the lock, the admin socket), never copied.
RUNTIME_FILES = frozenset({"store.lock", "admin.sock"})
#: Nor are log files (``--log-file`` may point into the data directory).
SKIPPED_SUFFIXES = (".log",)
#: Where a node puts its automatic backups (before a migration).
BACKUPS_DIR = "backups"
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message says why."""


@dataclass(frozen=True)
class Manifest:
    chinwag_version: str
    node_id: str
    node_name: str | None
    created_ms: int
    schema: int
    online: bool
    files: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "chinwag_version": self.chinwag_version,
            "node_id": self.node_id,
            "node_name": self.node_name,
            "created_ms": self.created_ms,
            "created": datetime.fromtimestamp(self.created_ms / 1000, UTC).isoformat(),
            "schema": self.schema,
            "online": self.online,
            "files": self.files,
        }


def check_empty_target(path: Path, what: str) -> None:
    """Refuse a ``path`` that exists and is not an empty directory."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise BackupError(f"{what} {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise BackupError(f"{what} {path} is not empty; give a new or empty directory")


def write_backup(
    dest: Path,
    data_dir: Path,
    copy_db: Callable[[Path], int],
    node_id: str,
    *,
    online: bool,
) -> Manifest:
    """Back ``data_dir`` up into ``dest`` (new or empty); return the manifest.

    ``copy_db(directory)`` writes the store's ``data.mdb`` into ``directory``
    and returns the store's schema version as of that copy.
    """
    dest = dest.absolute()
    check_empty_target(dest, "backup destination")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} does not exist")
    partial = dest.parent / f".{dest.name}.partial-{secrets.token_hex(4)}"
    partial.mkdir(mode=0o700)
    try:
        (partial / DB_DIR).mkdir(mode=0o700)
        schema = copy_db(partial / DB_DIR)
        os.chmod(partial / DB_DIR / "data.mdb", 0o600)
        for entry in sorted(data_dir.iterdir()):
            if entry.name in RUNTIME_FILES or entry.name.startswith("."):
                continue
            if entry.name.endswith(SKIPPED_SUFFIXES):
                continue
            if entry.is_file() and not entry.is_symlink():
                _copy_private(entry, partial / entry.name)
        if (data_dir / BLOBS_DIR).is_dir():
            _copy_blobs(data_dir / BLOBS_DIR, partial / BLOBS_DIR)
        manifest = Manifest(
            chinwag_version=chinwag_version(),
            node_id=node_id,
            node_name=_node_name(data_dir),
            created_ms=time.time_ns() // 1_000_000,
            schema=schema,
            online=online,
            files={name: _describe(partial / name) for name in _files(partial)},
        )
        _write_private(partial / MANIFEST, json.dumps(manifest.to_json(), indent=1) + "\n")
        _publish(partial, dest, "the backup")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def read_manifest(src: Path) -> dict[str, Any]:
    """The manifest of backup ``src``; :class:`BackupError` if it is not one."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{src} is not a chinwag backup (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src / MANIFEST} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{src / MANIFEST} is not a chinwag backup manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"{src} is backup format {manifest.get('format_version')!r}; "
            f"this chinwag reads format {FORMAT_VERSION}"
        )
    schema = manifest.get("schema")
    if not isinstance(schema, int) or schema < 1:
        raise BackupError(f"{src / MANIFEST} has no valid store schema")
    if schema > SCHEMA_VERSION:
        raise BackupError(
            f"{src} holds store schema {schema}, written by chinwag "
            f"{manifest.get('chinwag_version', '?')}; this chinwag ({chinwag_version()}) "
            f"reads schema {SCHEMA_VERSION} and older: restore it with that version or newer"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or f"{DB_DIR}/data.mdb" not in files:
        raise BackupError(f"{src / MANIFEST} lists no store")
    return manifest


def restore_backup(src: Path, data_dir: Path) -> dict[str, Any]:
    """Make ``data_dir`` (new or empty) a copy of backup ``src``; return the manifest.

    Every file is checked against the manifest's size and SHA-256 before
    anything is written; the result appears under ``data_dir`` by one rename.
    The store keeps its schema: a node started on it migrates it as usual.
    """
    src = src.absolute()
    data_dir = data_dir.absolute()
    manifest = read_manifest(src)
    check_empty_target(data_dir, "data directory")
    files: dict[str, Any] = manifest["files"]
    for name, expected in files.items():
        path = _inside(src, name)
        if not path.is_file():
            raise BackupError(f"{src} is incomplete: {name} is missing")
        if _describe(path) != expected:
            raise BackupError(f"{src} is damaged: {name} does not match its checksum")
    try:
        key_id = load_identity(src).id
    except IdentityError as exc:
        raise BackupError(f"{src} holds no usable node key: {exc}") from exc
    if key_id != manifest.get("node_id"):
        raise BackupError(f"{src}: node.key is not the key of node {manifest.get('node_id')}")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = data_dir.parent / f".{data_dir.name}.partial-{secrets.token_hex(4)}"
    partial.mkdir(mode=0o700)
    try:
        for name in files:
            target = partial / name
            for parent in reversed(target.relative_to(partial).parents[:-1]):
                (partial / parent).mkdir(mode=0o700, exist_ok=True)
            _copy_private(_inside(src, name), target)
        _publish(partial, data_dir, "the restored data")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def pre_migration_dir(data_dir: Path, version: int, now_ms: int) -> Path:
    """``DATA/backups/pre-migration-<version>-<UTC time>``."""
    stamp = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return data_dir / BACKUPS_DIR / f"pre-migration-{version}-{stamp}"


# ------------------------------------------------------------------ helpers


def _node_name(data_dir: Path) -> str | None:
    try:
        name = json.loads((data_dir / "node.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _inside(root: Path, name: str) -> Path:
    """``root/name`` for a manifest entry, refusing one that leaves ``root``."""
    path = (root / name).resolve()
    if name.startswith("/") or not path.is_relative_to(root.resolve()):
        raise BackupError(f"the manifest names a file outside the backup: {name!r}")
    return root / name


def _files(root: Path) -> list[str]:
    names = []
    for directory, _dirs, filenames in os.walk(root):
        for filename in filenames:
            names.append(str((Path(directory) / filename).relative_to(root)))
    return sorted(names)


def _describe(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def _copy_blobs(src: Path, dest: Path) -> None:
    """Copy the blob files, not ``tmp/`` (uploads and fetches still running).

    A running node goes on meanwhile: a temporary file is renamed to its
    hash's path when its upload ends, and a blob no message references any
    more may be reclaimed (node/blobs.py). Either may vanish between listing
    and copying; that is no failure of the backup. Every blob a message of
    the store copy (taken before) still references at the end is copied.
    """

    def skip_tmp(directory: str, names: list[str]) -> list[str]:
        return [BLOBS_TMP] if Path(directory) == src and BLOBS_TMP in names else []

    def copy_if_there(source: str, target: str) -> str:
        try:
            return str(shutil.copy2(source, target))
        except FileNotFoundError:
            return target

    shutil.copytree(src, dest, symlinks=True, ignore=skip_tmp, copy_function=copy_if_there)


def _copy_private(src: Path, dest: Path) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
        shutil.copyfileobj(fin, fout, _CHUNK)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _publish(partial: Path, dest: Path, what: str) -> None:
    """Make the finished ``partial`` durable, then move it to ``dest`` in one rename.

    rename(2) replaces an empty directory and fails on a non-empty one, so a
    directory that filled up meanwhile is never overwritten.
    """
    _fsync_tree(partial)
    try:
        os.rename(partial, dest)
    except OSError as exc:
        raise BackupError(f"cannot move {what} to {dest}: {exc.strerror or exc}") from exc
    _fsync_dir(dest.parent)


def _fsync_tree(root: Path) -> None:
    """Make every file and directory under ``root`` durable before the rename."""
    for directory, _dirs, filenames in os.walk(root):
        for filename in filenames:
            fd = os.open(Path(directory) / filename, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(directory))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def offline_backup(data_dir: Path, dest: Path, node_id: str) -> Manifest:
    """Back up the data directory of a node that is not running.

    Holds the store lock for the whole copy (so no node starts meanwhile)
    and opens LMDB read-only: the source is never written, not even to
    migrate it; the manifest records the schema it has.
    """
    from .store import MAX_DBS, locked_data_dir  # store.py imports this module

    if not (data_dir / DB_DIR / "data.mdb").is_file():
        raise BackupError(f"{data_dir} holds no store ({DB_DIR}/data.mdb)")
    with locked_data_dir(data_dir):
        # lock=False: no LMDB lock file writes; the store lock excludes writers.
        env = lmdb.open(
            str(data_dir / DB_DIR), readonly=True, lock=False, subdir=True, max_dbs=MAX_DBS
        )
        try:
            info = read_schema(env)

            def copy_db(directory: Path) -> int:
                env.copy(str(directory), compact=True)
                return info.version or SCHEMA_VERSION

            return write_backup(dest, data_dir, copy_db, node_id, online=False)
        finally:
            env.close()
