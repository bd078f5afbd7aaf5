"""Argon2id password hashing and session tokens."""

from __future__ import annotations

import pytest

from chinwag.node import passwords
from chinwag.node.passwords import hash_password, new_token, token_hash, verify_password


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(passwords.FAST_KDF_ENV, "1")


async def test_hash_and_verify_roundtrip() -> None:
    pw_hash = await hash_password("correct horse")
    assert pw_hash.startswith("$argon2id$")
    assert "correct horse" not in pw_hash
    assert await verify_password("correct horse", pw_hash)
    # Salted: the same password hashes differently each time.
    assert await hash_password("correct horse") != pw_hash


async def test_wrong_password() -> None:
    pw_hash = await hash_password("correct horse")
    assert not await verify_password("correct hors", pw_hash)
    assert not await verify_password("", pw_hash)


async def test_unknown_user_checks_a_dummy_hash() -> None:
    assert not await verify_password("anything", None)
    # The dummy has the same cost as new hashes, so it takes the same time.
    assert passwords.current_cost() in passwords._dummy_hashes  # noqa: SLF001


async def test_malformed_hash_is_a_mismatch() -> None:
    assert not await verify_password("x", "not a phc string")
    assert not await verify_password("x", "")


async def test_odd_passwords() -> None:
    for password in ("\ud800 lone surrogate", "ünïcødé 🔑", "x" * 1024):
        assert await verify_password(password, await hash_password(password))


async def test_production_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(passwords.FAST_KDF_ENV)
    assert passwords.current_cost() == passwords.PRODUCTION_COST
    pw_hash = await hash_password("pw")
    assert "$m=65536,t=2,p=1$" in pw_hash
    assert await verify_password("pw", pw_hash)
    # A hash made under the test cost still verifies: the PHC string carries it.
    monkeypatch.setenv(passwords.FAST_KDF_ENV, "1")
    assert await verify_password("pw", pw_hash)


def test_tokens() -> None:
    token = new_token()
    assert len(token) == 43 and "=" not in token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert new_token() != token
    assert len(token_hash(token)) == 32
    assert token_hash(token) == token_hash(token)
    assert token_hash(token) != token_hash(new_token())
