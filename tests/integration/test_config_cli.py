"""``chinwag run`` with a config file, the password rule
in ``user add``/``passwd`` (prompts on a real terminal), exit codes, the
warnings and hints of ``run``: real processes on loopback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import trio

from chinwag.cli.exitcodes import Exit
from chinwag.node.client import http_json

from .procs import CHINWAG, TEST_RUN_FLAGS, cli_env, run_cli, spawn_node

GOOD = "a good long password"


async def _read_until(stream: trio.abc.ReceiveStream, out: bytearray, marker: bytes) -> None:
    """Read ``stream`` into ``out`` until ``marker`` is in it (bounded)."""
    with trio.fail_after(20):
        while marker not in out:
            chunk = await stream.receive_some(4096)
            if not chunk:
                raise AssertionError(f"ended before {marker!r}: {out.decode(errors='replace')}")
            out += chunk


# ------------------------------------------------------------------ config file
async def test_config_file_is_applied_and_flags_win(nursery, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "chinwag.toml").write_text(
        'name = "attic"\nsignup = "closed"\nmin-password-length = 12\n'
    )
    proc = await spawn_node(nursery, data)
    assert b"chinwag node attic" in proc.output
    status, body = await http_json(
        proc.url, "POST", "/api/signup", {"user": "bob", "password": GOOD}
    )
    assert status == 403 and body["error"]["code"] == "forbidden"
    # user add hashes on the CLI's side, with the file's minimum.
    short = await run_cli(
        ["user", "add", "al", "--data", str(data)], tmp_path, password="eleven char"
    )
    assert short.returncode == Exit.REFUSED, short.stderr
    assert b"at least 12 characters" in short.stderr and b"Traceback" not in short.stderr
    assert await proc.terminate() == 0

    # The flag overrides the file's signup; the file's other settings stay.
    proc = await spawn_node(nursery, data, "--signup", "open")
    status, body = await http_json(
        proc.url, "POST", "/api/signup", {"user": "bob", "password": "eleven char"}
    )
    assert status == 422 and "at least 12 characters" in body["error"]["message"]
    status, _ = await http_json(proc.url, "POST", "/api/signup", {"user": "bob", "password": GOOD})
    assert status == 201
    assert await proc.terminate() == 0


async def test_run_refuses_an_unknown_key_before_starting(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "chinwag.toml").write_text("send-rate = 5\nmax_unauthenticated = 3\n")
    result = await run_cli(["run", "--data", str(data), "--listen", "127.0.0.1:0"], tmp_path)
    assert result.returncode == Exit.USAGE
    assert b"unknown key 'max_unauthenticated'" in result.stderr
    assert b"did you mean 'max-unauthenticated'?" in result.stderr
    assert not (data / "node.key").exists()  # nothing was started or created


# ------------------------------------------------------------------ passwords in the CLI
async def test_user_add_prompts_again_after_a_refused_or_mistyped_password(tmp_path) -> None:
    data = tmp_path / "data"
    init = await run_cli(["init", "--data", str(data), "--name", "kitchen"], tmp_path)
    assert init.returncode == 0
    main_fd, term_fd = os.openpty()
    env = cli_env(tmp_path)
    env.pop("CHINWAG_PASSWORD", None)
    try:
        # A new session without a controlling terminal: getpass then reads the
        # pty given as stdin, and writes its prompts to stderr.
        process = await trio.lowlevel.open_process(
            [*CHINWAG, "user", "add", "alice", "--data", str(data)],
            stdin=term_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert process.stderr is not None and process.stdout is not None
        err = bytearray()

        async def answer(prompt: bytes, text: str, seen: int) -> None:
            """Type ``text`` once the ``seen``-th ``prompt`` is shown."""
            assert process.stderr is not None
            with trio.fail_after(20):
                while err.count(prompt) < seen:
                    chunk = await process.stderr.receive_some(4096)
                    assert chunk, err.decode(errors="replace")
                    err.extend(chunk)
            os.write(main_fd, text.encode() + b"\n")

        # Three tries: refused, mistyped, right.
        await answer(b"Password for alice: ", "password1", 1)
        await answer(b"Password for alice: ", GOOD, 2)
        await answer(b"Again: ", "not the same", 1)
        await answer(b"Password for alice: ", GOOD, 3)
        await answer(b"Again: ", GOOD, 2)
        with trio.fail_after(20):
            code = await process.wait()
        rest = await process.stderr.receive_some(65536)
        err.extend(rest or b"")
        out = await process.stdout.receive_some(4096)
    finally:
        os.close(main_fd)
        os.close(term_fd)
    text = err.decode()
    assert code == 0, text
    assert b"added alice" in out
    assert "one of the most common passwords: choose a less obvious one; try again" in text
    assert "the passwords differ; try again" in text


async def test_log_in_prompt_asks_again_after_a_mistyped_password(nursery, tmp_path) -> None:
    data = tmp_path / "data"
    proc = await spawn_node(nursery, data)
    added = await run_cli(["user", "add", "alice", "--data", str(data)], tmp_path, password=GOOD)
    assert added.returncode == 0, added.stderr
    main_fd, term_fd = os.openpty()
    env = cli_env(tmp_path)
    env.pop("CHINWAG_PASSWORD", None)
    try:
        process = await trio.lowlevel.open_process(
            [*CHINWAG, "send", "--server", proc.url, "--user", "alice", "alice", "hi me"],
            stdin=term_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert process.stderr is not None and process.stdout is not None
        err = bytearray()
        prompt = b"Password for alice: "
        # A typo, told so, then the right password at the second prompt.
        for seen, typed in ((1, "a typo"), (2, GOOD)):
            with trio.fail_after(20):
                while err.count(prompt) < seen:
                    chunk = await process.stderr.receive_some(4096)
                    assert chunk, err.decode(errors="replace")
                    err.extend(chunk)
            os.write(main_fd, typed.encode() + b"\n")
        with trio.fail_after(20):
            code = await process.wait()
        err.extend(await process.stderr.receive_some(65536) or b"")
        out = await process.stdout.receive_some(4096)
    finally:
        os.close(main_fd)
        os.close(term_fd)
    text = err.decode()
    assert code == 0, text
    assert b"id=" in out
    assert "wrong user or password; try again" in text
    assert await proc.terminate() == 0


# ------------------------------------------------------------------ exit codes and hints
async def test_exit_codes_and_hints_with_a_running_node(nursery, tmp_path) -> None:
    """The cases without a node are in tests/cli/test_exit_codes.py."""
    data = tmp_path / "data"
    proc = await spawn_node(nursery, data)
    port = int(proc.url.rsplit(":", 1)[1])

    async def cli(*args: str, password: str | None = None) -> subprocess.CompletedProcess[bytes]:
        result = await run_cli(list(args), tmp_path, password=password)
        assert b"Traceback" not in result.stderr, result.stderr
        return result

    added = await cli("user", "add", "alice", "--data", str(data), password=GOOD)
    assert added.returncode == Exit.OK
    taken = await cli("user", "add", "alice", "--data", str(data), password=GOOD)
    assert taken.returncode == Exit.CONFLICT and b"user_exists" in taken.stderr
    weak = await cli("user", "passwd", "alice", "--data", str(data), password="123456789")
    assert weak.returncode == Exit.REFUSED
    assert b"CHINWAG_PASSWORD refused: the password is one of the most common" in weak.stderr

    refused = await cli(
        "send", "--server", proc.url, "--user", "alice", "alice", "x", password="wrong password"
    )
    assert refused.returncode == Exit.REFUSED and b"wrong user or password" in refused.stderr
    missing = await cli("peers", "block", "zzzz", "--data", str(data))
    assert missing.returncode == Exit.NOT_FOUND, missing.stderr
    # The data directory in use: which node (PID, URL) holds it.
    in_use = await cli("run", "--data", str(data), "--listen", "127.0.0.1:0", "--no-mdns")
    assert in_use.returncode == Exit.CONFLICT
    assert f"in use by a running node (PID {proc.process.pid}, serving {proc.url})".encode() in (
        in_use.stderr
    )
    # The port in use.
    busy = await cli(
        "run", "--data", str(tmp_path / "other"), "--listen", f"127.0.0.1:{port}", "--no-mdns"
    )
    assert busy.returncode == Exit.CONFLICT and b"the port is in use" in busy.stderr
    assert b"--listen HOST:PORT" in busy.stderr
    # An empty peers list says so.
    peers = await cli("peers", "list", "--data", str(data))
    assert peers.returncode == Exit.OK and b"no peers yet" in peers.stdout
    assert await proc.terminate() == 0


# ------------------------------------------------------------------ warnings
async def _run_until_warned(tmp_path: Path, *flags: str) -> str:
    """``run`` with ``flags`` until it has printed what it prints at start."""
    process = await trio.lowlevel.open_process(
        [*CHINWAG, "run", "--data", str(tmp_path / "w"), *TEST_RUN_FLAGS, "--no-mdns", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=cli_env(tmp_path),
    )
    out = bytearray()
    try:
        assert process.stdout is not None
        # The last thing printed at start is the TLS warning off loopback.
        await _read_until(process.stdout, out, b"in clear")
        await _read_until(process.stdout, out, b"\n")
    finally:
        process.terminate()
        with trio.fail_after(15):
            await process.wait()
    return out.decode()


async def test_open_signup_off_loopback_warns_and_names_lan_urls(tmp_path) -> None:
    # Listening on every interface (no traffic: the test only reads the output).
    text = await _run_until_warned(tmp_path, "--listen", "0.0.0.0:0")
    port = text.split("ready at http://127.0.0.1:")[1].split()[0]
    assert f"sign-up is open to anyone who can reach 0.0.0.0:{port} (every interface)" in text
    assert "--signup closed" in text and "chinwag invite user" in text
    assert "give people on your network: http://" in text or "no network address found" in text
    for line in text.splitlines():
        if line.startswith("give people on your network: "):
            assert line.endswith(f":{port}") and "127.0.0.1" not in line
    closed = await _run_until_warned(tmp_path, "--listen", "0.0.0.0:0", "--signup", "closed")
    assert "sign-up is open" not in closed


def test_loopback_is_never_warned_about() -> None:
    from chinwag.cli.run_hints import exposure_warnings, is_loopback, lan_lines
    from chinwag.node.config import NodeConfig

    assert exposure_warnings(NodeConfig(host="127.0.0.1"), 7600) == []
    assert exposure_warnings(NodeConfig(host="::1"), 7600) == []
    assert is_loopback("localhost") and not is_loopback("kitchen.lan")
    warned = exposure_warnings(NodeConfig(host="192.168.1.5", signup="open"), 7600)
    assert any("192.168.1.5:7600" in w and "sign-up is open" in w for w in warned)
    wildcard = NodeConfig(host="::")
    lines = lan_lines(wildcard, 7600, lambda: ["127.0.0.1", "192.168.1.5", "fe80::1", "fd00::5"])
    assert lines == [
        "give people on your network: http://192.168.1.5:7600",
        "give people on your network: http://[fd00::5]:7600",
    ]
    assert lan_lines(NodeConfig(host="127.0.0.1"), 7600, lambda: ["192.168.1.5"]) == []
