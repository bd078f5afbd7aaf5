"""Linking nodes without copying ids: invitations, ``peers add URL``, pending display.

Real nodes on loopback. Peer invitations link both ways with no approval;
a used or expired one is refused with a reason; ``peers add URL --yes``
shows the fingerprint the other node's ``status`` shows; a user invitation
opens a closed sign-up once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import pytest
import trio

from chinwag.node.admin import admin_request
from chinwag.node.app import NodeSeams
from chinwag.node.client import ClientError, api_call, connect, login
from chinwag.protocol.errors import ProtocolError
from chinwag.protocol.fingerprint import fingerprint
from chinwag.protocol.invitation import parse_invitation, secret_hash

from ..conftest import PASSWORD, ShiftedClock
from .procs import CHINWAG, cli_env, run_cli, spawn_node
from .test_federation import TIMEOUT, drain, eventually

DAY_S = 24 * 3600


def data(node: Any) -> Any:
    return node.node.config.data_dir


def key(node: Any) -> bytes:
    return node.node.identity.key.public


async def invite(node: Any, kind: str = "peer", **args: Any) -> str:
    result = await admin_request(data(node), "invite.create", {"kind": kind, **args})
    return str(result["invitation"])


async def join(node: Any, invitation: str) -> dict[str, Any]:
    return await admin_request(data(node), "peers.join", {"invitation": invitation}, timeout=60)


async def both_ways(a: Any, b: Any) -> None:
    """alice@a and bob@b each send one message and each receives the other's."""
    a_name, b_name = a.node.identity.name, b.node.identity.name
    async with (
        connect(a.url, await a.user("alice")) as alice,
        connect(b.url, await b.user("bob")) as bob,
    ):
        await alice.sync(0)
        await bob.sync(0)
        await alice.send(f"bob@{b_name}", "hello from a")
        await bob.send(f"alice@{a_name}", "hello from b")
        got_b = {f["body"]["text"] for f in await drain(bob, 2)}
        got_a = {f["body"]["text"] for f in await drain(alice, 2)}
    assert got_b == {"hello from a", "hello from b"}
    assert got_a == {"hello from a", "hello from b"}


async def test_peer_invitation_links_both_ways_without_approval(start_node) -> None:
    inviter, joiner = await start_node(name="host"), await start_node(name="guest")
    text = await invite(inviter)
    assert text.startswith("chinwag1:") and len(text) < 200
    parsed = parse_invitation(text)
    assert parsed.node_key == key(inviter) and parsed.url == inviter.url
    result = await join(joiner, text)
    assert result["node_id"] == inviter.node.identity.id and result["name"] == "host"
    assert result["fingerprint"] == fingerprint(key(inviter))
    # Both sides trust each other; no one approved anything.
    assert inviter.node.registry.get(key(joiner)).state == "trusted"
    assert joiner.node.registry.get(key(inviter)).state == "trusted"
    with trio.fail_after(TIMEOUT):
        await inviter.node.federation.wait_linked(key(joiner))
    assert inviter.node.federation.statistics().pending_requests == 0
    await both_ways(inviter, joiner)
    # The joiner's signed URL came with the confirm: the inviter can dial back.
    assert inviter.node.registry.get(key(joiner)).urls == (joiner.url,)


async def test_used_and_expired_peer_invitations_are_refused(start_node) -> None:
    clock = ShiftedClock()
    inviter = await start_node(name="host", seams=NodeSeams(federation_now_ms=clock))
    first, second = await start_node(name="first"), await start_node(name="second")
    text = await invite(inviter)
    await join(first, text)
    with pytest.raises(ProtocolError) as used:
        await join(second, text)
    assert "already used" in used.value.message
    # Nothing is left behind on either side.
    assert second.node.registry.get(key(inviter)) is None
    assert inviter.node.registry.get(key(second)) is None
    assert inviter.node.federation.statistics().pending_requests == 0

    stale = await invite(inviter, ttl_s=3600)
    clock.shift(2 * 3600)
    with pytest.raises(ProtocolError) as expired:
        await join(second, stale)
    assert "expired" in expired.value.message
    assert second.node.registry.get(key(inviter)) is None
    assert inviter.node.registry.get(key(second)) is None
    # A user invitation is no peer invitation, and a damaged string says so.
    user_code = await invite(inviter, "user")
    with pytest.raises(ProtocolError) as wrong_kind:
        await join(second, user_code)
    assert "sign up" in wrong_kind.value.message
    with pytest.raises(ProtocolError) as damaged:
        await join(second, stale[:-10])
    assert damaged.value.code == "bad_request"


