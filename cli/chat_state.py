"""The file where ``chinwag chat`` keeps one device's cursor and recent history.

``$XDG_CONFIG_HOME/chinwag/chat/<hash of server|user|device>.json``, mode 0600
in a 0700 directory. Cursor and history live in **one** file replaced
atomically (write a temporary file, then rename), so the saved cursor never
runs ahead of the saved history: a message at or below the cursor is always
in the cache too (unless it aged out of the last ``HISTORY_LIMIT``). Nothing
is fsynced: a file lost in a power cut only means the next start syncs the
whole queue again from seq 0, which repeats nothing because the lost cache
held the same messages.

A lock file (``flock``) keeps a second ``chinwag chat`` for the same device
from overwriting the first one's cursor.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from typing import Any

from .chat_model import ChatModel
from .common import config_dir

STATE_VERSION = 1
#: A state file larger than this is ignored (the cap on history keeps it far below).
MAX_STATE_BYTES = 64 * 1024 * 1024


class StateBusy(Exception):
    """Another ``chinwag chat`` holds this device's state."""


class StateFile:
    """Load, save and lock the state of one (server, user, device)."""

    def __init__(self, server: str, user: str, device: str) -> None:
        self.server = server.rstrip("/")
        self.user = user
        self.device = device
        digest = hashlib.sha256(f"{self.server}|{user}|{device}".encode()).hexdigest()[:32]
        self.path = config_dir() / "chat" / f"{digest}.json"
        self._lock_fd: int | None = None

    def _ensure_dir(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def lock(self) -> None:
        """Take the device's lock, or raise :class:`StateBusy`."""
        self._ensure_dir()
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateBusy(
                f"another chinwag chat is running for {self.user} (device {self.device})"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> dict[str, Any]:
        """The saved state, or ``{}`` if there is none (or it is not ours)."""
        try:
            if self.path.stat().st_size > MAX_STATE_BYTES:
                return {}
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return {}
        if (data.get("server"), data.get("user"), data.get("device")) != (
            self.server,
            self.user,
            self.device,
        ):
            return {}
        return data

    def snapshot(self, model: ChatModel) -> dict[str, Any]:
        """The state as plain data, copied: taken on the event loop, cheap
        (no deep copies), so that encoding and writing can go to a thread."""
        header = {
            "version": STATE_VERSION,
            "server": self.server,
            "user": self.user,
            "device": self.device,
        }
        return header | model.to_json()

    def dump(self, model: ChatModel) -> str:
        """The state as text."""
        return _encode(self.snapshot(model))

    def write_snapshot(self, data: dict[str, Any]) -> None:
        """Encode a :meth:`snapshot` and replace the file (blocking: run it in a thread)."""
        self.write(_encode(data))

    def write(self, text: str) -> None:
        """Replace the file atomically (blocking: run it in a thread from trio)."""
        self._ensure_dir()
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, self.path)


def _encode(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
