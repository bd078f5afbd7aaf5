"""Attachments on one node: upload, send, download, ranges, limits, reclaim."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import trio
from PIL import Image

from chinwag.node.blob_client import download_blob, upload_file
from chinwag.node.client import ClientError, connect

TIMEOUT = 20


def blob_files(data_dir: Path) -> list[Path]:
    """Every file under DATA/blobs (blobs and temporaries)."""
    root = data_dir / "blobs"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def raw_request(url: str, head: bytes, body: bytes = b"", *, read: bool = True) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head + body)
        if not read:
            return b""
        out = b""
        with trio.fail_after(TIMEOUT):
            while b"\r\n\r\n" not in out or not _complete(out):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                out += chunk
        return out


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


async def http_get(url: str, path: str, token: str, extra: str = "") -> tuple[int, dict, bytes]:
    host = url.removeprefix("http://")
    head = (
        f"GET {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n"
        f"connection: close\r\n{extra}\r\n"
    ).encode()
    raw = await raw_request(url, head)
    first, _, body = raw.partition(b"\r\n\r\n")
    lines = first.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_upload_send_download_and_ranges(start_node, tmp_path: Path) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    data = bytes(range(256)) * 4000  # 1 MB
    path = write(tmp_path / "notes.bin", data)
    with trio.fail_after(TIMEOUT):
        att = await upload_file(node.url, alice, path)
        assert att["sha256"] == hashlib.sha256(data).hexdigest()
        assert att["size"] == len(data) and att["name"] == "notes.bin"
        # Not sent yet: no one may read it, not even the uploader.
        status, _, _ = await http_get(node.url, f"/api/blobs/{att['sha256']}", alice)
        assert status == 403
        async with connect(node.url, alice) as a:
            await a.send("bob", "", attachments=[att])
        async with connect(node.url, bob) as b:
            await b.sync(0)
            frame = await b.messages.receive()
        assert frame["body"]["attachments"] == [att]
        assert frame["body"]["text"] == ""
        out = tmp_path / "got.bin"
        assert await download_blob(node.url, bob, att["sha256"], out) == len(data)
        assert out.read_bytes() == data
        status, headers, body = await http_get(
            node.url, f"/api/blobs/{att['sha256']}", bob, "range: bytes=100-199\r\n"
        )
        assert status == 206 and body == data[100:200]
        assert headers["content-range"] == f"bytes 100-199/{len(data)}"
        assert headers["content-type"] == "application/octet-stream"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-disposition"].startswith("attachment;")
        status, _, body = await http_get(
            node.url, f"/api/blobs/{att['sha256']}", bob, "range: bytes=-10\r\n"
        )
        assert status == 206 and body == data[-10:]
        status, headers, _ = await http_get(
            node.url, f"/api/blobs/{att['sha256']}", bob, f"range: bytes={len(data)}-\r\n"
        )
        assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
        # A third user without the message: 403; no token: 401.
        carol = await node.user("carol")
        status, _, body = await http_get(node.url, f"/api/blobs/{att['sha256']}", carol)
        assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"
        status, _, _ = await http_get(node.url, f"/api/blobs/{att['sha256']}", "nope")
        assert status == 401
        # Carol cannot send a blob she neither uploaded nor received.
        async with connect(node.url, carol) as c:
            with pytest.raises(ClientError) as refused:
                await c.send("bob", "mine now", attachments=[att])
        assert refused.value.code == "not_found"
        # Nor can alice claim another type or size than what was stored.
        async with connect(node.url, alice) as a:
            for lie in ({"type": "text/html"}, {"size": att["size"] + 1}):
                with pytest.raises(ClientError) as refused:
                    await a.send("bob", "look", attachments=[{**att, **lie}])
                assert refused.value.code == "bad_request"


async def test_html_and_svg_are_never_served_inline(start_node, tmp_path: Path) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    svg = write(tmp_path / "x.svg", b"<svg onload='alert(1)' xmlns='http://www.w3.org/2000/svg'/>")
    with trio.fail_after(TIMEOUT):
        att = await upload_file(node.url, alice, svg, media_type="image/svg+xml")
        async with connect(node.url, alice) as a:
            await a.send("bob", "look", attachments=[att])
        status, headers, _ = await http_get(node.url, f"/api/blobs/{att['sha256']}", bob)
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in headers["content-security-policy"]


async def test_an_upload_over_the_limit_is_refused_unread(start_node) -> None:
    node = await start_node(name="home", max_file_bytes=25 << 20)
    alice = await node.user("alice")
    host = node.url.removeprefix("http://")
    head = (
        f"POST /api/blobs HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {alice}\r\n"
        f"content-length: {100 << 20}\r\nx-chinwag-filename: big.bin\r\n"
        "content-type: application/octet-stream\r\n\r\n"
    ).encode()
    # Only the head is sent: the answer comes without a byte of the body.
    with trio.fail_after(TIMEOUT):
        raw = await raw_request(node.url, head)
    assert raw.startswith(b"HTTP/1.1 413")
    error = json.loads(raw.partition(b"\r\n\r\n")[2])["error"]
    assert error == {
        "code": "file_too_large",
        "message": f"a file is at most {25 << 20} bytes here",
        "limit": 25 << 20,
    }
    assert node.node.blobs.statistics().refused == 1
    assert blob_files(node.node.config.data_dir) == []
    # A client that sends all 100 MB anyway (as browsers do) still gets the
    # 413, and the node's memory does not follow the body (the node runs in
    # this process: its RSS is sampled while the body streams in).
    peak = baseline = rss_kib()
    done = trio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib())
            with trio.move_on_after(0.01):
                await done.wait()

    megabyte = b"m" * (1 << 20)
    answer = b""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            stream = await trio.open_tcp_stream("127.0.0.1", node.running.port)
            async with stream:
                await stream.send_all(head)
                try:
                    for _ in range(100):
                        await stream.send_all(megabyte)
                except trio.BrokenResourceError:
                    pass  # the node stopped draining: fine, the answer is there
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            done.set()
    assert answer.startswith(b"HTTP/1.1 413")
    assert peak - baseline < 30 * 1024, (baseline, peak)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def test_a_body_longer_than_the_limit_stops_being_read(start_node) -> None:
    # A client that lies about its length (chunked) is refused: a body must
    # declare its length, so it is never read past the limit.
    node = await start_node(name="home", max_file_bytes=1000)
    alice = await node.user("alice")
    host = node.url.removeprefix("http://")
    head = (
        f"POST /api/blobs HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {alice}\r\n"
        "transfer-encoding: chunked\r\nx-chinwag-filename: big.bin\r\n\r\n"
    ).encode()
    with trio.fail_after(TIMEOUT):
        raw = await raw_request(node.url, head, b"800\r\n" + b"x" * 2048 + b"\r\n")
    assert raw.startswith(b"HTTP/1.1 400")
    assert blob_files(node.node.config.data_dir) == []


async def test_an_upload_cut_in_the_middle_leaves_nothing(start_node) -> None:
    node = await start_node(name="home")
    alice = await node.user("alice")
    host = node.url.removeprefix("http://")
    head = (
        f"POST /api/blobs HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {alice}\r\n"
        f"content-length: {4 << 20}\r\nx-chinwag-filename: half.bin\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", node.running.port)
    with trio.fail_after(TIMEOUT):
        await stream.send_all(head + b"y" * (2 << 20))
        # Wait until the node has taken in some of it (a temporary file exists).
        while not blob_files(node.node.config.data_dir):  # noqa: ASYNC110 - a file has no event
            await trio.sleep(0.01)
        await stream.aclose()
        stats = node.node.blobs.statistics
        while stats().interrupted + stats().refused == 0:  # noqa: ASYNC110 - statistics
            await trio.sleep(0.01)
    assert blob_files(node.node.config.data_dir) == []
    assert node.node.blobs.statistics().uploads == 0


def _photo_with_gps() -> bytes:
    image = Image.new("RGB", (1200, 800), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (48.0, 51.0, 29.0)
    gps[3] = "E"
    gps[4] = (2.0, 17.0, 40.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=90)
    return buffer.getvalue()


async def test_photo_exif_gps_is_removed_and_a_preview_made(start_node, tmp_path: Path) -> None:
    node = await start_node(name="home")
    alice, bob = await node.user("alice"), await node.user("bob")
    original = _photo_with_gps()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # the test's own check
    path = write(tmp_path / "photo.jpg", original)
    with trio.fail_after(TIMEOUT):
        att = await upload_file(node.url, alice, path)
        assert att["type"] == "image/jpeg"
        assert att["sha256"] != hashlib.sha256(original).hexdigest()
        preview = att["preview"]
        assert preview["type"] == "image/jpeg"
        assert max(preview["width"], preview["height"]) == 320
        async with connect(node.url, alice) as a:
            await a.send("bob", "holiday", attachments=[att])
        got = tmp_path / "got.jpg"
        await download_blob(node.url, bob, att["sha256"], got)
        small = tmp_path / "small.jpg"
        await download_blob(node.url, bob, att["sha256"], small, preview=True)
        status, headers, _ = await http_get(node.url, f"/api/blobs/{att['sha256']}", bob)
    stored = Image.open(got)
    assert stored.size == (1200, 800)
    assert not stored.getexif().get_ifd(0x8825)
    assert b"SpyCam" not in got.read_bytes()
    assert Image.open(small).size == (320, 213)
    assert headers["content-type"] == "image/jpeg"
    assert headers["content-disposition"].startswith("inline;")


async def test_keep_exif_keeps_the_photo_as_uploaded(start_node, tmp_path: Path) -> None:
    node = await start_node(name="home", keep_exif=True)
    alice = await node.user("alice")
    original = _photo_with_gps()
    with trio.fail_after(TIMEOUT):
        att = await upload_file(node.url, alice, write(tmp_path / "p.jpg", original))
    assert att["sha256"] == hashlib.sha256(original).hexdigest()


async def test_a_blob_is_stored_once_and_reclaimed_when_unreferenced(
    start_node, tmp_path: Path
) -> None:
    node = await start_node(name="home", blob_grace=0.0)
    alice, bob = await node.user("alice"), await node.user("bob")
    data = b"same bytes" * 1000
    with trio.fail_after(TIMEOUT):
        first = await upload_file(node.url, alice, write(tmp_path / "a.txt", data))
        second = await upload_file(
            node.url, alice, write(tmp_path / "b.bin", data), media_type="application/x-other"
        )
        assert first["sha256"] == second["sha256"]
        assert first["type"] == second["type"] == "text/plain"  # as first stored
        async with connect(node.url, alice) as a:
            await a.send("bob", "one", attachments=[first])
            await a.send("bob", "two", attachments=[second])
        root = node.node.config.data_dir / "blobs"
        stored = [p for p in blob_files(node.node.config.data_dir) if p.parent != root / "tmp"]
        assert [p.name for p in stored] == [first["sha256"]]
        # Still referenced by two messages: a sweep keeps it.
        assert await node.node.blobs.sweep() == 0
        # An upload never sent is reclaimed after the grace period.
        lonely = await upload_file(node.url, bob, write(tmp_path / "c.txt", b"never sent"))
        assert await node.node.blobs.sweep() == 1
        assert not any(p.name == lonely["sha256"] for p in blob_files(node.node.config.data_dir))
        # Both users gone: no message references the blob any more.
        await node.node.store.remove_user("alice")
        assert await node.node.blobs.sweep() == 0  # bob's queue still has both
        await node.node.store.remove_user("bob")
        assert await node.node.blobs.sweep() == 1
    assert blob_files(node.node.config.data_dir) == []
    assert node.node.blobs.statistics().reclaimed == 2


async def test_the_file_quota_is_named_in_the_refusal(start_node, tmp_path: Path) -> None:
    node = await start_node(name="home", file_quota_bytes=3000)
    alice = await node.user("alice")
    with trio.fail_after(TIMEOUT):
        await upload_file(node.url, alice, write(tmp_path / "a", b"a" * 2000))
        with pytest.raises(ClientError) as refused:
            await upload_file(node.url, alice, write(tmp_path / "b", b"b" * 2000))
    assert refused.value.status == 413 and refused.value.code == "quota_exceeded"


async def test_a_client_that_sends_a_refused_body_anyway_reads_the_answer(start_node) -> None:
    # Browsers send the whole body before reading an early answer: the node
    # drops what follows its 413 (never keeping it) instead of resetting.
    node = await start_node(name="home", max_file_bytes=1 << 20)
    alice = await node.user("alice")
    host = node.url.removeprefix("http://")
    head = (
        f"POST /api/blobs HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {alice}\r\n"
        f"content-length: {32 << 20}\r\nx-chinwag-filename: big.bin\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", node.running.port)
    answer = b""
    with trio.fail_after(TIMEOUT):
        async with stream:
            await stream.send_all(head)
            try:
                for _ in range(32):
                    await stream.send_all(b"z" * (1 << 20))
            except trio.BrokenResourceError:
                pass
            while chunk := await stream.receive_some(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b'"file_too_large"' in answer
    assert blob_files(node.node.config.data_dir) == []


@pytest.mark.parametrize(
    ("name_header", "code"),
    [("", "bad_request"), ("%FF%FE", "bad_request"), ("a%2Fb", "bad_frame"), ("..", "bad_frame")],
)
async def test_bad_file_names_are_refused(start_node, name_header: str, code: str) -> None:
    node = await start_node(name="home")
    alice = await node.user("alice")
    host = node.url.removeprefix("http://")
    head = (
        f"POST /api/blobs HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {alice}\r\n"
        f"content-length: 3\r\nx-chinwag-filename: {name_header}\r\nconnection: close\r\n\r\n"
    ).encode()
    with trio.fail_after(TIMEOUT):
        raw = await raw_request(node.url, head, b"abc")
    assert raw.startswith(b"HTTP/1.1 400"), raw[:200]
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["code"] == code
    assert [p for p in blob_files(node.node.config.data_dir) if "up-" in p.name] == []


async def test_uploads_at_once_are_bounded(start_node, tmp_path: Path) -> None:
    node = await start_node(name="home", max_uploads=1)
    alice = await node.user("alice")
    host = node.url.removeprefix("http://")
    head = (
        f"POST /api/blobs HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {alice}\r\n"
        f"content-length: 1000\r\nx-chinwag-filename: slow.bin\r\n\r\n"
    ).encode()
    first = await trio.open_tcp_stream("127.0.0.1", node.running.port)
    async with first:
        with trio.fail_after(TIMEOUT):
            await first.send_all(head + b"x" * 10)  # and then nothing: the slot stays taken
            while not blob_files(node.node.config.data_dir):  # noqa: ASYNC110 - a file has no event
                await trio.sleep(0.01)
            with pytest.raises(ClientError) as refused:
                await upload_file(node.url, alice, write(tmp_path / "b", b"second"))
    assert refused.value.code == "rate_limited" and refused.value.status == 429
    # The first one gone (cut off), the slot is free again.
    with trio.fail_after(TIMEOUT):
        stats = node.node.blobs.statistics
        while stats().interrupted + stats().refused < 2:  # noqa: ASYNC110 - statistics
            await trio.sleep(0.01)
        att = await upload_file(node.url, alice, write(tmp_path / "c", b"third"))
    assert att["size"] == 5


async def test_a_released_record_gives_its_references_back(start_node, tmp_path: Path) -> None:
    # What a message deletion (or any rewrite of a queue entry) calls in its
    # transaction: the reader loses access, and the blob is reclaimed.
    from chinwag.node import blob_index

    node = await start_node(name="home", blob_grace=0.0)
    alice, bob = await node.user("alice"), await node.user("bob")
    with trio.fail_after(TIMEOUT):
        att = await upload_file(node.url, alice, write(tmp_path / "a", b"to be deleted"))
        async with connect(node.url, alice) as a:
            ack = await a.send("bob", "oops", attachments=[att])
        store = node.node.store
        (entry,) = store.read_queue("bob", 0, 10)
        (mine,) = store.read_queue("alice", 0, 10)

        def op(w) -> None:
            dbs = w.dbs(blob_index.DB_NAMES)
            for user, item in (("bob", entry), ("alice", mine)):
                uid = w.require_user(user).uid
                blob_index.release_record(w.txn, dbs, uid, item.record, 0)

        await store.transact(op)
        status, _, _ = await http_get(node.url, f"/api/blobs/{att['sha256']}", bob)
        assert status == 403
        assert await node.node.blobs.sweep() == 1
    assert ack.seq == 1


async def test_a_decompression_bomb_is_refused(start_node, tmp_path: Path) -> None:
    # 25 megapixels in a few kilobytes of PNG: refused before its pixels are decoded.
    node = await start_node(name="home", max_image_pixels=1_000_000)
    alice = await node.user("alice")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (5000, 5000)).save(bomb, format="PNG")
    assert bomb.stat().st_size < 100_000
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ClientError) as refused:
            await upload_file(node.url, alice, bomb)
    assert refused.value.code == "bad_request" and "pixels" in refused.value.message
    assert [p for p in blob_files(node.node.config.data_dir) if p.is_file()] == []
