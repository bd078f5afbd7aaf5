"""Blocked users: each user's list of addresses that may not reach them.

Layout (one named database, written with the user's other data)::

    blocks: uid(4) | "user@<node id>" (utf-8) -> b""

A block is checked where a message lands in the blocker's queue, on the
blocker's node, whichever node the message comes from: the local send path
(``Store._direct_op``), the inbound link commit (``peers.deliver_unit``) and
the group fan-out on the host and on member nodes (``groups``). Every
envelope kind (text, edit, delete, react, ...) is refused the same way. For
a group only the blocker's own copy is dropped.

What the blocked sender sees (like Signal): their message is accepted and
stored in their own queue (``ok``), the recipient's node acknowledges it on
the link as usual, so it shows as sent and delivered; it is never read, no
read receipt or typing comes back, and the blocker appears offline to them.
They are never told. Presence, typing and read receipts are filtered by the
in-memory view of the same lists (:class:`Blocks`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from chinwag.protocol.addresses import UserAddress
from chinwag.protocol.errors import ErrorCode, ProtocolError

if TYPE_CHECKING:  # the store calls is_blocked: no import cycle at run time
    from .store import Store, WriteTxn

DB_NAME = "blocks"


def block_key(uid: int, address: UserAddress) -> bytes:
    """The row of ``uid`` blocking ``address``."""
    return uid.to_bytes(4, "big") + f"{address.user}@{address.node}".encode()


def is_blocked(view: Any, uid: int, sender: UserAddress) -> bool:
    """Whether local user ``uid`` blocked ``sender`` (inside any transaction)."""
    return view.txn.get(block_key(uid, sender), db=view.db(DB_NAME)) is not None


def blocked_check(view: Any, sender: UserAddress) -> Callable[[int], bool]:
    """``is_blocked`` for one sender and many recipients (a group fan-out):
    the sender's part of the key is built once, each check is one get."""
    suffix = f"{sender.user}@{sender.node}".encode()
    get, db = view.txn.get, view.db(DB_NAME)
    return lambda uid: get(uid.to_bytes(4, "big") + suffix, db=db) is not None


def _rows(view: Any, uid: int) -> list[UserAddress]:
    prefix = uid.to_bytes(4, "big")
    cursor = view.txn.cursor(db=view.db(DB_NAME))
    out: list[UserAddress] = []
    if not cursor.set_range(prefix):
        return out
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            break
        user, _, node = bytes(key[4:]).decode().partition("@")
        out.append(UserAddress(user, node))
    return out


class Blocks:
    """The users' block lists: stored in LMDB, mirrored in memory for lookups.

    ``changed(blocker, address, blocked)`` observers (presence) are told after
    each commit that changed a list.
    """

    def __init__(
        self,
        store: Store,
        resolve_user: Callable[[str], UserAddress],
        display: Callable[[UserAddress], str],
        max_per_user: int,
    ) -> None:
        self._store = store
        self._resolve_user = resolve_user
        self._display = display
        self._max = max(1, max_per_user)
        self._cache: dict[str, frozenset[UserAddress]] = {}
        self._observers: list[Callable[[str, UserAddress, bool], None]] = []

    def observe(self, observer: Callable[[str, UserAddress, bool], None]) -> None:
        self._observers.append(observer)

    # ------------------------------------------------------------ lookups
    def blocked_by(self, user: str) -> frozenset[UserAddress]:
        """The addresses local ``user`` blocked (empty for an unknown user)."""
        cached = self._cache.get(user)
        if cached is None:

            def read(view: Any) -> frozenset[UserAddress]:
                record = view.get_user(user)
                return frozenset() if record is None else frozenset(_rows(view, record.uid))

            cached = self._store.read(read)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[user] = cached
        return cached

    def blocks(self, blocker: str, sender: UserAddress) -> bool:
        """Whether local ``blocker`` blocked ``sender``."""
        return sender in self.blocked_by(blocker)

    def hidden_from(self, user: str, node_id: str) -> tuple[str, ...]:
        """The users of node ``node_id`` that local ``user`` blocked (sorted)."""
        return tuple(sorted(a.user for a in self.blocked_by(user) if a.node == node_id))

    # ------------------------------------------------------------ changes
    async def add(self, user: str, text: str) -> UserAddress:
        address = self._resolve_user(text)
        limit = self._max

        def op(w: WriteTxn) -> None:
            record = w.require_user(user)
            if address == UserAddress(user, w.node_id):
                raise ProtocolError(ErrorCode.BAD_REQUEST, "you cannot block yourself")
            if is_blocked(w, record.uid, address):
                return
            if len(_rows(w, record.uid)) >= limit:
                raise ProtocolError(ErrorCode.TOO_LARGE, f"at most {limit} blocked addresses")
            w.txn.put(block_key(record.uid, address), b"", db=w.db(DB_NAME))

        await self._store.transact(op)
        self._changed(user, address, True)
        return address

    async def remove(self, user: str, text: str) -> UserAddress:
        address = self._resolve_user(text)

        def op(w: WriteTxn) -> None:
            record = w.require_user(user)
            w.txn.delete(block_key(record.uid, address), db=w.db(DB_NAME))

        await self._store.transact(op)
        self._changed(user, address, False)
        return address

    def _changed(self, user: str, address: UserAddress, blocked: bool) -> None:
        self._cache.pop(user, None)
        for observer in self._observers:
            observer(user, address, blocked)

    def forget(self, user: str) -> None:
        """Drop the cached list of ``user`` (removed)."""
        self._cache.pop(user, None)

    # ------------------------------------------------------------ HTTP
    def register_routes(self, api: Any) -> None:
        """``GET/POST/DELETE /api/blocks`` with the session's Bearer token."""
        api.add_route("GET", "/api/blocks", self._get)
        api.add_route("POST", "/api/blocks", self._post)
        api.add_route("DELETE", "/api/blocks", self._delete)
        self._api = api

    def _wire(self, address: UserAddress) -> dict[str, Any]:
        return {"address": self._display(address), "user": address.user, "node": address.node}

    async def _get(self, request: Any) -> Any:
        from .http_api import json_response

        session = self._api.authorized(request)
        listed = sorted(self.blocked_by(session.user))
        return json_response(200, {"blocks": [self._wire(a) for a in listed]})

    def _address(self, request: Any) -> str:
        if request.body:
            body = self._api.json_body(request)
            value = body.get("address")
        else:
            values = parse_qs(request.query).get("address", [])
            value = values[0] if values else None
        if not isinstance(value, str) or not value or len(value) > 200:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "give the 'address' to (un)block")
        if value.startswith("#"):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "block a user, not a group")
        return value

    async def _post(self, request: Any) -> Any:
        from .http_api import json_response

        session = self._api.authorized(request)
        address = await self.add(session.user, self._address(request))
        return json_response(201, self._wire(address))

    async def _delete(self, request: Any) -> Any:
        from .http_api import json_response

        session = self._api.authorized(request)
        address = await self.remove(session.user, self._address(request))
        return json_response(200, self._wire(address))
