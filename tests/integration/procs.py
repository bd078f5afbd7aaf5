"""Run real ``chinwag`` processes for tests (killable with SIGKILL)."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from ..fastkdf import FASTKDF

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


#: ``chinwag`` as tests run it: through tests/fastkdf.py, which gives the
#: process cheap Argon2id (tests create many users) and then runs the CLI.
CHINWAG = (sys.executable, str(FASTKDF), "-m", "chinwag.cli")
#: Tests sign many users up from one loopback address.
TEST_RUN_FLAGS = ("--signups-per-address", "10000", "--signups-per-node", "10000")


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
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
    production: bool = False,
    env: dict[str, str] | None = None,
) -> NodeProcess:
    """Start ``chinwag run`` on a random loopback port and wait for its URL.

    ``prefix`` runs it through another command (``ip netns exec NS``).
    ``production``: plain ``python -m chinwag.cli``, without the test entry's
    cheap Argon2id. ``env``: added to the environment.
    """
    entry = (sys.executable, "-m", "chinwag.cli") if production else CHINWAG
    args = [*prefix, *entry, "run", "--data", str(data_dir), *TEST_RUN_FLAGS]
    # --no-mdns unless the test runs inside its own network namespace.
    mdns = [] if "--mdns-interface" in flags or "--trust-lan" in flags else ["--no-mdns"]
    args += ["--listen", "127.0.0.1:0", *mdns, *flags]
    process = await trio.lowlevel.open_process(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**cli_env(home or data_dir.parent), **(env or {})},
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
            [*prefix, *CHINWAG, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )


class SyncNode:
    """``chinwag run`` as a subprocess for plain (non-trio) tests: the browser
    tests (Playwright's sync API) and the terminal-client tests (textual on
    asyncio). Restartable on the same port and data directory."""

    def __init__(self, data_dir: Path, home: Path, name: str = "kitchen") -> None:
        self.data_dir = data_dir
        self.home = home
        self.name = name
        self.port = 0  # chosen by the OS at the first start, then kept
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        #: The last lines the node printed, over all its runs.
        self.output: collections.deque[str] = collections.deque(maxlen=2000)
        self._ready = threading.Event()
        self._lock = threading.Lock()

    @property
    def listen(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """Start (or start again) and wait for "ready at URL"."""
        assert self.process is None or self.process.poll() is not None, "already running"
        deadline = time.monotonic() + timeout
        while True:
            error = self._start_once(deadline)
            if error is None:
                return
            # A restart may find the port still held for a moment: retry, bounded.
            if "cannot listen" in error and self.port and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise AssertionError(f"node did not start: {error}")

    def _start_once(self, deadline: float) -> str | None:
        args = [*CHINWAG, "run", "--data", str(self.data_dir), *TEST_RUN_FLAGS]
        args += ["--name", self.name, "--listen", self.listen, "--no-mdns"]
        self._ready.clear()
        process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=cli_env(self.home),
        )
        self.process = process
        # The reader drains the pipe for the process's whole life (no blocked node).
        threading.Thread(target=self._read, args=(process,), daemon=True).start()
        while not self._ready.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                self._kill(process)
                return self.log(50) or f"exit code {process.returncode}"
        return None

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                with self._lock:
                    self.output.append(line.decode(errors="replace"))
                match = READY.search(line)
                if match:
                    self.url = match.group(1).decode()
                    self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
                    self._ready.set()

    def stop(self) -> None:
        """SIGTERM (a clean shutdown); SIGKILL if it takes more than 10 s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill(process)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown of any kind."""
        if self.process is not None:
            self._kill(self.process)

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self, lines: int = 200) -> str:
        with self._lock:
            return "".join(list(self.output)[-lines:])
