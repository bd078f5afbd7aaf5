"""What ``chinwag chat`` knows: conversations, their messages, contacts.

Pure state, no I/O and no clock: the session feeds it frames, the screen
reads it, the state file saves it. Conversations are keyed by node id
(``bob@<node id>``, ``#team@<host id>``) so a node label never splits one; a
conversation opened with a label this client has not seen yet (``bob@attic``)
is keyed as typed and merged into the id key once a frame names the node.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from chinwag.protocol.addresses import is_node_id_text, parse_target, short_id
from chinwag.protocol.errors import ProtocolError

#: Messages kept per conversation, in memory and in the state file.
HISTORY_LIMIT = 200
#: Conversations kept; the least recently active go first.
MAX_CONVERSATIONS = 500
#: Sends waiting for the node's ``ok`` at once; more are refused.
MAX_PENDING = 256
#: Node labels remembered (node id -> name).
MAX_LABELS = 1024
#: Entries one conversation may hold in memory after paging back (PageUp).
MAX_LOADED = 5000
#: A ``typing start`` not renewed is shown this long (the node's own expiry).
TYPING_EXPIRY = 6.0
#: Typists shown by name before "n people are typing".
TYPING_NAMES = 2

# Entry states.
PENDING, OK, FAILED, RECEIVED, EVENT, NOTE = "pending", "ok", "failed", "received", "event", "note"


def clean(text: str) -> str:
    """Printable text: control characters (escape sequences…) become U+FFFD.

    Everything a node or a peer chose (message text, titles, names, labels,
    error messages) goes through this before it reaches the terminal.
    """
    return "".join(ch if ch in "\n\t" or ch.isprintable() else "\ufffd" for ch in text)


@dataclass
class Entry:
    """One line of a conversation: a message, a group event or a local note."""

    state: str
    text: str
    sender: str = ""
    ts: int = 0
    seq: int = 0
    origin: str = ""
    id: int = 0
    cid: str = ""
    to: str = ""
    error: str = ""
    #: Send order (1, 2, …) of this device's sends: pending ones go out oldest first.
    sent: int = 0
    #: Attached files ``{sha256, name, type, size}`` (shown as ``[name 2.1 MB]``).
    files: list[dict[str, Any]] = field(default_factory=list)
    #: Issue 17: the text was edited; the message was deleted (no text);
    #: the quoted message (``who: excerpt``) and its id; reactions (emoji -> user keys).
    edited: bool = False
    deleted: bool = False
    reply: str = ""
    reply_to: int = 0
    reactions: dict[str, list[str]] = field(default_factory=dict)

    @property
    def mine(self) -> bool:
        return self.state in (PENDING, OK, FAILED)


@dataclass
class Conversation:
    """A 1:1 chat or a group, keyed by ``user@<node id>`` or ``#name@<host id>``."""

    key: str
    is_group: bool
    title: str = ""
    unread: int = 0
    activity: int = 0
    left: bool = False
    #: The node's read marker (seq) of this conversation, shared by the user's devices.
    read_seq: int = 0
    #: The conversation's first message is in ``entries`` (nothing older to page back to).
    complete: bool = False
    entries: list[Entry] = field(default_factory=list)
    #: Entries kept in memory beyond ``HISTORY_LIMIT`` because older pages were loaded.
    kept: int = 0
    #: The newest page was loaded from the node in this run of the client.
    fetched: bool = False
    #: How far each member has our messages: ``user@<node id>`` -> [delivered_id,
    #: read_id] (``receipts``/``receipt`` from the node; not saved, asked again).
    receipts: dict[str, list[int]] = field(default_factory=dict)
    #: Who is typing here: ``user@<node id>`` -> when it runs out (the caller's clock).
    typing: dict[str, float] = field(default_factory=dict)

    def find(self, origin: str, msg_id: int) -> Entry | None:
        for entry in reversed(self.entries):
            if entry.id == msg_id and entry.origin == origin:
                return entry
        return None

    def find_id(self, msg_id: int, origin: str | None = None) -> Entry | None:
        """The message ``msg_id`` (of ``origin`` if given): actions name a target by id."""
        for entry in reversed(self.entries):
            if entry.id == msg_id and entry.state in (OK, RECEIVED, FAILED):
                if origin is None or entry.origin == origin:
                    return entry
        return None

    def last_target(self, me: str, *, own: bool) -> Entry | None:
        """The newest message an action may name (``own``: sent by ``me``)."""
        for entry in reversed(self.entries):
            if entry.id and not entry.deleted and entry.state in (OK, RECEIVED):
                if not own or entry.sender == me:
                    return entry
        return None

    def oldest_seq(self) -> int:
        """The seq of the oldest entry from the queue (0: none)."""
        return next((e.seq for e in self.entries if e.seq), 0)

    def newest_seq(self) -> int:
        return next((e.seq for e in reversed(self.entries) if e.seq), 0)

    def last_message(self) -> Entry | None:
        for entry in reversed(self.entries):
            if entry.state != NOTE:
                return entry
        return None


