"""Exit codes and hints of the failures that need no running node, and
``config check``/``config show``, through the CLI's own ``main`` in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from chinwag.cli.__main__ import main
from chinwag.cli.exitcodes import Exit, for_error_code

GOOD = "a good long password"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    monkeypatch.delenv("CHINWAG_PASSWORD", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_the_codes_are_distinct() -> None:
    values = [member.value for member in Exit]
    assert len(values) == len(set(values))
    assert (Exit.USAGE, Exit.UNREACHABLE, Exit.REFUSED) == (2, 3, 4)
    assert (Exit.NOT_FOUND, Exit.CONFLICT, Exit.STORAGE) == (5, 6, 7)
    assert for_error_code("unauthorized") == Exit.REFUSED
    assert for_error_code("weak_password") == Exit.REFUSED
    assert for_error_code("user_exists") == Exit.CONFLICT
    assert for_error_code("no_such_user") == Exit.NOT_FOUND
    assert for_error_code("rate_limited") == Exit.ERROR


def test_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "run", "--no-such-flag")[0] == Exit.USAGE
    code, _, err = run(capsys, "run", "--data", str(tmp_path / "d"), "--listen", "nonsense")
    assert code == Exit.USAGE and "--listen wants HOST:PORT" in err
    code, _, err = run(capsys, "run", "--data", str(tmp_path / "d"), "--min-password-length", "0")
    assert code == Exit.USAGE and "--min-password-length" in err


def test_unreachable(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHINWAG_PASSWORD", GOOD)
    code, _, err = run(capsys, "send", "--server", "http://127.0.0.1:9", "--user", "a", "b", "x")
    assert code == Exit.UNREACHABLE and "cannot reach" in err


def test_not_initialised_is_not_found(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "user", "list", "--data", str(tmp_path / "never"))
    assert code == Exit.NOT_FOUND and "not initialised" in err


def test_status_without_a_running_node_is_unreachable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "d"
    assert run(capsys, "init", "--data", str(data), "--name", "kitchen")[0] == Exit.OK
    code, _, err = run(capsys, "status", "--data", str(data))
    assert code == Exit.UNREACHABLE and "the node is not running: start it with" in err
    # init over an existing key: a conflict.
    assert run(capsys, "init", "--data", str(data))[0] == Exit.CONFLICT


def test_data_directory_not_writable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    data = tmp_path / "a-file" / "data"
    code, _, err = run(capsys, "run", "--data", str(data), "--no-mdns")
    assert code == Exit.STORAGE
    assert f"cannot write the data directory {data}" in err and "--data DIR" in err


def test_missing_tls_files_are_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    data = str(tmp_path / "d")
    code, _, err = run(
        capsys, "run", "--data", data, "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert code == Exit.USAGE and f"--tls-cert: no such file {cert}" in err
    cert.write_text("not a certificate")
    code, _, err = run(
        capsys, "run", "--data", data, "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert code == Exit.USAGE and f"--tls-key: no such file {key}" in err
    key.write_text("not a key")
    code, _, err = run(
        capsys, "run", "--data", data, "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert code == Exit.USAGE and "cannot use --tls-cert" in err
    code, _, err = run(capsys, "run", "--data", data, "--tls-cert", str(cert))
    assert code == Exit.USAGE and "give both" in err


def test_weak_password_from_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "d"
    assert run(capsys, "init", "--data", str(data), "--name", "kitchen")[0] == Exit.OK
    monkeypatch.setenv("CHINWAG_PASSWORD", "short")
    code, _, err = run(capsys, "user", "add", "alice", "--data", str(data))
    assert code == Exit.REFUSED and "CHINWAG_PASSWORD refused: the password is too short" in err
    monkeypatch.setenv("CHINWAG_PASSWORD", "alice")
    (data / "chinwag.toml").write_text("min-password-length = 4\n")
    code, _, err = run(capsys, "user", "add", "alice", "--data", str(data))
    assert code == Exit.REFUSED and "the password is the user name" in err


def test_config_check_and_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, out, _ = run(capsys, "config", "check", "--data", str(data))
    assert code == Exit.OK and "defaults apply" in out
    data.mkdir()
    path = data / "chinwag.toml"
    path.write_text('send-rate = 5\nsignup = "closed"\npeer = []\n')
    code, out, err = run(capsys, "config", "check", "--data", str(data))
    assert code == Exit.OK, err
    assert f"{path}: ok (3 settings)" in out

    code, out, err = run(capsys, "config", "show", "--data", str(data), "--", "--send-rate", "7")
    assert code == Exit.OK, err
    lines = {line.split(" = ")[0]: line for line in out.splitlines()}
    assert lines["send-rate"].endswith("# flag") and "= 7.0 " in lines["send-rate"]
    assert lines["signup"].endswith("# file") and '"closed"' in lines["signup"]
    assert lines["send-burst"].endswith("# default") and "= 200 " in lines["send-burst"]
    assert lines["heartbeat-deadline"].endswith("# default") and "= 30.0 " in out
    assert lines["data"].endswith("# flag") and str(data) in lines["data"]
    # Defaults that follow from other settings show what they come to.
    assert "link-heartbeat = 30.0 " in lines["link-heartbeat"]
    assert "link-heartbeat-deadline = 90.0 " in lines["link-heartbeat-deadline"]
    assert 'log-level = "info" ' in lines["log-level"]

    # Checks beyond types: what `run` itself would refuse.
    path.write_text('listen = "no-port-here"\n')
    code, _, err = run(capsys, "config", "check", "--config", str(path))
    assert code == Exit.USAGE and f"{path}: --listen wants HOST:PORT" in err
    path.write_text("kdf-threads = 'two'\n")
    code, _, err = run(capsys, "config", "check", "--config", str(path))
    assert code == Exit.USAGE and "kdf-threads is an integer, not a string" in err
    code, _, err = run(capsys, "config", "check", "--config", str(tmp_path / "no.toml"))
    assert code == Exit.USAGE and "no such config file" in err
    # --config and --data name the same thing: one or the other.
    code, _, err = run(capsys, "config", "check", "--config", str(path), "--data", str(data))
    assert code == Exit.USAGE
