"""SIGKILL mid-burst: every acknowledged message survives, exactly once, in order."""

from __future__ import annotations

import trio

from chinwag.node.client import ClientError, connect, login, signup

from .procs import spawn_node

PASSWORD = "crash-test-password"
FLAGS = ("--send-rate", "100000", "--send-burst", "100000")


async def test_sigkill_mid_burst_loses_no_acknowledged_message(nursery, tmp_path) -> None:
    data = tmp_path / "node"
    proc = await spawn_node(nursery, data, *FLAGS)
    await signup(proc.url, "alice", PASSWORD)
    await signup(proc.url, "bob", PASSWORD)
    alice = await login(proc.url, "alice", PASSWORD)
    bob = await login(proc.url, "bob", PASSWORD)

    acked: dict[str, int] = {}  # text -> id
    killed = trio.Event()
    enough = trio.Event()

    async def burst() -> None:
        try:
            async with connect(proc.url, alice.token) as a:
                for window in range(1000):
                    items = [("bob", f"msg {window}-{i}", f"{window}-{i}") for i in range(25)]
                    for (_, text, _), reply in zip(items, await a.send_many(items), strict=True):
                        if not isinstance(reply, ClientError):
                            acked[text] = reply.id
                    if len(acked) >= 500:
                        enough.set()
        except (ClientError, trio.BrokenResourceError, OSError):
            pass  # the node died under us: expected

    async def killer() -> None:
        with trio.fail_after(60):
            await enough.wait()
        await proc.kill()
        killed.set()

    async with trio.open_nursery() as inner:
        inner.start_soon(burst)
        inner.start_soon(killer)
    assert killed.is_set() and len(acked) >= 500

    proc = await spawn_node(nursery, data, *FLAGS)
    async with connect(proc.url, bob.token) as b:
        head = await b.sync(0)
        frames = []
        with trio.fail_after(30):
            while not frames or frames[-1]["seq"] < head:
                frames.append(await b.messages.receive())
    texts = [f["body"]["text"] for f in frames]
    assert [f["seq"] for f in frames] == list(range(1, head + 1))
    assert len(set(texts)) == len(texts), "a message was stored twice"
    stored = {f["body"]["text"]: f["id"] for f in frames}
    missing = [t for t in acked if t not in stored]
    assert not missing, f"{len(missing)} acknowledged messages lost"
    assert all(stored[t] == i for t, i in acked.items())
    # Ids are in commit order in the queue.
    ids = [f["id"] for f in frames]
    assert ids == sorted(ids)
    await proc.terminate()
