"""The ``chinwag`` command's exit codes, in one place (README "Exit codes").

Scripts can tell what went wrong without parsing messages. The protocol's
error codes (and the client library's) map onto these in
:func:`for_error_code`, so every command reports the same failure the same way.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    """What ``chinwag`` returns."""

    #: Done.
    OK = 0
    #: Any other failure (a refused request that fits none of the codes below).
    ERROR = 1
    #: Bad command line or config file (argparse also exits 2), including a
    #: file it names that does not exist (TLS certificate or key, --config).
    USAGE = 2
    #: The node could not be reached (nothing listening, timeout, TLS failure).
    UNREACHABLE = 3
    #: Credentials refused: wrong user or password, revoked token, a weak
    #: password refused, sign-up closed.
    REFUSED = 4
    #: What the command names does not exist (user, peer, group, node).
    NOT_FOUND = 5
    #: It already exists or is taken: user name, data directory in use by a
    #: running node, listening port in use.
    CONFLICT = 6
    #: The data directory or store failed: not writable, disk full, store
    #: written by another version, locked by a node that does not answer.
    STORAGE = 7
    #: Interrupted (Ctrl-C), as shells count it: 128 + SIGINT.
    INTERRUPTED = 130


_BY_ERROR_CODE = {
    "unauthorized": Exit.REFUSED,
    "forbidden": Exit.REFUSED,
    "weak_password": Exit.REFUSED,
    "no_such_user": Exit.NOT_FOUND,
    "no_such_node": Exit.NOT_FOUND,
    "not_found": Exit.NOT_FOUND,
    "user_exists": Exit.CONFLICT,
    "conflict": Exit.CONFLICT,
    "bad_request": Exit.USAGE,
}


def for_error_code(code: str) -> Exit:
    """The exit code for a refusal with this protocol error code."""
    return _BY_ERROR_CODE.get(code, Exit.ERROR)


__all__ = ["Exit", "for_error_code"]