async def test_user_invitation_opens_closed_signup_once(start_node) -> None:
    clock = ShiftedClock()
    node = await start_node(name="club", signup="closed", seams=NodeSeams(federation_now_ms=clock))
    other = await start_node(name="elsewhere", signup="closed")
    body = {"user": "carol", "password": PASSWORD}
    with pytest.raises(ClientError) as closed:
        await api_call(node.url, "POST", "/api/signup", body)
    assert closed.value.code == "forbidden" and "invitation" in closed.value.message
    code = await invite(node, "user")
    # Another node's code, or a peer invitation, opens nothing.
    with pytest.raises(ClientError) as foreign:
        await api_call(
            node.url, "POST", "/api/signup", {**body, "invite": await invite(other, "user")}
        )
    assert "another node" in foreign.value.message
    with pytest.raises(ClientError):
        await api_call(node.url, "POST", "/api/signup", {**body, "invite": await invite(node)})
    created = await api_call(node.url, "POST", "/api/signup", {**body, "invite": code})
    assert created["user"] == "carol"
    assert (await login(node.url, "carol", PASSWORD)).user == "carol"
    with pytest.raises(ClientError) as reused:
        await api_call(
            node.url, "POST", "/api/signup", {"user": "dave", "password": PASSWORD, "invite": code}
        )
    assert reused.value.code == "forbidden" and "already used" in reused.value.message
    assert node.node.store.get_user("dave") is None
    # A taken name does not use a fresh code up.
    fresh = await invite(node, "user")
    with pytest.raises(ClientError) as taken:
        await api_call(node.url, "POST", "/api/signup", {**body, "invite": fresh})
    assert taken.value.code == "user_exists"
    ok = await api_call(
        node.url, "POST", "/api/signup", {"user": "erin", "password": PASSWORD, "invite": fresh}
    )
    assert ok["user"] == "erin"
    # An expired code opens nothing.
    stale = await invite(node, "user", ttl_s=600)
    clock.shift(3600)
    with pytest.raises(ClientError) as expired:
        await api_call(
            node.url, "POST", "/api/signup", {"user": "fay", "password": PASSWORD, "invite": stale}
        )
    assert expired.value.code == "forbidden" and "expired" in expired.value.message
    assert node.node.store.get_user("fay") is None


async def test_invitations_need_the_running_node(tmp_path) -> None:
    data_dir = tmp_path / "idle"
    made = await run_cli(["init", "--data", str(data_dir), "--name", "idle"], tmp_path)
    assert made.returncode == 0, made.stderr
    refused = await run_cli(["invite", "peer", "--data", str(data_dir)], tmp_path)
    assert refused.returncode != 0 and b"not running" in refused.stderr
    assert b"Traceback" not in refused.stderr


def _fingerprint_in(text: str) -> str:
    match = re.search(r"fingerprint\s+(\d{4}(?: \d{4}){5})", text)
    assert match, text
    return match.group(1)


async def test_peers_add_url_shows_fingerprint_and_links_after_approval(
    start_node, tmp_path
) -> None:
    a, b = await start_node(name="alpha"), await start_node(name="beta")
    status = await run_cli(["status", "--data", str(data(a))], tmp_path)
    assert status.returncode == 0, status.stderr
    shown = status.stdout.decode()
    assert a.node.identity.id in shown  # the full id, usable as is
    a_print = _fingerprint_in(shown)
    assert a_print == fingerprint(key(a))

    refused = await run_cli(["peers", "add", a.url, "--data", str(data(b))], tmp_path)
    assert refused.returncode != 0 and b"--yes" in refused.stderr  # no terminal, no --yes
    added = await run_cli(["peers", "add", a.url, "--yes", "--data", str(data(b))], tmp_path)
    assert added.returncode == 0, added.stderr
    out = added.stdout.decode()
    assert _fingerprint_in(out) == a_print and "alpha" in out
    assert b.node.registry.get(key(a)).state == "trusted"

    # b dialled a: a shows the request with b's name, URL and fingerprint.
    async def pending() -> list[dict[str, Any]]:
        listed = await admin_request(data(a), "peers.list", {})
        return [p for p in listed["peers"] if p["state"] == "pending"]

    await eventually(lambda: a.node.federation.statistics().pending_requests == 1)
    [request] = await pending()
    assert request["name"] == "beta" and request["urls"] == [b.url]
    assert request["fingerprint"] == fingerprint(key(b))
    listing = await run_cli(["peers", "list", "--data", str(data(a))], tmp_path)
    text = listing.stdout.decode()
    assert "beta" in text and b.url in text and fingerprint(key(b)) in text
    peer_id = re.search(r"id ([a-z2-7]{52})", text)
    assert peer_id and peer_id.group(1) == b.node.identity.id
    # The id on screen is what approve takes; a then dials b's signed URL.
    approved = await run_cli(
        ["peers", "approve", peer_id.group(1), "--data", str(data(a))], tmp_path
    )
    assert approved.returncode == 0, approved.stderr
    with trio.fail_after(TIMEOUT):
        await a.node.federation.wait_linked(key(b))
        await b.node.federation.wait_linked(key(a))
    await both_ways(a, b)


