"""Administration: the operations, the Unix socket that serves them, its client.

The running node listens on ``DATA/admin.sock`` (mode 0600); a request is one
JSON line ``{"cmd": ..., "args": {...}}`` and the answer one JSON line
``{"ok": {...}}`` or ``{"error": {"code", "message"}}``. When the node is not
running, the CLI takes the store lock and runs the same :class:`AdminOps`
against the store directly.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import lmdb
import trio

from chinwag.protocol.addresses import (
    check_user_name,
    is_node_id_text,
    node_id_bytes,
    node_id_text,
)
from chinwag.protocol.envelope import check_public_key
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.fingerprint import fingerprint

from .backup import BackupError, write_backup
from .history import MAX_HISTORY_PAGE, read_history
from .identity import NodeIdentity, load_identity
from .introductions import revoke_introductions, set_trust_introductions
from .invitations import DEFAULT_TTL_S, InvitationDesk
from .logs import event
from .peers import BLOCKED, PENDING, TRUSTED, PeerRecord, PeerRegistry, check_url
from .pending import PendingRequests
from .router import Router
from .seeds import parse_seed
from .store import Store

log = logging.getLogger(__name__)

SOCKET_NAME = "admin.sock"
MAX_LINE = 64 * 1024
#: Answers may be longer than requests (a ``user.history`` page, node/history.py).
MAX_ANSWER = 4 * 1024 * 1024


class AdminUnavailable(Exception):
    """No node answers on the admin socket."""


class AdminOps:
    """What an admin can do; identical online (socket) and offline (store)."""

    def __init__(
        self,
        store: Store,
        status: Callable[[], dict[str, Any]] | None = None,
        registry: PeerRegistry | None = None,
        poke: Callable[[bytes], None] | None = None,
        pending: PendingRequests | None = None,
        invitations: InvitationDesk | None = None,
        links: Callable[[], list[dict[str, Any]]] | None = None,
        request_introductions: Callable[[bytes], Awaitable[None]] | None = None,
        user_removed: Callable[[str], None] | None = None,
    ) -> None:
        """``pending``: link requests from unknown nodes, held in memory by a
        running node (node/pending.py); ``peers approve`` and ``block`` take them.
        ``invitations``: ``invite`` and ``peers join`` (a running node only).
        ``request_introductions(key)``: ask a linked peer for its introductions
        now (node/introductions.py). ``user_removed(name)``: services that keep
        a user's settings in memory forget them (node/blocks.py, receipts.py)."""
        self._user_removed = user_removed
        self._store = store
        self._invitations = invitations
        self._pending = pending
        self._status = status
        self._registry = registry or PeerRegistry(store)
        self._poke = poke
        #: Each peer's link state (Federation.peer_status) while the node runs.
        self._links = links
        self._request_introductions = request_introductions
        self._commands: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "peers.list": self.peers_list,
            "peers.add": self.peers_add,
            "peers.approve": self.peers_approve,
            "peers.block": self.peers_block,
            "peers.remove": self.peers_remove,
            "peers.join": self.peers_join,
            "invite.create": self.invite_create,
            "peers.trust_introductions": self.peers_trust_introductions,
            "user.add": self.user_add,
            "user.list": self.user_list,
            "user.remove": self.user_remove,
            "user.passwd": self.user_passwd,
            "status": self.status,
            "backup": self.backup,
            "user.history": self.user_history,
        }
        self._router: Router | None = None

    async def call(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = self._commands.get(cmd)
        if handler is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown admin command {cmd!r}")
        return await handler(args)

    @staticmethod
    def _str(args: dict[str, Any], key: str) -> str:
        value = args.get(key)
        if not isinstance(value, str) or not value:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"missing {key!r}")
        return value

    async def user_add(self, args: dict[str, Any]) -> dict[str, Any]:
        user = check_user_name(self._str(args, "user"))
        record = await self._store.create_user(user, self._str(args, "pw_hash"), _now_ms())
        log.info("user %s added by the admin", user, extra=event("user_added", user=user))
        return {"user": record.name}

    async def user_list(self, args: dict[str, Any]) -> dict[str, Any]:
        users = []
        for record in self._store.list_users():
            devices = self._store.list_devices(record.name)
            users.append(
                {
                    "user": record.name,
                    "created_ms": record.created_ms,
                    "devices": len(devices),
                    "queue_head": self._store.queue_head(record.name),
                }
            )
        return {"users": users}

    async def user_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._str(args, "user")
        await self._store.remove_user(user)
        if self._user_removed is not None:
            self._user_removed(user)
        log.info("user %s removed by the admin", user, extra=event("user_removed", user=user))
        return {"user": user}

    async def user_passwd(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._str(args, "user")
        await self._store.set_password(user, self._str(args, "pw_hash"))
        log.info(
            "password of %s set by the admin (sessions revoked)",
            user,
            extra=event("password_set", user=user),
        )
        return {"user": user}

    async def backup(self, args: dict[str, Any]) -> dict[str, Any]:
        """Back the data directory up into ``dest`` (an absolute path, new or empty).

        Runs in a worker thread: LMDB's compacting copy reads one snapshot
        while the node keeps committing (node/backup.py).
        """
        dest = Path(self._str(args, "dest"))
        if not dest.is_absolute():
            raise ProtocolError(ErrorCode.BAD_REQUEST, "dest is an absolute path")
        store = self._store

        def run() -> dict[str, Any]:
            manifest = write_backup(
                dest, store.data_dir, store.copy_snapshot, store.node_key.id, online=True
            )
            return manifest.to_json()

        try:
            return await trio.to_thread.run_sync(run)
        except BackupError as exc:
            raise ProtocolError(ErrorCode.CONFLICT, str(exc)) from exc
        except (OSError, lmdb.Error) as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"backup failed: {exc}") from exc

    async def user_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """A page of a user's history as ``tail --json`` items (``chinwag export``)."""
        user = self._str(args, "user")
        after, limit, since_ms = (
            args.get("after", 0),
            args.get("limit", MAX_HISTORY_PAGE),
            args.get("since_ms", 0),
        )
        if not all(isinstance(v, int) and v >= 0 for v in (after, limit, since_ms)):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "after, limit and since_ms are integers")
        if self._store.get_user(user) is None:
            raise ProtocolError(ErrorCode.NO_SUCH_USER, f"no user {user[:40]!r} on this node")
        page = read_history(self._store, self.router(), user, after, limit, since_ms)
        return {
            "messages": page.messages,
            "last_seq": page.last_seq,
            "head": page.head,
            "started": page.started,
        }

    def router(self) -> Router:
        """Renders queue records as devices get them, with this node's labels."""
        if self._router is None:
            name = load_identity(self._store.data_dir).name
            identity = NodeIdentity(self._store.node_key, name)
            self._router = Router(identity, self._store, _now_ms, self._registry)
        return self._router

    def _peer_key(self, args: dict[str, Any]) -> bytes:
        """A node id, or an unambiguous prefix of one (as ``peers list`` shows)."""
        text = self._str(args, "id").lower()
        if is_node_id_text(text):
            return check_public_key(node_id_bytes(text))
        known = [p.key for p in self._registry.all()]
        if self._pending is not None:
            known += [r.key for r in self._pending.all() if r.key not in known]
        matches = [k for k in known if node_id_text(k).startswith(text)]
        if len(matches) != 1:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no single peer matches {text[:60]!r}")
        return matches[0]

    async def peers_list(self, args: dict[str, Any]) -> dict[str, Any]:
        peers: list[dict[str, Any]] = [
            {
                "node_id": p.id,
                "name": p.name,
                "state": p.state,
                "urls": list(p.urls),
                "source": p.source,
                "fingerprint": fingerprint(p.key),
                "introductions": p.trust_introductions,
                "introduced_by": [node_id_text(k) for k in p.introducers],
            }
            for p in self._registry.all()
        ]
        if self._pending is not None:
            known = {p["node_id"] for p in peers}
            peers += [
                {
                    "node_id": node_id_text(r.key),
                    "name": r.name,
                    "state": PENDING,
                    "urls": list(r.urls),
                    "source": "inbound",
                    "fingerprint": fingerprint(r.key),
                    "address": r.address,
                    "attempts": r.attempts,
                    "introductions": False,
                    "introduced_by": [],
                }
                for r in self._pending.all()
                # A durable row (trusted meanwhile, e.g. by introduction) wins.
                if node_id_text(r.key) not in known
            ]
        if self._links is not None:
            live = {p["node_id"]: p for p in self._links()}
            for peer in peers:
                link = live.get(peer["node_id"])
                if link is not None:
                    for key in ("link", "link_changed_ms", "last_error", "retry_in"):
                        peer[key] = link[key]
        return {"peers": peers}

    def _desk(self) -> InvitationDesk:
        if self._invitations is None:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, "the node is not running; start it with 'chinwag run'"
            )
        return self._invitations

    async def invite_create(self, args: dict[str, Any]) -> dict[str, Any]:
        ttl = args.get("ttl_s", DEFAULT_TTL_S)
        url = args.get("url")
        if not isinstance(ttl, int | float) or isinstance(ttl, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "ttl_s is a number of seconds")
        if url is not None:
            url = check_url(self._str(args, "url"))
        introductions = args.get("introductions", False)
        if not isinstance(introductions, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "introductions is true or false")
        return await self._desk().invite(
            self._str(args, "kind"), float(ttl), url, introductions=introductions
        )

    async def peers_join(self, args: dict[str, Any]) -> dict[str, Any]:
        result = await self._desk().join(self._str(args, "invitation"))
        key = node_id_bytes(result["node_id"])
        self._kick(key)
        if args.get("trust_introductions") is True:
            await set_trust_introductions(self._store, key, True)
            if self._request_introductions is not None:
                await self._request_introductions(key)
            result["introductions"] = True
        return result

    async def peers_add(self, args: dict[str, Any]) -> dict[str, Any]:
        url, node_id = parse_seed(self._str(args, "peer"))
        key = check_public_key(node_id_bytes(node_id))
        if key == self._store.node_key.public:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "that is this node's own id")
        record = await self._registry.upsert(
            key, state=TRUSTED, urls=(url,), source="admin", now_ms=_now_ms(), keep_blocked=False
        )
        if self._pending is not None:
            self._pending.pop(key)  # decided: no longer a request
        self._kick(key)
        _log_peer("added", record)
        return {"node_id": record.id, "state": record.state}

    async def peers_approve(self, args: dict[str, Any]) -> dict[str, Any]:
        key = self._peer_key(args)
        request = self._pending.get(key) if self._pending is not None else None
        record = await self._decide(key, TRUSTED)
        self._kick(key)
        _log_peer("approved", record, request.name if request is not None else "")
        return {"node_id": record.id, "state": record.state}

    async def peers_block(self, args: dict[str, Any]) -> dict[str, Any]:
        key = self._peer_key(args)
        request = self._pending.get(key) if self._pending is not None else None
        record = await self._decide(key, BLOCKED)
        self._kick(key)
        _log_peer("blocked", record, request.name if request is not None else "")
        revoked = await self._revoke(key)
        return {"node_id": record.id, "state": record.state, "revoked": revoked}

    async def peers_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        key = self._peer_key(args)
        await self._registry.remove(key)
        self._kick(key)
        log.info(
            "peer %s removed",
            node_id_text(key),
            extra=event("peer_removed", peer=node_id_text(key)),
        )
        revoked = await self._revoke(key)
        return {"node_id": node_id_text(key), "revoked": revoked}

    async def peers_trust_introductions(self, args: dict[str, Any]) -> dict[str, Any]:
        """Trust (``on``, the default) or stop trusting the nodes a peer introduces."""
        key = self._peer_key(args)
        on = args.get("on", True)
        if not isinstance(on, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'on' is true or false")
        revoked = await set_trust_introductions(self._store, key, on)
        for other in revoked:
            self._kick(other)
        if on and self._request_introductions is not None:
            await self._request_introductions(key)
        return {
            "node_id": node_id_text(key),
            "introductions": on,
            "revoked": [node_id_text(k) for k in revoked],
        }

    async def _revoke(self, introducer: bytes) -> list[str]:
        """Withdraw the trust ``introducer`` granted that has no other basis."""
        revoked = await revoke_introductions(self._store, introducer)
        for key in revoked:
            self._kick(key)
        return [node_id_text(k) for k in revoked]

    async def _decide(self, key: bytes, state: str) -> PeerRecord:
        """Set a peer's state; a request held only in memory becomes a row now."""
        if self._registry.get(key) is None and self._pending is not None:
            request = self._pending.get(key)
            if request is not None:
                # source "admin": an admin's decision gets its row even when
                # the table is full (node/peers.py VOUCHED_SOURCES).
                # The URLs the node signed in its request: the admin saw them
                # in ``peers list`` before approving, so they are dialled at once.
                record = await self._registry.upsert(
                    key,
                    state=state,
                    urls=request.urls if state == TRUSTED else (),
                    source="admin",
                    now_ms=_now_ms(),
                    keep_blocked=False,
                )
                self._pending.pop(key)
                return record
        return await self._registry.set_state(key, state)

    def _kick(self, key: bytes) -> None:
        if self._poke is not None:
            self._poke(key)

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        if self._status is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the node is not running")
        return self._status()


class AdminServer:
    """Serves :class:`AdminOps` on the data directory's Unix socket."""

    def __init__(self, data_dir: Path, ops: AdminOps) -> None:
        self._path = data_dir / SOCKET_NAME
        self._ops = ops

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._path.exists() or self._path.is_symlink():
            self._path.unlink()  # we hold the store lock, so it is a stale socket
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            await sock.bind(str(self._path))
        finally:
            os.umask(old_umask)
        os.chmod(self._path, 0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(self._handle, [listener], handler_nursery=nursery)
        finally:
            self._path.unlink(missing_ok=True)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.fail_after(30):
                    line = await _read_line(stream)
                # Not under the 30 s: a backup of a large store takes longer.
                answer = await self._answer(line)
                with trio.fail_after(30):
                    await stream.send_all(json.dumps(answer).encode() + b"\n")
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ProtocolError(ErrorCode.BAD_REQUEST, "send {cmd, args}")
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise ProtocolError(ErrorCode.BAD_REQUEST, "args is an object")
            return {"ok": await self._ops.call(request["cmd"], args)}
        except ProtocolError as exc:
            return {"error": {"code": str(exc.code), "message": exc.message}}
        except (ValueError, RecursionError):
            return {"error": {"code": "bad_request", "message": "not JSON"}}
        except Exception:  # a defect in one command must not end the node
            log.exception("admin command failed")
            message = "the command failed; see the node's log"
            return {"error": {"code": "internal", "message": message}}


async def _read_line(stream: trio.abc.ReceiveStream, limit: int = MAX_LINE) -> bytes:
    data = bytearray()
    while b"\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ProtocolError(ErrorCode.TOO_LARGE, "admin request too large")
    return bytes(data).split(b"\n", 1)[0]


async def admin_request(
    data_dir: Path, cmd: str, args: dict[str, Any], timeout: float = 30.0
) -> dict[str, Any]:
    """Ask the running node; raise AdminUnavailable if none listens."""
    path = data_dir / SOCKET_NAME
    if not path.exists():
        raise AdminUnavailable(str(path))
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_unix_socket(str(path))
            async with stream:
                await stream.send_all(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
                line = await _read_line(stream, MAX_ANSWER)
    except OSError as exc:
        raise AdminUnavailable(str(path)) from exc
    except trio.TooSlowError as exc:
        raise AdminUnavailable(f"{path}: no answer in {timeout:g}s") from exc
    answer = json.loads(line)
    if "error" in answer:
        err = answer["error"]
        raise ProtocolError(ErrorCode(err.get("code", "internal")), err.get("message", ""))
    result: dict[str, Any] = answer["ok"]
    return result


def _log_peer(what: str, record: PeerRecord, asked_as: str = "") -> None:
    """``asked_as``: the name a pending node gave in its link request."""
    name = record.name or asked_as
    log.info(
        "peer %s (%s) %s by the admin",
        name or "?",
        record.id,
        what,
        extra=event(f"peer_{what}", peer=record.id, peer_name=name),
    )


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000
