"""Client side of the blob endpoints: upload a file, download a blob.

Both stream: a file is sent in chunks as it is read, a download is written
to a temporary file next to its destination and renamed once complete (and,
for the file itself, once its SHA-256 matched the hash asked for).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import h11
import trio

from .client import ClientError, NodeUnreachable, split_url

CHUNK = 256 * 1024
#: Bytes of an error answer read at most.
MAX_ERROR_BYTES = 64 * 1024


def guess_type(path: Path) -> str:
    kind, _ = mimetypes.guess_type(path.name)
    return kind or "application/octet-stream"


async def _open(url: str) -> tuple[trio.abc.Stream, str]:
    host, port, tls = split_url(url)
    try:
        if tls:
            return await trio.open_ssl_over_tcp_stream(host, port), f"{host}:{port}"
        return await trio.open_tcp_stream(host, port), f"{host}:{port}"
    except OSError as exc:
        raise NodeUnreachable("unavailable", f"cannot reach {url}: {exc.strerror or exc}") from exc


async def _next(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
            continue
        return event


def _error(status: int, data: bytes) -> ClientError:
    try:
        found = json.loads(data or b"{}").get("error", {})
    except (ValueError, AttributeError):
        found = {}
    err = ClientError(
        str(found.get("code", "error")), str(found.get("message", f"HTTP {status}")), status
    )
    if isinstance(found.get("retry_after_ms"), int):
        err.retry_after_ms = found["retry_after_ms"]
    return err


async def upload_file(
    url: str,
    token: str,
    path: Path,
    *,
    name: str | None = None,
    media_type: str | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """POST ``path`` to ``/api/blobs``; returns the node's answer
    ``{sha256, size, type, name, preview?}`` (the attachment to send)."""
    size = (await trio.Path(path).stat()).st_size
    headers = [
        ("host", ""),
        ("content-type", media_type or guess_type(path)),
        ("content-length", str(size)),
        ("authorization", f"Bearer {token}"),
        ("x-chinwag-filename", quote(name or path.name)),
        ("expect", "100-continue"),
        ("connection", "close"),
    ]
    with trio.fail_after(timeout):
        stream, hostport = await _open(url)
        headers[0] = ("host", hostport)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            await stream.send_all(
                conn.send(h11.Request(method="POST", target="/api/blobs", headers=headers)) or b""
            )
            # Wait for 100 Continue (or an early refusal) before sending the body.
            event = await _next(conn, stream)
            if isinstance(event, h11.InformationalResponse):
                async with await trio.open_file(path, "rb") as f:
                    while chunk := await f.read(CHUNK):
                        await stream.send_all(conn.send(h11.Data(data=chunk)) or b"")
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                event = await _next(conn, stream)
            if not isinstance(event, h11.Response):
                raise ClientError("unavailable", "the node closed the upload")
            status, body = event.status_code, bytearray()
            while True:
                event = await _next(conn, stream)
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_ERROR_BYTES:
                        raise ClientError("too_large", "answer too large")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    if status != 201:
        raise _error(status, bytes(body))
    answer = json.loads(bytes(body))
    if not isinstance(answer, dict):
        raise ClientError("bad_frame", "the node's answer is not an object")
    return answer


async def download_blob(
    url: str,
    token: str,
    sha256: str,
    dest: Path,
    *,
    preview: bool = False,
    timeout: float = 300.0,
) -> int:
    """:func:`download_into` that returns only the bytes written."""
    return (await download_into(url, token, sha256, dest, preview=preview, timeout=timeout))[1]


async def download_into(
    url: str,
    token: str,
    sha256: str,
    dest: Path,
    *,
    preview: bool = False,
    timeout: float = 300.0,
) -> tuple[Path, int]:
    """GET ``/api/blobs/<sha256>`` into ``dest``; returns where it went and its size.

    ``dest`` may be a directory: the file then gets the name the node serves
    it under (its attachment name, without any directory part).
    ``blob_pending`` (the node is still fetching it) raises a ClientError
    carrying ``retry_after_ms``. The file itself is checked against the hash.
    """
    target = f"/api/blobs/{sha256}" + ("?preview=1" if preview else "")
    into_dir = await trio.Path(dest).is_dir()
    temp = (dest / f".{sha256}.part") if into_dir else dest.with_name(f".{dest.name}.part")
    with trio.fail_after(timeout):
        stream, hostport = await _open(url)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            headers = [
                ("host", hostport),
                ("authorization", f"Bearer {token}"),
                ("connection", "close"),
            ]
            await stream.send_all(
                (conn.send(h11.Request(method="GET", target=target, headers=headers)) or b"")
                + (conn.send(h11.EndOfMessage()) or b"")
            )
            event = await _next(conn, stream)
            if not isinstance(event, h11.Response):
                raise ClientError("unavailable", "the node closed the connection")
            status = event.status_code
            served = _served_name(event.headers) if into_dir else None
            digest = hashlib.sha256()
            written = 0
            error = bytearray()
            f = await trio.to_thread.run_sync(open, temp, "wb") if status == 200 else None
            try:
                while True:
                    event = await _next(conn, stream)
                    if isinstance(event, h11.Data):
                        if f is None:
                            error += event.data
                            if len(error) > MAX_ERROR_BYTES:
                                raise ClientError("too_large", "answer too large")
                            continue
                        await trio.to_thread.run_sync(f.write, bytes(event.data))
                        digest.update(event.data)
                        written += len(event.data)
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
                if f is not None:
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            finally:
                if f is not None:
                    f.close()
    if status != 200:
        temp.unlink(missing_ok=True)
        raise _error(status, bytes(error))
    if not preview and digest.hexdigest() != sha256:
        temp.unlink(missing_ok=True)
        raise ClientError("bad_signature", "the downloaded file does not match its hash")
    if into_dir:
        dest = dest / (served or sha256)
    os.replace(temp, dest)
    return dest, written


def _served_name(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The file name of a ``Content-Disposition`` (``filename*`` first), made
    safe to use as one file name here (no directories, no leading dot)."""
    for key, value in headers:
        if key.lower() != b"content-disposition":
            continue
        text = value.decode("latin-1")
        name = None
        for part in text.split(";"):
            k, _, v = part.strip().partition("=")
            if k.lower() == "filename*" and v.lower().startswith("utf-8''"):
                name = unquote(v[7:])
                break
            if k.lower() == "filename" and name is None:
                name = v.strip('"')
        if name:
            name = Path(name.replace("\\", "/")).name.lstrip(".")
            return name or None
    return None
