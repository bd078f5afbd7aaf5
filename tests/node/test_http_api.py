"""The stateless HTTP API: accounts, profile, contacts, node info."""

from __future__ import annotations

import pytest

from chinwag.node.client import ClientError, api_call, connect, http_json, login, signup

PASSWORD = "pw-for-tests"


async def test_signup_login_logout(start_node) -> None:
    node = await start_node()
    status, body = await http_json(
        node.url, "POST", "/api/signup", {"user": "alice", "password": PASSWORD}
    )
    assert status == 201 and body["user"] == "alice"
    status, body = await http_json(
        node.url, "POST", "/api/signup", {"user": "alice", "password": PASSWORD}
    )
    assert status == 409 and body["error"]["code"] == "user_exists"
    result = await login(node.url, "alice", PASSWORD, "laptop")
    assert result.device == "laptop" and result.token
    again = await login(node.url, "alice", PASSWORD, "laptop")
    assert again.device == "laptop" and again.token != result.token
    await api_call(node.url, "POST", "/api/logout", {}, token=result.token)
    with pytest.raises(ClientError) as info:
        async with connect(node.url, result.token):
            pass
    assert info.value.code == "unauthorized"
    async with connect(node.url, again.token) as client:  # other token still valid
        assert client.info is not None and client.info.device == "laptop"


async def test_unknown_user_and_wrong_password_look_the_same(start_node) -> None:
    node = await start_node()
    await signup(node.url, "alice", PASSWORD)
    wrong = await http_json(node.url, "POST", "/api/login", {"user": "alice", "password": "x"})
    unknown = await http_json(node.url, "POST", "/api/login", {"user": "zed", "password": "x"})
    assert wrong == unknown
    assert wrong[0] == 401 and wrong[1]["error"]["code"] == "unauthorized"


async def test_login_failures_are_limited_per_account(start_node) -> None:
    node = await start_node(login_failures_per_account=3)
    await signup(node.url, "alice", PASSWORD)
    for _ in range(3):
        status, _ = await http_json(
            node.url, "POST", "/api/login", {"user": "alice", "password": "bad"}
        )
        assert status == 401
    status, body = await http_json(
        node.url, "POST", "/api/login", {"user": "alice", "password": PASSWORD}
    )
    assert status == 429 and body["error"]["code"] == "rate_limited"


async def test_login_failures_are_limited_per_address(start_node) -> None:
    node = await start_node(login_failures_per_address=4, login_failures_per_account=100)
    for i in range(4):
        await http_json(node.url, "POST", "/api/login", {"user": f"u{i}", "password": "bad"})
    status, body = await http_json(
        node.url, "POST", "/api/login", {"user": "someone", "password": "bad"}
    )
    assert status == 429 and body["error"]["code"] == "rate_limited"


async def test_closed_signup(start_node) -> None:
    node = await start_node(signup="closed")
    status, body = await http_json(
        node.url, "POST", "/api/signup", {"user": "alice", "password": PASSWORD}
    )
    assert status == 403 and body["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"user": "Bad Name", "password": "x"}, 400),
        ({"user": "a" * 33, "password": "x"}, 400),
        ({"user": "alice"}, 400),
        ({"user": "alice", "password": 5}, 400),
    ],
)
async def test_signup_validation(start_node, body, status) -> None:
    node = await start_node()
    got, answer = await http_json(node.url, "POST", "/api/signup", body)
    assert got == status and answer["error"]["code"] == "bad_request"


async def test_malformed_requests(start_node) -> None:
    node = await start_node()
    import trio

    stream = await trio.open_tcp_stream("127.0.0.1", node.running.port)
    async with stream:
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        with trio.fail_after(5):
            data = await stream.receive_some(4096)
        assert data.startswith(b"HTTP/1.1 400")
    status, _ = await http_json(node.url, "GET", "/no/such/path")
    assert status == 404
    status, body = await http_json(node.url, "POST", "/api/login")
    assert status == 400


async def test_profile_and_contacts(start_node) -> None:
    node = await start_node()
    token = await node.user("alice")
    await node.user("bob")
    profile = await api_call(node.url, "GET", "/api/profile", token=token)
    assert profile["user"] == "alice" and profile["display_name"] == ""
    await api_call(
        node.url, "PUT", "/api/profile", {"display_name": "Alice A.", "status_text": "hi"}, token
    )
    profile = await api_call(node.url, "GET", "/api/profile", token=token)
    assert profile["display_name"] == "Alice A." and profile["status_text"] == "hi"
    name = node.running.identity.name
    await api_call(node.url, "POST", "/api/contacts", {"address": "bob"}, token)
    contacts = await api_call(node.url, "GET", "/api/contacts", token=token)
    assert contacts["contacts"] == [
        {"address": f"bob@{name}", "status": "offline", "last_active_at": None}
    ]
    status, body = await http_json(node.url, "POST", "/api/contacts", {"address": "nobody"}, token)
    assert status == 404 and body["error"]["code"] == "no_such_user"
    await api_call(node.url, "DELETE", "/api/contacts", {"address": f"bob@{name}"}, token)
    assert (await api_call(node.url, "GET", "/api/contacts", token=token))["contacts"] == []
    status, _ = await http_json(node.url, "GET", "/api/profile")
    assert status == 401


async def test_well_known(start_node) -> None:
    node = await start_node()
    token = await node.user("alice")
    info = await api_call(node.url, "GET", "/.well-known/chinwag")
    assert info["node_id"] == node.running.identity.id
    assert info["users_online"] == 0 and info["version"]
    async with connect(node.url, token):
        info = await api_call(node.url, "GET", "/.well-known/chinwag")
        assert info["users_online"] == 1 and info["name"] == node.running.identity.name
