"""Network namespaces made by the tests: mDNS runs only in here, never on a real link."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=20, check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh namespace with only ``lo`` (up, multicast on); removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 ('ip')")
    name = f"chinwag-{secrets.token_hex(4)}"
    made = _run("ip", "netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.decode().strip()}")
    try:
        for cmd in (
            ("ip", "link", "set", "lo", "up"),
            ("ip", "link", "set", "lo", "multicast", "on"),
        ):
            done = _run("ip", "netns", "exec", name, *cmd)
            if done.returncode != 0:
                pytest.skip(f"cannot configure the namespace: {done.stderr.decode().strip()}")
        yield name
    finally:
        pids = _run("ip", "netns", "pids", name).stdout.split()
        for pid in pids:
            _run("kill", "-9", pid.decode())
        _run("ip", "netns", "delete", name)


def ns_prefix(name: str) -> list[str]:
    return ["ip", "netns", "exec", name]
