"""Abuse resistance of log-in and sign-up (issue 11): real nodes on loopback.

Requests come from several loopback source addresses (127.0.0.2, ...) so the
per-address limits see distinct clients, as they would on a network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from chinwag.node.client import ClientError, connect, login, signup
from chinwag.node.identity import load_identity
from chinwag.node.passwords import KdfCost
from chinwag.node.store import Store

from ..integration.procs import spawn_node

PASSWORD = "pw-for-tests"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, object]

    @property
    def code(self) -> object:
        error = self.body.get("error")
        return error.get("code") if isinstance(error, dict) else None


async def post(url: str, path: str, body: dict[str, object], source: str) -> Answer:
    """POST a JSON body from loopback address ``source``; read the whole answer."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode()
    with trio.fail_after(60):
        stream = await trio.open_tcp_stream(host, int(port), local_address=source)
        async with stream:
            await stream.send_all(head + payload)
            data = bytearray()
            while chunk := await stream.receive_some(65536):
                data += chunk
    raw_head, _, raw_body = bytes(data).partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, json.loads(raw_body or b"{}"))


async def gather(calls: list[tuple[str, dict[str, object], str]], url: str) -> list[Answer]:
    """Send every (path, body, source) at once; answers in the same order."""
    answers: list[Answer | None] = [None] * len(calls)

    async def one(i: int, path: str, body: dict[str, object], source: str) -> None:
        answers[i] = await post(url, path, body, source)

    async with trio.open_nursery() as nursery:
        for i, (path, body, source) in enumerate(calls):
            nursery.start_soon(one, i, path, body, source)
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


async def test_concurrent_guesses_verify_at_most_the_account_limit(start_node) -> None:
    """Each try is counted before its check: N simultaneous wrong guesses plus
    the right one verify at most ``limit`` passwords; the rest are refused."""
    limit = 10
    node = await start_node(login_failures_per_account=limit, login_failures_per_address=1000)
    await signup(node.url, "alice", PASSWORD)
    guesses = [
        ("/api/login", {"user": "alice", "password": f"guess {i}"}, SOURCES[i % 4])
        for i in range(64)
    ]
    guesses.append(("/api/login", {"user": "alice", "password": PASSWORD}, SOURCES[0]))
    answers = await gather(guesses, node.url)
    wrong = [a for a in answers if a.status == 401]
    right = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    # A right password is checked too, and hands its try back (a good log-in
    # never uses up the limit): so at most ``limit`` wrong guesses, plus the
    # right one if it came in before the limit was reached.
    assert len(wrong) <= limit, [a.status for a in answers]
    assert len(right) <= 1
    assert len(wrong) + len(right) + len(refused) == len(answers)
    for answer in refused:
        assert answer.code == "rate_limited"
        assert int(answer.headers["retry-after"]) >= 1
    stats = node.node.passwords.statistics()
    assert stats.verifies <= limit + len(right)


async def test_concurrent_guesses_verify_at_most_the_address_limit(start_node) -> None:
    limit = 5
    node = await start_node(login_failures_per_account=1000, login_failures_per_address=limit)
    guesses = [("/api/login", {"user": f"u{i}", "password": "bad"}, SOURCES[0]) for i in range(40)]
    answers = await gather(guesses, node.url)
    assert sum(a.status == 401 for a in answers) <= limit
    assert sum(a.status == 429 for a in answers) >= len(answers) - limit


async def test_a_good_log_in_does_not_use_up_the_limit(start_node) -> None:
    node = await start_node(login_failures_per_account=2)
    await signup(node.url, "alice", PASSWORD)
    for _ in range(5):
        await login(node.url, "alice", PASSWORD)


# ------------------------------------------------------------ hashing floods
#: ~45 ms per derive here: enough for a flood to queue up, cheap enough to test.
FLOOD_COST = KdfCost(memory_kib=32 * 1024, iterations=1)
#: Stated bound for a returning user's log-in during a flood (it takes one
#: derive, ~0.05 s, when the reserve works; without it, the whole queue).
RETURNING_LOGIN_BOUND = 3.0


