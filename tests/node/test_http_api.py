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
        ({"user": "Bad Name", "password": PASSWORD}, 400),
        ({"user": "a" * 33, "password": PASSWORD}, 400),
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


async def raw_http(port: int, request: bytes) -> bytes:
    """Send raw bytes; return everything the node answers until it closes."""
    import trio

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
        return data


def post(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@pytest.mark.parametrize("opener", ["[", '{"a":'])
async def test_deeply_nested_json_body_is_bad_request(start_node, opener) -> None:
    node = await start_node()
    depth = 60_000 // len(opener)  # under the 64 KiB body limit, far past the stack
    body = (opener * depth).encode()
    for path in ("/api/login", "/api/signup"):
        answer = await raw_http(node.running.port, post(path, body))
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b'"bad_request"' in answer
    status, _ = await http_json(node.url, "GET", "/.well-known/chinwag")
    assert status == 200


async def test_a_stalled_request_body_is_cut_off(start_node) -> None:
    import trio

    node = await start_node(handshake_timeout=1.0, http_idle_timeout=30.0)
    stream = await trio.open_tcp_stream("127.0.0.1", node.running.port)
    async with stream:
        # The head promises 100 bytes; 10 come, then nothing.
        await stream.send_all(post("/api/login", b"x" * 100)[:-90])
        started = trio.current_time()
        with trio.fail_after(10):
            try:
                while await stream.receive_some(4096):
                    pass
            except trio.BrokenResourceError:
                pass  # reset rather than closed: cut off all the same
        assert trio.current_time() - started < 5


async def test_a_trickled_request_body_is_cut_off(start_node) -> None:
    import trio

    node = await start_node(handshake_timeout=1.0, http_idle_timeout=30.0)
    request = post("/api/login", b"x" * 1000)
    head_len = request.index(b"\r\n\r\n") + 4
    stream = await trio.open_tcp_stream("127.0.0.1", node.running.port)
    closed = False
    async with stream:
        await stream.send_all(request[:head_len])
        started = trio.current_time()
        with trio.fail_after(10):
            # One byte every 0.1 s: each read is quick, the body never ends.
            for byte in request[head_len:]:
                try:
                    await stream.send_all(bytes([byte]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    closed = True
                    break
                with trio.move_on_after(0.1):
                    try:
                        if await stream.receive_some(4096) == b"":
                            closed = True
                            break
                    except trio.BrokenResourceError:
                        closed = True
                        break
    assert closed, "the node kept reading a trickled body"
    assert trio.current_time() - started < 5


def test_every_error_code_that_can_reach_http_has_a_status() -> None:
    from chinwag.node.http_api import STATUS_BY_CODE
    from chinwag.protocol.errors import ErrorCode

    bye_only = {ErrorCode.SLOW_CONSUMER, ErrorCode.TIMEOUT}
    assert set(ErrorCode) - set(STATUS_BY_CODE) == bye_only
    assert STATUS_BY_CODE[ErrorCode.GROUP_FULL] == 409
    assert STATUS_BY_CODE[ErrorCode.BAD_SIGNATURE] == 400
    assert STATUS_BY_CODE[ErrorCode.INTERNAL] == 500
