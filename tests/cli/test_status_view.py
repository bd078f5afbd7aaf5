"""``chinwag status`` and ``peers list`` in words (cli/status_view.py)."""

from __future__ import annotations

import time

from chinwag.cli.status_view import duration, link_words, status_lines

NOW = 1_800_000_000_000


def test_durations() -> None:
    assert duration(5) == "5 s"
    assert duration(125) == "2 min"
    assert duration(3 * 3600 + 300) == "3 h 5 min"
    assert duration(2 * 86400 + 3600) == "2 days 1 h"


def test_link_words() -> None:
    since = NOW - 180_000
    clock = time.strftime("%H:%M", time.localtime(since / 1000))
    assert link_words({"link": "linked", "link_changed_ms": since}, NOW) == (
        f"link up since {clock} (3 min)"
    )
    down = {
        "link": "backing_off",
        "link_changed_ms": since,
        "retry_in": 4.2,
        "last_error": "connection refused",
    }
    assert link_words(down, NOW) == (
        f"link down since {clock} (3 min), retrying in 4 s; last error: connection refused"
    )
    assert link_words({"link": "connecting", "link_changed_ms": 0}, NOW) == "connecting"
    assert "approve" in link_words({"link": "pending"}, NOW)
    assert "not running" in link_words({}, NOW)


def test_status_has_no_jargon() -> None:
    status = {
        "name": "kitchen",
        "node_id": "a" * 52,
        "version": "0.1.0",
        "uptime_s": 3700,
        "connections": 2,
        "users_online": 1,
        "users": 3,
        "queues": [
            {"user": "alice", "head": 10, "max_unacked": 0},
            {"user": "bob", "head": 7, "max_unacked": 4},
        ],
        "store": {"commits": 9, "pending": 0, "map_size": 64 << 20},
        "peers": [
            {
                "node_id": "b" * 52,
                "name": "attic",
                "state": "trusted",
                "link": "linked",
                "link_changed_ms": NOW - 60_000,
                "last_error": "",
                "outbox": 0,
                "outbox_oldest_s": None,
                "sent": 5,
                "received": 6,
                "refused": 0,
            }
        ],
    }
    text = "\n".join(status_lines(status, NOW))
    assert "a" * 52 in text and "b" * 52 in text  # full ids
    assert "running for 1 h 1 min, version 0.1.0" in text
    assert "bob: 4" in text and "alice" not in text
    assert "link up since" in text and "0 message(s) waiting to be sent" in text
    for jargon in ("head", "unacked", "backing_off"):
        assert jargon not in text


def test_status_shows_refused_actions() -> None:
    status = {
        "name": "kitchen",
        "node_id": "a" * 52,
        "uptime_s": 5,
        "connections": 0,
        "users_online": 0,
        "users": 1,
        "queues": [],
        "store": {"commits": 1, "pending": 0, "map_size": 64 << 20},
        "peers": [],
        "actions": {"applied": 3, "refused": 2},
    }
    text = "\n".join(status_lines(status, NOW))
    assert "edits, deletes and reactions: 3 applied, 2 refused" in text
    del status["actions"]
    assert "edits" not in "\n".join(status_lines(status, NOW))
