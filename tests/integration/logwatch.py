"""Read a node's JSON log (``--log-format json``) as events, and wait for one."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from chinwag.node.logs import JsonFormatter, ReopenableFileHandler

TIMEOUT = 15


class JsonLog:
    """The lines of one JSON log file, each parsed as an object."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        # Every line is one whole JSON object (a torn last line is not there yet).
        return [json.loads(line) for line in lines if line.endswith("}")]

    def find(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records()
            if r.get("event") == name and all(r.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(self, name: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        """The first ``name`` event with these fields, once it is written."""
        with trio.fail_after(timeout):
            while not (found := self.find(name, **fields)):  # noqa: ASYNC110 - a file has no event
                await trio.sleep(0.02)
        return found[0]


@pytest.fixture(name="json_log")
def json_log_fixture(tmp_path: Path) -> Iterator[JsonLog]:
    """The ``chinwag`` loggers of in-process nodes, written as JSON lines to a file."""
    path = tmp_path / "node.log.json"
    handler = ReopenableFileHandler(path)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("chinwag")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield JsonLog(path)
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)
