"""A node key's fingerprint: digits two admins can read to each other.

``peers add URL`` fetches a node's key over plain HTTP, where anyone on the
path could swap it. The admin confirms the key by comparing its fingerprint
with the one the other node's admin reads from ``chinwag status`` (by
phone, in person): 24 decimal digits in six groups of four, about 80 bits of
a domain-separated SHA-256 of the key. Forging a key with the same
fingerprint takes ~2^80 key generations.
"""

from __future__ import annotations

import hashlib

from .addresses import NODE_ID_BYTES
from .errors import ErrorCode, ProtocolError

_CONTEXT = b"chinwag/v1/fingerprint\x00"
DIGITS = 24
GROUP = 4


def fingerprint(key: bytes) -> str:
    """``"4821 0937 1180 5562 3309 7741"`` for a 32-byte node key."""
    if len(key) != NODE_ID_BYTES:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a node key is 32 bytes")
    digest = hashlib.sha256(_CONTEXT + key).digest()
    # 128 bits reduced mod 10^24 (~2^80): the bias is below 2^-48, negligible.
    number = int.from_bytes(digest[:16], "big") % 10**DIGITS
    text = f"{number:0{DIGITS}d}"
    return " ".join(text[i : i + GROUP] for i in range(0, DIGITS, GROUP))
