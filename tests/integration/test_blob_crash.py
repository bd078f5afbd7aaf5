"""A file sent to a node that is down, then killed mid-fetch: it still arrives, whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio

from .procs import run_cli, spawn_node
from .test_federation_crash import PW, listen_of, pair, status, wait_link

TIMEOUT = 60
SIZE = 16 << 20


def part_files(data: Path) -> list[Path]:
    return list((data / "blobs" / "tmp" / "fetch").glob("*.part"))


async def test_receiver_down_then_killed_mid_fetch_gets_the_file(nursery, tmp_path) -> None:
    d1, d2, p1, p2 = await pair(nursery, tmp_path)
    payload = os.urandom(SIZE)
    (tmp_path / "movie.bin").write_bytes(payload)
    # n2 is down when the message is sent: it waits in n1's outbox.
    await p2.kill()
    sent = await run_cli(
        [
            "send",
            "--server",
            p1.url,
            "--user",
            "alice",
            "bob@n2",
            "--file",
            str(tmp_path / "movie.bin"),
        ],
        tmp_path,
        password=PW,
    )
    assert sent.returncode == 0, sent.stderr
    tail = await run_cli(
        ["tail", "--server", p1.url, "--user", "alice", "--json"], tmp_path, password=PW
    )
    (item,) = [json.loads(line) for line in tail.stdout.decode().splitlines()]
    (att,) = item["attachments"]
    assert set(att) == {"sha256", "name", "type", "size"}
    assert att["name"] == "movie.bin" and att["size"] == SIZE
    # Back up: the message arrives and n2 starts fetching; killed once a part is on disk.
    p2 = await spawn_node(nursery, d2, "--listen", listen_of(p2), home=tmp_path)
    with trio.fail_after(TIMEOUT):
        while not any(p.stat().st_size >= 1 << 20 for p in part_files(d2)):  # noqa: ASYNC110 - a file has no event
            await trio.sleep(0.005)
    await p2.kill()
    kept = sum(p.stat().st_size for p in part_files(d2))
    p2 = await spawn_node(nursery, d2, "--listen", listen_of(p2), home=tmp_path)
    await wait_link(tmp_path, d2)
    out = tmp_path / "got.bin"
    got = await run_cli(
        [
            "download",
            "--server",
            p2.url,
            "--user",
            "bob",
            att["sha256"],
            "-o",
            str(out),
        ],
        tmp_path,
        password=PW,
    )
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == payload
    links = (await status(tmp_path, d2))["blobs"]["links"]
    assert links["fetched"] == 1
    # The restarted node fetched only what the killed one had not written.
    assert links["received_bytes"] == SIZE - kept
    assert part_files(d2) == []
