"""Fixtures of the ``chinwag chat`` tests (tests/cli/test_chat_*tui*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .tui_harness import PW, SyncNode, start_node


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncNode]:
    """A real ``chinwag run`` process, with the CLI's config and password set up for it."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CHINWAG_PASSWORD", PW)
    proc = start_node(tmp_path / "data", tmp_path)
    try:
        yield proc
    finally:
        proc.kill()
