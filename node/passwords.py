"""Password hashing (Argon2id), its bounded work queue, and session tokens.

Passwords are hashed with Argon2id from ``cryptography`` (>= 50, whose
Argon2id releases the GIL) into a PHC string
(``$argon2id$v=19$m=65536,t=2,p=1$salt$hash``), which carries its own
parameters, so raising the cost later keeps old hashes verifiable.

Cost: m = 64 MiB, t = 2, lanes = 1 (:data:`PRODUCTION_COST`). On the 2-core
reference machine one hash or one verify takes about 90-150 ms. lanes is
always 1: concurrent multi-lane derives were seen to hang.

A node hashes through one :class:`PasswordHasher`: every derive runs in a
worker thread, at most ``threads`` at once (each holds 64 MiB), and the work
waiting for a thread is bounded. Two lanes share the threads:

* the *returning* lane, for log-ins to accounts that logged in successfully
  before; it may use every thread;
* the *general* lane (sign-ups, unknown users, accounts never logged in); it
  may use all threads but ``reserved``.

So a flood of sign-ups or log-ins with made-up names can neither hold the
event loop nor take the last thread from a returning user. A lane whose
queue is full refuses at once with ``rate_limited`` and a ``retry_after_ms``
estimated from the measured time per derive.

The cost of new hashes is a constructor argument. Nothing in the installed
code reads it from the environment: test suites inject a cheap cost through
the node's constructor (in-process nodes) or through
:func:`set_default_cost`, called by a test-only entry module before the CLI
runs (subprocess nodes).

Tokens: 32 random bytes, base64url without padding. The node stores only
their SHA-256 (:func:`token_hash`); a token is compared by looking up its hash.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import trio
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from chinwag.protocol.errors import ErrorCode, ProtocolError

SALT_BYTES = 16
HASH_BYTES = 32
TOKEN_BYTES = 32

T = TypeVar("T")


@dataclass(frozen=True)
class KdfCost:
    """Argon2id cost parameters; ``memory_kib`` in KiB."""

    memory_kib: int
    iterations: int
    lanes: int = 1


#: ~90-150 ms per hash on the reference machine (2 cores).
PRODUCTION_COST = KdfCost(memory_kib=64 * 1024, iterations=2)
#: Well under a millisecond: for test suites that create many users. Only
#: ever passed in by test code; no setting of a node selects it.
FAST_TEST_COST = KdfCost(memory_kib=8, iterations=1)

_default_cost = PRODUCTION_COST

# One dummy hash per cost, made on first use, to verify unknown users against.
_dummy_hashes: dict[KdfCost, str] = {}
_dummy_lock = threading.Lock()


def default_cost() -> KdfCost:
    """The cost of new hashes where none is given: production, unless a test
    entry module called :func:`set_default_cost` in this process."""
    return _default_cost


def set_default_cost(cost: KdfCost) -> None:
    """Change this process's default cost. Called only by test entry modules
    (``tests/fastkdf.py``) before they start the CLI; never by the node."""
    global _default_cost
    _default_cost = cost


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


def _verify_unknown(password: bytes, cost: KdfCost) -> bool:
    # Same parameters as a real hash, so "no such user" costs the same time
    # as "wrong password". The result is ignored: the answer is always False.
    _verify(password, _dummy_hash(cost))
    return False


async def hash_password(password: str, cost: KdfCost | None = None) -> str:
    """Hash ``password`` in a worker thread, outside any node's queue (the CLI's
    ``chinwag user add``); return a PHC string."""
    return await trio.to_thread.run_sync(_derive, _secret_bytes(password), cost or default_cost())


async def verify_password(password: str, pw_hash: str) -> bool:
    """Check ``password`` against a PHC string in a worker thread, unqueued."""
    return await trio.to_thread.run_sync(_verify, _secret_bytes(password), pw_hash)


@dataclass(frozen=True)
class HasherStats:
    """What a :class:`PasswordHasher` has done and holds."""

    #: New hashes made (sign-ups).
    hashes: int
    #: Passwords checked, dummy checks of unknown users included.
    verifies: int
    #: Derives running in worker threads now.
    running: int
    #: Waiting for a thread, per lane.
    waiting_general: int
    waiting_returning: int
    #: Turned away with ``rate_limited`` because their lane's queue was full.
    refused: int


class _Waiter:
    __slots__ = ("event", "granted", "returning")

    def __init__(self, returning: bool) -> None:
        self.event = trio.Event()
        self.granted = False
        self.returning = returning


class PasswordHasher:
    """Runs a node's Argon2id work: bounded threads, bounded queues, two lanes."""

    def __init__(
        self,
        cost: KdfCost | None = None,
        *,
        threads: int = 2,
        reserved: int = 1,
        queue: int = 32,
    ) -> None:
        if threads < 1 or not 0 <= reserved < threads or queue < 0:
            raise ValueError("need threads >= 1, 0 <= reserved < threads, queue >= 0")
        self.cost = cost or default_cost()
        self._threads = threads
        self._general_cap = threads - reserved
        self._queue = queue
        self._limiter = trio.CapacityLimiter(threads)
        self._running = 0
        self._running_general = 0
        self._waiting: dict[bool, collections.deque[_Waiter]] = {
            False: collections.deque(),
            True: collections.deque(),
        }
        #: Measured seconds per derive (moving average), for retry_after_ms.
        self._seconds_per_derive = 0.1
        self._hashes = 0
        self._verifies = 0
        self._refused = 0

    def statistics(self) -> HasherStats:
        return HasherStats(
            hashes=self._hashes,
            verifies=self._verifies,
            running=self._running,
            waiting_general=len(self._waiting[False]),
            waiting_returning=len(self._waiting[True]),
            refused=self._refused,
        )

    async def hash(self, password: str) -> str:
        """A new PHC hash of ``password`` (general lane)."""
        result = await self._run(False, _derive, _secret_bytes(password), self.cost)
        self._hashes += 1
        return result

    async def verify(self, password: str, pw_hash: str | None, *, returning: bool = False) -> bool:
        """Check ``password`` against a stored hash.

        ``pw_hash`` None means the user does not exist: a dummy hash of the same
        cost is checked instead, so the time taken does not tell the two apart,
        and the answer is False. A malformed hash is a mismatch, never an error.
        ``returning`` puts the check in the returning lane (the account has
        logged in before). Raises ``rate_limited`` when the lane's queue is full.
        """
        secret = _secret_bytes(password)
        if pw_hash is None:
            result = await self._run(returning, _verify_unknown, secret, self.cost)
        else:
            result = await self._run(returning, _verify, secret, pw_hash)
        self._verifies += 1
        return result

    # ---------------------------------------------------------------- slots
    async def _run(self, returning: bool, fn: Callable[..., T], *args: object) -> T:
        await self._acquire(returning)
        try:
            started = trio.current_time()
            result = await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
            took = trio.current_time() - started
            self._seconds_per_derive += (took - self._seconds_per_derive) / 8
            return result
        finally:
            self._release(returning)

    def _free(self, returning: bool) -> bool:
        if self._running >= self._threads:
            return False
        return returning or self._running_general < self._general_cap

    def _take(self, returning: bool) -> None:
        self._running += 1
        if not returning:
            self._running_general += 1

    async def _acquire(self, returning: bool) -> None:
        queue = self._waiting[returning]
        if not queue and self._free(returning):
            self._take(returning)
            return
        if len(queue) >= self._queue:
            self._refused += 1
            usable = self._threads if returning else self._general_cap
            wait = self._seconds_per_derive * (len(queue) + self._running) / usable
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                "the node is busy checking passwords; try again shortly",
                retry_after_ms=int(wait * 1000) + 1,
            )
        waiter = _Waiter(returning)
        queue.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self._release(returning)  # handed a slot, but leaving: pass it on
            else:
                queue.remove(waiter)
            raise

    def _release(self, returning: bool) -> None:
        self._running -= 1
        if not returning:
            self._running_general -= 1
        # Returning users first: that is what the reserved share is for.
        for lane in (True, False):
            queue = self._waiting[lane]
            while queue and self._free(lane):
                waiter = queue.popleft()
                waiter.granted = True
                self._take(lane)
                waiter.event.set()


def new_token() -> str:
    """A new session token: 32 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode("ascii")


def token_hash(token: str) -> bytes:
    """SHA-256 of a token, the only form the store keeps."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
