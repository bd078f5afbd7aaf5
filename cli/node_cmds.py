"""``chinwag init``, ``chinwag run`` and ``chinwag user ...``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from chinwag.node.admin import AdminOps, AdminUnavailable, admin_request
from chinwag.node.client import leaf_exceptions
from chinwag.node.config import DEFAULT_PORT, NodeConfig, default_data_dir
from chinwag.node.identity import (
    KEY_FILE,
    IdentityError,
    ensure_data_dir,
    init_identity,
    load_identity,
    load_or_init_identity,
)
from chinwag.node.logs import FORMATS, LEVELS, reopen_log_files, setup_logging
from chinwag.node.migrations import SchemaError
from chinwag.node.password_policy import MAX_PASSWORD_CHARS, PasswordPolicy
from chinwag.node.passwords import hash_password
from chinwag.node.peers import check_url
from chinwag.node.seeds import parse_seed
from chinwag.node.store import Store, StoreLocked
from chinwag.protocol.address_record import MAX_RECORD_URLS
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.fingerprint import fingerprint

from . import run_hints
from .common import CliError, fail, protocol_failure, read_new_password
from .exitcodes import Exit

T = TypeVar("T")


def _data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=None, help=f"data directory (default {default_data_dir()})"
    )


def _public_urls(values: list[str]) -> tuple[str, ...]:
    """``--public-url`` values, checked before the node starts."""
    if len(values) > MAX_RECORD_URLS:
        raise CliError(f"--public-url: at most {MAX_RECORD_URLS} URLs", Exit.USAGE)
    try:
        return tuple(check_url(value) for value in values)
    except ProtocolError as exc:
        raise CliError(f"--public-url: {exc.message}", Exit.USAGE) from exc


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("init", help="create the node's key and name")
    _data_arg(p)
    p.add_argument("--name", help="the node's human name (default: host name)")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser(
        "run",
        help="run the node (initialises it on first run)",
        description="Every flag can also be set in the config file (DATA/chinwag.toml or "
        "--config PATH) under its name without dashes, e.g. 'send-rate = 50'; flags win.",
    )
    _data_arg(p)
    p.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="TOML config file (default: chinwag.toml in the data directory, if there)",
    )
    p.add_argument("--name", help="node name, used when initialising")
    p.add_argument(
        "--listen", default=f"127.0.0.1:{DEFAULT_PORT}", help="HOST:PORT (default %(default)s)"
    )
    p.add_argument("--signup", choices=("open", "closed"), default="open")
    p.add_argument("--send-rate", type=float, help="messages/s allowed per device")
    p.add_argument("--send-burst", type=int, help="burst allowed per device")
    p.add_argument("--max-conn-per-address", type=int, help="connections allowed per address")
    p.add_argument(
        "--signups-per-address", type=int, help="sign-ups per address per hour (default 10)"
    )
    p.add_argument(
        "--signups-per-node", type=int, help="sign-ups per hour, node-wide (default 100)"
    )
    p.add_argument(
        "--login-failures-per-account",
        type=int,
        help="failed log-ins per account per 5 minutes (default 10)",
    )
    p.add_argument(
        "--login-failures-per-address",
        type=int,
        help="failed log-ins per address per 5 minutes (default 30)",
    )
    p.add_argument(
        "--min-password-length",
        type=int,
        metavar="N",
        help="shortest new password accepted, in characters (default 8; "
        "very common passwords are refused at any length)",
    )
    p.add_argument(
        "--kdf-threads", type=int, help="password hashes run at once, 64 MiB each (default 2)"
    )
    p.add_argument(
        "--kdf-queue", type=int, help="password checks waiting per lane before 429 (default 32)"
    )
    p.add_argument(
        "--max-sessions-per-token",
        type=int,
        help="live WebSocket sessions one token may hold (default 8)",
    )
    p.add_argument(
        "--max-unauthenticated",
        type=int,
        help="connections not yet logged in, node-wide; oldest idle dropped first (default 1024)",
    )
    p.add_argument(
        "--read-rate",
        type=float,
        help="decoding work read per account, units/s (~1 us each; default 50000)",
    )
    p.add_argument("--read-burst", type=int, help="burst of --read-rate (default 200000)")
    p.add_argument(
        "--history-rate",
        type=float,
        help="convs/history/read/search requests/s allowed per device (default 20)",
    )
    p.add_argument("--history-burst", type=int, help="burst of --history-rate (default 60)")
    p.add_argument(
        "--delete-window",
        type=float,
        metavar="SECONDS",
        help="how long after sending a user may delete a message for everyone "
        "(default 172800 = 48 h; 0 = no limit)",
    )
    p.add_argument(
        "--typing-min-interval",
        type=float,
        help="one 'typing start' per device per this many seconds (default 2)",
    )
    p.add_argument(
        "--typing-expiry", type=float, help="an unrenewed 'typing start' ends after (s; default 6)"
    )
    p.add_argument("--heartbeat", type=float, help="heartbeat interval told to devices (s)")
    p.add_argument("--heartbeat-deadline", type=float, help="drop a silent device after (s)")
    p.add_argument(
        "--link-heartbeat",
        type=float,
        metavar="SECONDS",
        help="federation link keep-alive interval (default 3x --heartbeat: 30 s)",
    )
    p.add_argument(
        "--link-heartbeat-deadline",
        type=float,
        metavar="SECONDS",
        help="end a silent federation link after (default 3x --heartbeat-deadline: 90 s)",
    )
    p.add_argument("--send-timeout", type=float, help="drop a device not reading for (s)")
    p.add_argument(
        "--outbox-max-age",
        type=float,
        metavar="SECONDS",
        help="fail messages queued for an unreachable peer after (s; default 7 days)",
    )
    p.add_argument(
        "--route-timeout",
        type=float,
        metavar="SECONDS",
        help="fail messages to a node with no link, address or relay after (s; default 300)",
    )
    p.add_argument(
        "--no-relay",
        action="store_true",
        help="do not pass messages between trusted peers that cannot link to each other",
    )
    p.add_argument(
        "--outbox-max-entries",
        type=int,
        metavar="N",
        help="entries queued for one peer before sends get unavailable (default 200000)",
    )
    p.add_argument(
        "--outbox-max-bytes",
        type=int,
        metavar="BYTES",
        help="bytes queued for one peer before sends get unavailable (default 256 MiB)",
    )
    p.add_argument(
        "--user-quota",
        type=int,
        metavar="BYTES",
        help="bytes one user's sends may store per --user-quota-window (default 256 MiB; 0: off)",
    )
    p.add_argument(
        "--user-quota-window",
        type=float,
        metavar="SECONDS",
        help="the window of --user-quota (default 1 day)",
    )
    p.add_argument(
        "--min-free",
        type=int,
        metavar="BYTES",
        help="free disk space kept in reserve: below it sends get unavailable "
        "(default 256 MiB; 0: none)",
    )
    p.add_argument(
        "--max-file-size",
        type=int,
        metavar="BYTES",
        help="bytes of one uploaded file (default 25 MiB)",
    )
    p.add_argument(
        "--file-quota",
        type=int,
        metavar="BYTES",
        help="bytes of files one user may upload per --file-quota-window (default 1 GiB; 0: off)",
    )
    p.add_argument(
        "--file-quota-window",
        type=float,
        metavar="SECONDS",
        help="the window of --file-quota (default 1 day)",
    )
    p.add_argument(
        "--max-uploads",
        type=int,
        metavar="N",
        help="uploads received at once, node-wide, before 429 (default 64)",
    )
    p.add_argument(
        "--keep-exif",
        action="store_const",
        const=True,
        help="keep EXIF metadata (GPS position, camera) in uploaded photos (default: removed)",
    )
    p.add_argument(
        "--max-pending-peers",
        type=int,
        metavar="N",
        help="link requests from unknown nodes kept for approval (default 256)",
    )
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="URL#NODEID",
        help="seed peer, trusted with its pinned key (repeatable)",
    )
    p.add_argument(
        "--public-url",
        action="append",
        default=[],
        metavar="URL",
        help="URL peers should dial, gossiped in the address record (repeatable, at most 4; "
        "default: the listen address, or the interface addresses on 0.0.0.0/::)",
    )
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS/WSS: cert chain")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    p.add_argument("--trust-lan", action="store_true", help="trust peers found by mDNS")
    p.add_argument(
        "--push-allow-private",
        action="store_true",
        help="allow push endpoints on private LAN addresses (never loopback or link-local)",
    )
    p.add_argument(
        "--push-host-rate",
        type=float,
        metavar="N",
        help="push POSTs per second to one host, node-wide (default 10, burst 50)",
    )
    p.add_argument(
        "--gossip-allow-private",
        action="store_true",
        help="dial private-range addresses learned only by gossip",
    )
    p.add_argument("--no-mdns", action="store_true", help="no mDNS announce/browse")
    p.add_argument(
        "--log-level", choices=LEVELS, default=None, help="what to log (default info; -v: debug)"
    )
    p.add_argument(
        "--log-file", type=Path, metavar="PATH", help="log here (default stderr); SIGHUP reopens it"
    )
    p.add_argument(
        "--log-format", choices=FORMATS, default="text", help="text, or json: one object a line"
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve /metrics on this address only (default: on the main port, to loopback)",
    )
    p.add_argument(
        "--mdns-interface", action="append", default=[], help="announce/browse only here"
    )
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("user", help="manage local users")
    usub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("add", "create a user (password from CHINWAG_PASSWORD or a prompt)"),
        ("remove", "delete a user and their history"),
        ("passwd", "set a user's password (revokes their sessions)"),
    ):
        q = usub.add_parser(action, help=text)
        q.add_argument("name")
        _data_arg(q)
        q.add_argument("--json", action="store_true")
        q.set_defaults(handler=cmd_user)
    q = usub.add_parser("list", help="list users")
    _data_arg(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_user, name=None)


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data).expanduser() if args.data else default_data_dir()


def cmd_init(args: argparse.Namespace) -> int:
    try:
        identity = init_identity(_data_dir(args), args.name)
    except IdentityError as exc:
        # A key already there is a conflict; anything else is a bad --name.
        taken = (_data_dir(args) / KEY_FILE).exists()
        raise CliError(str(exc), Exit.CONFLICT if taken else Exit.USAGE) from exc
    print(identity.id)
    print(f"initialised node {identity.name} in {_data_dir(args)}", file=sys.stderr)
    return 0


def _parse_listen(text: str, flag: str = "--listen") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        fail(f"{flag} wants HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        fail(f"bad port in {flag} {text!r}")
    if not 0 <= number <= 65535:
        fail(f"bad port in {flag} {text!r}")
    return host, number


#: ``run`` flags (argparse dest) that set a NodeConfig field of another name or
#: only when given; ``config show`` reads the effective values through it too.
CONFIG_FIELDS: tuple[tuple[str, str], ...] = (
    ("send_rate", "send_rate"),
    ("send_burst", "send_burst"),
    ("max_conn_per_address", "max_connections_per_address"),
    ("signups_per_address", "signups_per_address"),
    ("signups_per_node", "signups_per_node"),
    ("login_failures_per_account", "login_failures_per_account"),
    ("login_failures_per_address", "login_failures_per_address"),
    ("kdf_threads", "kdf_threads"),
    ("kdf_queue", "kdf_queue"),
    ("max_sessions_per_token", "max_sessions_per_token"),
    ("max_unauthenticated", "max_unauthenticated"),
    ("read_rate", "read_rate"),
    ("read_burst", "read_burst"),
    ("history_rate", "history_rate"),
    ("history_burst", "history_burst"),
    ("delete_window", "delete_window"),
    ("typing_min_interval", "typing_min_interval"),
    ("typing_expiry", "typing_expiry"),
    ("heartbeat", "heartbeat_interval"),
    ("heartbeat_deadline", "heartbeat_deadline"),
    ("link_heartbeat", "link_heartbeat_interval"),
    ("link_heartbeat_deadline", "link_heartbeat_deadline"),
    ("send_timeout", "send_timeout"),
    ("outbox_max_age", "outbox_max_age"),
    ("outbox_max_entries", "outbox_max_entries"),
    ("route_timeout", "route_timeout"),
    ("outbox_max_bytes", "outbox_max_bytes"),
    ("push_host_rate", "push_host_rate"),
    ("user_quota", "user_quota_bytes"),
    ("user_quota_window", "user_quota_window"),
    ("min_free", "min_free_bytes"),
    ("max_file_size", "max_file_bytes"),
    ("file_quota", "file_quota_bytes"),
    ("file_quota_window", "file_quota_window"),
    ("keep_exif", "keep_exif"),
    ("max_uploads", "max_uploads"),
    ("max_pending_peers", "max_pending_peers"),
    ("min_password_length", "min_password_length"),
)


def node_config(args: argparse.Namespace) -> NodeConfig:
    """The NodeConfig of ``run``'s (merged) settings; CliError if one is wrong."""
    data_dir = _data_dir(args)
    host, port = _parse_listen(args.listen)
    overrides: dict[str, Any] = {}
    if args.metrics_listen is not None:
        overrides["metrics_listen"] = _parse_listen(args.metrics_listen, "--metrics-listen")
    for flag, field in CONFIG_FIELDS:
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    if overrides.get("max_file_bytes", 1) < 1:
        fail("--max-file-size must be at least 1")
    if overrides.get("max_uploads", 1) < 1:
        fail("--max-uploads must be at least 1")
    for field in ("outbox_max_entries", "outbox_max_bytes"):
        if overrides.get(field, 1) < 1:
            fail(f"--{field.replace('_', '-')} must be at least 1")
    if overrides.get("route_timeout", 1) <= 0:
        fail("--route-timeout must be above 0")
    if overrides.get("push_host_rate", 1) <= 0:
        raise CliError("--push-host-rate: a number of POSTs per second above 0", Exit.USAGE)
    if not 1 <= overrides.get("min_password_length", 8) <= MAX_PASSWORD_CHARS:
        fail(f"--min-password-length: from 1 to {MAX_PASSWORD_CHARS} characters")
    for field in ("kdf_threads", "kdf_queue", "max_sessions_per_token"):
        if field in overrides and overrides[field] < (1 if field != "kdf_queue" else 0):
            fail(f"--{field.replace('_', '-')} is too small")
    if "heartbeat_interval" in overrides and "heartbeat_deadline" not in overrides:
        overrides["heartbeat_deadline"] = overrides["heartbeat_interval"] * 3
    try:
        seeds = tuple(parse_seed(text) for text in args.peer)
    except ProtocolError as exc:
        raise CliError(f"--peer: {exc.message}", Exit.USAGE) from exc
    config = NodeConfig(
        data_dir=data_dir,
        host=host,
        port=port,
        signup=args.signup,
        seeds=seeds,
        trust_lan=args.trust_lan,
        relay=not args.no_relay,
        push_allow_private=args.push_allow_private,
        gossip_allow_private=args.gossip_allow_private,
        mdns=not args.no_mdns,
        mdns_interfaces=tuple(args.mdns_interface),
        public_urls=_public_urls(args.public_url),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        **overrides,
    )
    run_hints.check_tls_files(config)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from chinwag.node.app import Node

    config = node_config(args)
    data_dir = config.data_dir
    try:
        ensure_data_dir(data_dir)
        identity = load_or_init_identity(data_dir, args.name)
    except IdentityError as exc:
        # An unreadable key is the store's problem; without one, a bad --name.
        broken = (data_dir / KEY_FILE).exists()
        raise CliError(str(exc), Exit.STORAGE if broken else Exit.USAGE) from exc
    except OSError as exc:
        raise run_hints.data_dir_failure(data_dir, exc) from exc

    level = args.log_level or ("debug" if args.verbose else "info")
    try:
        setup_logging(level, args.log_file, args.log_format)
    except OSError as exc:
        raise CliError(f"cannot open --log-file {args.log_file}: {exc.strerror or exc}") from exc

    async def main() -> None:
        node = Node(config, identity)
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                running = await nursery.start(node.run)
                print(
                    f"chinwag node {running.identity.name} ready at {running.url}\n"
                    + ready_lines(node, running.url),
                    flush=True,
                )
                for line in run_hints.lan_lines(config, running.port):
                    print(line, flush=True)
                for warning in run_hints.exposure_warnings(config, running.port):
                    print(f"chinwag: warning: {warning}", file=sys.stderr, flush=True)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        try:
                            reopen_log_files()  # logrotate moved the file: write a new one
                        except OSError as exc:  # keep logging to the old file
                            print(f"chinwag: cannot reopen the log file: {exc}", file=sys.stderr)
                        continue
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        for leaf in leaf_exceptions(group):
            if isinstance(leaf, SchemaError):
                raise CliError(str(leaf), Exit.STORAGE) from leaf
            failure = run_hints.start_failure(config, leaf)
            if failure is not None:
                raise failure from leaf
        raise
    except Exception as exc:
        failure = run_hints.start_failure(config, exc)
        if failure is None:
            raise
        raise failure from exc
    print("chinwag: stopped", file=sys.stderr)
    return 0


