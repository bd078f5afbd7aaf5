"""The blob transfer frames of a link (blobreq, blobchunk, blobnone): bytes only."""

from __future__ import annotations

from typing import Any

import pytest

from chinwag.protocol.codec import encode_cbor
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.link import (
    MAX_BLOB_CHUNK,
    BlobChunk,
    BlobRequest,
    BlobUnavailable,
    LinkDirection,
    Resume,
    decode_link_frame,
    encode_link_frame,
)

SHA = bytes(range(32))


@pytest.mark.parametrize(
    "frame",
    [
        BlobRequest(SHA, 0),
        BlobRequest(SHA, 1 << 20),
        BlobChunk(SHA, 0, b"x" * 65536, 100_000),
        BlobChunk(SHA, 100, b"", 100),
        BlobUnavailable(SHA, "pending"),
        BlobUnavailable(SHA, "forbidden"),
    ],
)
def test_blob_frames_round_trip(frame: Any) -> None:
    assert decode_link_frame(encode_link_frame(frame)) == frame


def test_wire_shapes() -> None:
    assert decode_link_frame(
        encode_cbor({"t": "blobreq", "sha256": SHA, "offset": 7})
    ) == BlobRequest(SHA, 7)
    assert decode_link_frame(
        encode_cbor({"t": "blobchunk", "sha256": SHA, "offset": 0, "data": b"ab", "total": 2})
    ) == BlobChunk(SHA, 0, b"ab", 2)


@pytest.mark.parametrize(
    "item",
    [
        {"t": "blobreq", "sha256": SHA[:31], "offset": 0},
        {"t": "blobreq", "sha256": SHA.hex(), "offset": 0},
        {"t": "blobreq", "sha256": SHA, "offset": -1},
        {"t": "blobreq", "sha256": SHA, "offset": True},
        {"t": "blobreq", "sha256": SHA},
        {"t": "blobreq", "sha256": SHA, "offset": 0, "extra": 1},
        {"t": "blobchunk", "sha256": SHA, "offset": 0, "data": "text", "total": 4},
        {"t": "blobchunk", "sha256": SHA, "offset": 3, "data": b"ab", "total": 4},
        {"t": "blobchunk", "sha256": SHA, "offset": 0, "data": b"ab"},
        {"t": "blobnone", "sha256": SHA, "code": "nope"},
        {"t": "blobnone", "sha256": SHA},
    ],
)
def test_malformed_blob_frames_are_refused(item: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode_link_frame(encode_cbor(item))
    assert refused.value.code == ErrorCode.BAD_FRAME


def test_a_chunk_over_its_cap_is_refused() -> None:
    data = b"x" * (MAX_BLOB_CHUNK + 1)
    with pytest.raises(ProtocolError):
        decode_link_frame(
            encode_cbor(
                {"t": "blobchunk", "sha256": SHA, "offset": 0, "data": data, "total": len(data)}
            )
        )


def test_blob_frames_only_after_resume() -> None:
    direction = LinkDirection()
    with pytest.raises(ProtocolError):
        direction.receive(encode_link_frame(BlobRequest(SHA, 0)))
    direction = LinkDirection()
    direction.receive(encode_link_frame(Resume(0)))
    assert direction.receive(encode_link_frame(BlobRequest(SHA, 0))) == BlobRequest(SHA, 0)
