"""Scripting client commands: ``chinwag send``, ``chinwag tail`` and ``chinwag search``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from chinwag.node.blob_client import download_into, upload_file
from chinwag.node.client import ChatClient, ClientError, SendAck, connect, retry_delay
from chinwag.node.history import file_label, message_json
from chinwag.protocol.attachments import MAX_ATTACHMENTS, check_sha256
from chinwag.protocol.errors import ProtocolError

from .common import cached_login, fail, forget_login, fresh_login
from .exitcodes import Exit
from .node_cmds import run_async

#: Hits ``chinwag search`` prints unless told otherwise.
SEARCH_DEFAULT = 20
#: Hits asked for per ``search`` request (the node's cap per page).
SEARCH_PAGE = 50


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="the node, http://host:port")
    parser.add_argument("--user", required=True, help="your user name on that node")
    parser.add_argument("--device", help="device name (default: one made at first log-in)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("send", help="send a message (exit 0 once the node acknowledged it)")
    _client_args(p)
    p.add_argument("to", metavar="TO", help="bob (same node), bob@node or '#group@host'")
    p.add_argument(
        "text",
        metavar="TEXT",
        nargs="?",
        default=None,
        help="the text, or - for one message per stdin line (optional with --file)",
    )
    p.add_argument(
        "--file",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="attach this file (repeatable, at most 10; photos lose their EXIF on the node)",
    )
    p.set_defaults(handler=cmd_send)

    p = sub.add_parser("download", help="save a file attached to one of your messages")
    _client_args(p)
    p.add_argument("sha256", metavar="SHA256", help="the attachment's hash (tail --json shows it)")
    p.add_argument("-o", "--output", type=Path, metavar="PATH", help="where to save it")
    p.add_argument("--preview", action="store_true", help="the image's small preview instead")
    p.set_defaults(handler=cmd_download)

    p = sub.add_parser("tail", help="print your messages")
    _client_args(p)
    start = p.add_mutually_exclusive_group()
    start.add_argument("--since", type=int, default=0, help="print messages after this seq")
    start.add_argument(
        "--last", "-n", type=int, metavar="N", help="print the last N messages of your queue"
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new messages")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=cmd_tail)

    p = sub.add_parser("search", help="search the text of your messages, newest first")
    _client_args(p)
    p.add_argument("query", metavar="QUERY", help="words that all have to match (any case/accent)")
    p.add_argument(
        "--in", dest="conv", metavar="ADDRESS", help="only this conversation: bob@node, #g@host"
    )
    p.add_argument(
        "--limit",
        type=int,
        default=SEARCH_DEFAULT,
        help=f"print at most this many hits (default {SEARCH_DEFAULT})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=cmd_search)


@asynccontextmanager
async def session(args: argparse.Namespace) -> AsyncIterator[ChatClient]:
    """A device connection, reusing the cached token (logging in if needed)."""
    cached = cached_login(args.server, args.user, args.device)
    login = cached or await fresh_login(args.server, args.user, args.device)
    try:
        async with connect(args.server, login.token) as client:
            yield client
            return
    except ClientError as exc:
        if exc.code != "unauthorized" or cached is None:
            raise
    # The cached token was revoked: log in again once.
    forget_login(args.server, args.user, args.device)
    login = await fresh_login(args.server, args.user, args.device)
    async with connect(args.server, login.token) as client:
        yield client


def _print_ack(ack: SendAck) -> None:
    print(f"id={ack.id} seq={ack.seq}", flush=True)


def cmd_send(args: argparse.Namespace) -> int:
    if args.text == "-":
        if args.file:
            fail("--file sends one message: give its TEXT, not -")
        return run_async(lambda: _send_stdin(args))
    if args.text is None and not args.file:
        fail("give a TEXT, a --file, or both")
    if len(args.file) > MAX_ATTACHMENTS:
        fail(f"at most {MAX_ATTACHMENTS} --file per message")
    for path in args.file:
        if not path.is_file():
            fail(f"--file {path}: no such file")

    async def one() -> int:
        async with session(args) as client:
            attachments = [await upload_file(args.server, client.token, path) for path in args.file]
            _print_ack(await client.send(args.to, args.text or "", attachments=attachments))
        return 0

    return run_async(one)


def cmd_download(args: argparse.Namespace) -> int:
    sha = args.sha256.strip().lower()
    try:
        check_sha256(sha)
    except ProtocolError:
        fail("SHA256 is the 64 hex digits of the attachment's hash")

    async def one() -> int:
        dest = args.output or Path(".")
        async with session(args) as client:
            while True:
                try:
                    saved, size = await download_into(
                        args.server, client.token, sha, dest, preview=args.preview
                    )
                except ClientError as exc:
                    if exc.code != "blob_pending":
                        raise
                    # The node is fetching it from the sender's node: wait as told.
                    await trio.sleep(retry_delay(exc))
                    continue
                break
        print(f"{saved} {size} bytes", flush=True)
        return 0

    return run_async(one)


async def _send_stdin(args: argparse.Namespace) -> int:
    """One message per non-empty stdin line, acknowledged in stdin order.

    The node's rate limit only slows this down (the client library waits out
    each ``rate_limited``); a line refused for another reason is reported on
    stderr, the next lines go on, and the exit code is 1.
    """
    lines = [line.rstrip("\n") for line in sys.stdin]
    items = [(number, line) for number, line in enumerate(lines, 1) if line]
    failures = 0
    async with session(args) as client:
        async for index, outcome in client.send_in_order(args.to, [t for _, t in items]):
            if isinstance(outcome, ClientError):
                failures += 1
                number = items[index][0]
                print(
                    f"chinwag: line {number}: {outcome.message} ({outcome.code})", file=sys.stderr
                )
            else:
                _print_ack(outcome)
    return Exit.ERROR if failures else Exit.OK


def print_json_item(item: dict[str, Any]) -> None:
    """One line of ``tail --json`` (and of ``export``)."""
    print(json.dumps(item, ensure_ascii=False), flush=True)


def _print_message(frame: dict[str, Any], as_json: bool) -> None:
    item = message_json(frame)
    if as_json:
        print_json_item(item)
        return
    ts = item["ts"]
    when = datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"
    target = item.get("group") or item["to"]
    text = item["text"] if item["text"] is not None else json.dumps(item.get("event"))
    files = " ".join(file_label(a) for a in item.get("attachments", []))
    if files:
        text = f"{text} {files}" if text else files
    print(f"[{item['seq']}] {when} {item['from']} -> {target}: {text}", flush=True)


async def queue_frames(
    client: ChatClient, since: int, follow: bool
) -> AsyncIterator[dict[str, Any]]:
    """The ``msg`` frames of the user's queue after ``since``, acknowledged as
    they are read; without ``follow``, up to the head at the start."""
    head = await client.sync(since)
    last = since
    if not follow and head <= since:
        return
    async for frame in client.messages:
        yield frame
        last = frame["seq"]
        if client.messages.statistics().current_buffer_used == 0:
            await client.ack(last)
        if not follow and last >= head:
            await client.ack(last)
            return
    if client.closed_reason is not None:
        raise ClientError(str(client.closed_reason.code), client.closed_reason.message)


def cmd_tail(args: argparse.Namespace) -> int:
    if args.since < 0:
        fail("--since is a seq, 0 or more")
    if args.last is not None and args.last < 1:
        fail("--last is a number of messages, 1 or more")

    async def go() -> int:
        async with session(args) as client:
            since = args.since
            if args.last is not None:
                # The last N entries of the queue: start N before its head
                # (the head of the auth reply; sync then streams from there).
                assert client.info is not None
                since = max(0, client.info.head - args.last)
            async for frame in queue_frames(client, since, args.follow):
                _print_message(frame, args.json)
        return 0

    return run_async(go)


def _print_hit(conv: str, frame: dict[str, Any], as_json: bool) -> None:
    item = message_json(frame)
    if as_json:
        keys = ("id", "seq", "from", "ts", "text")
        print_json_item({"conv": conv} | {k: item[k] for k in keys})
        return
    ts = item["ts"]
    when = datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"
    # The conversation by its names (bob@den, #team@den), not the full node ids.
    sender = frame.get("from")
    sender_key = f"{sender.get('u')}@{sender.get('n')}" if isinstance(sender, dict) else ""
    shown = item.get("group") or (item["from"] if sender_key == conv else item["to"]) or conv
    print(f"[{item['seq']}] {when} {shown} {item['from']}: {item['text']}", flush=True)


async def search_hits(
    client: ChatClient, query: str, conv: str | None, limit: int
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Up to ``limit`` hits ``(conv, msg frame)``, newest first, page by page.

    A ``rate_limited`` page is waited out and asked again; a page may come
    back short (the node bounds its work per request): ``next`` goes on.
    """
    before: int | None = None
    found = 0
    while found < limit:
        try:
            reply = await client.search(query, conv, min(SEARCH_PAGE, limit - found), before)
        except ClientError as exc:
            if exc.code != "rate_limited":
                raise
            await trio.sleep(retry_delay(exc))
            continue
        for hit in reply.get("hits", []):
            if found < limit:
                found += 1
                yield str(hit["conv"]), hit["msg"]
        before = reply.get("next")
        if before is None:
            return


def cmd_search(args: argparse.Namespace) -> int:
    if not args.query.strip():
        fail("an empty query")
    if args.limit < 1:
        fail("--limit is a number of hits, 1 or more")

    async def go() -> int:
        async with session(args) as client:
            async for conv, frame in search_hits(client, args.query, args.conv, args.limit):
                _print_hit(conv, frame, args.json)
        return 0

    return run_async(go)