async def test_run_prints_full_id_and_a_line_that_links_verbatim(nursery, tmp_path) -> None:
    first = await spawn_node(nursery, tmp_path / "one", "--name", "one", home=tmp_path)
    second = await spawn_node(nursery, tmp_path / "two", "--name", "two", home=tmp_path)
    await eventually(lambda: b"peers add" in first.output)  # printed with "ready at"
    printed = first.output.decode()
    line = re.search(r"chinwag (peers add \S+#[a-z2-7]{52})", printed)
    assert line, printed
    node_id = line.group(1).rsplit("#", 1)[1]
    assert re.search(rf"node id\s+{node_id}", printed)
    added = await run_cli([*line.group(1).split(), "--data", str(tmp_path / "two")], tmp_path)
    assert added.returncode == 0, added.stderr
    listed = await run_cli(["peers", "list", "--json", "--data", str(tmp_path / "two")], tmp_path)
    [peer] = json.loads(listed.stdout)["peers"]
    assert peer["node_id"] == node_id and peer["state"] == "trusted"
    # The invitation CLI round trip: invite on one, join on two, linked.
    made = await run_cli(["invite", "peer", "--data", str(tmp_path / "one")], tmp_path)
    assert made.returncode == 0, made.stderr
    assert b"peers join" in made.stderr
    joined = await run_cli(
        ["peers", "join", made.stdout.decode().strip(), "--data", str(tmp_path / "two")],
        tmp_path,
    )
    assert joined.returncode == 0, joined.stderr
    assert b"linked with one" in joined.stdout
    again = await run_cli(
        ["peers", "join", made.stdout.decode().strip(), "--data", str(tmp_path / "two")],
        tmp_path,
    )
    # Already linked: nothing to present, so the used secret is no error here.
    assert again.returncode == 0, again.stderr
    assert second.url


async def test_invitations_can_grant_introductions(start_node) -> None:
    """A hub's invitations joined with ``--trust-introductions``: the leaves
    learn each other from the hub and reach each other by name; an invitation
    made with ``--introductions`` makes the hub trust the joiner's word too."""
    hub = await start_node(name="hub")
    leaf_a, leaf_b = await start_node(name="leafa"), await start_node(name="leafb")
    for leaf in (leaf_a, leaf_b):
        text = await invite(hub, introductions=True)
        result = await admin_request(
            data(leaf), "peers.join", {"invitation": text, "trust_introductions": True}, timeout=60
        )
        assert result["introductions"] is True
    listed = (await admin_request(data(hub), "peers.list", {}))["peers"]
    takes = {p["node_id"]: p["introductions"] for p in listed if p["state"] == "trusted"}
    assert takes == {leaf_a.node.identity.id: True, leaf_b.node.identity.id: True}
    # A user invitation cannot grant it.
    with pytest.raises(ProtocolError):
        await invite(hub, "user", introductions=True)

    async def trusted(leaf: Any, other: Any) -> Any:
        while True:
            record = leaf.node.registry.get(key(other))
            if record is not None and record.state == "trusted":
                return record
            await trio.sleep(0.05)

    with trio.fail_after(TIMEOUT):
        a_knows_b = await trusted(leaf_a, leaf_b)
        b_knows_a = await trusted(leaf_b, leaf_a)
    assert key(hub) in a_knows_b.introducers and key(hub) in b_knows_a.introducers
    await both_ways(leaf_a, leaf_b)


async def test_invitation_secrets_are_stored_only_hashed(start_node) -> None:
    """A copy of the store (a backup, a stolen disk) hands out no working invitation."""
    node = await start_node(name="vault")
    secrets = [parse_invitation(await invite(node, kind)).secret for kind in ("peer", "user")]
    await node.stop()  # the store file as the node left it
    stored = (data(node) / "db" / "data.mdb").read_bytes()
    for secret in secrets:
        assert secret not in stored
        assert secret_hash(secret) in stored


async def test_peers_add_url_asks_at_a_terminal_and_pins_only_on_yes(start_node, tmp_path) -> None:
    a, b = await start_node(name="asked"), await start_node(name="asking")

    async def answer(reply: str) -> tuple[int, str]:
        main_fd, term_fd = os.openpty()
        try:
            process = await trio.lowlevel.open_process(
                [*CHINWAG, "peers", "add", a.url, "--data", str(data(b))],
                stdin=term_fd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=cli_env(tmp_path),
                start_new_session=True,
            )
            assert process.stdout is not None
            out = bytearray()
            with trio.fail_after(TIMEOUT):
                while b"[y/N]" not in out:
                    chunk = await process.stdout.receive_some(4096)
                    assert chunk, out.decode(errors="replace")
                    out.extend(chunk)
                os.write(main_fd, reply.encode() + b"\n")
                code = await process.wait()
                out.extend(await process.stdout.receive_some(65536) or b"")
        finally:
            os.close(main_fd)
            os.close(term_fd)
        return code, out.decode()

    code, text = await answer("n")
    assert code != 0 and "not added" in text, text
    assert _fingerprint_in(text) == fingerprint(key(a)) and "asked" in text
    assert b.node.registry.get(key(a)) is None
    code, text = await answer("y")
    assert code == 0, text
    assert b.node.registry.get(key(a)).state == "trusted"
