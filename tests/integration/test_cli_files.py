"""``chinwag send --file``, ``tail --json`` and ``chinwag download`` on one node."""

from __future__ import annotations

import json

from chinwag.node.client import signup

from .procs import run_cli, spawn_node

PW = "cli-files-password"


async def test_send_files_tail_and_download_by_name(nursery, tmp_path) -> None:
    data = tmp_path / "data"
    assert (
        await run_cli(["init", "--data", str(data), "--name", "kitchen"], tmp_path)
    ).returncode == 0
    proc = await spawn_node(nursery, data, "--max-file-size", "100000", home=tmp_path)
    await signup(proc.url, "alice", PW)
    await signup(proc.url, "bob", PW)
    notes, song = tmp_path / "notes.txt", tmp_path / "söng.mp3"
    notes.write_text("remember the milk\n")
    song.write_bytes(b"ID3" + bytes(5000))
    alice = ["--server", proc.url, "--user", "alice"]
    bob = ["--server", proc.url, "--user", "bob"]
    sent = await run_cli(
        ["send", *alice, "bob", "two files", "--file", str(notes), "--file", str(song)],
        tmp_path,
        password=PW,
    )
    assert sent.returncode == 0, sent.stderr
    only_file = await run_cli(["send", *alice, "bob", "--file", str(notes)], tmp_path)
    assert only_file.returncode == 0, only_file.stderr
    tail = await run_cli(["tail", *bob, "--json"], tmp_path, password=PW)
    first, second = [json.loads(line) for line in tail.stdout.decode().splitlines()]
    assert first["text"] == "two files" and second["text"] == ""
    assert [a["name"] for a in first["attachments"]] == ["notes.txt", "söng.mp3"]
    assert first["attachments"][0] == {
        "sha256": second["attachments"][0]["sha256"],
        "name": "notes.txt",
        "type": "text/plain",
        "size": 18,
    }
    text = await run_cli(["tail", *bob], tmp_path)
    assert "two files [notes.txt 18 B] [söng.mp3 5.0 kB]" in text.stdout.decode()
    # Saved into a directory under the name the message gives it.
    out = tmp_path / "out"
    out.mkdir()
    got = await run_cli(
        ["download", *bob, first["attachments"][1]["sha256"], "-o", str(out)], tmp_path
    )
    assert got.returncode == 0, got.stderr
    assert (out / "söng.mp3").read_bytes() == song.read_bytes()
    # Too large for the node, refused with the limit named; not a hash: usage error.
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(100_001))
    refused = await run_cli(["send", *alice, "bob", "--file", str(big)], tmp_path)
    assert refused.returncode != 0 and b"100000 bytes" in refused.stderr
    assert b"Traceback" not in refused.stderr
    bad = await run_cli(["download", *bob, "xyz"], tmp_path)
    assert bad.returncode != 0 and b"64 hex digits" in bad.stderr
    nothing = await run_cli(["send", *alice, "bob"], tmp_path)
    assert nothing.returncode != 0 and b"TEXT, a --file, or both" in nothing.stderr
