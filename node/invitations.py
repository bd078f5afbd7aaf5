"""Invitations: one-time secrets an admin hands out to link a node or sign a user up.

``chinwag invite peer`` and ``chinwag invite user`` make one; the string
(protocol/invitation.py) carries this node's URL, its key and the secret.
A joining node presents a peer invitation's secret sealed in its link
handshake (protocol/handshake.py ``inv``), a person a user invitation's in
the sign-up request (``invite``). Either way it is used up in the same
transaction that trusts the joiner or creates the user.

Only the secret's SHA-256 is stored, so a copy of the store hands out no
working invitation::

    invites: sha256(secret)(32) -> cbor {k: kind, c: created_ms, exp: expires_ms,
                                         used: used_ms (0: not yet), intro: bool}

A used or expired row is kept until :data:`RETAIN_AFTER_EXPIRY_MS` past its
expiry, so a second try is told "already used" or "expired" rather than
"unknown"; rows past that are pruned when a new invitation is made. At most
``capacity`` rows exist (NodeConfig.max_invitations).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cbor2

from chinwag.protocol.addresses import node_id_text
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.fingerprint import fingerprint
from chinwag.protocol.invitation import (
    KIND_PEER,
    KIND_USER,
    SECRET_BYTES,
    Invitation,
    encode_invitation,
    parse_invitation,
    secret_hash,
)

from .identity import NodeIdentity
from .peers import BLOCKED, TRUSTED, PeerRecord
from .store import Store, WriteTxn

DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 30 * 24 * 3600
#: Default of NodeConfig.max_invitations: rows (open, used or expired) kept.
MAX_INVITATIONS = 1024
RETAIN_AFTER_EXPIRY_MS = 7 * 24 * 3600 * 1000
#: How long ``peers join`` waits for the inviting node's link.
JOIN_TIMEOUT = 20.0
KINDS = (KIND_PEER, KIND_USER)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def _verdict(raw: bytes | None, kind: str, now_ms: int) -> dict[str, Any]:
    """The row of a usable invitation of ``kind``, or the refusal that says why not."""
    if raw is None:
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "unknown invitation (not made by this node, or long expired)"
        )
    row: dict[str, Any] = cbor2.loads(raw)
    if row.get("k") != kind:
        raise ProtocolError(
            ErrorCode.FORBIDDEN, f"this is a {row.get('k')} invitation, not a {kind} one"
        )
    if row.get("used"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "this invitation was already used")
    if row["exp"] <= now_ms:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"this invitation expired at {_utc(row['exp'])}")
    return row


class Invitations:
    """Invitation rows in LMDB: made, checked and used up."""

    def __init__(
        self,
        store: Store,
        capacity: int = MAX_INVITATIONS,
        now_ms: Callable[[], int] | None = None,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``now_ms``: the wall clock (Unix ms) expiry is judged by."""
        self.now_ms = now_ms or _wall_ms
        self._store = store
        self._capacity = max(1, capacity)
        self._rng = rng

    async def create(
        self, kind: str, ttl_s: float, now_ms: int, *, introductions: bool = False
    ) -> tuple[bytes, int]:
        """A new secret of ``kind`` valid for ``ttl_s``: (secret, expires_ms)."""
        if kind not in KINDS:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"an invitation is for a {' or '.join(KINDS)}"
            )
        if not 60 <= ttl_s <= MAX_TTL_S:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "an invitation lasts between 1 minute and 30 days"
            )
        secret = self._rng(SECRET_BYTES)
        expires_ms = now_ms + int(ttl_s * 1000)
        row = cbor2.dumps(
            {"k": kind, "c": now_ms, "exp": expires_ms, "used": 0, "intro": introductions}
        )

        def op(w: WriteTxn) -> None:
            db = w.db("invites")
            cursor = w.txn.cursor(db=db)
            stale = [
                bytes(k)
                for k, v in cursor
                if cbor2.loads(v)["exp"] + RETAIN_AFTER_EXPIRY_MS <= now_ms
            ]
            for key in stale:
                w.txn.delete(key, db=db)
            if w.txn.stat(db)["entries"] >= self._capacity:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"{self._capacity} invitations are kept already; wait until some expire",
                )
            w.txn.put(secret_hash(secret), row, db=db)

        await self._store.transact(op)
        return secret, expires_ms

    def check(self, secret: bytes, kind: str, now_ms: int) -> None:
        """Raise if ``secret`` is not a usable invitation of ``kind`` (no change)."""

        def fn(view: Any) -> None:
            raw = view.txn.get(secret_hash(secret), db=view.db("invites"))
            _verdict(None if raw is None else bytes(raw), kind, now_ms)

        self._store.read(fn)

    def use(self, w: WriteTxn, secret: bytes, kind: str, now_ms: int) -> dict[str, Any]:
        """Use the invitation up in the caller's transaction; return its row."""
        key = secret_hash(secret)
        db = w.db("invites")
        raw = w.txn.get(key, db=db)
        row = _verdict(None if raw is None else bytes(raw), kind, now_ms)
        w.txn.put(key, cbor2.dumps({**row, "used": now_ms}), db=db)
        return row


