"""Run real ``chinwag`` processes for tests (killable with SIGKILL)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

READY = re.compile(rb"ready at (http://\S+)")


@dataclass
class NodeProcess:
    process: trio.Process
    url: str
    output: bytearray

    async def kill(self) -> None:
        """SIGKILL: no clean shutdown of any kind."""
        self.process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            await self.process.wait()

    async def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            return await self.process.wait()


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CHINWAG_TEST_FAST_KDF"] = "1"
    env["XDG_CONFIG_HOME"] = str(home / "config")
    env["XDG_DATA_HOME"] = str(home / "data-home")
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def spawn_node(
    nursery: trio.Nursery,
    data_dir: Path,
    *flags: str,
    home: Path | None = None,
    prefix: Sequence[str] = (),
) -> NodeProcess:
    """Start ``chinwag run`` on a random loopback port and wait for its URL.

    ``prefix`` runs it through another command (``ip netns exec NS``).
    """
    args = [*prefix, sys.executable, "-m", "chinwag.cli", "run", "--data", str(data_dir)]
    # --no-mdns unless the test runs inside its own network namespace.
    mdns = [] if "--mdns-interface" in flags or "--trust-lan" in flags else ["--no-mdns"]
    args += ["--listen", "127.0.0.1:0", *mdns, *flags]
    process = await trio.lowlevel.open_process(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=cli_env(home or data_dir.parent),
    )
    output = bytearray()
    assert process.stdout is not None
    stdout = process.stdout
    with trio.fail_after(20):
        while (match := READY.search(output)) is None:
            chunk = await stdout.receive_some(4096)
            if not chunk:
                raise AssertionError(f"node exited early: {output.decode(errors='replace')}")
            output += chunk

    async def keep_reading() -> None:
        try:
            while chunk := await stdout.receive_some(4096):
                output.extend(chunk[-4096:])
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    nursery.start_soon(keep_reading)

    async def reap() -> None:
        # Whatever happens to the test, the node process does not outlive it.
        try:
            await trio.sleep_forever()
        finally:
            if process.returncode is None:
                process.kill()

    nursery.start_soon(reap)
    return NodeProcess(process, match.group(1).decode(), output)


async def run_cli(
    args: Sequence[str],
    home: Path,
    stdin: bytes = b"",
    password: str | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    env = cli_env(home)
    if password is not None:
        env["CHINWAG_PASSWORD"] = password
    with trio.fail_after(60):
        return await trio.run_process(
            [*prefix, sys.executable, "-m", "chinwag.cli", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