async def test_a_returning_user_gets_in_during_a_hashing_flood(start_node) -> None:
    """Log-ins with made-up names and sign-ups hammer the node; the general
    lane's queue fills and the excess gets 429 with Retry-After, sign-ups
    beyond the per-address limit too, and alice, who logged in before, gets
    in at once on the reserved thread."""
    queue = 8
    node = await start_node(
        kdf_cost=FLOOD_COST,
        kdf_threads=2,
        kdf_reserved=1,
        kdf_queue=queue,
        login_failures_per_account=100_000,
        login_failures_per_address=100_000,
        signups_per_address=5,
        signups_per_node=100_000,
    )
    await signup(node.url, "alice", PASSWORD)
    await login(node.url, "alice", PASSWORD, "laptop")  # alice is a returning user now
    queue_full = trio.Event()
    alice_done = trio.Event()
    answers: list[tuple[str, Answer]] = []
    names = iter(range(10**6))

    async def flood(kind: str, source: str) -> None:
        for _ in range(300):  # bounded, whatever happens
            if alice_done.is_set():
                return
            n = next(names)
            if kind == "login":
                answer = await post(
                    node.url, "/api/login", {"user": f"ghost{n}", "password": "x"}, source
                )
                if answer.status == 429:
                    queue_full.set()
            else:
                answer = await post(
                    node.url,
                    "/api/signup",
                    {"user": f"spam{n}", "password": "spam-password-1"},
                    source,
                )
            answers.append((kind, answer))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(24):
                nursery.start_soon(flood, "login", SOURCES[i % 4])
            for _ in range(6):
                nursery.start_soon(flood, "signup", SOURCES[0])
            await queue_full.wait()
            assert node.node.passwords.statistics().waiting_general >= 1
            started = trio.current_time()
            result = await login(node.url, "alice", PASSWORD, "laptop")
            took = trio.current_time() - started
            alice_done.set()
    assert result.user == "alice"
    assert took < RETURNING_LOGIN_BOUND, f"alice waited {took:.2f}s"
    logins = [a for kind, a in answers if kind == "login"]
    signups = [a for kind, a in answers if kind == "signup"]
    assert {a.status for a in logins} <= {401, 429}
    assert any(a.status == 429 for a in logins)
    assert sum(a.status == 201 for a in signups) <= 5
    assert any(a.status == 429 for a in signups)
    for _, answer in answers:
        if answer.status == 429:
            assert answer.code == "rate_limited"
            assert int(answer.headers["retry-after"]) >= 1
    stats = node.node.passwords.statistics()
    assert stats.refused >= 1 and stats.running == 0
    assert stats.waiting_general == stats.waiting_returning == 0


async def test_sign_ups_are_limited_node_wide(start_node) -> None:
    node = await start_node(signups_per_address=100, signups_per_node=3)
    statuses = []
    for i in range(8):
        answer = await post(
            node.url, "/api/signup", {"user": f"u{i}", "password": PASSWORD}, SOURCES[i % 4]
        )
        statuses.append(answer.status)
        if answer.status == 429:
            assert answer.code == "rate_limited" and int(answer.headers["retry-after"]) >= 1
    assert statuses == [201] * 3 + [429] * 5
    # A taken name costs no hash and is not counted: still user_exists.
    taken = await post(node.url, "/api/signup", {"user": "u0", "password": PASSWORD}, SOURCES[0])
    assert taken.status == 409


async def test_sign_ups_are_limited_per_address(start_node) -> None:
    node = await start_node(signups_per_address=2, signups_per_node=100)
    first = [
        (await post(node.url, "/api/signup", {"user": f"a{i}", "password": PASSWORD}, SOURCES[0]))
        for i in range(3)
    ]
    assert [a.status for a in first] == [201, 201, 429]
    other = await post(node.url, "/api/signup", {"user": "b0", "password": PASSWORD}, SOURCES[1])
    assert other.status == 201


# ------------------------------------------------------------ sessions per token
async def test_live_sessions_per_token_are_bounded(start_node) -> None:
    """The (limit + 1)th live session of one token is refused with a typed
    error; once one closes, a new one is accepted; other tokens are not affected."""
    node = await start_node(max_sessions_per_token=2)
    token = await node.user("alice")
    with trio.fail_after(20):
        async with connect(node.url, token), connect(node.url, token) as second:
            with pytest.raises(ClientError) as info:
                async with connect(node.url, token):
                    pass
            assert info.value.code == "rate_limited"
            async with connect(node.url, await node.user("alice")) as other:
                assert other.info is not None
            assert second.info is not None
        async with connect(node.url, token) as again:
            assert again.info is not None and again.info.user == "alice"


async def test_stored_sessions_per_user_are_bounded_from_the_config(start_node) -> None:
    """A log-in beyond max_sessions_per_user drops the user's oldest session."""
    node = await start_node(max_sessions_per_user=2)
    await signup(node.url, "alice", PASSWORD)
    tokens = [(await login(node.url, "alice", PASSWORD, "laptop")).token for _ in range(3)]
    with trio.fail_after(20):
        with pytest.raises(ClientError) as info:
            async with connect(node.url, tokens[0]):
                pass
        assert info.value.code == "unauthorized"
        for token in tokens[1:]:
            async with connect(node.url, token) as client:
                assert client.info is not None


# ------------------------------------------------------------ the KDF seam
async def test_a_production_node_ignores_the_old_test_switch(nursery, tmp_path) -> None:
    """``chinwag run`` with CHINWAG_TEST_FAST_KDF=1 in its environment still
    hashes with the production cost: the stored hash says m=65536, t=2."""
    data = tmp_path / "node"
    proc = await spawn_node(nursery, data, production=True, env={"CHINWAG_TEST_FAST_KDF": "1"})
    await signup(proc.url, "alice", PASSWORD)
    assert await proc.terminate() == 0
    store = Store(data, load_identity(data).key)
    async with trio.open_nursery() as inner:
        await inner.start(store.run)
        record = store.get_user("alice")
        inner.cancel_scope.cancel()
    assert record is not None
    assert record.pw_hash.startswith("$argon2id$v=19$m=65536,t=2,p=1$")


def test_the_installed_code_reads_no_kdf_switch() -> None:
    import chinwag.node

    for path in Path(chinwag.node.__file__).parent.glob("*.py"):
        assert "CHINWAG_TEST_FAST_KDF" not in path.read_text(), path
