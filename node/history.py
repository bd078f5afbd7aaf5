"""A user's history as ``tail --json`` prints it: one shape for every reader.

``chinwag tail --json`` turns each ``msg`` frame it receives into
:func:`message_json`; ``chinwag export`` does the same, either over a
device connection (the user) or from the store through :func:`read_history`
(the admin), which renders queue records into the very ``msg`` frames a
device would receive (node/router.py) before applying the same function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .router import Router
from .store import Store

#: ``user.history`` pages (admin socket) hold at most this many messages.
MAX_HISTORY_PAGE = 256
#: ... and at most about this many bytes of JSON (one message may exceed it).
MAX_HISTORY_BYTES = 256 * 1024


def format_address(address: Any) -> str:
    if not isinstance(address, dict):
        return "?"
    return f"{address.get('u')}@{address.get('name') or address.get('n')}"


def message_json(frame: dict[str, Any]) -> dict[str, Any]:
    """The ``tail --json`` shape of a ``msg`` frame."""
    found = frame.get("body")
    body: dict[str, Any] = found if isinstance(found, dict) else {}
    out: dict[str, Any] = {
        "seq": frame.get("seq"),
        "id": frame.get("id"),
        "from": format_address(frame.get("from")),
        "to": format_address(frame.get("to")) if "to" in frame else None,
        "ts": frame.get("ts"),
        "kind": frame.get("kind"),
        "text": body.get("text"),
    }
    group = frame.get("group")
    if isinstance(group, dict):
        out["group"] = f"#{group.get('name')}@{group.get('host_name') or group.get('host')}"
    if frame.get("kind") == "event":
        out["event"] = body
    attachments = body.get("attachments")
    if isinstance(attachments, list) and attachments:
        out["attachments"] = [
            {k: a.get(k) for k in ("sha256", "name", "type", "size")}
            for a in attachments
            if isinstance(a, dict)
        ]
    return out


def human_size(size: int) -> str:
    """``2.1 MB`` (decimal units, as file managers show them)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def file_label(attachment: dict[str, Any]) -> str:
    """How a text view shows an attachment: ``[photo.jpg 2.1 MB]``."""
    size = attachment.get("size")
    return f"[{attachment.get('name')} {human_size(size if isinstance(size, int) else 0)}]"


@dataclass(frozen=True)
class HistoryPage:
    messages: list[dict[str, Any]]
    #: The seq of the last queue entry read (the next page starts after it).
    last_seq: int
    #: The queue's highest seq when the page was read.
    head: int
    #: Whether ``since_ms`` was reached: later pages need no time filter.
    started: bool


def starts_history(item: dict[str, Any], since_ms: int) -> bool:
    """Whether an export from ``since_ms`` starts at ``item``.

    An export by time is a contiguous tail of the queue: it starts at the
    first message stamped at or after ``since_ms`` and keeps everything
    after it (events included), whatever later timestamps say.
    """
    ts = item.get("ts")
    return not since_ms or (isinstance(ts, int) and ts >= since_ms)


def read_history(
    store: Store,
    router: Router,
    user: str,
    after: int,
    limit: int,
    since_ms: int = 0,
    max_bytes: int = MAX_HISTORY_BYTES,
) -> HistoryPage:
    """Up to ``limit`` entries of ``user``'s queue after seq ``after``, as
    ``tail --json`` items, skipping those before the start (:func:`starts_history`).

    A page stops early once its items take ``max_bytes`` as JSON (it always
    holds at least one), so an admin socket answer stays bounded.
    """
    head = store.queue_head(user)
    entries = store.read_queue(user, after, max(1, min(limit, MAX_HISTORY_PAGE)))
    messages: list[dict[str, Any]] = []
    started = not since_ms
    last = after
    size = 0
    for entry in entries:
        item = message_json(router.render(entry.seq, entry.record))
        started = started or starts_history(item, since_ms)
        if started:
            size += len(json.dumps(item))
            if messages and size > max_bytes:
                break
            messages.append(item)
        last = entry.seq
    return HistoryPage(messages, last, head, started)
