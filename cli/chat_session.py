"""The network side of ``chinwag chat``: one device, kept connected.

:class:`ChatSession` (trio) connects with the cached token, sends
``sync {after: cursor}``, feeds every ``msg`` and ``presence`` frame into the
:class:`~chinwag.cli.chat_model.ChatModel`, sends what the screen queued (each
with its own ``cid``, so a resend after a reconnect is stored once), saves the
state file and acks the cursor. When the connection drops it reconnects with
capped, jittered exponential back-off and resumes from the cursor. It tells the
screen what changed through ``notify``; it never touches a widget.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from chinwag.node.blob_client import download_into, upload_file
from chinwag.node.client import (
    ChatClient,
    ClientError,
    LoginResult,
    api_call,
    connect,
    leaf_exceptions,
    retry_delay,
)
from chinwag.protocol.addresses import is_node_id_text
from chinwag.protocol.errors import ProtocolError

from .chat_model import MAX_CONVERSATIONS, ChatModel
from .chat_state import StateFile

log = logging.getLogger(__name__)

#: ``msg`` frames buffered between the socket and the model (the reader waits beyond).
MESSAGE_BUFFER = 256
#: Tries of one send that keeps getting ``rate_limited``.
MAX_RATE_RETRIES = 20
#: Saves (and acks) at most this often; a burst of messages is one save.
FLUSH_INTERVAL = 0.25
#: Senders' display names are asked for in batches this often (``presence_query``).
NAMES_DELAY = 0.3
#: Conversations asked for at connect (``convs``), messages per history page,
#: hits per ``/search``.
CONVS_PAGE = 100
HISTORY_PAGE = 50
#: While the user types, a ``typing start`` goes out at most this often (the
#: node drops more than one per 2 s; a start holds 6 s at the other side).
TYPING_RENEW = 3.0
SEARCH_LIMIT = 10
#: ``msg`` frames applied to the model between two notifications of the screen, at most.
APPLY_BATCH = 1024
#: While catching up on a backlog, the state is saved only after this many
#: more messages or this many seconds (and once when the catch-up ends), not
#: every ``FLUSH_INTERVAL``: each save writes the whole recent history.
CATCHUP_SAVE_MESSAGES = 20_000
CATCHUP_SAVE_INTERVAL = 5.0
#: While catching up, the screen is told what changed at most this often.
CATCHUP_NOTIFY_INTERVAL = 0.1


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial`` doubling up to ``cap``, times a jitter in [0.5, 1]."""

    initial: float = 0.5
    cap: float = 10.0

    def delay(self, attempt: int, jitter: float) -> float:
        grown = self.initial * 2.0 ** min(attempt, 30)
        return min(self.cap, grown) * (0.5 + jitter / 2)


@dataclass(frozen=True)
class Change:
    """What changed, for the screen: ``messages`` (of ``key``), ``conversations``,
    ``contacts``, ``status`` or ``notice`` (``text``)."""

    kind: str
    key: str | None = None
    text: str = ""
    error: bool = False


