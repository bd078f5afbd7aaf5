"""The node's log: setup (level, file, text or JSON lines) and reasons in plain words.

Everything logs through the standard :mod:`logging` module under the
``chinwag`` logger tree. An event worth parsing carries its fields as
``extra=event("login_failed", user=..., client=...)``: the text format shows
the message only, the JSON format (one object per line) adds ``event`` and
every field. Passwords, tokens and message text are never given to a log
call.

``SIGHUP`` reopens the log file (``chinwag run`` wires it): logrotate moves
the file away, the node writes on in a new one at the same path.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, ConnectionTimeout, HandshakeError

from chinwag.protocol.errors import ProtocolError

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

#: Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def event(kind: str, /, **fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the event's name and its structured fields.

    A field may not reuse a LogRecord attribute (``name``, ``msg``, ...):
    logging refuses those, so a peer's name is ``peer_name``.
    """
    clash = _STANDARD.intersection(fields)
    if clash:
        raise ValueError(f"log fields clash with LogRecord attributes: {sorted(clash)}")
    return {"event": kind, **fields}


def printable(text: str, limit: int = 64) -> str:
    """Untrusted text (a user name typed at log-in) safe for a text log line:
    control characters escaped, so it can never start a forged line."""
    text = text[:limit]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, event and fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ReopenableFileHandler(logging.StreamHandler[TextIO]):
    """Appends to a file; :meth:`reopen` starts a new one at the same path."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        super().__init__(self._open())

    def _open(self) -> TextIO:
        return open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held until reopen

    def reopen(self) -> None:
        """Close the file and open the path again (after logrotate moved it)."""
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            old.close()
        finally:
            self.release()

    def close(self) -> None:
        self.acquire()
        try:
            self.stream.close()
        finally:
            self.release()
        super().close()


def setup_logging(
    level: str = "info", path: Path | None = None, fmt: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Send the root logger to ``path`` (or stderr) at ``level``; returns the handler.

    Replaces handlers set earlier (``chinwag -v`` sets a basic one first).
    """
    handler: logging.Handler
    if path is not None:
        handler = ReopenableFileHandler(path)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # Libraries' chatter (zeroconf, trio-websocket) only when asked for it.
    for noisy in ("zeroconf", "trio-websocket", "trio_websocket"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler


def reopen_log_files() -> int:
    """Reopen every file the root logger writes to (SIGHUP); how many."""
    count = 0
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()
            count += 1
    return count


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EPIPE: "connection closed",
}

#: Protocol messages that deserve plainer words for an admin.
_MESSAGE_WORDS = {
    "the peer is not the node we dialed": "their key does not match the pinned key",
    "dialed ourselves": "the URL leads back to this node",
    # The responder's words when our hello named a key it does not hold.
    "the dialer wants another node": "their key does not match the pinned key",
}


def plain_reason(exc: BaseException) -> str:
    """Why a connection failed or ended, in words an admin understands.

    "connection refused", "timed out", "their key does not match the pinned
    key" — never an exception class name such as ``HandshakeError``.
    """
    if isinstance(exc, ProtocolError):
        return _MESSAGE_WORDS.get(exc.message, exc.message)
    if isinstance(exc, trio.TooSlowError | ConnectionTimeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRejected):
        return f"the address answered HTTP {exc.status_code}, not a chinwag node"
    if isinstance(exc, HandshakeError):
        # trio-websocket wraps the network error (refused, unreachable, ...).
        cause = exc.__cause__
        return plain_reason(cause) if cause is not None else "the WebSocket handshake failed"
    if isinstance(exc, ConnectionClosed):
        code = getattr(exc.reason, "code", None)
        text = getattr(exc.reason, "reason", None) or ""
        if text in _MESSAGE_WORDS:
            return _MESSAGE_WORDS[text]
        return f"the connection closed ({code}{': ' + text if text else ''})"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "their TLS certificate is not trusted"
    if isinstance(exc, ssl.SSLError):
        return "TLS failed"
    if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
        return "connection closed"
    if isinstance(exc, OSError):
        words = _oserror_words(exc)
        if words is not None:
            return words
        return exc.strerror or str(exc) or "network error"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(plain_reason(inner) for inner in exc.exceptions))
    return str(exc) or "unknown error"


def _oserror_words(exc: BaseException, depth: int = 0) -> str | None:
    """trio's "all attempts to connect failed" keeps the real errors as causes."""
    if depth > 4:
        return None
    if isinstance(exc, OSError) and exc.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[exc.errno]
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            words = _oserror_words(inner, depth + 1)
            if words is not None:
                return words
    cause = exc.__cause__ or exc.__context__
    return None if cause is None else _oserror_words(cause, depth + 1)


__all__ = [
    "FORMATS",
    "LEVELS",
    "JsonFormatter",
    "ReopenableFileHandler",
    "event",
    "plain_reason",
    "printable",
    "reopen_log_files",
    "setup_logging",
]
