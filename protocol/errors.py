"""The protocol's one error type and its stable codes.

Every decoder and validator in ``chinwag.protocol`` raises only
:class:`ProtocolError`; the node turns it into an ``err`` frame or an HTTP
error body with the same ``code``.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Machine-readable error codes; stable, listed in docs/protocol.md."""

    BAD_FRAME = "bad_frame"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NO_SUCH_USER = "no_such_user"
    NO_SUCH_NODE = "no_such_node"
    USER_EXISTS = "user_exists"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    GROUP_FULL = "group_full"
    QUOTA_EXCEEDED = "quota_exceeded"
    #: An upload over the node's per-file limit (``limit`` says how many bytes).
    FILE_TOO_LARGE = "file_too_large"
    #: A blob the user's node is still fetching from the origin node
    #: (``retry_after_ms`` says when to ask again).
    BLOB_PENDING = "blob_pending"
    #: A new password refused by the node's password rule (too short, very
    #: common, the user name); the message says which.
    WEAK_PASSWORD = "weak_password"
    UNAVAILABLE = "unavailable"
    BAD_SIGNATURE = "bad_signature"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    SLOW_CONSUMER = "slow_consumer"
    TIMEOUT = "timeout"
    NO_ROUTE = "no_route"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A rule of the protocol was broken.

    ``code`` is the stable machine-readable reason; ``message`` is for humans.
    ``retry_after_ms`` is set for ``rate_limited``.
    """

    def __init__(self, code: ErrorCode, message: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms
