"""``chinwag run --log-format json --log-file``: a real process's log, SIGHUP, --version."""

from __future__ import annotations

import signal
from importlib.metadata import version
from pathlib import Path

import trio

from chinwag.node.admin import admin_request
from chinwag.node.client import api_call, connect, http_json, login, signup
from chinwag.protocol.envelope import NodeKey

from .logwatch import JsonLog
from .procs import run_cli, spawn_node
from .test_metrics import scrape, value

SECRET = "a password never logged"


async def test_json_log_events_and_sighup_reopens_the_file(nursery, tmp_path: Path) -> None:
    log_path = tmp_path / "chinwag.log"
    log = JsonLog(log_path)
    node = await spawn_node(
        nursery,
        tmp_path / "data",
        "--name",
        "logger",
        "--log-format",
        "json",
        "--log-file",
        str(log_path),
        "--metrics-listen",
        "127.0.0.1:0",
    )
    started = await log.wait_for("node_started")
    assert started["url"] == node.url and started["version"] == version("chinwag")
    assert started["node_name"] == "logger" and started["level"] == "info"
    assert started["logger"] == "chinwag.node.app" and started["ts"].endswith("Z")
    metrics_url = (await log.wait_for("metrics_listening"))["url"]

    await signup(node.url, "alice", SECRET)
    signed = await log.wait_for("signup", user="alice")
    assert signed["client"] == "127.0.0.1"
    status, _ = await http_json(
        node.url, "POST", "/api/login", {"user": "alice", "password": "nope"}
    )
    assert status == 401
    failed = await log.wait_for("login_failed", user="alice")
    assert failed["client"] == "127.0.0.1" and failed["known_user"] is True
    assert failed["level"] == "info"
    session = await login(node.url, "alice", SECRET, "laptop")
    ok = await log.wait_for("login", user="alice")
    assert ok["device"] == "laptop" and ok["client"] == "127.0.0.1"
    await api_call(node.url, "POST", "/api/logout", {}, token=session.token)
    await log.wait_for("logout", user="alice", device="laptop")
    revoked = await log.wait_for("sessions_revoked")
    assert revoked["count"] == 1
    samples = await scrape(metrics_url)
    assert value(samples, "chinwag_login_failures_total") == 1
    assert value(samples, "chinwag_logins_total") == 1
    text = log_path.read_text()
    assert SECRET not in text and "nope" not in text and session.token not in text

    # logrotate: move the file, SIGHUP, and the node writes a new one.
    rotated = tmp_path / "chinwag.log.1"
    log_path.rename(rotated)
    node.process.send_signal(signal.SIGHUP)
    with trio.fail_after(15):
        while not log_path.exists():  # noqa: ASYNC110 - a file has no event
            await trio.sleep(0.02)
    await http_json(node.url, "POST", "/api/login", {"user": "bob", "password": "x"})
    await log.wait_for("login_failed", user="bob")
    assert not JsonLog(rotated).find("login_failed", user="bob")

    assert await node.terminate() == 0
    stopped = log.find("node_stopped")
    assert stopped and stopped[0]["url"] == node.url


async def test_version(tmp_path: Path) -> None:
    result = await run_cli(["--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"chinwag {version('chinwag')}"


async def test_status_speaks_plain_words(nursery, tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = await spawn_node(nursery, data, "--name", "plain")
    await signup(node.url, "alice", SECRET)
    await signup(node.url, "bob", SECRET)
    token = (await login(node.url, "alice", SECRET, "laptop")).token
    await login(node.url, "bob", SECRET, "phone")  # a device that has seen nothing

    async with connect(node.url, token) as client:
        await client.send("bob", "hello")
    result = await run_cli(["status", "--data", str(data)], tmp_path)
    text = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "head" not in text and "unacked" not in text
    assert "messages waiting for devices" in text and "bob: 1" in text
    assert f"version {version('chinwag')}" in text
    await node.terminate()


async def test_peers_list_shows_each_link_in_words(nursery, tmp_path: Path) -> None:
    data = tmp_path / "data"
    absent = NodeKey.generate().id  # nobody listens on port 9 of loopback
    await spawn_node(nursery, data, "--name", "lonely", "--peer", f"http://127.0.0.1:9#{absent}")

    async def last_error() -> str:
        status = await admin_request(data, "status", {})
        return str(status["peers"][0]["last_error"])

    with trio.fail_after(15):
        while await last_error() != "connection refused":  # noqa: ASYNC110 - another process
            await trio.sleep(0.05)
    result = await run_cli(["peers", "list", "--data", str(data)], tmp_path)
    text = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert absent[:12] in text and "trusted" in text
    assert "link down" in text or "connecting" in text
    assert "last error: connection refused" in text, text
