"""Signed address records: where a node says it can be reached.

Peers gossip these; each is signed by the node it describes (context
``CONTEXT_ADDRESS``), so a relaying peer cannot redirect anyone. A record
spreads an address, never trust.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import decode_cbor, encode_cbor
from .envelope import CONTEXT_ADDRESS, NodeKey, check_public_key, verify
from .errors import ErrorCode, ProtocolError

MAX_RECORD_BYTES = 2048
MAX_RECORD_URLS = 4
MAX_URL_CHARS = 300


@dataclass(frozen=True)
class AddressRecord:
    key: bytes
    urls: tuple[str, ...]
    ts: int


def make_record(key: NodeKey, urls: list[str], ts: int) -> dict[str, bytes]:
    """The signed wire form ``{rec, sig}`` of this node's addresses."""
    data = encode_cbor({"key": key.public, "urls": urls[:MAX_RECORD_URLS], "ts": ts})
    return {"rec": data, "sig": key.sign(CONTEXT_ADDRESS, data)}


def open_record(item: object) -> AddressRecord:
    """Verify a gossiped record against the key it names, then decode it."""
    if not isinstance(item, dict) or set(item) != {"rec", "sig"}:
        raise ProtocolError(ErrorCode.BAD_FRAME, "an address record is {rec, sig}")
    data, sig = item["rec"], item["sig"]
    if not isinstance(data, bytes) or not isinstance(sig, bytes) or len(sig) != 64:
        raise ProtocolError(ErrorCode.BAD_FRAME, "address record fields are bytes")
    body = decode_cbor(data, max_bytes=MAX_RECORD_BYTES)
    if not isinstance(body, dict) or set(body) != {"key", "urls", "ts"}:
        raise ProtocolError(ErrorCode.BAD_FRAME, "an address record body is {key, urls, ts}")
    key, urls, ts = body["key"], body["urls"], body["ts"]
    if not isinstance(key, bytes) or not isinstance(ts, int) or not isinstance(urls, list):
        raise ProtocolError(ErrorCode.BAD_FRAME, "address record field types")
    check_public_key(key)
    verify(CONTEXT_ADDRESS, key, data, sig)
    clean = []
    for url in urls[:MAX_RECORD_URLS]:
        if (
            isinstance(url, str)
            and url.startswith(("http://", "https://"))
            and len(url) <= MAX_URL_CHARS
        ):
            clean.append(url.rstrip("/"))
    return AddressRecord(key=key, urls=tuple(clean), ts=ts)
