"""``chinwag edit``, ``delete``, ``react`` and ``send --reply-to`` against a real node."""

from __future__ import annotations

import json
from typing import Any

from .procs import run_cli

PW = "correct horse battery staple"


def ack_id(stdout: bytes) -> int:
    return int(stdout.decode().split()[0].removeprefix("id="))


def lines_of(stdout: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


async def test_edit_delete_react_reply_from_the_command_line(start_node, tmp_path) -> None:
    node = await start_node(name="den")
    await node.user("alice")
    await node.user("bob")
    a = ["--server", node.url, "--user", "alice"]
    b = ["--server", node.url, "--user", "bob"]
    sent = await run_cli(["send", *a, "bob", "teh plan"], tmp_path, password=PW)
    assert sent.returncode == 0, sent.stderr
    first = ack_id(sent.stdout)
    kept = ack_id((await run_cli(["send", *a, "bob", "second"], tmp_path)).stdout)

    edited = await run_cli(["edit", *a, str(first), "the plan"], tmp_path)
    assert edited.returncode == 0, edited.stderr and edited.stdout.startswith(b"id=")
    reacted = await run_cli(["react", *b, str(first), "👍"], tmp_path, password=PW)
    assert reacted.returncode == 0, reacted.stderr
    replied = await run_cli(["send", *b, "--reply-to", str(first), "alice", "ok"], tmp_path)
    assert replied.returncode == 0, replied.stderr

    tail = await run_cli(["tail", *b, "--json", "--last", "5"], tmp_path)
    items = lines_of(tail.stdout)
    by_id = {i["id"]: i for i in items}
    assert by_id[first]["text"] == "the plan" and by_id[first]["edited"] is True
    assert by_id[first]["reactions"] == {"👍": ["bob@den"]}
    assert [i["kind"] for i in items] == ["text", "text", "edit", "react", "text"]
    assert items[2]["target"] == first and items[3]["emoji"] == "👍"
    assert items[4]["reply_to"] == {"id": first, "from": "alice@den", "excerpt": "the plan"}

    # Not bob's message: forbidden, exit code of that error, no traceback.
    refused = await run_cli(["delete", *b, str(first)], tmp_path)
    assert refused.returncode != 0 and b"forbidden" in refused.stderr
    assert b"Traceback" not in refused.stderr
    missing = await run_cli(["edit", *a, "12345", "x"], tmp_path)
    assert missing.returncode != 0 and b"not_found" in missing.stderr
    bad = await run_cli(["react", *a, str(first), "thumbs"], tmp_path)
    assert bad.returncode != 0 and b"Traceback" not in bad.stderr

    deleted = await run_cli(["delete", *a, str(first)], tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    tail = await run_cli(["tail", *b, "--json", "--last", "6"], tmp_path)
    items = lines_of(tail.stdout)
    by_id = {i["id"]: i for i in items if i["kind"] == "text"}
    assert by_id[first]["deleted"] is True and by_id[first]["text"] is None
    assert by_id[kept]["text"] == "second"
    assert items[-1]["kind"] == "delete" and items[-1]["target"] == first
    assert "the plan" not in tail.stdout.decode() and "teh plan" not in tail.stdout.decode()
    plain = await run_cli(["tail", *b, "--last", "1"], tmp_path)
    assert f"(deleted {first})" in plain.stdout.decode()
