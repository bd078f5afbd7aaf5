"""Password hashing (Argon2id) and session tokens.

Passwords are hashed with Argon2id from ``cryptography`` (>= 50, whose
Argon2id releases the GIL) into a PHC string
(``$argon2id$v=19$m=65536,t=2,p=1$salt$hash``), which carries its own
parameters, so raising the cost later keeps old hashes verifiable.

Cost: m = 64 MiB, t = 2, lanes = 1. On the 2-core reference machine one hash
or one verify takes about 90 ms. lanes is always 1: concurrent multi-lane
derives were seen to hang. Every derive runs in a worker thread under a
module-wide ``CapacityLimiter(2)``, so at most two derives (128 MiB) run at
once whatever the log-in rate; the rest wait their turn without blocking the
event loop.

Test speed: with the environment variable ``CHINWAG_TEST_FAST_KDF=1`` new
hashes use a trivial cost (m = 8 KiB, t = 1), for test suites that create
many users. It is read at each call; never set it on a real node.

Tokens: 32 random bytes, base64url without padding. The node stores only
their SHA-256 (:func:`token_hash`); a token is compared by looking up its hash.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
from dataclasses import dataclass

import trio
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

FAST_KDF_ENV = "CHINWAG_TEST_FAST_KDF"
SALT_BYTES = 16
HASH_BYTES = 32
TOKEN_BYTES = 32


@dataclass(frozen=True)
class KdfCost:
    """Argon2id cost parameters; ``memory_kib`` in KiB."""

    memory_kib: int
    iterations: int
    lanes: int = 1


#: ~90 ms per hash on the reference machine (2 cores).
PRODUCTION_COST = KdfCost(memory_kib=64 * 1024, iterations=2)
#: For tests only (``CHINWAG_TEST_FAST_KDF=1``): well under a millisecond.
FAST_TEST_COST = KdfCost(memory_kib=8, iterations=1)

#: At most two Argon2id derives at a time, process-wide.
_limiter = trio.CapacityLimiter(2)

# One dummy hash per cost, made on first use, to verify unknown users against.
_dummy_hashes: dict[KdfCost, str] = {}
_dummy_lock = threading.Lock()


def current_cost() -> KdfCost:
    """The cost used for new hashes (the test override, or production)."""
    if os.environ.get(FAST_KDF_ENV) == "1":
        return FAST_TEST_COST
    return PRODUCTION_COST


def _secret_bytes(password: str) -> bytes:
    # surrogatepass: a JSON body may carry lone surrogates; hash them rather
    # than fail with an encoding error.
    return password.encode("utf-8", "surrogatepass")


def _derive(password: bytes, cost: KdfCost) -> str:
    kdf = Argon2id(
        salt=secrets.token_bytes(SALT_BYTES),
        length=HASH_BYTES,
        iterations=cost.iterations,
        lanes=cost.lanes,
        memory_cost=cost.memory_kib,
    )
    return kdf.derive_phc_encoded(password)


def _verify(password: bytes, pw_hash: str) -> bool:
    try:
        Argon2id.verify_phc_encoded(password, pw_hash)
    except (InvalidKey, ValueError):
        return False
    return True


def _dummy_hash(cost: KdfCost) -> str:
    with _dummy_lock:
        dummy = _dummy_hashes.get(cost)
        if dummy is None:
            dummy = _dummy_hashes[cost] = _derive(secrets.token_bytes(16), cost)
        return dummy


def _verify_unknown(password: bytes) -> bool:
    # Same parameters as a real hash, so "no such user" costs the same time
    # as "wrong password". The result is ignored: the answer is always False.
    _verify(password, _dummy_hash(current_cost()))
    return False


async def hash_password(password: str) -> str:
    """Hash ``password`` with Argon2id in a worker thread; return a PHC string."""
    secret = _secret_bytes(password)
    cost = current_cost()
    return await trio.to_thread.run_sync(_derive, secret, cost, limiter=_limiter)


async def verify_password(password: str, pw_hash: str | None) -> bool:
    """Check ``password`` against a stored hash, in a worker thread.

    ``pw_hash`` None means the user does not exist: a dummy hash of the same
    cost is checked instead, so the time taken does not tell the two apart,
    and the answer is False. A malformed hash is a mismatch, never an error.
    """
    secret = _secret_bytes(password)
    if pw_hash is None:
        return await trio.to_thread.run_sync(_verify_unknown, secret, limiter=_limiter)
    return await trio.to_thread.run_sync(_verify, secret, pw_hash, limiter=_limiter)


def new_token() -> str:
    """A new session token: 32 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode("ascii")


def token_hash(token: str) -> bytes:
    """SHA-256 of a token, the only form the store keeps."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
