"""The password rule: a minimum length, no very common password, not the user name."""

from __future__ import annotations

import pytest

from chinwag.node.admin import admin_request
from chinwag.node.client import http_json, login
from chinwag.node.password_policy import PasswordPolicy, common_passwords
from chinwag.node.passwords import FAST_TEST_COST, hash_password

GOOD = "a long enough passphrase"


def test_shipped_list_is_loaded_and_lowercase() -> None:
    words = common_passwords()
    assert 4000 <= len(words) <= 10_000
    assert {"123456", "password", "iloveyou", "password1", "qwertyuiop"} <= words
    assert all(word == word.lower() and word.strip() == word for word in words)


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("", "too short"),
        ("seven77", "at least 8 characters"),
        ("password1", "most common"),
        ("QWERTYUIOP", "most common"),  # compared without case
        ("alice-the-user", "the user name"),
    ],
)
def test_policy_says_why(password: str, why: str) -> None:
    problem = PasswordPolicy().problem(password, "alice-the-user")
    assert problem is not None and why in problem


def test_policy_accepts_and_minimum_is_configurable() -> None:
    assert PasswordPolicy().problem(GOOD, "alice") is None
    assert PasswordPolicy().problem("8 chars!", "alice") is None
    assert PasswordPolicy(min_length=12).problem("eleven chars", "alice") is None
    assert "at least 13" in (PasswordPolicy(min_length=13).problem("eleven chars") or "")
    assert PasswordPolicy(min_length=4).problem("zq9!", "alice") is None


async def test_signup_refuses_weak_passwords_with_the_reason(start_node) -> None:
    # One sign-up allowed per address: refused passwords must not use it up.
    node = await start_node(signups_per_address=1)
    for password, why in (
        ("short", "at least 8 characters"),
        ("iloveyou1", "most common"),
        ("Football1", "most common"),
        ("alice", "at least 8"),
        ("alicealice", None),
    ):
        status, body = await http_json(
            node.url, "POST", "/api/signup", {"user": "alicealice", "password": password}
        )
        assert status == 422, body
        assert body["error"]["code"] == "weak_password"
        assert why is None or why in body["error"]["message"]
    assert node.node.store.get_user("alicealice") is None
    status, body = await http_json(
        node.url, "POST", "/api/signup", {"user": "alicealice", "password": GOOD}
    )
    assert status == 201, body
    assert (await login(node.url, "alicealice", GOOD)).token


async def test_minimum_length_is_a_node_setting(start_node) -> None:
    node = await start_node(min_password_length=20)
    status, body = await http_json(
        node.url, "POST", "/api/signup", {"user": "bob", "password": "nineteen characters"}
    )
    assert status == 422 and "at least 20 characters" in body["error"]["message"]
    status, _ = await http_json(
        node.url, "POST", "/api/signup", {"user": "bob", "password": "twenty characters ok"}
    )
    assert status == 201


async def test_an_old_short_password_still_logs_in(start_node) -> None:
    """The rule is for new passwords: an account made before it keeps working."""
    node = await start_node()
    pw_hash = await hash_password("pw", FAST_TEST_COST)
    await admin_request(node.node.config.data_dir, "user.add", {"user": "old", "pw_hash": pw_hash})
    assert (await login(node.url, "old", "pw")).user == "old"


async def test_password_change_applies_the_rule_and_needs_the_current_one(start_node) -> None:
    node = await start_node()
    await http_json(node.url, "POST", "/api/signup", {"user": "erin", "password": GOOD})
    token = (await login(node.url, "erin", GOOD)).token

    async def change(current: str, new: str) -> tuple[int, dict]:
        return await http_json(
            node.url, "POST", "/api/password", {"password": current, "new_password": new}, token
        )

    status, body = await change(GOOD, "abc")
    assert status == 422 and body["error"]["code"] == "weak_password"
    assert "at least 8 characters" in body["error"]["message"]
    status, body = await change(GOOD, "sunshine1")
    assert status == 422 and "most common" in body["error"]["message"]
    status, body = await change("not the password", "another good password")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await change(GOOD, "another good password")
    assert status == 200 and body == {"user": "erin"}
    # Every session ended, this one too; the new password logs in, the old does not.
    status, _ = await http_json(node.url, "GET", "/api/profile", None, token)
    assert status == 401
    assert (await login(node.url, "erin", "another good password")).token
    status, _ = await http_json(node.url, "POST", "/api/login", {"user": "erin", "password": GOOD})
    assert status == 401
