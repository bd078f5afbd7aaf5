"""What ``chinwag run`` tells the admin: warnings about exposure, the LAN
URLs to hand out, and start failures turned into one line with a hint."""

from __future__ import annotations

import errno
import getpass
import ipaddress
from collections.abc import Callable
from pathlib import Path

import trio

from chinwag.node.admin import AdminUnavailable, admin_request
from chinwag.node.app import WILDCARD_HOSTS, advertised_urls, interface_addresses
from chinwag.node.config import NodeConfig
from chinwag.node.store import StoreLocked
from chinwag.protocol.errors import ProtocolError

from .common import CliError
from .exitcodes import Exit

#: How long a failed start waits for the running node's admin socket to say who it is.
HOLDER_TIMEOUT = 2.0


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (a name other than localhost: no)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _where(config: NodeConfig, port: int) -> str:
    shown = f"[{config.host}]" if ":" in config.host else config.host
    every = " (every interface)" if config.host in WILDCARD_HOSTS else ""
    return f"{shown}:{port}{every}"


def exposure_warnings(config: NodeConfig, port: int) -> list[str]:
    """Warnings for a node reachable from other machines (``port``: the one bound).

    The TLS warning comes last (tests read up to it)."""
    if is_loopback(config.host):
        return []
    out = []
    if config.signup == "open":
        out.append(
            f"sign-up is open to anyone who can reach {_where(config, port)}: close it with "
            '--signup closed (or signup = "closed" in the config file) and create '
            "accounts with 'chinwag user add NAME', or invite people with 'chinwag invite user'"
        )
    if config.tls_cert is None:
        out.append(
            f"listening on {config.host} without TLS; "
            "passwords and messages cross the network in clear"
        )
    return out


def lan_lines(
    config: NodeConfig, port: int, addresses: Callable[[], list[str]] = interface_addresses
) -> list[str]:
    """On a wildcard listen address: the URLs people on the network can open."""
    if config.host not in WILDCARD_HOSTS:
        return []
    urls = advertised_urls(config.host, port, (), addresses, scheme=config.scheme)
    if not urls:
        return ["no network address found on this machine: people elsewhere cannot reach it yet"]
    return [f"give people on your network: {url}" for url in urls]


def check_tls_files(config: NodeConfig) -> None:
    """Both TLS files given, present and usable; else which one is wrong."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise CliError("give both --tls-cert and --tls-key, or neither", Exit.USAGE)
    if config.tls_cert is None or config.tls_key is None:
        return
    for flag, path in (("--tls-cert", config.tls_cert), ("--tls-key", config.tls_key)):
        if not path.is_file():
            raise CliError(f"{flag}: no such file {path}", Exit.USAGE)
    from chinwag.node.server import tls_context

    try:
        tls_context(config)  # a bad file fails here, in one line, not mid-start
    except (OSError, ValueError) as exc:
        raise CliError(
            f"cannot use --tls-cert/--tls-key ({config.tls_cert}, {config.tls_key}): {exc} "
            "(the key must be the certificate's, both in PEM)",
            Exit.USAGE,
        ) from exc


def data_dir_failure(data_dir: Path, exc: OSError) -> CliError:
    """The data directory cannot be created or written."""
    what = exc.filename or data_dir
    return CliError(
        f"cannot write the data directory {data_dir} ({what}: {exc.strerror or exc}); "
        f"the node runs as user {getpass.getuser()}: give it a directory it owns, "
        "or choose another with --data DIR",
        Exit.STORAGE,
    )


def lock_holder(data_dir: Path) -> str:
    """`` (PID n)`` of the process holding the store lock, from the lock file."""
    try:
        pid = int((data_dir / "store.lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return ""
    return f" (PID {pid})"


def in_use(data_dir: Path) -> CliError:
    """The data directory is another node's: say which node, where."""

    async def ask() -> dict[str, object]:
        with trio.move_on_after(HOLDER_TIMEOUT):
            return await admin_request(data_dir, "status", {})
        return {}

    try:
        status = trio.run(ask)
    except (AdminUnavailable, ProtocolError, OSError):
        status = {}
    pid, url = status.get("pid"), status.get("url")
    if pid is not None and url is not None:
        holder = f" (PID {pid}, serving {url})"
    else:
        holder = lock_holder(data_dir)
    return CliError(
        f"{data_dir} is in use by a running node{holder}: stop it first, "
        "or give this node another --data directory",
        Exit.CONFLICT,
    )


def listen_failure(config: NodeConfig, exc: OSError) -> CliError:
    """The listening socket could not be opened."""
    where = f"{config.host}:{config.port}"
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return CliError(
            f"cannot listen on {where}: the port is in use (another chinwag node or program "
            "listens there); stop it, or choose another port with --listen HOST:PORT",
            Exit.CONFLICT,
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return CliError(
            f"cannot listen on {where}: {config.host} is not an address of this machine "
            "(use 0.0.0.0 for every interface)",
            Exit.USAGE,
        )
    if exc.errno == errno.EACCES and config.port < 1024:
        return CliError(
            f"cannot listen on {where}: ports below 1024 need privileges; "
            "use a port from 1024 up (the default is 7600)",
            Exit.USAGE,
        )
    return CliError(f"cannot listen on {where}: {reason}", Exit.ERROR)


def start_failure(config: NodeConfig, exc: BaseException) -> CliError | None:
    """A failed start as one line with a hint; None if it is not one we know."""
    if isinstance(exc, StoreLocked):
        return in_use(config.data_dir)
    if isinstance(exc, OSError):
        # File-system errors name their file; a failed listen does not.
        if exc.filename is not None:
            return data_dir_failure(config.data_dir, exc)
        return listen_failure(config, exc)
    import lmdb

    if isinstance(exc, lmdb.Error):
        return CliError(f"the store in {config.data_dir} failed: {exc}", Exit.STORAGE)
    return None


__all__ = [
    "check_tls_files",
    "data_dir_failure",
    "exposure_warnings",
    "in_use",
    "is_loopback",
    "lan_lines",
    "lock_holder",
    "start_failure",
]
