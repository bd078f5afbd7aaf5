"""``POST /api/blobs`` (upload) and ``GET /api/blobs/<sha256>`` (download).

Both take the user's session token (``Authorization: Bearer``). Downloads
answer single byte ranges (206, or 416 for a range past the end) and are
served so that a browser never runs them: images that are safe to show
(JPEG, PNG, GIF, WebP) inline, anything else, SVG and HTML included, as
``application/octet-stream`` to be saved, always with
``X-Content-Type-Options: nosniff`` and a ``sandbox`` CSP.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import quote, unquote

import trio

from chinwag.protocol.errors import ErrorCode, ProtocolError

from .blobs import BlobAccess, BlobService
from .http_api import BodySource, HttpApi, HttpRequest, HttpResponse, json_response
from .store import Store

PREFIX = "/api/blobs/"
#: Bytes read from a blob file per chunk of a download.
READ_BYTES = 256 * 1024
#: Types served inline (shown by a browser as an image, never run).
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
#: The header that names an upload's file (percent-encoded UTF-8).
NAME_HEADER = "x-chinwag-filename"


class BlobRoutes:
    """The blob endpoints on the node's HTTP API."""

    def __init__(self, api: HttpApi, store: Store, blobs: BlobService) -> None:
        self._api = api
        self._store = store
        self._blobs = blobs

    def register(self) -> None:
        self._api.add_upload_route("POST", "/api/blobs", self.upload)
        self._api.add_prefix_route("GET", PREFIX, self.download)

    def _uid(self, request: HttpRequest) -> int:
        session = self._api.authorized(request)
        record = self._store.get_user(session.user)
        if record is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "unknown or revoked token")
        return record.uid

    async def upload(self, request: HttpRequest, body: BodySource) -> HttpResponse:
        uid = self._uid(request)  # before a byte of the body is read
        declared = request.headers.get("content-length")
        if "transfer-encoding" in request.headers or declared is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "send the file with a Content-Length")
        try:
            name = unquote(request.headers.get(NAME_HEADER, ""), errors="strict")
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"{NAME_HEADER} is percent-encoded UTF-8"
            ) from exc
        if not name:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"name the file in {NAME_HEADER}")
        claimed = request.headers.get("content-type", "application/octet-stream")
        result = await self._blobs.upload(uid, name, claimed, int(declared), body)
        return json_response(201, result.to_json())

    async def download(self, request: HttpRequest) -> HttpResponse:
        uid = self._uid(request)
        sha = request.path[len(PREFIX) :]
        preview = "preview=1" in request.query.split("&")
        access = self._blobs.access(uid, sha, preview=preview)
        return _file_response(access, request.headers.get("range"))


def content_headers(access: BlobAccess) -> tuple[str, list[tuple[str, str]]]:
    """The safe Content-Type and the headers that go with it."""
    inline = access.type in INLINE_TYPES
    kind = access.type if inline else "application/octet-stream"
    disposition = "inline" if inline else "attachment"
    ascii_name = access.name.encode("ascii", "replace").decode().replace('"', "'")
    ascii_name = ascii_name.replace("\\", "_")
    headers = [
        (
            "content-disposition",
            f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(access.name)}",
        ),
        ("content-security-policy", "default-src 'none'; sandbox"),
        ("accept-ranges", "bytes"),
        ("etag", f'"{access.sha256}"'),
    ]
    return kind, headers


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` of a single byte range, None for the whole file.

    Raises ``bad_request`` (answered 416) for a range that selects nothing.
    A list of ranges is answered with the whole file, as RFC 9110 allows.
    """
    if header is None or "," in header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "empty range")
        return max(0, size - count), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "range not satisfiable")
    return start, end


def _file_response(access: BlobAccess, range_header: str | None) -> HttpResponse:
    kind, headers = content_headers(access)
    try:
        selected = parse_range(range_header, access.size)
    except ProtocolError:
        return HttpResponse(
            416,
            b"",
            content_type=kind,
            headers=[*headers, ("content-range", f"bytes */{access.size}")],
        )
    status = 200
    start, end = 0, access.size
    if selected is not None:
        start, end = selected
        status = 206
        headers.append(("content-range", f"bytes {start}-{end - 1}/{access.size}"))

    async def chunks() -> AsyncIterator[bytes]:
        f = await trio.to_thread.run_sync(open, access.path, "rb")
        try:
            await trio.to_thread.run_sync(f.seek, start)
            left = end - start
            while left > 0:
                data = await trio.to_thread.run_sync(f.read, min(READ_BYTES, left))
                if not data:
                    raise trio.ClosedResourceError("blob file shorter than recorded")
                left -= len(data)
                yield data
        finally:
            f.close()

    return HttpResponse(
        status, b"", content_type=kind, headers=headers, stream=chunks, length=end - start
    )
