"""Attachments' blobs: uploads streamed to disk, access by reference, reclaim.

An upload (``POST /api/blobs``, node/blob_http.py) is streamed into a
temporary file while it is hashed; nothing of it is ever held whole in
memory. A body over ``max_file_bytes`` is refused by its Content-Length
before a byte is read, and reading stops as soon as it passes the limit.
Images (recognised by their bytes, not by what the client says) have their
metadata removed and get a preview (node/blob_images.py, in a worker
thread). The file is fsynced and renamed to its hash's path
(node/blob_files.py), then its metadata committed (node/blob_index.py); an
upload interrupted at any point leaves neither a file nor a row.

A user may read a blob only when a message in their own queue references
it; references are counted with the queue appends themselves
(node/blob_index.py). A blob no message references (an upload never sent, or
one whose messages went with their users) is reclaimed by :meth:`sweep`
after ``blob_grace``; the sweep and each upload's publication hold one lock,
so a file is never removed under an upload that is about to reference it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import trio

from chinwag.protocol.attachments import Preview, check_file_name, check_media_type, check_sha256
from chinwag.protocol.errors import ErrorCode, ProtocolError

from . import blob_index
from .blob_files import BlobFiles, fsync_path, hash_and_sync
from .blob_images import ImageRefused, process, sniff_image
from .config import NodeConfig
from .quota import QuotaPolicy
from .store import Store, WriteTxn, _View

log = logging.getLogger(__name__)

#: Unreferenced blobs reclaimed per sweep transaction.
SWEEP_BATCH = 512
#: Bytes written to the temporary file per write call (chunks are joined up
#: to it): with ``max_uploads`` the bound on upload bodies held in memory.
WRITE_BYTES = 256 * 1024
#: Images decoded at once (a 64-megapixel photo takes ~256 MB while decoded).
IMAGE_THREADS = 1
#: What a client is told to wait before asking again for a blob being fetched.
PENDING_RETRY_MS = 2000


class LimitError(ProtocolError):
    """An upload over a limit; ``limit`` is the limit in bytes (the HTTP answer names it)."""

    def __init__(self, code: ErrorCode, message: str, limit: int) -> None:
        super().__init__(code, message)
        self.limit = limit


class BodySource(Protocol):
    """The body of a request, read as it arrives (node/server.py)."""

    async def receive(self) -> bytes:
        """The next bytes of the body; ``b""`` at its end."""
        ...


@dataclass(frozen=True)
class Upload:
    sha256: str
    size: int
    type: str
    name: str
    preview: Preview | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sha256": self.sha256,
            "size": self.size,
            "type": self.type,
            "name": self.name,
        }
        if self.preview is not None:
            out["preview"] = self.preview.to_wire()
        return out


@dataclass(frozen=True)
class BlobAccess:
    """A blob a user may read: its file and the name and type to serve it with."""

    sha256: str
    path: Path
    size: int
    name: str
    type: str


@dataclass(frozen=True)
class BlobStats:
    uploads: int = 0
    upload_bytes: int = 0
    #: Uploads refused (limit, quota, bad request) or cut off.
    refused: int = 0
    interrupted: int = 0
    downloads: int = 0
    reclaimed: int = 0
    #: Temporary files removed at start (a crash during an upload).
    swept_temp: int = 0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class BlobService:
    """Uploads, access checks and reclaim of the node's blobs."""

    def __init__(
        self, config: NodeConfig, store: Store, now_ms: Callable[[], int] = wall_ms
    ) -> None:
        self._config = config
        self._store = store
        self._now_ms = now_ms
        self.files = BlobFiles(config.data_dir)
        self._quota = QuotaPolicy(config.file_quota_bytes, int(config.file_quota_window * 1000))
        # Held from a publication's rename to its commit, and by a sweep from
        # its commit to its unlinks.
        self._lock = trio.Lock()
        self._stats = BlobStats()
        self._uploading = 0
        self._images = trio.CapacityLimiter(IMAGE_THREADS)
        #: Called with a blob's hash once its file is in place (fetches wait on it).
        self.on_stored: Callable[[str], None] | None = None

    def statistics(self) -> BlobStats:
        return self._stats

    def _count(self, **delta: int) -> None:
        s = self._stats
        self._stats = replace(s, **{k: getattr(s, k) + v for k, v in delta.items()})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Prepare the directories, then sweep every ``blob_sweep_interval``."""
        removed = await trio.to_thread.run_sync(self.files.prepare)
        self._count(swept_temp=removed)
        if removed:
            log.info("removed %d unfinished upload(s) left by a crash", removed)
        task_status.started()
        while True:
            await trio.sleep(self._config.blob_sweep_interval)
            try:
                await self.sweep()
            except (OSError, ProtocolError) as exc:  # tried again next round
                log.warning("blob sweep failed: %s", exc)

    # ------------------------------------------------------------ upload
    def check_declared(self, uid: int, declared: int | None) -> None:
        """Refuse an upload by its Content-Length, before its body is read."""
        limit = self._config.max_file_bytes
        if declared is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "send the file with a Content-Length")
        if declared > limit:
            self._count(refused=1)
            raise LimitError(
                ErrorCode.FILE_TOO_LARGE, f"a file is at most {limit} bytes here", limit
            )
        if self._quota.bytes_per_window > 0:

            def fn(view: _View) -> bytes | None:
                raw = view.txn.get(blob_key(uid), db=view.db("blob_quota"))
                return None if raw is None else bytes(raw)

            try:
                self._quota.charge(self._store.read(fn), declared, self._now_ms())
            except ProtocolError as exc:
                self._count(refused=1)
                raise self._quota_error() from exc

    def _quota_error(self) -> LimitError:
        limit = self._quota.bytes_per_window
        window = int(self._config.file_quota_window)
        return LimitError(
            ErrorCode.QUOTA_EXCEEDED,
            f"your file quota of {limit} bytes per {window} s is used up; try later",
            limit,
        )

    async def upload(
        self, uid: int, name: str, claimed_type: str, declared: int, body: BodySource
    ) -> Upload:
        """Stream ``body`` into a blob of ``uid``'s (see the module docstring)."""
        name = check_file_name(name)
        self.check_declared(uid, declared)
        if self._uploading >= self._config.max_uploads:
            self._count(refused=1)
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, "too many uploads at once; try again", retry_after_ms=1000
            )
        self._uploading += 1
        try:
            return await self._upload(uid, name, claimed_type, declared, body)
        finally:
            self._uploading -= 1

    async def _upload(
        self, uid: int, name: str, claimed_type: str, declared: int, body: BodySource
    ) -> Upload:
        temp = self.files.new_temp()
        stripped = temp.with_name(temp.name + ".clean")
        try:
            sha, size, head = await self._receive(body, temp)
            if size != declared:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "the body is not Content-Length long")
            media_type = _media_type(claimed_type, head)
            preview_meta: tuple[str, int, Any] | None = None
            if sniff_image(head) is not None:
                try:
                    done = await trio.to_thread.run_sync(
                        lambda: process(
                            temp,
                            stripped,
                            keep_exif=self._config.keep_exif,
                            preview_side=self._config.preview_max_side,
                            max_pixels=self._config.max_image_pixels,
                        ),
                        limiter=self._images,
                    )
                except ImageRefused as exc:
                    raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from exc
                if done.stripped is not None:
                    temp.unlink(missing_ok=True)
                    temp = done.stripped
                    sha, size = await trio.to_thread.run_sync(hash_and_sync, temp)
                else:
                    await trio.to_thread.run_sync(fsync_path, temp)
                if done.preview is not None:
                    p = done.preview
                    preview_meta = (p.type, len(p.data), p)
            else:
                await trio.to_thread.run_sync(fsync_path, temp)
            upload = await self._publish(uid, temp, sha, size, media_type, name, preview_meta)
        except BaseException as exc:
            if isinstance(exc, ProtocolError):
                self._count(refused=1)
            else:
                self._count(interrupted=1)
            raise
        finally:
            # Whatever happened (refusal, cut-off, cancel): no temporary file stays.
            temp.unlink(missing_ok=True)
            stripped.unlink(missing_ok=True)
        self._count(uploads=1, upload_bytes=size)
        return upload

    async def _receive(self, body: BodySource, temp: Path) -> tuple[str, int, bytes]:
        """Write the body to ``temp`` while hashing it; stop past the limit."""
        limit = self._config.max_file_bytes
        digest = hashlib.sha256()
        size = 0
        head = b""
        pending: list[bytes] = []
        pending_bytes = 0
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while True:
                chunk = await body.receive()
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise LimitError(
                            ErrorCode.FILE_TOO_LARGE, f"a file is at most {limit} bytes here", limit
                        )
                    digest.update(chunk)
                    if len(head) < 16:
                        head = (head + chunk)[:16]
                    pending.append(chunk)
                    pending_bytes += len(chunk)
                if pending and (not chunk or pending_bytes >= WRITE_BYTES):
                    data = b"".join(pending)
                    pending, pending_bytes = [], 0
                    await trio.to_thread.run_sync(_write_all, fd, data)
                if not chunk:
                    break
        finally:
            os.close(fd)
        return digest.hexdigest(), size, head

    async def _publish(
        self,
        uid: int,
        temp: Path,
        sha: str,
        size: int,
        media_type: str,
        name: str,
        preview_meta: tuple[str, int, Any] | None,
    ) -> Upload:
        now_ms = self._now_ms()
        preview: Preview | None = None
        async with self._lock:
            if preview_meta is not None:
                kind, psize, image = preview_meta
                psha = await trio.to_thread.run_sync(self.files.write_bytes, image.data)
                preview = Preview(psha, kind, psize, image.width, image.height)
            await trio.to_thread.run_sync(self.files.publish, temp, sha)

            def op(w: WriteTxn) -> str:
                dbs = w.dbs(blob_index.DB_NAMES)
                if self._quota.bytes_per_window > 0:
                    key = blob_key(uid)
                    row = w.txn.get(key, db=dbs["blob_quota"])
                    try:
                        charged = self._quota.charge(
                            None if row is None else bytes(row), size, now_ms
                        )
                    except ProtocolError as exc:
                        raise self._quota_error() from exc
                    w.txn.put(key, charged, db=dbs["blob_quota"])
                pv = preview.sha256 if preview is not None else None
                stored = blob_index.record_upload(
                    w.txn, dbs, uid, sha, size, media_type, now_ms, pv
                )
                if preview is not None:
                    blob_index.record_upload(
                        w.txn, dbs, uid, preview.sha256, preview.size, preview.type, now_ms
                    )
                return stored

            media_type = await self._store.transact(op)
        if self.on_stored is not None:
            self.on_stored(sha)
        return Upload(sha, size, media_type, name, preview)

    # ------------------------------------------------------------ download
    def access(self, uid: int, sha: str, *, preview: bool = False) -> BlobAccess:
        """The blob ``uid`` may read, or ``forbidden`` / ``not_found`` / ``blob_pending``."""
        check_sha256(sha)

        def fn(view: _View) -> tuple[blob_index.BlobRow | None, blob_index.UserRef | None]:
            dbs = view.dbs(blob_index.DB_NAMES)
            row = blob_index.get_blob(view.txn, dbs, sha)
            target = sha
            if preview:
                if row is None or row.preview is None:
                    return None, blob_index.get_ref(view.txn, dbs, uid, sha)
                target = row.preview
                row = blob_index.get_blob(view.txn, dbs, target)
            return row, blob_index.get_ref(view.txn, dbs, uid, target)

        row, ref = self._store.read(fn)
        if ref is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, "no message of yours references this blob")
        if row is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "this file has no preview")
        if not row.have:
            raise ProtocolError(
                ErrorCode.BLOB_PENDING,
                "your node is still fetching this file from the sender's node",
                retry_after_ms=PENDING_RETRY_MS,
            )
        path = self.files.path(row.sha256)
        self._count(downloads=1)
        name = ref.name if not preview else f"preview-{ref.name}"
        return BlobAccess(row.sha256, path, row.size, name, row.type)

    # ------------------------------------------------------------ reclaim
    async def sweep(self) -> int:
        """Reclaim blobs no message references, unused for ``blob_grace``."""
        total = 0
        while True:
            before = self._now_ms() - int(self._config.blob_grace * 1000)

            def op(w: WriteTxn, before: int = before) -> list[str]:
                dbs = w.dbs(blob_index.DB_NAMES)
                gone = blob_index.reclaimable(w.txn, dbs, before, SWEEP_BATCH)
                for sha in gone:
                    blob_index.forget_blob(w.txn, dbs, sha)
                return gone

            async with self._lock:
                gone = await self._store.transact(op)
                for sha in gone:
                    await trio.to_thread.run_sync(self.files.remove, sha)
            total += len(gone)
            self._count(reclaimed=len(gone))
            if len(gone) < SWEEP_BATCH:
                break
        if total:
            log.info("reclaimed %d unreferenced blob(s)", total)
        return total


def blob_key(uid: int) -> bytes:
    return uid.to_bytes(4, "big")


def _media_type(claimed: str, head: bytes) -> str:
    """The type stored for a file: an image's own (by its bytes), else the
    client's if it is well-formed, else application/octet-stream."""
    sniffed = sniff_image(head)
    if sniffed is not None:
        return sniffed
    kind = claimed.split(";", 1)[0].strip().lower()
    try:
        return check_media_type(kind)
    except ProtocolError:
        return "application/octet-stream"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