class AdmissionRegistry(Protocol):
    """The peer table's upsert with a step in the same transaction (node/peers.py)."""

    def get(self, key: bytes) -> PeerRecord | None: ...
    async def upsert(
        self,
        key: bytes,
        *,
        state: str | None = None,
        urls: tuple[str, ...] = (),
        source: str = "",
        name: str | None = None,
        now_ms: int = 0,
        keep_blocked: bool = True,
        also: Callable[[WriteTxn], object] | None = None,
    ) -> PeerRecord: ...


@dataclass
class InvitedPeers:
    """Trusts a node that presented a peer invitation in its link handshake."""

    invitations: Invitations
    registry: AdmissionRegistry
    now_ms: Callable[[], int]
    #: Trusts the introductions of a node (node/introductions.py), for
    #: invitations made with ``invite peer --introductions``.
    grant_introductions: Callable[[bytes], Awaitable[object]] | None = None

    async def admit(self, key: bytes, secret: bytes, urls: tuple[str, ...]) -> None:
        """Use the invitation up and trust ``key`` in one transaction, or raise
        the refusal (unknown, used, expired) for the handshake to send."""
        now = self.now_ms()

        rows: list[dict[str, Any]] = []

        def use(w: WriteTxn) -> None:
            rows.append(self.invitations.use(w, secret, KIND_PEER, now))

        record = await self.registry.upsert(
            key, state=TRUSTED, source="invite", now_ms=now, also=use
        )
        if record.state != TRUSTED:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this node is blocked here")
        if rows and rows[-1].get("intro") and self.grant_introductions is not None:
            # Before the link runs, so its first frames ask for the introductions.
            await self.grant_introductions(key)
        if urls:
            # The joiner's own (signed) URLs: dialled like gossiped ones,
            # after the checks of node/dialcheck.py.
            await self.registry.upsert(key, urls=urls, source="gossip", now_ms=now)


class InvitationRegistry(AdmissionRegistry, Protocol):
    """What the desk needs from the peer table (node/peers.py): also ``remove``."""

    async def remove(self, key: bytes) -> None: ...


class Joiner(Protocol):
    """Federation's side of ``peers join`` (node/federation.py)."""

    def is_linked(self, key: bytes) -> bool: ...
    async def join(self, key: bytes, secret: bytes, timeout: float) -> str | None: ...


@dataclass
class InvitationDesk:
    """The admin commands ``invite`` and ``peers join`` of a running node."""

    invitations: Invitations
    identity: NodeIdentity
    registry: InvitationRegistry
    joiner: Joiner
    #: The URL written into invitations (the first advertised one, else the listen URL).
    url: Callable[[], str]
    now_ms: Callable[[], int]
    join_timeout: float = JOIN_TIMEOUT

    async def invite(
        self, kind: str, ttl_s: float, url: str | None = None, *, introductions: bool = False
    ) -> dict[str, Any]:
        if introductions and kind != KIND_PEER:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "only a peer invitation can grant introductions"
            )
        secret, expires_ms = await self.invitations.create(
            kind, ttl_s, self.now_ms(), introductions=introductions
        )
        where = url or self.url()
        text = encode_invitation(
            Invitation(kind, where, self.identity.key.public, secret, expires_ms // 1000)
        )
        return {"kind": kind, "invitation": text, "url": where, "expires_ms": expires_ms}

    async def join(self, text: str) -> dict[str, Any]:
        """Trust the inviting node and link to it, presenting the secret."""
        invitation = parse_invitation(text)
        if invitation.kind != KIND_PEER:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"this is an invitation for a person: use it to sign up at {invitation.url}",
            )
        key = invitation.node_key
        if key == self.identity.key.public:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "that invitation was made by this node")
        if invitation.expires_s * 1000 <= self.now_ms():
            expired = _utc(invitation.expires_s * 1000)
            raise ProtocolError(ErrorCode.FORBIDDEN, f"this invitation expired at {expired}")
        before = self.registry.get(key)
        if before is not None and before.state == BLOCKED:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "that node is blocked here; 'chinwag peers remove' it first"
            )
        await self.registry.upsert(
            key, state=TRUSTED, urls=(invitation.url,), source="admin", now_ms=self.now_ms()
        )
        if not self.joiner.is_linked(key):
            error = await self.joiner.join(key, invitation.secret, self.join_timeout)
            if error is not None:
                # Leave no half-made peer behind.
                if before is None:
                    await self.registry.remove(key)
                elif before.state != TRUSTED:
                    await self.registry.upsert(key, state=before.state, keep_blocked=False)
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"could not join: {error}")
        record = self.registry.get(key)
        return {
            "node_id": node_id_text(key),
            "name": record.name if record else "",
            "state": TRUSTED,
            "fingerprint": fingerprint(key),
        }