def ready_lines(node: Any, url: str) -> str:
    """The full id, the fingerprint, and a line another admin can paste."""
    own = node.federation.own_urls
    link_url = own[0] if own else url
    identity = node.identity
    return (
        f"  node id      {identity.id}\n"
        f"  fingerprint  {fingerprint(identity.key.public)}\n"
        "  to link another node to this one, run there:\n"
        f"    chinwag peers add {link_url}#{identity.id}\n"
        "  or make a one-time invitation here: chinwag invite peer"
    )


async def with_admin(data_dir: Path, cmd: str, cmd_args: dict[str, Any]) -> dict[str, Any]:
    """Run an admin command on the running node, or on the store if none runs."""
    try:
        return await admin_request(data_dir, cmd, cmd_args)
    except AdminUnavailable:
        pass
    try:
        identity = load_identity(data_dir)
    except IdentityError as exc:
        raise CliError(str(exc), Exit.NOT_FOUND) from exc
    store = Store(data_dir, identity.key)
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(store.run)
        except StoreLocked as exc:
            raise CliError(
                f"{data_dir} is locked by a node that does not answer on its admin socket"
                f"{run_hints.lock_holder(data_dir)}",
                Exit.UNREACHABLE,
            ) from exc
        except OSError as exc:
            raise run_hints.data_dir_failure(data_dir, exc) from exc
        try:
            return await AdminOps(store).call(cmd, cmd_args)
        except ProtocolError as exc:
            if exc.code != ErrorCode.UNAVAILABLE:
                raise
            # Offline, "unavailable" means: this needs the running node.
            raise CliError(
                f"{exc.message}: start it with 'chinwag run --data {data_dir}'", Exit.UNREACHABLE
            ) from exc
        finally:
            nursery.cancel_scope.cancel()


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """trio.run that surfaces a lone error from nurseries bare."""
    try:
        return trio.run(fn)
    except BaseExceptionGroup as group:
        leaves = leaf_exceptions(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def admin_call(args: argparse.Namespace, cmd: str, cmd_args: dict[str, Any]) -> dict[str, Any]:
    """One admin-socket command for ``args.data``; a refusal exits with its code."""

    async def go() -> dict[str, Any]:
        return await with_admin(_data_dir(args), cmd, cmd_args)

    try:
        return run_async(go)
    except ProtocolError as exc:
        raise protocol_failure(exc) from exc


def cmd_user(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    action = args.action
    cmd_args: dict[str, Any] = {}
    if args.name is not None:
        cmd_args["user"] = args.name
    if action in ("add", "passwd"):
        policy = PasswordPolicy(password_min_length(data_dir))
        password = read_new_password(
            f"Password for {args.name}: ", lambda text: policy.problem(text, args.name)
        )

        async def hashed() -> str:
            return await hash_password(password)

        cmd_args["pw_hash"] = run_async(hashed)

    async def go() -> dict[str, Any]:
        return await with_admin(data_dir, f"user.{action}", cmd_args)

    try:
        result = run_async(go)
    except ProtocolError as exc:
        raise protocol_failure(exc) from exc
    if args.json:
        print(json.dumps(result))
    elif action == "list":
        for user in result["users"]:
            print(f"{user['user']}\tdevices={user['devices']}\tqueue_head={user['queue_head']}")
    else:
        past = {"add": "added", "remove": "removed", "passwd": "password set for"}[action]
        print(f"{past} {result['user']}")
    return 0


def password_min_length(data_dir: Path) -> int:
    """The node's minimum password length: its config file's, else the default.

    ``user add``/``passwd`` hash on this side, so they check here with the
    setting the node's config file gives (a ``--min-password-length`` typed on
    the node's command line is not known here; put it in the file).
    """
    from .settings import CONFIG_NAME, read_file

    table = read_file(data_dir / CONFIG_NAME, named=False) or {}
    value = table.get("min-password-length")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return NodeConfig.min_password_length


__all__ = ["node_config", "register", "run_async", "with_admin"]
