"""Shared CLI plumbing: errors as one line, passwords, the cached device token."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from chinwag.node.client import ClientError, LoginResult, login
from chinwag.protocol.errors import ProtocolError

from .exitcodes import Exit, for_error_code

#: Prompts for a new password before giving up.
NEW_PASSWORD_TRIES = 3
#: Log-in prompts before giving up (each refusal counts against the node's
#: log-in failure limit, --login-failures-per-account, default 10).
LOGIN_TRIES = 3


class CliError(Exception):
    """A user-facing failure: printed as one line, with an exit code (cli/exitcodes.py)."""

    def __init__(self, message: str, exit_code: int = Exit.ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = Exit.USAGE) -> NoReturn:
    """Stop with ``message``; by default a usage error (exit 2)."""
    raise CliError(message, exit_code)


def protocol_failure(exc: ProtocolError) -> CliError:
    """A node's refusal as a CliError with the exit code its error code maps to."""
    return CliError(f"{exc.message} ({exc.code})", for_error_code(str(exc.code)))


def read_password(prompt: str = "Password: ") -> str:
    """``CHINWAG_PASSWORD`` if set, else a prompt on the terminal (for log-in)."""
    env = os.environ.get("CHINWAG_PASSWORD")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        fail("no password: set CHINWAG_PASSWORD or run in a terminal")
    return getpass.getpass(prompt)


def read_new_password(prompt: str, problem: Callable[[str], str | None]) -> str:
    """A new password: ``CHINWAG_PASSWORD`` if set, else typed twice at a prompt.

    ``problem`` says why a password is refused (None: accepted). At the
    prompt, a refused password or a mismatched repeat is reported and asked
    for again, up to :data:`NEW_PASSWORD_TRIES` times.
    """
    env = os.environ.get("CHINWAG_PASSWORD")
    if env is not None:
        why = problem(env)
        if why is not None:
            raise CliError(f"CHINWAG_PASSWORD refused: {why}", Exit.REFUSED)
        return env
    if not sys.stdin.isatty():
        fail("no password: set CHINWAG_PASSWORD or run in a terminal")
    for _ in range(NEW_PASSWORD_TRIES):
        password = getpass.getpass(prompt)
        why = problem(password)
        if why is not None:
            print(f"{why}; try again", file=sys.stderr, flush=True)
            continue
        if getpass.getpass("Again: ") != password:
            print("the passwords differ; try again", file=sys.stderr, flush=True)
            continue
        return password
    raise CliError(f"no password set after {NEW_PASSWORD_TRIES} tries", Exit.USAGE)


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "chinwag"


def _cache_path() -> Path:
    return config_dir() / "sessions.json"


def _load_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(data: dict[str, Any]) -> None:
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _cache_key(server: str, user: str, device: str | None) -> str:
    return f"{server.rstrip('/')}|{user}|{device or ''}"


def cached_login(server: str, user: str, device: str | None) -> LoginResult | None:
    entry = _load_cache().get(_cache_key(server, user, device))
    if not isinstance(entry, dict):
        return None
    try:
        return LoginResult(**entry)
    except TypeError:
        return None


def forget_login(server: str, user: str, device: str | None) -> None:
    """Drop a refused token; keep its device id for the next log-in to resume."""
    data = _load_cache()
    entry = data.pop(_cache_key(server, user, device), None)
    if entry is None:
        return
    if isinstance(entry, dict) and isinstance(entry.get("device"), str):
        data[_cache_key(server, user, device)] = {"device": entry["device"]}
    _save_cache(data)


async def fresh_login(server: str, user: str, device: str | None) -> LoginResult:
    """Log in with the password and cache the token (file mode 0600).

    Without ``--device``, a log-in after a revoked token resumes the device of
    the cached entry, so its queue cursor and acks carry on instead of a new
    device starting from seq 0.
    """
    data = _load_cache()
    previous = data.get(_cache_key(server, user, device))
    if device is None and isinstance(previous, dict) and isinstance(previous.get("device"), str):
        device = previous["device"]
        key_device = None
    else:
        key_device = device
    # A password typed at the prompt is asked for again after a refusal (a
    # typo); one from CHINWAG_PASSWORD is not (a script would loop).
    typed = os.environ.get("CHINWAG_PASSWORD") is None
    for attempt in range(1, LOGIN_TRIES + 1):
        password = read_password(f"Password for {user}: ")
        try:
            result = await login(server, user, password, device)
            break
        except ClientError as exc:
            if not typed or exc.code != "unauthorized" or attempt == LOGIN_TRIES:
                raise
            print(f"{exc.message}; try again", file=sys.stderr, flush=True)
    data = _load_cache()
    data[_cache_key(server, user, key_device)] = result.__dict__
    _save_cache(data)
    return result


def client_error_message(exc: ClientError) -> str:
    return f"{exc.message} ({exc.code})"
