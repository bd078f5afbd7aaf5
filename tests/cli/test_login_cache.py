"""The CLI's token cache: a refused token is replaced without a new device."""

from __future__ import annotations

import pytest

from chinwag.cli.common import cached_login, forget_login, fresh_login
from chinwag.node.client import signup


async def test_log_in_again_after_a_refused_token_resumes_the_device(
    start_node, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CHINWAG_PASSWORD", "pw-cache")
    node = await start_node()
    await signup(node.url, "alice", "pw-cache")

    first = await fresh_login(node.url, "alice", None)
    assert cached_login(node.url, "alice", None) == first

    forget_login(node.url, "alice", None)
    assert cached_login(node.url, "alice", None) is None  # the token is gone

    second = await fresh_login(node.url, "alice", None)
    assert second.device == first.device and second.token != first.token
    assert cached_login(node.url, "alice", None) == second
    # An explicit device is its own cache entry and its own device.
    other = await fresh_login(node.url, "alice", "phone")
    assert other.device == "phone"
    assert cached_login(node.url, "alice", None) == second
