"""Blob files on disk: ``DATA/blobs/ab/cd/<sha256 hex>``, written through ``DATA/blobs/tmp``.

A file is written to a fresh temporary name in ``tmp/``, hashed as it is
written, flushed to disk (fsync), and only then renamed to its hash's path
(and the directory fsynced), so a blob path always holds the complete,
verified bytes. A temporary file belongs to the upload or fetch that made
it and is removed on any interruption; whatever a crash left in ``tmp/`` is
removed at start (fetches resume from their own ``.part`` files, kept under
``tmp/fetch/`` by design and checked by hash before they are published).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

from chinwag.protocol.attachments import check_sha256


class BlobFiles:
    """Paths and atomic publication of blob files (blocking: call from a thread
    for anything that fsyncs)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "blobs"
        self.tmp = self.root / "tmp"
        self.fetch_dir = self.tmp / "fetch"

    def prepare(self) -> int:
        """Create the directories; remove uploads a crash left behind. Returns
        how many temporary files were removed."""
        self.fetch_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        removed = 0
        for entry in self.tmp.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)
                removed += 1
        return removed

    def path(self, sha: str) -> Path:
        check_sha256(sha)
        return self.root / sha[:2] / sha[2:4] / sha

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size

    def new_temp(self) -> Path:
        return self.tmp / f"up-{secrets.token_hex(12)}"

    def part_path(self, sha: str) -> Path:
        """The resumable temporary file of a blob fetched from a peer."""
        check_sha256(sha)
        return self.fetch_dir / f"{sha}.part"

    def publish(self, temp: Path, sha: str) -> bool:
        """Move a complete, fsynced ``temp`` to ``sha``'s path. Returns False
        (and drops ``temp``) when the blob is already there."""
        final = self.path(sha)
        if final.is_file():
            temp.unlink(missing_ok=True)
            return False
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.replace(temp, final)
        fsync_path(final.parent)
        return True

    def write_bytes(self, data: bytes) -> str:
        """Store small bytes (a preview) as a blob; returns its hash."""
        sha = hashlib.sha256(data).hexdigest()
        if self.exists(sha):
            return sha
        temp = self.new_temp()
        try:
            with open(temp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.publish(temp, sha)
        finally:
            temp.unlink(missing_ok=True)
        return sha

    def remove(self, sha: str) -> None:
        self.path(sha).unlink(missing_ok=True)
        self.part_path(sha).unlink(missing_ok=True)

    def disk_usage(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def clear(self) -> None:  # pragma: no cover - tests' helper
        shutil.rmtree(self.root, ignore_errors=True)


def fsync_path(path: Path) -> None:
    """Make a file's data, or a directory's entries, durable (both open read-only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_and_sync(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of the file at ``path``, flushed to disk: the
    last step before it may be published under its hash."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(f.fileno())
    return digest.hexdigest(), size