class ChatSession:
    """Keeps one device connected and the model in step with its queue."""

    def __init__(
        self,
        server: str,
        login: LoginResult,
        model: ChatModel,
        state: StateFile,
        notify: Callable[[Change], None],
        *,
        backoff: Backoff = Backoff(),
        timeout: float = 10.0,
        on_unauthorized: Callable[[], None] | None = None,
    ) -> None:
        self.server = server
        self.login = login
        self.model = model
        self.state = state
        self.backoff = backoff
        self.timeout = timeout
        self.connected = False
        self.status = "starting"
        self._notify = notify
        self._on_unauthorized = on_unauthorized
        self._client: ChatClient | None = None
        self._up = trio.Event()
        self._kick = trio.Event()
        self._dirty = trio.Event()
        self._acked = 0
        self._up_since: float | None = None
        #: (cursor at connect, head at connect) while behind the queue head.
        self._catchup: tuple[int, int] | None = None
        #: Set (and replaced) after every batch of frames applied.
        self._applied = trio.Event()
        self._saved_cursor = 0
        self._saved_at = self._catchup_since = -float("inf")
        #: Conversations changed since the screen was last told (ordered set).
        self._changed_keys: dict[str, None] = {}
        self._changes_waiting = trio.Event()
        #: Conversations shown on the screen whose read marker is to be moved.
        self._to_mark: dict[str, None] = {}
        self._marks_waiting = trio.Event()
        #: Set once the catch-up of this connection is over (or there was none).
        self._caught_up = trio.Event()
        #: Conversations whose input line is (True) or is no longer (False)
        #: being typed in, waiting for the typist task; and when a ``start``
        #: last went out per conversation.
        self._typing_wanted: dict[str, bool] = {}
        self._typing_waiting = trio.Event()
        self._typing_sent: dict[str, float] = {}

    @property
    def catching_up(self) -> tuple[int, int] | None:
        """``(done, total)`` while streaming a backlog, else None."""
        if self._catchup is None:
            return None
        start, head = self._catchup
        return self.model.cursor - start, head - start

    # -- called from the screen (inside trio, through the bridge) -------------
    def kick(self) -> None:
        """New sends are queued in the model (or failed ones marked for retry)."""
        self._kick.set()
        self._dirty.set()

    def mark_dirty(self) -> None:
        """The model changed on the screen's side (read marks): save it soon."""
        self._dirty.set()

    def mark_read(self, key: str | None) -> None:
        """``key`` is on the screen: move its read marker on the node (soon)."""
        if key is not None:
            self._to_mark[key] = None
            self._marks_waiting.set()

    def typing_input(self, key: str | None, typing: bool) -> None:
        """The input line of ``key`` holds text (``typing``) or was cleared."""
        if key is not None and not key.startswith("/") and not _is_unresolved_key(key):
            self._typing_wanted[key] = typing
            self._typing_waiting.set()

    async def _typist(self, client: ChatClient) -> None:
        """Send ``typing start`` at most every TYPING_RENEW seconds while the
        user types, and ``stop`` once when the line is cleared."""
        self._typing_sent.clear()
        while True:
            await self._typing_waiting.wait()
            self._typing_waiting = trio.Event()
            wanted, self._typing_wanted = self._typing_wanted, {}
            now = trio.current_time()
            for key, typing in wanted.items():
                last = self._typing_sent.get(key)
                if typing and (last is None or now - last >= TYPING_RENEW):
                    self._typing_sent[key] = now
                    await client.typing(key, "start")
                elif not typing and last is not None:
                    del self._typing_sent[key]
                    await client.typing(key, "stop")

    def _on_signal(self, frame: dict[str, Any]) -> None:
        """A ``typing`` or ``receipt`` frame from the node."""
        if frame.get("t") == "typing":
            # The screen reads the typing line by the same clock (time.monotonic).
            key = self.model.apply_typing(frame, time.monotonic())
        else:
            key = self.model.apply_receipt(frame)
        if key is not None:
            self._notify(Change("messages", key))

    async def receipts(self, key: str) -> None:
        """Ask the node how far the members have our messages of ``key``."""
        if _is_unresolved_key(key) or key not in self.model.conversations:
            return
        client = await self._live_client()
        try:
            reply = await client.receipts(key)
        except ClientError as exc:
            log.info("receipts of %s not loaded: %s", key, exc)
            return
        if self.model.apply_receipts(reply) is not None:
            self._notify(Change("messages", key))

    async def block(self, action: str, address: str) -> str:
        """Block (``add``) or unblock (``remove``) an address (HTTP)."""
        method = "POST" if action == "add" else "DELETE"
        reply = await api_call(
            self.server, method, "/api/blocks", {"address": address}, self.login.token
        )
        return str(reply.get("address", address))

    async def set_read_receipts(self, on: bool) -> bool:
        """Turn this user's read receipts on or off (the profile, HTTP)."""
        reply = await api_call(
            self.server, "PUT", "/api/profile", {"read_receipts": on}, self.login.token
        )
        return bool(reply.get("read_receipts", on))

    async def older(self, key: str) -> int:
        """Load the next older page of ``key`` (PageUp); returns the entries added."""
        conv = self.model.conversations.get(key)
        if conv is None or conv.complete:
            return 0
        before = conv.oldest_seq() or None
        reply = await self._history_call("history", key, limit=HISTORY_PAGE, before=before)
        added = self.model.merge_page(key, reply.get("msgs", []), "next" in reply)
        self._notify(Change("messages", key))
        return added

    async def newest(self, key: str) -> int:
        """Load the newest page of ``key`` once per run (a conversation opened
        that this device did not stream, e.g. after starting at the head)."""
        conv = self.model.conversations.get(key)
        if conv is None or conv.fetched or _is_unresolved_key(key):
            return 0
        try:
            reply = await self._history_call("history", key, limit=HISTORY_PAGE)
        except ClientError as exc:
            if exc.code == "not_found":  # nothing on the node yet
                conv.fetched = True
                return 0
            raise
        conv.fetched = True
        added = self.model.merge_page(key, reply.get("msgs", []), "next" in reply)
        self._notify(Change("messages", key))
        if key == self.model.current:
            self.mark_read(key)
        return added

    async def search(self, query: str) -> list[tuple[str, dict[str, Any]]]:
        """The newest hits of ``query`` in this user's history: ``(conv, msg frame)``."""
        reply = await self._history_call("search", query, limit=SEARCH_LIMIT)
        return [(str(h["conv"]), h["msg"]) for h in reply.get("hits", [])]

    async def _history_call(self, name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A ``convs``/``history``/``search`` request; a ``rate_limited`` one is
        waited out and asked again (a few times)."""
        for _ in range(MAX_RATE_RETRIES):
            client = await self._live_client()
            try:
                reply: dict[str, Any] = await getattr(client, name)(*args, **kwargs)
            except ClientError as exc:
                if exc.code != "rate_limited":
                    raise
                await trio.sleep(retry_delay(exc))
                continue
            return reply
        raise ClientError("rate_limited", "the node keeps refusing: too many requests")

    async def group(self, op: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A ``group`` request over the live connection."""
        client = await self._live_client()
        reply = await client.group(op, **fields)
        if op in ("create", "list", "add", "remove"):
            self._dirty.set()
        return reply

    async def act(self, kind: str, msg_id: int, text: str = "") -> None:
        """An edit, delete or reaction over the live connection (issue 17); its
        effect comes back in the stream like everyone else's."""
        client = await self._live_client()
        if kind == "edit":
            await client.edit(msg_id, text)
        elif kind == "delete":
            await client.delete(msg_id)
        else:
            await client.react(msg_id, text, remove=kind == "unreact")

    async def contact(self, action: str, address: str) -> str:
        """Add or remove a contact (HTTP), then reload the contact list."""
        method = "POST" if action == "add" else "DELETE"
        reply = await api_call(
            self.server, method, "/api/contacts", {"address": address}, self.login.token
        )
        await self._load_contacts()
        return str(reply.get("address", address))

    async def set_name(self, display_name: str) -> str:
        """Set the user's display name in their profile (HTTP)."""
        reply = await api_call(
            self.server,
            "PUT",
            "/api/profile",
            {"display_name": display_name},
            self.login.token,
        )
        return str(reply.get("display_name", display_name))

    async def upload(self, path: Path) -> dict[str, Any]:
        """Upload a file (``/attach``); returns the attachment to send."""
        return await upload_file(self.server, self.login.token, path)

    async def save(self, sha256: str, dest: Path) -> tuple[Path, int]:
        """Download an attachment (``/save``; ``dest`` may be a directory),
        waiting while the node fetches it."""
        while True:
            try:
                return await download_into(self.server, self.login.token, sha256, dest)
            except ClientError as exc:
                if exc.code != "blob_pending":
                    raise
                await trio.sleep(retry_delay(exc))

    async def _live_client(self) -> ChatClient:
        with trio.move_on_after(self.timeout):
            while self._client is None:
                await self._up.wait()
        if self._client is None:
            raise ClientError("unavailable", "not connected to the node (still retrying)")
        return self._client

    # -- the loop ---------------------------------------------------------------
    async def run(self) -> None:
        """Connect, stay connected, reconnect; ends only when cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flusher)
            attempt = 0
            while True:
                self._set_status(False, "connecting…")
                self._up_since, reason = None, "the connection closed"
                try:
                    async with _as_client_error():
                        await self._connection()
                except ClientError as exc:
                    if exc.code == "unauthorized":
                        self._refused(exc)
                        return
                    reason = f"{exc.message} ({exc.code})"
                # Back off from scratch only after a connection that lasted: a
                # node that accepts and then drops at once is not hammered.
                stable = self._up_since is not None and (
                    trio.current_time() - self._up_since >= self.backoff.cap
                )
                attempt = 0 if stable else attempt + 1
                delay = self.backoff.delay(max(attempt - 1, 0), random.random())
                self._set_status(False, f"offline: {reason}; retrying in {delay:.1f}s")
                await trio.sleep(delay)

    def _refused(self, exc: ClientError) -> None:
        self._set_status(False, "logged out: the node refused this device's session")
        self._notify(
            Change(
                "notice",
                text=f"{exc.message}. Quit (/quit) and run chinwag chat again to log in.",
                error=True,
            )
        )
        if self._on_unauthorized is not None:
            self._on_unauthorized()

    async def _connection(self) -> None:
        """One connection, from auth to its end (always by an exception)."""
        async with connect(
            self.server,
            self.login.token,
            heartbeat=False,  # _pinger heartbeats with a rid, so a dead link is noticed
            message_buffer=MESSAGE_BUFFER,
            timeout=self.timeout,
        ) as client:
            assert client.info is not None
            if self.model.fresh:
                # A new device starts at the head: the conversation list and
                # pages come from the node (``convs``, ``history``), no replay.
                self.model.cursor, self.model.fresh = client.info.head, False
            head = await client.sync(self.model.cursor)
            if head < self.model.cursor:
                # The node's queue is shorter than what this device has seen (a
                # node restored or reset): every new message would look old.
                self.model.cursor = head
                self._dirty.set()
                raise ClientError(
                    "conflict", f"the node's queue ends at seq {head}, before this device's cursor"
                )
            self._client, self._acked = client, 0
            client.on_signal = self._on_signal
            self._up_since = trio.current_time()
            self._up.set()
            self._catchup = (self.model.cursor, head) if head > self.model.cursor else None
            self._catchup_since = trio.current_time()
            self._caught_up = trio.Event()
            if self._catchup is None:
                self._caught_up.set()
            self._show_progress()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pinger, client, client.info.heartbeat_ms / 1000)
                    nursery.start_soon(self._sender, client)
                    nursery.start_soon(self._watch_presence, client)
                    nursery.start_soon(self._refresh, client)
                    nursery.start_soon(self._notifier)
                    nursery.start_soon(self._marker, client)
                    nursery.start_soon(self._watch_reads, client)
                    nursery.start_soon(self._typist, client)
                    if self.model.current is not None:
                        nursery.start_soon(self.receipts, self.model.current)
                    nursery.start_soon(self._ask_names, client)
                    await self._receive(client)
            finally:
                self._client, self._up, self._catchup = None, trio.Event(), None

    async def _receive(self, client: ChatClient) -> None:
        async for frame in client.messages:
            # Whatever else is buffered goes in the same batch.
            batch = [frame]
            while len(batch) < APPLY_BATCH:
                try:
                    batch.append(client.messages.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            for item in batch:
                key = self.model.apply_msg(item)
                if key is not None:
                    self._changed_keys[key] = None
            self._dirty.set()
            self._changes_waiting.set()
            progress = self.catching_up
            if progress is not None and progress[0] >= progress[1]:
                self._catchup = None
                self._caught_up.set()
                self._set_status(True, "connected")
            if self.model.current in self._changed_keys:
                self.mark_read(self.model.current)  # on the screen: read
            self._applied.set()
            self._applied = trio.Event()
        if client.closed_reason is not None:
            raise ClientError.from_protocol(client.closed_reason)
        raise ClientError("unavailable", "the connection closed")

    async def _pinger(self, client: ChatClient, interval: float) -> None:
        """A heartbeat with a rid: a link that stops answering is dropped in ``timeout``."""
        while True:
            await trio.sleep(interval)
            await client.call({"t": "heartbeat"}, timeout=self.timeout)

    async def _sender(self, client: ChatClient) -> None:
        while True:
            kicked = self._kick = trio.Event()
            for entry in self.model.pending():
                await self._send_one(
                    client, entry.cid, entry.to, entry.text, entry.files, entry.reply_to
                )
            await kicked.wait()

    async def _send_one(
        self,
        client: ChatClient,
        cid: str,
        to: str,
        text: str,
        files: list[dict[str, Any]] | None = None,
        reply_to: int = 0,
    ) -> None:
        for _ in range(MAX_RATE_RETRIES):
            try:
                ack = await client.send(
                    to, text, cid, attachments=files or None, reply_to=reply_to or None
                )
            except ClientError as exc:
                if client.is_closed or exc.code == "timeout":
                    raise  # stays pending; resent with the same cid after reconnecting
                if exc.code == "rate_limited":
                    await trio.sleep((exc.retry_after_ms or 100) / 1000)
                    continue
                key = self.model.send_failed(cid, f"{exc.message} ({exc.code})")
                break
            else:
                key = self.model.send_ok(cid, ack.id, ack.seq, ack.ts)
                break
        else:
            key = self.model.send_failed(cid, "still rate limited after retries")
        self._dirty.set()
        if key is not None:
            self._notify(Change("messages", key))

    async def _ask_names(self, client: ChatClient) -> None:
        """Display names of the senders shown, asked in batches (``presence_query``);
        remote ones follow as ``presence`` frames."""
        while True:
            await trio.sleep(NAMES_DELAY)
            wanted = sorted(self.model.names_wanted)[:256]
            if not wanted:
                continue
            self.model.names_wanted.difference_update(wanted)
            try:
                reply = await client.call({"t": "presence_query", "users": wanted})
            except ClientError as exc:
                if exc.code == "bad_frame":
                    return  # an older node: addresses it is
                raise
            for item in reply.get("users", []):
                if isinstance(item, dict):
                    self.model.apply_presence(item)
            self._notify(Change("messages", self.model.current or ""))

    async def _watch_presence(self, client: ChatClient) -> None:
        seen: dict[str, dict[str, Any]] = {}
        while True:
            changed = client.presence_changed()
            fresh = named = False
            for address, frame in list(client.presence.items()):
                if seen.get(address) is not frame:
                    seen[address] = frame
                    fresh = self.model.apply_presence(frame) or fresh
                    named = named or "display_name" in frame
            if fresh:
                self._notify(Change("contacts"))
            if named:  # a sender's display name: the open conversation shows it
                self._notify(Change("messages", self.model.current or ""))
            await changed.wait()

    async def _refresh(self, client: ChatClient) -> None:
        """Contacts (with presence) and groups, at every connect."""
        try:
            await self._load_contacts()
            reply = await client.group("list")
        except ClientError as exc:
            if client.is_closed:
                raise
            self._notify(Change("notice", text=f"could not load: {exc.message}", error=True))
            return
        for item in reply.get("groups", []):
            if isinstance(item, dict):
                self.model.add_group(
                    str(item.get("name")), str(item.get("host")), str(item.get("title", ""))
                )
        self._dirty.set()
        self._notify(Change("conversations"))
        # Exact unread counts and markers from the node, once the stream has
        # caught up (counting a backlog here as well would count it twice).
        await self._caught_up.wait()
        try:
            # The whole list, up to what the model keeps, applied at once
            # (oldest first inside apply_convs, so the order is the node's).
            items: list[dict[str, Any]] = []
            before = None
            while len(items) < MAX_CONVERSATIONS:
                page = await self._history_call("convs", limit=CONVS_PAGE, before=before)
                items += [c for c in page.get("convs", []) if isinstance(c, dict)]
                before = page.get("next")
                if before is None:
                    break
            self.model.apply_convs(items[:MAX_CONVERSATIONS])
            self._dirty.set()
            self._notify(Change("conversations"))
            if self.model.current is not None:
                await self.newest(self.model.current)
                self.mark_read(self.model.current)  # read while offline, or before
        except ClientError as exc:
            if client.is_closed:
                raise
            self._notify(Change("notice", text=f"could not load: {exc.message}", error=True))

    async def _marker(self, client: ChatClient) -> None:
        """Send ``read`` for the conversations put on the screen."""
        while True:
            await self._marks_waiting.wait()
            self._marks_waiting = trio.Event()
            keys, self._to_mark = self._to_mark, {}
            for key in keys:
                seq = self.model.unread_mark(key)
                if not seq or _is_unresolved_key(key):
                    continue
                try:
                    reply = await client.read(key, seq)
                except ClientError as exc:
                    if client.is_closed:
                        raise
                    log.info("read marker of %s not moved: %s", key, exc)
                    continue
                if self.model.apply_read(reply) is not None:
                    self._dirty.set()
                    self._notify(Change("conversations"))

    async def _watch_reads(self, client: ChatClient) -> None:
        """``read`` frames: another device of this user read a conversation."""
        seen: dict[str, dict[str, Any]] = {}
        while True:
            changed = client.read_changed()
            fresh = False
            for key, frame in list(client.reads.items()):
                if seen.get(key) is not frame:
                    seen[key] = frame
                    fresh = self.model.apply_read(frame) is not None or fresh
            if fresh:
                self._dirty.set()
                self._notify(Change("conversations"))
            await changed.wait()

    async def _load_contacts(self) -> None:
        """The contact list (HTTP), without undoing newer ``presence`` frames.

        Frames keep coming while the request is on its way, and its answer may
        be older than them. The model keeps a contact's newer presence, and
        the latest frame of each user on this connection is applied again
        (older ones than the answer change nothing): a frame that came for a
        contact not listed yet is not lost either.
        """
        reply = await api_call(self.server, "GET", "/api/contacts", token=self.login.token)
        contacts = reply.get("contacts", [])
        self.model.set_contacts(c for c in contacts if isinstance(c, dict))
        client = self._client
        if client is not None:
            for frame in list(client.presence.values()):
                self.model.apply_presence(frame)
        self._notify(Change("contacts"))

    async def _notifier(self) -> None:
        """Tell the screen which conversations changed: at once when idle, and
        while catching up at most every ``CATCHUP_NOTIFY_INTERVAL`` (with the
        progress), so a backlog is drawn a few times a second, not per message."""
        while True:
            await self._changes_waiting.wait()
            self._changes_waiting = trio.Event()
            keys, self._changed_keys = self._changed_keys, {}
            for key in keys:
                self._notify(Change("messages", key))
            if self.catching_up is not None:
                self._show_progress()
                await trio.sleep(CATCHUP_NOTIFY_INTERVAL)

    def _show_progress(self) -> None:
        """``catching up n/N`` in the status line while behind; ``connected`` after."""
        progress = self.catching_up
        if progress is None:
            self._set_status(True, "connected")
        else:
            self._set_status(True, f"catching up {progress[0]}/{progress[1]}")

    # -- saving and acking --------------------------------------------------------
    async def _catchup_pause(self) -> None:
        """While catching up, wait for enough new messages, time, or the end."""
        deadline = max(self._saved_at, self._catchup_since) + CATCHUP_SAVE_INTERVAL
        with trio.move_on_at(deadline):
            while (
                self.catching_up is not None
                and self.model.cursor - self._saved_cursor < CATCHUP_SAVE_MESSAGES
            ):
                await self._applied.wait()

    async def _flusher(self) -> None:
        """Save the state, then ack the cursor: at most every ``FLUSH_INTERVAL``,
        and while catching up only every ``CATCHUP_SAVE_MESSAGES`` or
        ``CATCHUP_SAVE_INTERVAL`` (and at the end of the catch-up)."""
        while True:
            await self._dirty.wait()
            if self.catching_up is not None:
                await self._catchup_pause()
            self._dirty = trio.Event()
            data = self.state.snapshot(self.model)
            cursor = self.model.cursor
            await trio.to_thread.run_sync(self.state.write_snapshot, data)
            self._saved_cursor, self._saved_at = cursor, trio.current_time()
            client = self._client
            if client is not None and cursor > self._acked:
                with trio.move_on_after(self.timeout):
                    try:
                        await client.ack(cursor)
                        self._acked = cursor
                    except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the next connection acks again
            await trio.sleep(FLUSH_INTERVAL)

    def save_now(self) -> None:
        """Save synchronously (at exit, after trio has stopped)."""
        self.state.write(self.state.dump(self.model))

    def _set_status(self, connected: bool, text: str) -> None:
        self.connected, self.status = connected, text
        self._notify(Change("status", text=text))


@asynccontextmanager
async def _as_client_error() -> AsyncIterator[None]:
    """Everything a dropped link can raise, as one :class:`ClientError`."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = leaf_exceptions(group)
        if any(isinstance(e, trio.Cancelled) for e in leaves):
            raise
        first = next((e for e in leaves if isinstance(e, ClientError)), None)
        if first is None:
            first = next((_convert(e) for e in leaves if _convert(e) is not None), None)
        if first is None:
            raise
        raise first from group
    except (ConnectionClosed, trio.BrokenResourceError, ProtocolError, OSError) as exc:
        converted = _convert(exc)
        assert converted is not None
        raise converted from exc


def _is_unresolved_key(key: str) -> bool:
    """A conversation opened by a label not resolved yet (no node id to ask about)."""
    return not is_node_id_text(key.rpartition("@")[2])


def _convert(exc: BaseException) -> ClientError | None:
    if isinstance(exc, ProtocolError):
        return ClientError.from_protocol(exc)
    if isinstance(exc, ConnectionClosed | trio.BrokenResourceError | OSError):
        return ClientError("unavailable", f"connection lost: {exc}")
    return None