@dataclass
class Contact:
    address: str
    status: str = "unknown"
    last_active_at: int | None = None


class AddressError(ValueError):
    """A typed address that is not one."""


class ChatModel:
    """Conversations, contacts and the sync cursor of one device."""

    def __init__(self, user: str, node_id: str, node_name: str) -> None:
        self.user = user
        self.node_id = node_id
        self.node_name = node_name
        self.cursor = 0
        #: Nothing saved for this device: its stream starts at the queue head
        #: (no replay); conversations and pages come from the node.
        self.fresh = False
        self.current: str | None = None
        self.conversations: dict[str, Conversation] = {}
        self.contacts: dict[str, Contact] = {}
        self.labels: dict[str, str] = {node_id: node_name}
        #: Open group invitations seen in the stream: group key -> who invited.
        self.invites: dict[str, str] = {}
        #: Display names from the profile: ``user@<node id>`` -> name (presence
        #: frames and ``presence_query`` answers); senders to ask about.
        self.names: dict[str, str] = {}
        self.names_wanted: set[str] = set()
        self._names_asked: set[str] = set()
        self._activity = itertools.count(1)
        self._sends = itertools.count(1)

    # -- addresses ------------------------------------------------------------
    @property
    def me(self) -> str:
        return f"{self.user}@{self.node_id}"

    def label(self, node_id: str) -> str:
        """A node's name for the screen (:func:`clean`: a peer chose it)."""
        if not is_node_id_text(node_id):
            return clean(node_id)
        return clean(self.labels.get(node_id) or short_id(node_id) + "…")

    def display(self, key: str) -> str:
        """``bob@kitchen`` for ``bob@<kitchen's id>``, for the screen (:func:`clean`)."""
        name, _, node = key.rpartition("@")
        return f"{clean(name)}@{self.label(node)}" if name else clean(key)

    def person(self, key: str) -> str:
        """A person for the screen: their display name if known, else :meth:`display`."""
        name = self.names.get(key)
        return clean(name) if name else self.display(key)

    def want_name(self, key: str) -> None:
        """Ask once for the display name of a sender (the session sends ``presence_query``)."""
        if key not in self.names and key not in self._names_asked and len(self._names_asked) < 4096:
            self._names_asked.add(key)
            self.names_wanted.add(key)

    def title(self, conv: Conversation) -> str:
        """The address and the group's title, for the screen (:func:`clean`)."""
        shown = self.display(conv.key)
        return f"{shown} ({clean(conv.title)})" if conv.title else shown

    def _node_for(self, node: str | None) -> str:
        if node is None or node in (self.node_id, self.node_name):
            return self.node_id
        if is_node_id_text(node):
            return node
        ids = [nid for nid, name in self.labels.items() if name == node]
        return ids[0] if len(ids) == 1 else node

    def resolve(self, text: str) -> str:
        """The conversation key for a typed address (``bob``, ``#team@kitchen``)."""
        try:
            target = parse_target(text.strip().lower())
        except ProtocolError as exc:
            raise AddressError(f"{text!r} is not an address: {exc.message}") from None
        prefix = "#" if target.is_group else ""
        return f"{prefix}{target.name}@{self._node_for(target.node)}"

    # -- conversations --------------------------------------------------------
    def open(self, text: str) -> Conversation:
        """Open (creating if needed) the conversation with a typed address."""
        conv = self._ensure(self.resolve(text))
        self.select(conv.key)
        return conv

    def select(self, key: str | None) -> None:
        self.current = key
        if key is not None and key in self.conversations:
            self.conversations[key].unread = 0

    def ordered(self) -> list[Conversation]:
        """Most recently active first."""
        return sorted(self.conversations.values(), key=lambda c: -c.activity)

    def step(self, delta: int) -> str | None:
        """Select the next (``+1``) or previous (``-1``) conversation in list order."""
        keys = [c.key for c in self.ordered()]
        if not keys:
            return None
        index = keys.index(self.current) + delta if self.current in keys else 0
        self.select(keys[index % len(keys)])
        return self.current

    def _ensure(self, key: str, *, bump: bool = True) -> Conversation:
        conv = self.conversations.get(key)
        if conv is None:
            conv = Conversation(key, is_group=key.startswith("#"))
            self._trim_conversations(keep=key)
            self.conversations[key] = conv
        if bump:
            conv.activity = next(self._activity)
        return conv

    def add_group(self, name: str, host: str, title: str) -> Conversation:
        """A group this user is in (from ``group list``), even without messages yet."""
        conv = self._ensure(f"#{name}@{host}", bump=False)
        conv.title = title or conv.title
        conv.left = False
        return conv

    def _trim_conversations(self, keep: str) -> None:
        """Make room for ``keep``: forget the least recently active conversations."""
        extra = len(self.conversations) + 1 - MAX_CONVERSATIONS
        if extra <= 0:
            return
        for conv in sorted(self.conversations.values(), key=lambda c: c.activity):
            if extra <= 0:
                break
            busy = any(e.state == PENDING for e in conv.entries)
            if conv.key not in (keep, self.current) and not busy:
                del self.conversations[conv.key]
                extra -= 1

    def _append(self, conv: Conversation, entry: Entry, *, bump: bool = True) -> None:
        conv.entries.append(entry)
        if bump:
            conv.activity = next(self._activity)
        extra = len(conv.entries) - max(HISTORY_LIMIT, conv.kept)
        if extra > 0:
            conv.complete = False
        if extra > 0 and all(e.state != PENDING for e in conv.entries[:extra]):
            del conv.entries[:extra]  # the usual case, without copying the list
        elif extra > 0:
            # Drop the oldest, but never a send that still waits for its ok.
            kept = []
            for item in conv.entries:
                if extra > 0 and item.state != PENDING:
                    extra -= 1
                    continue
                kept.append(item)
            conv.entries = kept

    def note(self, key: str | None, text: str) -> None:
        """A local line (command output); not saved, not counted as unread."""
        if key is not None and key in self.conversations:
            self._append(self.conversations[key], Entry(NOTE, text), bump=False)

    # -- sends ----------------------------------------------------------------
    def queue_send(
        self,
        key: str,
        text: str,
        files: list[dict[str, Any]] | None = None,
        reply_to: Entry | None = None,
    ) -> Entry:
        """A new send, pending until the node's ``ok``; its ``cid`` makes retries safe.
        ``files``: attachments as the node's upload answered them; ``reply_to``:
        the message it answers (quoted by the node)."""
        if len(self.pending()) >= MAX_PENDING:
            raise OverflowError(f"{MAX_PENDING} messages are still waiting for the node")
        conv = self._ensure(key)
        # ``to`` is the key: ``bob@<node id>`` (the node takes ids) or, not yet
        # resolved here, the label as typed, which the node resolves itself.
        entry = Entry(
            PENDING, text, sender=self.me, cid=_new_cid(), to=key, files=list(files or [])
        )
        entry.sent = next(self._sends)
        if reply_to is not None:
            entry.reply_to = reply_to.id
            entry.reply = f"{reply_to.sender}: {reply_to.text[:100]}"
        self._append(conv, entry)
        return entry

    def pending(self) -> list[Entry]:
        """Sends without an answer yet, across conversations, in send order (oldest first)."""
        found = [e for c in self.conversations.values() for e in c.entries if e.state == PENDING]
        return sorted(found, key=lambda e: e.sent)

    def _by_cid(self, cid: str) -> tuple[Conversation, Entry] | None:
        for conv in self.conversations.values():
            for entry in conv.entries:
                if entry.cid == cid:
                    return conv, entry
        return None

    def send_ok(self, cid: str, msg_id: int, seq: int, ts: int) -> str | None:
        """The node stored a send; its echo in the stream may come before or after."""
        found = self._by_cid(cid)
        if found is None:
            return None
        conv, entry = found
        echo = conv.find(self.node_id, msg_id)
        if echo is not None and echo is not entry:
            # The echo came first and stays; it takes over what a retry needs.
            conv.entries.remove(entry)
            echo.cid, echo.to, echo.sent = entry.cid, entry.to, entry.sent
            if echo.state != FAILED:  # a delivery_failed may have come before this ok
                echo.state = OK
            return conv.key
        entry.state, entry.origin, entry.id, entry.error = OK, self.node_id, msg_id, ""
        entry.ts, entry.seq = ts, entry.seq or seq
        return conv.key

    def send_failed(self, cid: str, reason: str) -> str | None:
        found = self._by_cid(cid)
        if found is None:
            return None
        found[1].state, found[1].error = FAILED, reason
        return found[0].key

    def retry_failed(self, key: str) -> int:
        """Mark the failed sends of a conversation pending again.

        A send the node refused (an ``err`` reply) is retried with its ``cid``.
        One that failed later (a ``delivery_failed`` event, so it has an id)
        was stored by the home node, which remembers its ``cid`` for a day and
        would answer a repeat with the original ``ok``, storing nothing: it is
        sent again as a new message, with a fresh ``cid``.
        """
        conv = self.conversations.get(key)
        count = 0
        for entry in conv.entries if conv is not None else []:
            if entry.state != FAILED or not (entry.cid or entry.id):
                continue
            if entry.id or not entry.cid:
                entry.cid, entry.to = _new_cid(), entry.to or key
                entry.id, entry.origin, entry.seq, entry.ts = 0, "", 0, 0
            entry.state, entry.error = PENDING, ""
            entry.sent = next(self._sends)
            count += 1
        return count

    # -- the stream -------------------------------------------------------------
    def apply_msg(self, frame: Mapping[str, Any]) -> str | None:
        """Apply one ``msg`` frame; returns the conversation it changed.

        A frame at or below the cursor was seen before and is dropped.
        """
        seq = frame.get("seq")
        if not isinstance(seq, int) or seq <= self.cursor:
            return None
        self.cursor = seq
        found = frame.get("body")
        body: Mapping[str, Any] = found if isinstance(found, dict) else {}
        if frame.get("kind") == "event":
            found_ts = frame.get("ts")
            return self._apply_event(body, seq, found_ts if isinstance(found_ts, int) else 0)
        if frame.get("kind") in ("edit", "delete", "react"):
            return self._apply_action(frame, body)
        if frame.get("kind") != "text":
            return None
        sender = self._user_key(frame.get("from"))
        if sender is None:
            return None
        key = self._conversation_of(frame, sender)
        if key is None:
            return None
        mine = sender == self.me
        if not mine:
            self.want_name(sender)
        origin, msg_id = str(frame.get("origin", "")), frame.get("id")
        msg_id = msg_id if isinstance(msg_id, int) else 0
        found_ts = frame.get("ts")
        ts = found_ts if isinstance(found_ts, int) else 0
        if mine:
            self._adopt_sent(key, origin, msg_id)
        conv = self._ensure(key, bump=False)
        conv.typing.pop(sender, None)  # their message ends their typing line
        # Only our own sends, or a page of history loaded ahead of the stream,
        # can already hold this message: a backlog skips the search.
        known = conv.find(origin, msg_id) if msg_id and (mine or conv.newest_seq() >= seq) else None
        if known is not None:
            known.seq, known.ts = seq, ts or known.ts
            if known.state == PENDING:
                known.state = OK
            _decorate(known, frame, body)
            return key
        text = body.get("text")
        entry = Entry(OK if mine else RECEIVED, str(text), sender, ts, seq, origin, msg_id)
        entry.files = attachments_of(body)
        _decorate(entry, frame, body)
        self._append(conv, entry)
        if not mine and key != self.current:
            conv.unread += 1
        return key

    def _apply_action(self, frame: Mapping[str, Any], body: Mapping[str, Any]) -> str | None:
        """An edit, delete or reaction: change the target entry this client holds
        (one it does not hold shows its current state when its page is loaded)."""
        sender = self._user_key(frame.get("from"))
        key = self._conversation_of(frame, sender) if sender is not None else None
        conv = self.conversations.get(key) if key is not None else None
        target = body.get("target")
        if conv is None or sender is None or not isinstance(target, int):
            return None
        kind = frame.get("kind")
        # An edit or delete names a message of its own sender (and origin node).
        origin = str(frame.get("origin", "")) if kind != "react" else None
        entry = conv.find_id(target, origin)
        if entry is None or entry.deleted:
            return None
        if kind != "react" and entry.sender != sender:
            return None
        if kind == "edit" and isinstance(body.get("text"), str):
            entry.text, entry.edited = body["text"], True
        elif kind == "delete":
            entry.text, entry.deleted, entry.reactions = "", True, {}
        elif kind == "react" and isinstance(body.get("emoji"), str):
            users = entry.reactions.setdefault(body["emoji"], [])
            if body.get("remove"):
                if sender in users:
                    users.remove(sender)
                if not users:
                    del entry.reactions[body["emoji"]]
            elif sender not in users:
                users.append(sender)
        return conv.key

    def _user_key(self, value: object) -> str | None:
        if not isinstance(value, dict) or "u" not in value or "n" not in value:
            return None
        self._learn(value.get("n"), value.get("name"))
        return f"{value['u']}@{value['n']}"

    def _adopt_sent(self, key: str, origin: str, msg_id: int) -> None:
        """Our own echo names the node of a conversation opened by label: merge it."""
        if not msg_id or key in self.conversations and self.conversations[key].find(origin, msg_id):
            return
        for conv in list(self.conversations.values()):
            if conv.key != key and _is_unresolved(conv.key) and conv.find(origin, msg_id):
                self._learn(key.rpartition("@")[2], conv.key.rpartition("@")[2])
                self._merge(conv.key, key)

    def _apply_event(self, body: Mapping[str, Any], seq: int = 0, ts: int = 0) -> str | None:
        if body.get("type") == "delivery_failed":
            msg_id = body.get("id")
            for conv in self.conversations.values():
                entry = conv.find(self.node_id, msg_id) if isinstance(msg_id, int) else None
                if entry is not None:
                    entry.state = FAILED
                    entry.error = f"{body.get('code')} from {self.label(str(body.get('node')))}"
                    return conv.key
            return None
        found = self._event_text(body)
        if found is None:
            return None
        key, text = found
        conv = self._ensure(key)
        action = body.get("action")
        if action in ("invited", "renamed"):
            conv.title = str(body.get("title", ""))
        if action == "invited":
            # Not a member until accepted: nothing else of the group arrives.
            self.invites[key] = self.display(str(body.get("by", "?")))
            conv.left = True
        elif self.me in _strings(body.get("removed")):
            conv.left = True
        elif self.me in _strings(body.get("added")) or self.me in _strings(body.get("members")):
            conv.left = False
            self.invites.pop(key, None)
        self._append(conv, Entry(EVENT, text, ts=ts, seq=seq))
        return key

    def _event_text(self, body: Mapping[str, Any]) -> tuple[str, str] | None:
        """A group event as (conversation key, the line shown), changing nothing."""
        group = body.get("group")
        if body.get("type") != "group" or not isinstance(group, dict):
            return None
        key = f"#{group.get('name')}@{group.get('host')}"
        by = self.display(str(body.get("by", "?")))
        action = body.get("action")
        members = _strings(body.get("members"))
        added = _strings(body.get("added"))
        removed = _strings(body.get("removed"))
        if action == "invited":
            shown = self.display(key)
            return key, f"{by} invited you: /group accept {shown} or /group decline {shown}"
        if action == "created":
            return key, f"{by} created the group with {self._names(members)}"
        if action == "members":
            parts = [f"added {self._names(added)}"] if added else []
            parts += [f"removed {self._names(removed)}"] if removed else []
            return key, f"{by} {' and '.join(parts) or 'changed the members'}"
        if action == "renamed":
            return key, f"{by} renamed the group to {str(body.get('title', ''))!r}"
        return key, f"{by}: {action}"

    def _names(self, keys: Iterable[str]) -> str:
        return ", ".join(self.display(k) for k in keys) or "nobody"

    # -- pages from the node (convs, history, read, search) ---------------------
    def entry_of(self, frame: Mapping[str, Any]) -> tuple[str, Entry] | None:
        """A ``msg`` frame of a page as ``(conversation key, entry)``, changing
        nothing else (a group event's text, not its effect on membership)."""
        seq, msg_id, ts = frame.get("seq"), frame.get("id"), frame.get("ts")
        seq = seq if isinstance(seq, int) else 0
        msg_id = msg_id if isinstance(msg_id, int) else 0
        ts = ts if isinstance(ts, int) else 0
        found = frame.get("body")
        body: Mapping[str, Any] = found if isinstance(found, dict) else {}
        if frame.get("kind") == "event":
            event = self._event_text(body)
            return None if event is None else (event[0], Entry(EVENT, event[1], ts=ts, seq=seq))
        sender = self._user_key(frame.get("from"))
        if frame.get("kind") != "text" or sender is None:
            return None
        key = self._conversation_of(frame, sender)
        if key is None:
            return None
        state = OK if sender == self.me else RECEIVED
        origin = str(frame.get("origin", ""))
        entry = Entry(state, str(body.get("text", "")), sender, ts, seq, origin, msg_id)
        entry.files = attachments_of(body)
        _decorate(entry, frame, body)
        return key, entry

    def files_in(self, key: str | None) -> list[dict[str, Any]]:
        """The files of a conversation, newest first (``/save 1`` is the newest)."""
        conv = self.conversations.get(key) if key is not None else None
        if conv is None:
            return []
        return [f for e in reversed(conv.entries) for f in reversed(e.files)]

    def _conversation_of(self, frame: Mapping[str, Any], sender: str) -> str | None:
        """The conversation a text frame belongs to (its group, or the other party)."""
        group = frame.get("group")
        if isinstance(group, dict):
            self._learn(group.get("host"), group.get("host_name"))
            return f"#{group.get('name')}@{group.get('host')}"
        to = self._user_key(frame.get("to"))
        if to is None:
            return None
        return to if sender == self.me else sender

    def merge_page(self, key: str, msgs: Iterable[Mapping[str, Any]], more: bool) -> int:
        """A ``history`` page of ``key`` (newest first); ``more``: older pages exist.

        Entries already held (same seq) are skipped; the rest go in seq
        order. Returns how many were added.
        """
        conv = self._ensure(key, bump=False)
        have = {e.seq for e in conv.entries if e.seq}
        fresh = []
        for frame in msgs:
            found = self.entry_of(frame)
            if found is not None and found[0] == key and found[1].seq not in have:
                fresh.append(found[1])
                have.add(found[1].seq)
        fresh.sort(key=lambda e: e.seq)
        oldest = conv.oldest_seq()
        if fresh and (not oldest or fresh[-1].seq < oldest):
            conv.entries[:0] = fresh  # paging back: all older than what is held
        elif fresh:
            conv.entries = _merged(conv.entries, fresh)
        if not more:
            conv.complete = True
        conv.kept = min(MAX_LOADED, max(conv.kept, len(conv.entries)))
        return len(fresh)

    def apply_convs(self, items: Iterable[Mapping[str, Any]]) -> None:
        """A ``convs`` page (newest first): exact unread counts and read markers,
        the title, and the last message as a preview where nothing is held yet."""
        for item in reversed(list(items)):  # oldest first, so the newest ends on top
            key = item.get("conv")
            if not isinstance(key, str):
                continue
            last = item.get("last")
            conv = self._ensure(key, bump=isinstance(last, dict))
            if isinstance(item.get("title"), str):
                conv.title = item["title"]
            if isinstance(last, dict) and not conv.entries:
                body, seq, ts = last.get("body"), last.get("seq"), last.get("ts")
                found = self.entry_of(last)
                if last.get("kind") == "event" and isinstance(body, dict):
                    # The newest state of the group (an open invitation…) applies.
                    self._apply_event(body, seq if isinstance(seq, int) else 0, ts or 0)
                elif found is not None and found[0] == key:
                    conv.entries.append(found[1])
            self.apply_read(item)

    def apply_read(self, frame: Mapping[str, Any]) -> str | None:
        """A read marker from the node (a ``read`` frame, a ``read`` or ``convs``
        answer): markers only move forward; the unread count is the node's."""
        key, read_seq, unread = frame.get("conv"), frame.get("read_seq"), frame.get("unread")
        conv = self.conversations.get(key) if isinstance(key, str) else None
        if conv is None or not isinstance(read_seq, int) or not isinstance(unread, int):
            return None
        if read_seq < conv.read_seq:
            return None
        conv.read_seq, conv.unread = read_seq, unread
        return conv.key

    def unread_mark(self, key: str | None) -> int:
        """The seq to mark ``key`` read up to, if that moves its marker (else 0)."""
        conv = self.conversations.get(key or "")
        newest = conv.newest_seq() if conv is not None else 0
        return newest if conv is not None and newest > conv.read_seq else 0

    # -- live signals: typing and receipts (issue 17) -----------------------------
    def apply_typing(self, frame: Mapping[str, Any], now: float) -> str | None:
        """A ``typing`` frame, at ``now`` (seconds, the caller's clock); returns
        the conversation it changed."""
        key, user = frame.get("conv"), self._user_key(frame.get("user"))
        conv = self.conversations.get(key) if isinstance(key, str) else None
        if conv is None or user is None or user == self.me:
            return None
        if frame.get("state") == "start":
            conv.typing[user] = now + TYPING_EXPIRY
        elif conv.typing.pop(user, None) is None:
            return None
        return conv.key

    def typing_line(self, key: str | None, now: float) -> str:
        """``alice is typing…`` for ``key`` at ``now`` ("" if nobody); drops expired ones."""
        conv = self.conversations.get(key or "")
        if conv is None:
            return ""
        for user in [u for u, until in conv.typing.items() if until <= now]:
            del conv.typing[user]
        names = sorted(self.display(u) for u in conv.typing)
        if not names:
            return ""
        if len(names) == 1:
            return f"{clean(names[0])} is typing…"
        if len(names) <= TYPING_NAMES:
            return f"{' and '.join(clean(n) for n in names)} are typing…"
        return f"{len(names)} people are typing…"

    def apply_receipt(self, frame: Mapping[str, Any]) -> str | None:
        """A ``receipt`` frame (or one item of a ``receipts`` answer with its
        ``conv``): positions only move forward."""
        key, member = frame.get("conv"), self._user_key(frame.get("user"))
        conv = self.conversations.get(key) if isinstance(key, str) else None
        if conv is None or member is None:
            return None
        held = conv.receipts.setdefault(member, [0, 0])
        for index, name in enumerate(("delivered_id", "read_id")):
            value = frame.get(name)
            if isinstance(value, int) and value > held[index]:
                held[index] = value
        return conv.key

    def apply_receipts(self, reply: Mapping[str, Any]) -> str | None:
        """The answer to ``receipts {conv}``."""
        key = reply.get("conv")
        changed = None
        for item in _dicts(reply.get("receipts")):
            changed = self.apply_receipt({**item, "conv": key}) or changed
        return changed

    def read_by(self, conv: Conversation, entry: Entry) -> list[str]:
        """The members (keys) who read our ``entry`` of ``conv``."""
        if not entry.id:
            return []
        return sorted(m for m, (_, read) in conv.receipts.items() if read >= entry.id)

    def tick(self, conv: Conversation, entry: Entry) -> str:
        """The receipt mark of our stored ``entry``: ``✓`` stored, ``✓✓``
        delivered, ``read`` (1:1), or ``read by n`` in a group."""
        if conv.is_group:
            readers = self.read_by(conv, entry)
            return f"✓ read by {len(readers)}" if readers else "✓"
        delivered, read = conv.receipts.get(conv.key, [0, 0])
        if entry.id and read >= entry.id:
            return "✓✓ read"
        local = conv.key.rpartition("@")[2] == self.node_id
        if local or (entry.id and delivered >= entry.id):
            return "✓✓"
        return "✓"

    # -- labels ---------------------------------------------------------------
    def _learn(self, node_id: object, name: object) -> None:
        if not isinstance(node_id, str) or not isinstance(name, str) or not name:
            return
        if not is_node_id_text(node_id) or self.labels.get(node_id) == name:
            return
        if len(self.labels) >= MAX_LABELS:
            self.labels.pop(next(k for k in self.labels if k != self.node_id))
        self.labels[node_id] = name
        for key in [k for k in self.conversations if k.endswith("@" + name)]:
            self._merge(key, f"{key.rpartition('@')[0]}@{node_id}")

    def _merge(self, old: str, new: str) -> None:
        source = self.conversations.pop(old)
        target = self.conversations.get(new)
        if target is None:
            source.key = new
            self.conversations[new] = source
        else:
            for entry in source.entries:
                if not entry.id or target.find(entry.origin, entry.id) is None:
                    target.entries.append(entry)
            target.unread += source.unread
            target.activity = max(target.activity, source.activity)
            target.title = target.title or source.title
        if self.current == old:
            self.current = new

    # -- contacts and presence ----------------------------------------------
    def set_contacts(self, items: Iterable[Mapping[str, Any]]) -> None:
        """The contact list from ``GET /api/contacts``.

        A contact whose known presence is newer than the answer's (a
        ``presence`` frame that came while the request was on its way) keeps it.
        """
        fresh: dict[str, Contact] = {}
        for item in items:
            address = str(item.get("address", ""))
            last = item.get("last_active_at")
            contact = Contact(
                address, str(item.get("status", "unknown")), last if isinstance(last, int) else None
            )
            known = self.contacts.get(address)
            if (
                known is not None
                and known.status != "unknown"
                and (known.last_active_at or -1) > (contact.last_active_at or -1)
            ):
                contact.status, contact.last_active_at = known.status, known.last_active_at
            fresh[address] = contact
        self.contacts = fresh

    def apply_presence(self, frame: Mapping[str, Any]) -> bool:
        """A ``presence`` frame; True if a contact changed."""
        user = frame.get("user")
        if not isinstance(user, dict):
            return False
        u, n, name = user.get("u"), user.get("n"), user.get("name")
        self._learn(n, name)
        display = frame.get("display_name")
        if isinstance(display, str) and display:
            self.names[f"{u}@{n}"] = display
        elif frame.get("t") == "presence":  # a live frame without one: none is set
            self.names.pop(f"{u}@{n}", None)
        names = {f"{u}@{n}", f"{u}@{name}"} | (
            {f"{u}@{self.node_name}", str(u)} if n == self.node_id else set()
        )
        last = frame.get("last_active_at")
        last = last if isinstance(last, int) else None
        changed = False
        for address in names & self.contacts.keys():
            contact = self.contacts[address]
            if (last or -1) >= (contact.last_active_at or -1):
                contact.status = str(frame.get("status", "unknown"))
                contact.last_active_at = last
                changed = True
        return changed

    # -- saving ------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """What the state file keeps: cursor, labels, contacts, recent history."""
        convs = []
        for conv in self.ordered()[:MAX_CONVERSATIONS]:
            # Shallow copies: every field is a str/int/bool (asdict's deep
            # copies made a save of a full history cost a second).
            data = {f: getattr(conv, f) for f in _CONV_FIELDS}
            kept = [e for e in conv.entries if e.state != NOTE][-HISTORY_LIMIT:]
            data["entries"] = [dict(vars(e)) for e in kept]
            convs.append(data)
        return {
            "cursor": self.cursor,
            "current": self.current,
            "labels": self.labels,
            "contacts": [asdict(c) | {"status": "unknown"} for c in self.contacts.values()],
            "conversations": convs,
        }

    def load_json(self, data: Mapping[str, Any]) -> None:
        """Restore what :meth:`to_json` saved; a malformed part is skipped."""
        cursor = data.get("cursor")
        self.cursor = cursor if isinstance(cursor, int) and cursor >= 0 else 0
        labels = data.get("labels")
        if isinstance(labels, dict):
            for node_id, name in list(labels.items())[:MAX_LABELS]:
                if isinstance(name, str) and is_node_id_text(str(node_id)):
                    self.labels.setdefault(str(node_id), name)
        self.set_contacts(c for c in _dicts(data.get("contacts")))
        for status in self.contacts.values():
            status.status = "unknown"
        items = list(_dicts(data.get("conversations")))[:MAX_CONVERSATIONS]
        for item in reversed(items):  # oldest first, so activity order is kept
            try:
                entries = [Entry(**e) for e in _dicts(item.get("entries"))][-HISTORY_LIMIT:]
                for entry in entries:
                    entry.sent = entry.sent if isinstance(entry.sent, int) else 0
                    entry.files = attachments_of({"attachments": entry.files})
                conv = Conversation(
                    str(item["key"]),
                    bool(item.get("is_group")),
                    str(item.get("title", "")),
                    int(item.get("unread", 0)),
                    next(self._activity),
                    bool(item.get("left")),
                    int(item.get("read_seq", 0)),
                    bool(item.get("complete", False)),
                    entries,
                )
            except (KeyError, TypeError, ValueError):
                continue
            self.conversations[conv.key] = conv
        current = data.get("current")
        self.current = current if current in self.conversations else None
        sent = [e.sent for c in self.conversations.values() for e in c.entries]
        self._sends = itertools.count(max(sent, default=0) + 1)


