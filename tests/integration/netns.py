"""Network namespaces made by the tests: mDNS runs only in here, never on a real link.

Fixtures (import them into a test module: ``from .netns import netns, netns_factory``):

- ``netns``: one fresh namespace with only ``lo`` (up, multicast on). It is a
  ``Netns``: a ``str`` (its name, so ``ns_prefix(netns)`` works) with
  ``prefix`` (``ip netns exec NAME``), ``run(args)`` (a command inside, to
  completion) and ``spawn(nursery, args)`` (a long-running process inside).
- ``netns_factory``: ``make()`` more namespaces, ``link(a, b, addr_a, addr_b)``
  them with a veth pair (test addresses like ``10.77.x.y/24``, only ever inside
  these namespaces).

Everything is removed afterwards, on failure too: processes left inside are
killed, then the namespaces (and their veth pairs) deleted.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence

import pytest
import trio


def _ip(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], capture_output=True, timeout=20, check=False)


class NetnsError(Exception):
    pass


def _check(done: subprocess.CompletedProcess[bytes], what: str) -> None:
    if done.returncode != 0:
        raise NetnsError(f"{what}: {done.stderr.decode(errors='replace').strip()}")


def ns_prefix(name: str) -> list[str]:
    """The command prefix that runs a program inside namespace ``name``."""
    return ["ip", "netns", "exec", str(name)]


class Netns(str):
    """A namespace made by a test; the string is its name."""

    @property
    def prefix(self) -> list[str]:
        return ns_prefix(self)

    def ip(self, *args: str) -> None:
        """``ip ARGS`` inside the namespace (raises on failure)."""
        _check(_ip("-n", str(self), *args), f"ip -n {self} {' '.join(args)}")

    async def run(
        self,
        args: Sequence[str],
        *,
        timeout: float = 20,
        env: Mapping[str, str] | None = None,
        stdin: bytes = b"",
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``args`` inside to completion (bounded); stdout/stderr captured."""
        with trio.fail_after(timeout):
            return await trio.run_process(
                [*self.prefix, *args],
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=None if env is None else dict(env),
            )

    async def spawn(
        self,
        nursery: trio.Nursery,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
    ) -> trio.Process:
        """Start ``args`` inside, stdin/stdout piped; killed when ``nursery`` ends."""
        process = await trio.lowlevel.open_process(
            [*self.prefix, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=None if env is None else dict(env),
        )

        async def reap() -> None:
            try:
                await trio.sleep_forever()
            finally:
                if process.returncode is None:
                    process.kill()

        nursery.start_soon(reap)
        return process


class NetnsFactory:
    """Makes namespaces and veth links; ``cleanup()`` removes all of them."""

    def __init__(self) -> None:
        self.made: list[Netns] = []
        self._links = 0

    def make(self, *, lo_multicast: bool = True) -> Netns:
        name = Netns(f"chinwag-{secrets.token_hex(4)}")
        _check(_ip("netns", "add", name), "cannot create a network namespace")
        self.made.append(name)
        name.ip("link", "set", "lo", "up")
        if lo_multicast:
            name.ip("link", "set", "lo", "multicast", "on")
        return name

    def link(self, a: Netns, b: Netns, addr_a: str, addr_b: str) -> tuple[str, str]:
        """A veth pair between ``a`` and ``b`` (made directly inside them), up,
        with ``addr_a``/``addr_b`` (CIDR). Returns the interface names (a, b)."""
        self._links += 1
        if_a, if_b = f"cwv{self._links}a", f"cwv{self._links}b"
        a.ip("link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", str(b))
        a.ip("addr", "add", addr_a, "dev", if_a)
        b.ip("addr", "add", addr_b, "dev", if_b)
        a.ip("link", "set", if_a, "up")
        b.ip("link", "set", if_b, "up")
        return if_a, if_b

    def cleanup(self) -> None:
        for name in reversed(self.made):
            pids = _ip("netns", "pids", name).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ValueError, ProcessLookupError, PermissionError):
                    pass
            _ip("netns", "delete", name)
        self.made.clear()


def _require_netns() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (mDNS tests never run on a real interface)")
    if shutil.which("ip") is None:
        pytest.skip("network namespaces need iproute2 ('ip' not found)")


@pytest.fixture
def netns_factory() -> Iterator[NetnsFactory]:
    """Make namespaces (and veth links between them); all deleted afterwards."""
    _require_netns()
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh namespace with only ``lo`` (up, multicast on); removed afterwards.

    Self-contained (it does not need ``netns_factory`` imported beside it).
    """
    _require_netns()
    factory = NetnsFactory()
    try:
        try:
            made = factory.make()
        except NetnsError as exc:
            pytest.skip(f"cannot make a network namespace here: {exc}")
        yield made
    finally:
        factory.cleanup()
