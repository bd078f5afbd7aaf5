"""Attachments across nodes: the recipient's node fetches the blob over the link."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import trio
from PIL import Image

from chinwag.node import blob_index
from chinwag.node.blob_client import download_blob, upload_file
from chinwag.node.client import ClientError, connect
from chinwag.protocol.link import BlobRequest

from .test_federation import drain, eventually, linked
from .test_groups import befriend, member_of, texts_until, until_joined

TIMEOUT = 20


async def fetch_when_ready(url: str, token: str, sha: str, dest: Path, **kw: Any) -> int:
    """Download, waiting out ``blob_pending`` as the node says."""
    with trio.fail_after(TIMEOUT):
        while True:
            try:
                return await download_blob(url, token, sha, dest, **kw)
            except ClientError as exc:
                assert exc.code == "blob_pending", exc
                assert exc.status == 404 and exc.retry_after_ms
                await trio.sleep(0.05)


def photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


async def test_a_photo_sent_to_another_node_is_fetched_there(start_node, tmp_path: Path) -> None:
    n1, n2 = await start_node(name="n1"), await start_node(name="n2")
    await linked(n1, n2)
    alice, bob = await n1.user("alice"), await n2.user("bob")
    big = bytes(range(256)) * 12_000  # 3 MB: several windows of chunks
    (tmp_path / "a.jpg").write_bytes(photo())
    (tmp_path / "b.bin").write_bytes(big)
    with trio.fail_after(TIMEOUT):
        image = await upload_file(n1.url, alice, tmp_path / "a.jpg")
        blob = await upload_file(n1.url, alice, tmp_path / "b.bin")
        async with connect(n1.url, alice) as a:
            await a.send("bob@n2", "look", attachments=[image, blob])
        async with connect(n2.url, bob) as b:
            await b.sync(0)
            (frame,) = await drain(b, 1)
    assert frame["body"]["attachments"] == [image, blob]
    got = tmp_path / "got.bin"
    assert await fetch_when_ready(n2.url, bob, blob["sha256"], got) == len(big)
    assert got.read_bytes() == big
    await fetch_when_ready(n2.url, bob, image["sha256"], tmp_path / "i.jpg")
    await fetch_when_ready(n2.url, bob, image["sha256"], tmp_path / "p.jpg", preview=True)
    assert Image.open(tmp_path / "p.jpg").size == (320, 240)
    stats = n2.node.blob_links.statistics()
    assert stats.fetched == 3 and stats.mismatched == 0
    # Another user of n2 without the message: 403 there too.
    carol = await n2.user("carol")
    try:
        await download_blob(n2.url, carol, blob["sha256"], tmp_path / "no")
    except ClientError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("carol read a blob she was never sent")


async def test_the_origin_serves_only_peers_it_sent_the_blob(start_node, tmp_path: Path) -> None:
    n1, n2 = await start_node(name="n1"), await start_node(name="n2")
    await linked(n1, n2)
    alice = await n1.user("alice")
    await n1.user("bob")
    (tmp_path / "x").write_bytes(b"private" * 100)
    with trio.fail_after(TIMEOUT):
        att = await upload_file(n1.url, alice, tmp_path / "x")
        async with connect(n1.url, alice) as a:
            await a.send("bob", "local only", attachments=[att])
    # n2 was never sent a message with this blob: asking for it is refused.
    await n2.node.federation.send_to(
        n1.node.identity.key.public, BlobRequest(bytes.fromhex(att["sha256"]), 0)
    )
    await eventually(lambda: n1.node.blob_links.statistics().refused == 1)
    assert n1.node.blob_links.statistics().served_bytes == 0


async def test_a_group_file_reaches_members_on_every_node(start_node, tmp_path: Path) -> None:
    n1, n2, n3 = [await start_node(name=f"g{i}") for i in (1, 2, 3)]
    await linked(n1, n2)
    await linked(n1, n3)
    owner, bob, carol = await n1.user("owner"), await n2.user("bob"), await n3.user("carol")
    await befriend(n2, bob, "owner@g1")
    await befriend(n3, carol, "owner@g1")
    data = b"group file " * 5000
    (tmp_path / "g.bin").write_bytes(data)
    with trio.fail_after(TIMEOUT):
        async with connect(n1.url, owner) as o, connect(n2.url, bob) as b:
            await o.sync(0)
            await b.sync(0)
            await o.group("create", name="fam")
            await o.group("add", group="#fam@g1", members=["bob@g2", "carol@g3"])
            await until_joined(o, member_of(n2, "bob"), member_of(n3, "carol"))
            await until_joined(b, member_of(n2, "bob"))
            # bob (on g2) sends into the group hosted on g1, which has a member
            # on g3: g1 fetches the file from g2, g3 fetches it from g1.
            att = await upload_file(n2.url, bob, tmp_path / "g.bin")
            await b.send("#fam@g1", "for all", attachments=[att])
            (frame,) = await texts_until(o, 1)
    assert frame["body"]["attachments"] == [att]
    for node, token in ((n1, owner), (n3, carol)):
        dest = tmp_path / f"{node.running.identity.name}.bin"
        await eventually(lambda n=node: _known(n, att["sha256"]))
        await fetch_when_ready(node.url, token, att["sha256"], dest)
        assert dest.read_bytes() == data


def _known(node: Any, sha: str) -> bool:
    """The node committed a message referencing ``sha`` (no event across nodes)."""

    def fn(view: Any) -> bool:
        return blob_index.get_blob(view.txn, view.dbs(blob_index.DB_NAMES), sha) is not None

    return bool(node.node.store.read(fn))
