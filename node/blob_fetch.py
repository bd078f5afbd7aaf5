"""Blobs across nodes: fetched from the origin over the federation link.

When a message with attachments from another node is committed for a local
user, the same transaction records each missing blob in ``blob_wanted``
with the peer to ask (node/blob_index.py): the message's origin, or the
group's host when a host relayed it. :class:`BlobFetcher` works through that
table: for each blob whose peer is linked it sends ``blobreq {sha256,
offset}``; the peer answers with a window of ``blobchunk`` frames (64 KiB
each, up to 1 MiB), and the next request goes out when the window is in.
The bytes go to ``DATA/blobs/tmp/fetch/<sha>.part``, so a fetch cut by a
link or node restart resumes from the part's length; the finished part is
hashed, and only a file whose SHA-256 and size match the signed attachment
is published and served. At most ``blob_fetch_per_peer`` blobs are fetched
from one peer at once; a failed or refused fetch is retried with back-off,
and at once when the link comes back. The table is durable: a node that was
down when the message arrived fetches the blob when it is back.

:class:`BlobServer` answers a peer's ``blobreq``, only for a blob that peer
was sent a message about (``blob_grants``, written with the outbox entry)
and only once the file is here (``blobnone pending`` while this node is
still fetching it itself, e.g. a group host relaying a member's photo).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from chinwag.protocol.link import BlobChunk, BlobRequest, BlobUnavailable, LinkFrame

from . import blob_index
from .blob_files import BlobFiles, hash_and_sync
from .config import NodeConfig
from .store import Store, WriteTxn, _View

log = logging.getLogger(__name__)

#: Bytes of one ``blobchunk``.
CHUNK_BYTES = 64 * 1024
#: Bytes answered per ``blobreq`` (a window of chunks).
WINDOW_BYTES = 1 << 20
#: A fetch that hears nothing for this long is abandoned and retried.
CHUNK_TIMEOUT = 30.0
#: Retry back-off (seconds) after a failed or refused fetch.
RETRY_MIN = 1.0
RETRY_MAX = 300.0
#: Retry (seconds) after ``blobnone pending`` or ``busy`` (the peer will have it soon).
PENDING_RETRY = 2.0
#: Requests of one peer served at once; more are answered ``busy``.
SERVE_PER_PEER = 8
#: Requests of one blob from one peer waiting behind the one being served.
MAX_QUEUED_REQUESTS = 4
#: Wanted rows read per pass.
WANTED_PAGE = 1024

Send = Callable[[bytes, LinkFrame], Awaitable[None]]
Answer = BlobChunk | BlobUnavailable


@dataclass(frozen=True)
class FetchStats:
    fetched: int = 0
    fetched_bytes: int = 0
    #: Bytes of chunks received and written (less than fetched_bytes when a
    #: fetch resumed from a part file left by an earlier run).
    received_bytes: int = 0
    #: Fetches that failed (timeout, link down, bad hash) or were refused.
    failed: int = 0
    #: Fetched files whose hash did not match (dropped, fetched again).
    mismatched: int = 0
    #: Blobs served to peers, and the bytes sent.
    served_chunks: int = 0
    served_bytes: int = 0
    refused: int = 0


class BlobLinks:
    """Both directions of blob transfer over federation links."""

    def __init__(
        self,
        config: NodeConfig,
        store: Store,
        files: BlobFiles,
        send: Send,
        is_linked: Callable[[bytes], bool],
        on_stored: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._files = files
        self._send = send
        self._is_linked = is_linked
        self._on_stored = on_stored
        self._wake = trio.Event()
        #: Fetches running: sha -> channel their frames go to.
        self._inflight: dict[str, trio.MemorySendChannel[BlobChunk | BlobUnavailable]] = {}
        self._per_peer: dict[bytes, int] = {}
        #: Fetches that ended with ``blobnone pending|busy`` (retried soon).
        self._waiting: set[str] = set()
        #: sha -> the peer a running fetch asks.
        self._sources: dict[str, bytes] = {}
        #: sha -> (trio time of the next try, back-off seconds)
        self._retry: dict[str, tuple[float, float]] = {}
        self._serving: dict[bytes, int] = {}
        #: (peer, sha) -> its requests waiting, served in order by one task.
        self._queues: dict[tuple[bytes, bytes], deque[BlobRequest]] = {}
        self._nursery: trio.Nursery | None = None
        self._stats = FetchStats()

    def statistics(self) -> FetchStats:
        return self._stats

    def _count(self, **delta: int) -> None:
        s = self._stats
        self._stats = replace(s, **{k: getattr(s, k) + v for k, v in delta.items()})

    # ------------------------------------------------------------ events
    def poke(self) -> None:
        """Blobs may be wanted (a commit recorded some)."""
        self._wake.set()

    def link_up(self, peer: bytes) -> None:
        for sha, (_, delay) in list(self._retry.items()):
            self._retry[sha] = (0.0, delay)  # try at once, keep the back-off
        self._wake.set()

    def link_down(self, peer: bytes) -> None:
        """End the fetches from ``peer`` now (they resume from their parts at link-up)."""
        for sha, source in list(self._sources.items()):
            if source == peer:
                channel = self._inflight.get(sha)
                if channel is not None:
                    channel.close()

    def on_frame(self, peer: bytes, frame: BlobRequest | BlobChunk | BlobUnavailable) -> None:
        """A blob frame from ``peer``'s link (never blocks, never raises)."""
        if isinstance(frame, BlobRequest):
            self._serve_soon(peer, frame)
            return
        channel = self._inflight.get(frame.sha256.hex())
        if channel is None:
            return  # a fetch that ended (late chunk): dropped
        try:
            channel.send_nowait(frame)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the fetch re-requests from where it is

    # ------------------------------------------------------------ lifetime
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                self._wake = trio.Event()
                delay = self._start_fetches(nursery)
                with trio.move_on_after(delay):
                    await self._wake.wait()

    def _start_fetches(self, nursery: trio.Nursery) -> float:
        """Start what can start; return how long to wait before looking again."""

        def fn(view: _View) -> list[blob_index.Wanted]:
            return blob_index.list_wanted(view.txn, view.dbs(blob_index.DB_NAMES), WANTED_PAGE)

        now = trio.current_time()
        wait = RETRY_MAX
        for want in self._store.read(fn):
            if want.sha256 in self._inflight:
                continue
            at, _ = self._retry.get(want.sha256, (0.0, 0.0))
            if at > now:
                wait = min(wait, at - now)
                continue
            if not self._is_linked(want.source):
                continue  # link_up wakes us
            if self._per_peer.get(want.source, 0) >= max(1, self._config.blob_fetch_per_peer):
                continue  # a finishing fetch wakes us
            if want.size > self._config.max_file_bytes:
                continue  # larger than this node takes: never fetched
            send, receive = trio.open_memory_channel[BlobChunk | BlobUnavailable](64)
            self._inflight[want.sha256] = send
            self._sources[want.sha256] = want.source
            self._per_peer[want.source] = self._per_peer.get(want.source, 0) + 1
            nursery.start_soon(self._fetch, want, receive)
        return wait

    # ------------------------------------------------------------ fetching
    async def _fetch(
        self, want: blob_index.Wanted, frames: trio.MemoryReceiveChannel[Answer]
    ) -> None:
        ok = False
        self._waiting.discard(want.sha256)
        try:
            ok = await self._transfer(want, frames)
        except OSError as exc:
            log.warning("fetching blob %s failed: %s", want.sha256[:12], exc)
        finally:
            del self._inflight[want.sha256]
            del self._sources[want.sha256]
            self._per_peer[want.source] -= 1
            if not self._per_peer[want.source]:
                del self._per_peer[want.source]
            if ok:
                self._retry.pop(want.sha256, None)
            elif want.sha256 in self._waiting:
                # The peer has it on its way (pending) or is busy: ask again
                # soon, without growing the back-off.
                _, delay = self._retry.get(want.sha256, (0.0, RETRY_MIN / 2))
                self._retry[want.sha256] = (trio.current_time() + PENDING_RETRY, delay)
            else:
                self._count(failed=1)
                _, delay = self._retry.get(want.sha256, (0.0, RETRY_MIN / 2))
                delay = min(RETRY_MAX, delay * 2)
                self._retry[want.sha256] = (trio.current_time() + delay, delay)
            self._wake.set()

    async def _transfer(
        self, want: blob_index.Wanted, frames: trio.MemoryReceiveChannel[Answer]
    ) -> bool:
        sha = bytes.fromhex(want.sha256)
        part = self._files.part_path(want.sha256)
        offset = await trio.to_thread.run_sync(_part_size, part, want.size)
        # Two windows are asked for at a time: the next request goes out with
        # the first chunk of the current window, so the peer (which serves one
        # blob's requests in order, _serve_queue) never waits for a round
        # trip; at most 2 MiB (32 chunks) are ever on their way.
        requested = offset
        if offset < want.size:
            await self._send(want.source, BlobRequest(sha, offset))
            requested = min(want.size, offset + WINDOW_BYTES)
        while offset < want.size:
            window_start = offset
            window_end = min(want.size, offset + WINDOW_BYTES)
            # A window is gathered in memory (at most 1 MiB) and written with
            # one call: one thread hop per window, not per chunk.
            pieces: list[bytes] = []
            while offset < window_end:
                frame: BlobChunk | BlobUnavailable | None = None
                with trio.move_on_after(CHUNK_TIMEOUT):
                    try:
                        frame = await frames.receive()
                    except trio.EndOfChannel:
                        return False  # the link went down (link_down)
                if frame is None:
                    return False  # the link went quiet or away: retried later
                if isinstance(frame, BlobUnavailable):
                    log.info("blob %s not served by its peer: %s", want.sha256[:12], frame.code)
                    if frame.code in ("pending", "busy"):
                        self._waiting.add(want.sha256)
                    return False
                if frame.total != want.size or not frame.data:
                    return False  # not the blob the signed attachment describes
                if frame.offset != offset:
                    continue  # a late chunk of an abandoned window
                if offset == window_start and requested < want.size:
                    await self._send(want.source, BlobRequest(sha, requested))
                    requested = min(want.size, requested + WINDOW_BYTES)
                pieces.append(frame.data)
                offset += len(frame.data)
                self._count(received_bytes=len(frame.data))
            await trio.to_thread.run_sync(_write_at, part, window_start, b"".join(pieces))
        return await self._finish(want, part)

    async def _finish(self, want: blob_index.Wanted, part: Path) -> bool:
        digest, size = await trio.to_thread.run_sync(hash_and_sync, part)
        if digest != want.sha256 or size != want.size:
            self._count(mismatched=1)
            await trio.to_thread.run_sync(lambda: part.unlink(missing_ok=True))
            log.warning("fetched blob %s did not match its hash; fetching again", want.sha256[:12])
            return False
        await trio.to_thread.run_sync(self._files.publish, part, want.sha256)

        def op(w: WriteTxn) -> None:
            blob_index.mark_fetched(w.txn, w.dbs(blob_index.DB_NAMES), want.sha256)

        await self._store.transact(op)
        self._count(fetched=1, fetched_bytes=size)
        if self._on_stored is not None:
            self._on_stored(want.sha256)
        return True

    # ------------------------------------------------------------ serving
    def _serve_soon(self, peer: bytes, request: BlobRequest) -> None:
        if self._nursery is None:
            return
        # One blob's requests from one peer are served in order by one task
        # (the asker keeps two windows asked for; their chunks must not mix).
        key = (peer, request.sha256)
        queued = self._queues.get(key)
        if queued is not None:
            if len(queued) < MAX_QUEUED_REQUESTS:
                queued.append(request)
            return
        # Tasks per peer are bounded: SERVE_PER_PEER serving, as many more
        # answering ``busy``; past that a request is dropped (its asker
        # retries after its timeout). A well-behaved peer fetches at most
        # blob_fetch_per_peer blobs at once and never gets here.
        tasks = self._serving.get(peer, 0)
        if tasks >= 2 * SERVE_PER_PEER:
            self._count(refused=1)
            return
        self._serving[peer] = tasks + 1
        self._queues[key] = deque([request])
        self._nursery.start_soon(self._serve_queue, peer, key, tasks >= SERVE_PER_PEER)

    async def _serve_queue(self, peer: bytes, key: tuple[bytes, bytes], busy: bool) -> None:
        queued = self._queues[key]
        try:
            while queued:
                await self._serve(peer, queued.popleft(), busy)
        finally:
            # No checkpoint since the loop's last look: nothing was added unseen.
            del self._queues[key]
            self._serving[peer] -= 1
            if not self._serving[peer]:
                del self._serving[peer]

    async def _serve(self, peer: bytes, request: BlobRequest, busy: bool) -> None:
        sha = request.sha256.hex()
        try:
            if busy:
                await self._send(peer, BlobUnavailable(request.sha256, "busy"))
                return
            code = self._refusal(peer, sha)
            if code is not None:
                self._count(refused=1)
                await self._send(peer, BlobUnavailable(request.sha256, code))
                return
            path = self._files.path(sha)
            total = self._store.read(lambda view: _size(view, sha))
            end = min(total, request.offset + WINDOW_BYTES)
            offset = request.offset
            if offset >= total:
                await self._send(peer, BlobChunk(request.sha256, total, b"", total))
                return
            # The window is read with one call (one thread hop), sent in chunks.
            window = await trio.to_thread.run_sync(_read_at, path, offset, end - offset)
            for start in range(0, len(window), CHUNK_BYTES):
                data = window[start : start + CHUNK_BYTES]
                await self._send(peer, BlobChunk(request.sha256, offset, data, total))
                offset += len(data)
                self._count(served_chunks=1, served_bytes=len(data))
        except OSError as exc:
            log.info("serving blob %s failed: %s", sha[:12], exc)
        except Exception as exc:  # a closed link while sending: the peer asks again
            log.debug("serving blob %s ended: %s", sha[:12], exc)

    def _refusal(self, peer: bytes, sha: str) -> str | None:
        def fn(view: _View) -> str | None:
            dbs = view.dbs(blob_index.DB_NAMES)
            if not blob_index.may_fetch(view.txn, dbs, sha, peer):
                return "forbidden"
            row = blob_index.get_blob(view.txn, dbs, sha)
            if row is None:
                return "not_found"
            return None if row.have else "pending"

        return self._store.read(fn)


def _size(view: _View, sha: str) -> int:
    row = blob_index.get_blob(view.txn, view.dbs(blob_index.DB_NAMES), sha)
    return 0 if row is None else row.size


def _part_size(part: Path, expected: int) -> int:
    """Where a fetch resumes: the part's length (a part too long starts over)."""
    try:
        size = part.stat().st_size
    except FileNotFoundError:
        part.touch(mode=0o600)
        return 0
    if size > expected:
        part.unlink(missing_ok=True)
        return 0
    return size


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _write_at(part: Path, offset: int, data: bytes) -> None:
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
