"""What a new password must be: long enough, not very common, not the user name.

One rule for every place a password is set: sign-up over HTTP, and the
admin's ``chinwag user add`` / ``chinwag user passwd`` (which hash on the
admin's side, so the CLI checks with the same :class:`PasswordPolicy` before
hashing). A refusal is :class:`~chinwag.protocol.errors.ProtocolError` with
code ``weak_password`` and a message saying why; log-in never applies it, so
an old short password still works until it is changed.

The list of common passwords ships with the package
(``node/data/common-passwords.txt``). It was made from the ``passwords``
frequency list of zxcvbn 4.5.0 (PyPI ``zxcvbn``, MIT licence):

    from zxcvbn.frequency_lists import FREQUENCY_LISTS as F
    p = F["passwords"]
    words = dict.fromkeys(w.lower() for w in p[:1000] + [w for w in p if len(w) >= 8][:4000])

so the top 1,000 of any length (for nodes configured with a shorter minimum)
and the 4,000 most frequent of 8 characters or more.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

from chinwag.protocol.errors import ErrorCode, ProtocolError

#: The default minimum length, in characters (NodeConfig.min_password_length).
DEFAULT_MIN_LENGTH = 8
#: Longer passwords are refused as ``bad_request`` (each costs a hash).
MAX_PASSWORD_CHARS = 1024


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list, lowercased; read once."""
    text = resources.files("chinwag.node").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


@dataclass(frozen=True)
class PasswordPolicy:
    """The rule a new password must pass."""

    min_length: int = DEFAULT_MIN_LENGTH

    def problem(self, password: str, user: str | None = None) -> str | None:
        """Why ``password`` is refused, in words for the person choosing it; None if fine."""
        if len(password) < self.min_length:
            return (
                f"the password is too short: use at least {self.min_length} characters "
                f"(a few words make a good one)"
            )
        if len(password) > MAX_PASSWORD_CHARS:
            return f"the password is too long: at most {MAX_PASSWORD_CHARS} characters"
        lowered = password.lower()
        if user is not None and lowered == user.lower():
            return "the password is the user name: choose something else"
        if lowered in common_passwords():
            return "the password is one of the most common passwords: choose a less obvious one"
        return None

    def check(self, password: str, user: str | None = None) -> None:
        """Raise ``weak_password`` with the reason, or return."""
        why = self.problem(password, user)
        if why is not None:
            raise ProtocolError(ErrorCode.WEAK_PASSWORD, why)


__all__ = ["DEFAULT_MIN_LENGTH", "MAX_PASSWORD_CHARS", "PasswordPolicy", "common_passwords"]
