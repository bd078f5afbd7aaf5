"""Argon2id password hashing, the node's bounded hashing queue, session tokens."""

from __future__ import annotations

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from chinwag.node import passwords
from chinwag.node.passwords import (
    FAST_TEST_COST,
    PRODUCTION_COST,
    PasswordHasher,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)
from chinwag.protocol.errors import ErrorCode, ProtocolError


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(FAST_TEST_COST)


async def test_hash_and_verify_roundtrip(hasher: PasswordHasher) -> None:
    pw_hash = await hasher.hash("correct horse")
    assert pw_hash.startswith("$argon2id$")
    assert "correct horse" not in pw_hash
    assert await hasher.verify("correct horse", pw_hash)
    # Salted: the same password hashes differently each time.
    assert await hasher.hash("correct horse") != pw_hash
    stats = hasher.statistics()
    assert (stats.hashes, stats.verifies, stats.running, stats.refused) == (2, 1, 0, 0)


async def test_wrong_password(hasher: PasswordHasher) -> None:
    pw_hash = await hasher.hash("correct horse")
    assert not await hasher.verify("correct hors", pw_hash)
    assert not await hasher.verify("", pw_hash, returning=True)


async def test_unknown_user_checks_a_dummy_hash(hasher: PasswordHasher) -> None:
    assert not await hasher.verify("anything", None)
    # The dummy has the same cost as new hashes, so it takes the same time.
    assert hasher.cost in passwords._dummy_hashes  # noqa: SLF001
    assert hasher.statistics().verifies == 1


async def test_malformed_hash_is_a_mismatch(hasher: PasswordHasher) -> None:
    assert not await hasher.verify("x", "not a phc string")
    assert not await hasher.verify("x", "")


async def test_odd_passwords(hasher: PasswordHasher) -> None:
    for password in ("\ud800 lone surrogate", "ünïcødé 🔑", "x" * 1024):
        assert await hasher.verify(password, await hasher.hash(password))


async def test_production_cost_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # The old test switch has no effect on the installed code.
    monkeypatch.setenv("CHINWAG_TEST_FAST_KDF", "1")
    assert passwords.default_cost() == PRODUCTION_COST
    assert PasswordHasher().cost == PRODUCTION_COST
    pw_hash = await hash_password("pw")
    assert "$m=65536,t=2,p=1$" in pw_hash
    # A hash made under another cost still verifies: the PHC string carries it.
    assert await verify_password("pw", pw_hash)
    assert await PasswordHasher(FAST_TEST_COST).verify("pw", pw_hash)


async def test_a_full_queue_refuses_with_a_retry_time() -> None:
    """One thread, no reserve, a queue of 2: the fourth concurrent check is
    refused at once; the first three complete."""
    hasher = PasswordHasher(PRODUCTION_COST, threads=1, reserved=0, queue=2)
    outcomes: list[object] = []

    async def check() -> None:
        try:
            outcomes.append(await hasher.verify("pw", None))
        except ProtocolError as exc:
            outcomes.append(exc)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(check)
            await wait_all_tasks_blocked()
            stats = hasher.statistics()
            assert (stats.running, stats.waiting_general) == (1, 2)
    refused = [o for o in outcomes if isinstance(o, ProtocolError)]
    assert len(refused) == 1 and outcomes.count(False) == 3
    assert refused[0].code == ErrorCode.RATE_LIMITED and refused[0].retry_after_ms
    assert hasher.statistics().refused == 1


async def test_the_reserved_thread_serves_only_returning_users() -> None:
    """Two threads, one reserved: general work never runs two at once, and a
    returning check runs while general work waits."""
    hasher = PasswordHasher(PRODUCTION_COST, threads=2, reserved=1, queue=8)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(hasher.verify, "pw", None)
            await wait_all_tasks_blocked()
            stats = hasher.statistics()
            assert (stats.running, stats.waiting_general) == (1, 2)
            done = trio.Event()

            async def returning() -> None:
                await hasher.verify("pw", None, returning=True)
                done.set()

            nursery.start_soon(returning)
            await wait_all_tasks_blocked()
            assert hasher.statistics().running == 2
            await done.wait()
            # The returning check finished before the general queue emptied.
            assert hasher.statistics().waiting_general >= 1


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    hasher = PasswordHasher(PRODUCTION_COST, threads=1, reserved=0, queue=4)
    scope = trio.CancelScope()

    async def waits_then_cancelled() -> None:
        with scope:
            await hasher.verify("pw", None)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hasher.verify, "pw", None)
            await wait_all_tasks_blocked()
            nursery.start_soon(waits_then_cancelled)
            await wait_all_tasks_blocked()
            assert hasher.statistics().waiting_general == 1
            scope.cancel()
            await wait_all_tasks_blocked()
            assert hasher.statistics().waiting_general == 0
        assert await hasher.verify("pw", None) is False
    stats = hasher.statistics()
    assert (stats.running, stats.waiting_general) == (0, 0)


def test_bad_shapes_are_refused() -> None:
    for threads, reserved in ((0, 0), (2, 2), (1, -1)):
        with pytest.raises(ValueError):
            PasswordHasher(FAST_TEST_COST, threads=threads, reserved=reserved)


def test_tokens() -> None:
    token = new_token()
    assert len(token) == 43 and "=" not in token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert new_token() != token
    assert len(token_hash(token)) == 32
    assert token_hash(token) == token_hash(token)
    assert token_hash(token) != token_hash(new_token())
