"""node/logs.py: reasons in plain words and the JSON line format."""

from __future__ import annotations

import errno
import io
import json
import logging
import socket

import pytest
import trio
from trio_websocket import ConnectionRejected, HandshakeError

from chinwag.node.logs import JsonFormatter, event, plain_reason, printable, setup_logging
from chinwag.protocol.errors import ErrorCode, ProtocolError


def _raised_from(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except BaseException as exc:  # noqa: BLE001 - kept to inspect
        return exc


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "connection refused"),
        (trio.TooSlowError(), "timed out"),
        (socket.gaierror(-2, "Name or service not known"), "cannot resolve the host name"),
        (
            ProtocolError(ErrorCode.FORBIDDEN, "the peer is not the node we dialed"),
            "their key does not match the pinned key",
        ),
        (
            ProtocolError(ErrorCode.FORBIDDEN, "this node is blocked here"),
            "this node is blocked here",
        ),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "host unreachable"),
    ],
)
def test_plain_reason(exc: BaseException, words: str) -> None:
    assert plain_reason(exc) == words


def test_plain_reason_looks_through_wrappers() -> None:
    # trio: "all attempts to connect failed", caused by the real errors.
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    trio_error = _raised_from(OSError("all attempts to connect to 127.0.0.1:9 failed"), refused)
    assert plain_reason(trio_error) == "connection refused"
    # trio-websocket wraps that again in a HandshakeError (a class name an admin
    # should never see).
    wrapped = _raised_from(HandshakeError(), trio_error)
    assert plain_reason(wrapped) == "connection refused"
    rejected = ConnectionRejected(404, [], b"")
    assert "HTTP 404" in plain_reason(rejected)
    assert "Error" not in plain_reason(rejected)


def test_json_lines_carry_event_fields() -> None:
    record = logging.LogRecord("chinwag.node.x", logging.INFO, __file__, 1, "hi %s", ("you",), None)
    for key, value in event("login_failed", user="alice", client="127.0.0.1").items():
        setattr(record, key, value)
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "hi you" and line["level"] == "info"
    assert line["logger"] == "chinwag.node.x" and line["ts"].endswith("Z")
    assert line["event"] == "login_failed" and line["user"] == "alice"


def test_event_fields_may_not_shadow_record_attributes() -> None:
    with pytest.raises(ValueError, match="name"):
        event("peer_added", name="kitchen")


def test_untrusted_text_cannot_forge_a_line() -> None:
    assert printable("alice") == "alice"
    assert "\n" not in printable("bob\n2026-01-01 INFO forged")
    assert len(printable("x" * 1000)) == 64


@pytest.mark.parametrize(
    ("level", "shown"),
    [("debug", {"d", "i", "w"}), ("info", {"i", "w"}), ("warning", {"w"}), ("error", set())],
)
def test_log_level_filters(level: str, shown: set[str]) -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    stream = io.StringIO()
    try:
        setup_logging(level, fmt="json", stream=stream)
        log = logging.getLogger("chinwag.test")
        log.debug("d", extra=event("x", n="d"))
        log.info("i", extra=event("x", n="i"))
        log.warning("w", extra=event("x", n="w"))
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.setLevel(saved[0])
        for handler in saved[1]:
            root.addHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {line["n"] for line in lines} == shown
