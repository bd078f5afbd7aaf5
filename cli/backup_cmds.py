"""``chinwag backup``, ``chinwag restore`` and ``chinwag export``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from chinwag.node.admin import AdminOps, AdminUnavailable, admin_request
from chinwag.node.backup import BackupError, check_empty_target, offline_backup, restore_backup
from chinwag.node.history import MAX_HISTORY_PAGE, message_json, starts_history
from chinwag.node.identity import IdentityError, load_identity
from chinwag.node.store import Store, StoreLocked
from chinwag.protocol.errors import ProtocolError

from .chat_cmds import print_json_item, queue_frames, session
from .common import CliError
from .node_cmds import _data_arg, _data_dir, run_async

_Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

#: How long ``backup`` waits for the running node to finish the copy.
BACKUP_TIMEOUT = 6 * 3600.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("backup", help="copy the node's data into a new directory (running or not)")
    p.add_argument("dest", metavar="DEST", type=Path, help="a new or empty directory")
    _data_arg(p)
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(handler=cmd_backup)

    p = sub.add_parser("restore", help="make a data directory from a backup")
    p.add_argument("src", metavar="SRC", type=Path, help="a directory made by 'chinwag backup'")
    _data_arg(p)
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(handler=cmd_restore)

    p = sub.add_parser(
        "export", help="print a user's history as JSON lines (what 'tail --json' prints)"
    )
    p.add_argument("--user", required=True, help="whose history")
    p.add_argument(
        "--since",
        default="0",
        metavar="SEQ|TIME",
        help="after this seq (as tail), or from this ISO time on (2026-11-30, 2026-11-30T12:00)",
    )
    p.add_argument("--server", help="as the user: log in to this node (http://host:port)")
    p.add_argument("--device", help="with --server: device name")
    _data_arg(p)
    p.set_defaults(handler=cmd_export)


# ------------------------------------------------------------------ backup


def cmd_backup(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    dest = Path(args.dest).expanduser().absolute()
    try:
        check_empty_target(dest, "backup destination")
    except BackupError as exc:
        raise CliError(str(exc)) from exc

    async def online() -> dict[str, Any]:
        return await admin_request(data_dir, "backup", {"dest": str(dest)}, BACKUP_TIMEOUT)

    try:
        manifest = run_async(online)
    except AdminUnavailable:
        manifest = _offline_backup(data_dir, dest)
    except ProtocolError as exc:
        raise CliError(f"{exc.message} ({exc.code})") from exc
    if args.json:
        print(json.dumps(manifest))
        return 0
    size = sum(f["size"] for f in manifest["files"].values())
    how = "running node" if manifest["online"] else "stopped node"
    print(
        f"backed up node {manifest['node_name'] or '?'} ({manifest['node_id']}) from the {how}"
        f" into {dest}: store schema {manifest['schema']}, {len(manifest['files'])} files,"
        f" {size} bytes"
    )
    return 0


def _offline_backup(data_dir: Path, dest: Path) -> dict[str, Any]:
    try:
        identity = load_identity(data_dir)
        return offline_backup(data_dir, dest, identity.id).to_json()
    except (IdentityError, BackupError) as exc:
        raise CliError(str(exc)) from exc
    except StoreLocked as exc:
        raise CliError(
            f"{data_dir} is locked by a node that does not answer on its admin socket"
        ) from exc
    except OSError as exc:
        raise CliError(f"backup failed: {exc}") from exc


# ------------------------------------------------------------------ restore


def cmd_restore(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    src = Path(args.src).expanduser()
    try:
        manifest = restore_backup(src, data_dir)
    except BackupError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"restore failed: {exc}") from exc
    if args.json:
        print(json.dumps(manifest))
        return 0
    print(
        f"restored node {manifest.get('node_name') or '?'} ({manifest['node_id']}) "
        f"as of {manifest.get('created')} into {data_dir}; start it with "
        f"'chinwag run --data {data_dir}'"
    )
    print(
        "chinwag: note: the restored node has the original's identity; "
        "do not run both at the same time",
        file=sys.stderr,
    )
    return 0


# ------------------------------------------------------------------ export


def parse_since(text: str) -> tuple[int, int]:
    """``--since``: a seq (as ``tail``) or an ISO date/time (UTC unless it says)
    -> ``(after_seq, since_ms)``."""
    if text.isdigit():
        return int(text), 0
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--since wants a seq or an ISO date/time (2026-11-30T12:00), got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return 0, max(0, int(when.timestamp() * 1000))


def cmd_export(args: argparse.Namespace) -> int:
    after, since_ms = parse_since(args.since)
    if args.server is not None:
        if args.data is not None:
            raise CliError("give --server (as the user) or --data (as the admin), not both")
        return run_async(lambda: _export_as_user(args, after, since_ms))
    if args.device is not None:
        raise CliError("--device goes with --server")

    async def go() -> int:
        async with admin_calls(_data_dir(args)) as call:
            await _export_as_admin(call, args.user, after, since_ms)
        return 0

    try:
        return run_async(go)
    except ProtocolError as exc:
        raise CliError(f"{exc.message} ({exc.code})") from exc


async def _export_as_user(args: argparse.Namespace, after: int, since_ms: int) -> int:
    """Over the user's own device connection, exactly as ``tail --json``."""
    started = not since_ms
    async with session(args) as client:
        async for frame in queue_frames(client, after, follow=False):
            item = message_json(frame)
            started = started or starts_history(item, since_ms)
            if started:
                print_json_item(item)
    return 0


async def _export_as_admin(call: _Call, user: str, after: int, since_ms: int) -> None:
    """Page through ``user.history`` until the head seen at the first page."""
    head: int | None = None
    while head is None or after < head:
        page = await call(
            "user.history",
            {"user": user, "after": after, "limit": MAX_HISTORY_PAGE, "since_ms": since_ms},
        )
        if head is None:
            head = page["head"]  # what was there when the export began
        for item in page["messages"]:
            if item["seq"] > head:
                return
            print_json_item(item)
        if page["last_seq"] <= after:
            return
        after = page["last_seq"]
        if page["started"]:
            since_ms = 0


@asynccontextmanager
async def admin_calls(data_dir: Path) -> AsyncIterator[_Call]:
    """Admin commands to the running node, or, if none answers, to the store
    opened once for all of them (``with_admin`` opens it per command)."""
    ops: list[AdminOps] = []

    async with trio.open_nursery() as nursery:

        async def call(cmd: str, cmd_args: dict[str, Any]) -> dict[str, Any]:
            if not ops:
                try:
                    return await admin_request(data_dir, cmd, cmd_args)
                except AdminUnavailable:
                    ops.append(await _open_offline(nursery, data_dir))
            return await ops[0].call(cmd, cmd_args)

        try:
            yield call
        finally:
            nursery.cancel_scope.cancel()


async def _open_offline(nursery: trio.Nursery, data_dir: Path) -> AdminOps:
    try:
        identity = load_identity(data_dir)
    except IdentityError as exc:
        raise CliError(str(exc)) from exc
    store = Store(data_dir, identity.key)
    try:
        await nursery.start(store.run)
    except StoreLocked as exc:
        raise CliError(
            f"{data_dir} is locked by a node that does not answer on its admin socket"
        ) from exc
    return AdminOps(store)
