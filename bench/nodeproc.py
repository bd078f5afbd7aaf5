"""Shared by the load generators: a chinwag node in a subprocess, /proc readings,
and the windowed sender.

The node runs as ``python tests/fastkdf.py -m chinwag.cli run`` (the CLI with
cheap Argon2id, so creating many users stays cheap) with a fresh data directory
(on disk, so commits pay a real fsync) and the per-device limits lifted; the
load generator is this process, the node another. Readings come from
``/proc/PID``: CPU seconds (utime + stime of every thread), per-thread CPU
(the trio thread is the one whose TID is the PID) and memory (VmRSS, RssAnon,
RssFile).
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from chinwag.node.client import ChatClient, ClientError

#: The test-only entry that gives the node cheap Argon2id, then runs the CLI.
FASTKDF = Path(__file__).resolve().parent.parent / "tests" / "fastkdf.py"

#: One send as ``ChatClient.send_many`` takes it: (to, text, cid).
SendItem = tuple[str, str, str | None]

#: Flags that lift the per-device limits for load benchmarks.
BENCH_LIMITS = (
    "--send-rate",
    "1000000",
    "--send-burst",
    "1000000",
    "--max-conn-per-address",
    "5000",
)
#: Flags that lift the sign-up limits (benchmarks sign many users up from one address).
BENCH_SIGNUPS = ("--signups-per-address", "1000000", "--signups-per-node", "1000000")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_MARK = " ready at "


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 16)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds of a process: all threads (user+sys), kernel part, main (trio) thread."""

    total: float
    system: float
    main: float

    def __sub__(self, other: CpuSample) -> CpuSample:
        return CpuSample(
            self.total - other.total, self.system - other.system, self.main - other.main
        )


def _stat_cpu(path: str) -> tuple[float, float]:
    """(utime + stime, stime) in seconds from a /proc stat file."""
    with open(path) as f:
        text = f.read()
    # Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS, stime / CLOCK_TICKS


def cpu_seconds(pid: int) -> CpuSample:
    total, system = _stat_cpu(f"/proc/{pid}/stat")
    main, _ = _stat_cpu(f"/proc/{pid}/task/{pid}/stat")
    return CpuSample(total, system, main)


def machine_cpu() -> dict[str, float]:
    """Whole-machine CPU seconds from /proc/stat: busy, idle (incl. iowait), steal."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return {
        "busy": (user + nice + system + irq + softirq) / CLOCK_TICKS,
        "idle": (idle + iowait) / CLOCK_TICKS,
        "steal": steal / CLOCK_TICKS,
    }


def wait_for_quiet(max_wait: float, threshold: float = 0.15, window: float = 2.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine's busy cores over ``window`` s stay
    under ``threshold``; return the last reading. For shared, noisy machines."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_cpu()["busy"]
        time.sleep(window)
        busy = (machine_cpu()["busy"] - before) / window
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


class NodeProcess:
    """A node on 127.0.0.1 with a fresh data dir; use as a context manager."""

    def __init__(
        self,
        *,
        data_root: str | None = None,
        extra_args: tuple[str, ...] = (),
        keep_data: bool = False,
        ready_timeout: float = 30.0,
        python: str = sys.executable,
        python_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        production_auth: bool = False,
        bench_limits: bool = True,
    ) -> None:
        """``production_auth``: the real Argon2id cost and the default sign-up
        and hashing-queue limits (for benchmarks of log-in floods).
        ``bench_limits``: lift the per-device send limits and the per-address
        connection cap (load benchmarks); False keeps the production defaults."""
        self._bench_limits = bench_limits
        self.data_dir = Path(tempfile.mkdtemp(prefix="chinwag-bench-", dir=data_root))
        self._production_auth = production_auth
        self._extra_args = extra_args
        self._keep = keep_data
        self._ready_timeout = ready_timeout
        self._python = python
        self._python_args = python_args
        self._env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = self.data_dir / "node.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _run_flag_supported(self, flag: str) -> bool:
        """Whether this node's ``chinwag run`` knows ``flag`` (asks its --help)."""
        out = subprocess.run(
            [self._python, *self._python_args, "-m", "chinwag.cli", "run", "--help"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **self._env},
        )
        return flag in out.stdout

    def __enter__(self) -> NodeProcess:
        env = dict(os.environ)
        # Only nodes from before tests/fastkdf.py read this; current ones ignore it.
        env["CHINWAG_TEST_FAST_KDF"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self._env)
        cmd = [
            self._python,
            *([] if self._production_auth else [str(FASTKDF)]),
            *self._python_args,
            "-m",
            "chinwag.cli",
            "run",
            "--data",
            str(self.data_dir / "node"),
            "--name",
            "bench",
            "--listen",
            "127.0.0.1:0",
            *(BENCH_LIMITS if self._bench_limits else ()),
            # Benchmarks stay on loopback: no mDNS on the machine's real links
            # (nodes from before discovery have no such flag and no mDNS).
            *(["--no-mdns"] if self._run_flag_supported("--no-mdns") else []),
            # Many users sign up and log in at once from this one address.
            *(
                [*BENCH_SIGNUPS, "--kdf-queue", "1000000"]
                if not self._production_auth and self._run_flag_supported("--kdf-queue")
                else []
            ),
            *self._extra_args,
        ]
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        finally:
            log.close()
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if READY_MARK in line:
                    self.url = line.rsplit(READY_MARK, 1)[1].strip()
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        output = self.log_tail(40)
        self.__exit__(None, None, None)
        raise RuntimeError(f"node did not become ready; its output:\n{output}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


async def send_windowed(
    client: ChatClient,
    count: int,
    batch: int,
    window: int,
    item: Callable[[int], SendItem],
    settle: Callable[[list[Any] | ClientError, int], None],
) -> None:
    """Send items ``0..count-1``, keeping about ``window`` sends in flight as
    ``send_many`` batches of ``batch``. ``settle(results, k)`` gets each batch's
    replies (acks or ClientErrors), or the ClientError that failed all ``k``."""
    next_n = 0

    async def worker() -> None:
        nonlocal next_n
        while next_n < count:
            start = next_n
            k = min(batch, count - start)
            next_n += k
            try:
                results = await client.send_many([item(n) for n in range(start, start + k)])
            except ClientError as exc:
                settle(exc, k)
                continue
            settle(results, k)

    async with trio.open_nursery() as nursery:
        for _ in range(max(1, window // batch)):
            nursery.start_soon(worker)
