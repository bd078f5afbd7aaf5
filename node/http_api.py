"""The stateless side: sign-up, log-in, profile, contacts and node info (JSON).

Errors are ``{"error": {"code", "message"}}`` with the HTTP status that fits
the code. Log-in answers an unknown user exactly as a wrong password, and
counts failures per account and per address: a try is counted before its
password is checked and given back if it was right, so concurrent guesses
cannot outrun the limit. Sign-ups are limited per address and node-wide.
Every password check or hash goes through the node's
:class:`~chinwag.node.passwords.PasswordHasher` (bounded queue, a share kept
for returning users).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import parse_qs

import trio

from chinwag.protocol.addresses import check_user_name, parse_target
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.invitation import KIND_USER, MAX_INVITATION_CHARS, parse_invitation
from chinwag.protocol.limits import PROTOCOL_VERSION

from .config import NodeConfig
from .hub import Hub
from .identity import NodeIdentity
from .invitations import Invitations
from .logs import event, printable
from .password_policy import MAX_PASSWORD_CHARS, PasswordPolicy
from .passwords import PasswordHasher, new_token, token_hash
from .ratelimit import WindowCounter, address_key, blocked_for_all
from .store import SessionRecord, Store
from .version import VERSION

log = logging.getLogger(__name__)

MAX_PROFILE_CHARS = 200

STATUS_BY_CODE = {
    ErrorCode.BAD_FRAME: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NO_SUCH_USER: 404,
    ErrorCode.NO_SUCH_NODE: 404,
    # Never an HTTP answer today (a delivery_failed code); mapped for completeness.
    ErrorCode.NO_ROUTE: 502,
    ErrorCode.USER_EXISTS: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    # A group at its member cap: the request conflicts with the group's state.
    ErrorCode.GROUP_FULL: 409,
    # A user's storage quota is a rate over a long window.
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.BAD_SIGNATURE: 400,
    # The request is well-formed; the password it carries is refused.
    ErrorCode.WEAK_PASSWORD: 422,
    ErrorCode.INTERNAL: 500,
    ErrorCode.FILE_TOO_LARGE: 413,
    # The file is on its way from the sender's node: ask again (retry_after_ms).
    ErrorCode.BLOB_PENDING: 404,
}


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    peer: str


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: A body sent as it is read (a blob download): ``length`` bytes from
    #: ``stream()`` in place of ``body`` (node/server.py).
    stream: Callable[[], AsyncIterator[bytes]] | None = None
    length: int = 0


class BodySource(Protocol):
    """A request body read as it arrives (an upload; node/server.py)."""

    async def receive(self) -> bytes:
        """The next bytes of the body; ``b""`` at its end."""
        ...


#: A handler that reads its request's body itself, as a stream.
UploadHandler = Callable[[HttpRequest, BodySource], Awaitable[HttpResponse]]


def json_response(status: int, value: Any) -> HttpResponse:
    return HttpResponse(status, json.dumps(value).encode("utf-8"))


def json_error_response(status: int, code: str, message: str) -> HttpResponse:
    return json_response(status, {"error": {"code": code, "message": message}})


def error_response(error: ProtocolError) -> HttpResponse:
    detail: dict[str, Any] = {"code": str(error.code), "message": error.message}
    # A limit's size (uploads) and when to ask again (rate limits, pending blobs).
    limit = getattr(error, "limit", None)
    if isinstance(limit, int):
        detail["limit"] = limit
    if error.retry_after_ms is not None:
        detail["retry_after_ms"] = error.retry_after_ms
    # An upload over a size limit or quota is 413 whatever its code (spec of /api/blobs).
    status = 413 if "limit" in detail else STATUS_BY_CODE.get(error.code, 500)
    response = json_response(status, {"error": detail})
    if error.retry_after_ms is not None:
        seconds = max(1, (error.retry_after_ms + 999) // 1000)
        response.headers.append(("retry-after", str(seconds)))
    return response


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class ProfileExtras(Protocol):
    """Profile fields another service keeps (node/receipts.py: ``read_receipts``)."""

    def profile_fields(self, user: str) -> dict[str, Any]: ...
    async def update_profile(self, user: str, body: dict[str, Any]) -> None: ...


@dataclass
class AccountStats:
    """What the account endpoints did since start (``/metrics``)."""

    signups: int = 0
    logins: int = 0
    #: Wrong user or password.
    login_failures: int = 0
    #: Refused unchecked: too many failures for the account or address.
    login_blocked: int = 0


class HttpApi:
    """Routes HTTP requests to their handlers."""

    def __init__(
        self,
        config: NodeConfig,
        identity: NodeIdentity,
        store: Store,
        hub: Hub,
        extra_info: Callable[[], dict[str, Any]] | None = None,
        presence: Any = None,
        *,
        passwords: PasswordHasher,
        invitations: Invitations | None = None,
        profile_extras: ProfileExtras | None = None,
    ) -> None:
        """``invitations``: user invitations that open a closed sign-up (none: closed is closed)."""
        self._invitations = invitations
        #: More profile fields kept by other services (read receipts).
        self._profile_extras = profile_extras
        self._presence = presence
        self._passwords = passwords
        self._config = config
        self._identity = identity
        self._store = store
        self._hub = hub
        self._extra_info = extra_info
        self._password_policy = PasswordPolicy(config.min_password_length)
        self._account_failures = WindowCounter(
            config.login_failures_per_account, config.login_window
        )
        self._address_failures = WindowCounter(
            config.login_failures_per_address, config.login_window
        )
        self._address_signups = WindowCounter(config.signups_per_address, config.signup_window)
        self._node_signups = WindowCounter(config.signups_per_node, config.signup_window)
        self._stats = AccountStats()
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/api/signup"): self.signup,
            ("POST", "/api/login"): self.login,
            ("POST", "/api/logout"): self.logout,
            ("POST", "/api/password"): self.change_password,
            ("GET", "/api/profile"): self.get_profile,
            ("PUT", "/api/profile"): self.put_profile,
            ("GET", "/api/contacts"): self.get_contacts,
            ("POST", "/api/contacts"): self.add_contact,
            ("DELETE", "/api/contacts"): self.remove_contact,
            ("GET", "/.well-known/chinwag"): self.node_info,
        }
        self._prefix_routes: list[tuple[str, str, Handler]] = []
        self._upload_routes: dict[tuple[str, str], UploadHandler] = {}

    def statistics(self) -> AccountStats:
        return replace(self._stats)

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Register another service's endpoint (push, presence, ...)."""
        self._routes[(method, path)] = handler

    def add_prefix_route(self, method: str, prefix: str, handler: Handler) -> None:
        """Register an endpoint for every path under ``prefix`` (``/api/blobs/<sha256>``)."""
        self._prefix_routes.append((method, prefix, handler))

    def add_upload_route(self, method: str, path: str, handler: UploadHandler) -> None:
        """Register an endpoint that streams its request body (never buffered whole)."""
        self._upload_routes[(method, path)] = handler

    def upload_handler(self, method: str, path: str) -> UploadHandler | None:
        """The streaming handler of ``method path``, if it has one (node/server.py)."""
        return self._upload_routes.get((method, path))

    async def handle_upload(
        self, handler: UploadHandler, request: HttpRequest, body: BodySource
    ) -> HttpResponse:
        """Run a streaming handler; a ProtocolError becomes its JSON answer."""
        try:
            return await handler(request, body)
        except ProtocolError as exc:
            return error_response(exc)

    def authorized(self, request: HttpRequest) -> SessionRecord:
        """The session behind a request's Bearer token, or ``unauthorized``."""
        return self._authorized(request)[0]

    async def handle(self, request: HttpRequest) -> HttpResponse:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            handler = next(
                (
                    h
                    for m, prefix, h in self._prefix_routes
                    if m == request.method and request.path.startswith(prefix)
                ),
                None,
            )
        if handler is None:
            if any(path == request.path for _, path in self._routes):
                return json_error_response(405, "bad_request", "method not allowed")
            return json_error_response(404, "not_found", f"no such path {request.path[:100]}")
        try:
            return await handler(request)
        except ProtocolError as exc:
            return error_response(exc)

    # -------------------------------------------------------------- helpers
    @staticmethod
    def json_body(request: HttpRequest) -> dict[str, Any]:
        """The request's JSON object body, or ``bad_request``."""
        try:
            value = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the body is not valid JSON") from exc
        except RecursionError:
            # json.loads recurses per nesting level: a body of 64 KiB of '['
            # exhausts the interpreter's stack long before the size limit.
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the body is nested too deeply") from None
        if not isinstance(value, dict):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the body is a JSON object")
        return value

    @staticmethod
    def _field(body: dict[str, Any], key: str, max_chars: int, *, required: bool = True) -> Any:
        value = body.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or len(value) > max_chars:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"{key!r} is a string of at most {max_chars} characters"
            )
        return value

    def _authorized(self, request: HttpRequest) -> tuple[SessionRecord, bytes]:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "send 'Authorization: Bearer TOKEN'")
        digest = token_hash(token.strip())
        session = self._store.get_session(digest)
        if session is None or self._store.get_user(session.user) is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "unknown or revoked token")
        return session, digest

    # -------------------------------------------------------------- accounts
    async def signup(self, request: HttpRequest) -> HttpResponse:
        body = self.json_body(request)
        secret = self._invitation(body) if self._config.signup != "open" else None
        user = check_user_name(self._field(body, "user", 32))
        password = self._field(body, "password", MAX_PASSWORD_CHARS)
        # Before the rate limits: a refused password costs no hash.
        self._password_policy.check(password, user)
        if self._store.get_user(user) is not None:
            raise ProtocolError(ErrorCode.USER_EXISTS, f"{user} is taken")
        # Counted before hashing, never given back: each sign-up costs a hash.
        now = trio.current_time()
        limits = [(self._address_signups, address_key(request.peer)), (self._node_signups, "")]
        _refuse_if_blocked(limits, now, "too many sign-ups; try again later")
        for counter, key in limits:
            counter.record(key, now)
        if secret is not None and self._invitations is not None:
            # Checked before the costly hash, used up with the user's creation.
            invitations = self._invitations
            now_ms = invitations.now_ms()
            invitations.check(secret, KIND_USER, now_ms)
            pw_hash = await self._passwords.hash(password)
            record = await self._store.create_user(
                user,
                pw_hash,
                now_ms,
                also=lambda w: invitations.use(w, secret, KIND_USER, now_ms),
            )
        else:
            pw_hash = await self._passwords.hash(password)
            record = await self._store.create_user(user, pw_hash, _now_ms())
        self._stats.signups += 1
        log.info(
            "signed up %s from %s",
            record.name,
            request.peer,
            extra=event("signup", user=record.name, client=request.peer),
        )
        return json_response(
            201, {"user": record.name, "address": f"{record.name}@{self._identity.name}"}
        )

    def _invitation(self, body: dict[str, Any]) -> bytes:
        """The secret of the user invitation that opens a closed sign-up."""
        text = body.get("invite")
        if not text or self._invitations is None:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                "sign-up is closed on this node; ask its admin for an invitation code",
            )
        invitation = parse_invitation(self._field(body, "invite", MAX_INVITATION_CHARS))
        if invitation.node_key != self._identity.key.public:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this invitation is for another node")
        if invitation.kind != KIND_USER:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "this invitation links a node (chinwag peers join), not a user"
            )
        return invitation.secret

    async def login(self, request: HttpRequest) -> HttpResponse:
        body = self.json_body(request)
        user = self._field(body, "user", 64)
        password = self._field(body, "password", MAX_PASSWORD_CHARS)
        device = self._field(body, "device", 64, required=False)
        now = trio.current_time()
        limits = [
            (self._account_failures, user),
            (self._address_failures, address_key(request.peer)),
        ]
        try:
            _refuse_if_blocked(limits, now, "too many failed log-ins; try again later")
        except ProtocolError:
            self._stats.login_blocked += 1
            log.warning(
                "log-in refused for %s from %s: too many failures",
                printable(user),
                request.peer,
                extra=event("login_blocked", user=printable(user), client=request.peer),
            )
            raise
        # Counted as a failure before the check (no await since the test
        # above), given back if the password is right: simultaneous guesses
        # see each other, so no more than the limit are ever checked.
        for counter, key in limits:
            counter.record(key, now)
        record = self._store.get_user(user)
        shown = printable(user)  # as typed, which may be anything: escaped for the log
        # An account with a device has logged in before: its check may use
        # the share of the hashing threads kept for returning users.
        returning = record is not None and bool(self._store.list_devices(record.name))
        try:
            good = await self._passwords.verify(
                password, record.pw_hash if record else None, returning=returning
            )
        except ProtocolError:
            for counter, key in limits:  # refused unchecked (queue full): not a try
                counter.give_back(key, now)
            raise
        if not good or record is None:
            self._stats.login_failures += 1
            log.info(
                "log-in failed for %s from %s: %s",
                shown,
                request.peer,
                "wrong password" if record is not None else "no such user",
                extra=event(
                    "login_failed", user=shown, client=request.peer, known_user=record is not None
                ),
            )
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "wrong user or password")
        for counter, key in limits:
            counter.give_back(key, now)
        token = new_token()
        device_id = await self._store.create_session(
            record.name, device, token_hash(token), _now_ms()
        )
        self._stats.logins += 1
        log.info(
            "logged in %s (device %s) from %s",
            record.name,
            device_id,
            request.peer,
            extra=event("login", user=record.name, device=device_id, client=request.peer),
        )
        return json_response(
            200,
            {
                "token": token,
                "device": device_id,
                "user": record.name,
                "node_id": self._identity.id,
                "node_name": self._identity.name,
            },
        )

    async def change_password(self, request: HttpRequest) -> HttpResponse:
        """A user sets a new password, proving the current one.

        The new one must pass the password rule (checked first: a refusal
        costs no hash). A wrong current password counts as a failed log-in,
        under the same limits. On success every session of the user ends,
        this one included: the devices log in again with the new password.
        """
        session, _ = self._authorized(request)
        body = self.json_body(request)
        current = self._field(body, "password", MAX_PASSWORD_CHARS)
        new = self._field(body, "new_password", MAX_PASSWORD_CHARS)
        self._password_policy.check(new, session.user)
        record = self._store.get_user(session.user)
        if record is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "unknown or revoked token")
        now = trio.current_time()
        limits = [
            (self._account_failures, record.name),
            (self._address_failures, address_key(request.peer)),
        ]
        _refuse_if_blocked(limits, now, "too many failed log-ins; try again later")
        for counter, key in limits:
            counter.record(key, now)
        try:
            good = await self._passwords.verify(current, record.pw_hash, returning=True)
        except ProtocolError:
            for counter, key in limits:
                counter.give_back(key, now)
            raise
        if not good:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "the current password is wrong")
        for counter, key in limits:
            counter.give_back(key, now)
        await self._store.set_password(record.name, await self._passwords.hash(new))
        return json_response(200, {"user": record.name})

    async def logout(self, request: HttpRequest) -> HttpResponse:
        session, digest = self._authorized(request)
        await self._store.revoke_session(digest)
        log.info(
            "logged out %s (device %s) from %s",
            session.user,
            session.device,
            request.peer,
            extra=event("logout", user=session.user, device=session.device, client=request.peer),
        )
        return json_response(200, {})

    # -------------------------------------------------------------- profile
    async def get_profile(self, request: HttpRequest) -> HttpResponse:
        session, _ = self._authorized(request)
        record = self._store.get_user(session.user)
        if record is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "unknown or revoked token")
        return json_response(
            200, self._profile_json(record.name, record.display_name, record.status_text)
        )

    async def put_profile(self, request: HttpRequest) -> HttpResponse:
        session, _ = self._authorized(request)
        body = self.json_body(request)
        display = self._field(body, "display_name", MAX_PROFILE_CHARS, required=False)
        status = self._field(body, "status_text", MAX_PROFILE_CHARS, required=False)
        if self._profile_extras is not None:
            await self._profile_extras.update_profile(session.user, body)
        record = await self._store.set_profile(session.user, display, status)
        if self._presence is not None and display is not None:
            # Shown to watchers and the nodes that follow this user.
            self._presence.profile_changed(session.user, record.display_name)
        return json_response(
            200, self._profile_json(record.name, record.display_name, record.status_text)
        )

    def _profile_json(self, user: str, display: str, status: str) -> dict[str, Any]:
        out = {
            "user": user,
            "address": f"{user}@{self._identity.name}",
            "display_name": display,
            "status_text": status,
        }
        if self._profile_extras is not None:
            out.update(self._profile_extras.profile_fields(user))
        return out

    # -------------------------------------------------------------- contacts
    async def get_contacts(self, request: HttpRequest) -> HttpResponse:
        session, _ = self._authorized(request)
        contacts = []
        for address in self._store.list_contacts(session.user):
            item: dict[str, Any] = {"address": address}
            if self._presence is not None:
                item.update(self._presence.state_of_address(address, session.user).to_wire())
            contacts.append(item)
        return json_response(200, {"contacts": contacts})

    def _contact_address(self, request: HttpRequest) -> str:
        if request.body:
            address = self._field(self.json_body(request), "address", 200)
        else:
            values = parse_qs(request.query).get("address", [])
            if not values:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "give the contact's 'address'")
            address = values[0]
        target = parse_target(address)
        if target.is_group:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "a contact is a user, not a group")
        node = target.node or self._identity.name
        if node == self._identity.id:
            node = self._identity.name
        return f"{target.name}@{node}"

    async def add_contact(self, request: HttpRequest) -> HttpResponse:
        session, _ = self._authorized(request)
        address = self._contact_address(request)
        local, _, node = address.partition("@")
        if node == self._identity.name and self._store.get_user(local) is None:
            raise ProtocolError(ErrorCode.NO_SUCH_USER, f"no user {address}")
        await self._store.add_contact(session.user, address)
        if self._presence is not None:
            self._presence.contact_added(session.user, address)
        return json_response(201, {"address": address})

    async def remove_contact(self, request: HttpRequest) -> HttpResponse:
        session, _ = self._authorized(request)
        address = self._contact_address(request)
        await self._store.remove_contact(session.user, address)
        if self._presence is not None:
            self._presence.contact_removed(session.user, address)
        return json_response(200, {"address": address})

    # -------------------------------------------------------------- info
    async def node_info(self, request: HttpRequest) -> HttpResponse:
        stats = self._hub.statistics()
        info: dict[str, Any] = {
            "node_id": self._identity.id,
            "name": self._identity.name,
            "version": VERSION,
            "protocol": PROTOCOL_VERSION,
            "users_online": stats.users_online,
            "connections": stats.connections,
            "signup": self._config.signup,
            "min_password_length": self._config.min_password_length,
            # So a client can refuse a file before uploading it (browsers send
            # the whole body even when the node answers 413 at once).
            "max_file_bytes": self._config.max_file_bytes,
        }
        if self._extra_info is not None:
            info.update(self._extra_info())
        return json_response(200, info)


def _refuse_if_blocked(limits: list[tuple[WindowCounter, str]], now: float, why: str) -> None:
    wait = blocked_for_all(limits, now)
    if wait > 0:
        raise ProtocolError(ErrorCode.RATE_LIMITED, why, retry_after_ms=int(wait * 1000) + 1)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