#: Saved fields of a conversation (``kept``, ``fetched``, ``receipts`` and
#: ``typing`` are for this run only).
_CONV_FIELDS = [
    f.name
    for f in fields(Conversation)
    if f.name not in ("entries", "kept", "fetched", "receipts", "typing")
]


def _merged(held: list[Entry], fresh: list[Entry]) -> list[Entry]:
    """``fresh`` (sorted by seq) merged into ``held``; an entry without a seq
    (a pending send, a note) stays right after the entry it followed."""
    keyed: list[tuple[float, int, Entry]] = []
    anchor = 0.0
    for order, entry in enumerate(held):
        anchor = float(entry.seq) if entry.seq else anchor + 1e-6
        keyed.append((anchor, order, entry))
    keyed += [(float(e.seq), -1, e) for e in fresh]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [entry for _, _, entry in keyed]


def attachments_of(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The well-formed attachments of a message body (as ``tail --json`` shows them)."""
    out = []
    for item in _dicts(body.get("attachments")):
        sha, name, kind, size = (item.get(k) for k in ("sha256", "name", "type", "size"))
        if isinstance(sha, str) and isinstance(name, str) and isinstance(size, int):
            out.append({"sha256": sha, "name": name, "type": str(kind), "size": size})
    return out[:10]


def _decorate(entry: Entry, frame: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    """A message's current state as the node shows it (issue 17)."""
    entry.edited = bool(frame.get("edited"))
    if frame.get("deleted"):
        entry.deleted, entry.text = True, ""
        entry.files = []
    quoted = body.get("reply_to")
    if isinstance(quoted, dict):
        who = quoted.get("from")
        name = f"{who.get('u')}@{who.get('n')}" if isinstance(who, dict) else "?"
        excerpt = quoted.get("excerpt")
        entry.reply = f"{name}: {excerpt if isinstance(excerpt, str) else ''}"
        entry.reply_to = quoted["id"] if isinstance(quoted.get("id"), int) else 0
    reactions = frame.get("reactions")
    if isinstance(reactions, dict):
        entry.reactions = {
            str(emoji): [f"{u.get('u')}@{u.get('n')}" for u in users if isinstance(u, dict)]
            for emoji, users in reactions.items()
            if isinstance(users, list)
        }


def _new_cid() -> str:
    return secrets.token_hex(12)


def _is_unresolved(key: str) -> bool:
    return not is_node_id_text(key.rpartition("@")[2])


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _dicts(value: object) -> Iterable[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
