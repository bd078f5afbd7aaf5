"""Signed introductions: a node vouching for another node's key, sans-I/O.

An introducer signs ``{by, key, name, ts}`` with its node key (context
``CONTEXT_INTRODUCTION``): "``by`` trusts the node ``key``, which calls
itself ``name``". A receiver that trusts ``by`` *and* has turned on
introductions from ``by`` may trust ``key`` in turn (node/introductions.py).
The statement carries no URLs: addresses travel in address records signed by
the node they describe (protocol/address_record.py), never on someone's word.
"""

from __future__ import annotations

from dataclasses import dataclass

from .addresses import check_node_name
from .codec import decode_cbor, encode_cbor
from .envelope import NodeKey, check_public_key, verify
from .errors import ErrorCode, ProtocolError

CONTEXT_INTRODUCTION = b"chinwag/v1/introduction\x00"
#: The signed body of one statement (a key, a name of at most 64 bytes, ts).
MAX_STATEMENT_BYTES = 512
SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class Introduction:
    """A verified statement: ``by`` vouches for ``key`` named ``name``."""

    by: bytes
    key: bytes
    name: str
    ts: int


def make_statement(introducer: NodeKey, key: bytes, name: str, ts: int) -> dict[str, bytes]:
    """The signed wire form ``{st, sig}`` of "``introducer`` trusts ``key``"."""
    data = encode_cbor({"by": introducer.public, "key": key, "name": name, "ts": ts})
    return {"st": data, "sig": introducer.sign(CONTEXT_INTRODUCTION, data)}


def open_statement(item: object, introducer: bytes) -> Introduction:
    """Verify a statement signed by ``introducer`` (the peer it came from).

    Raises ``bad_frame`` for a malformed statement, ``bad_signature`` for a
    bad key or signature, ``forbidden`` when it names another introducer.
    """
    if not isinstance(item, dict) or set(item) != {"st", "sig"}:
        raise ProtocolError(ErrorCode.BAD_FRAME, "an introduction is {st, sig}")
    data, sig = item["st"], item["sig"]
    if not isinstance(data, bytes) or not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
        raise ProtocolError(ErrorCode.BAD_FRAME, "introduction fields are bytes")
    body = decode_cbor(data, max_bytes=MAX_STATEMENT_BYTES)
    if not isinstance(body, dict) or set(body) != {"by", "key", "name", "ts"}:
        raise ProtocolError(ErrorCode.BAD_FRAME, "an introduction body is {by, key, name, ts}")
    by, key, name, ts = body["by"], body["key"], body["name"], body["ts"]
    if type(ts) is not int or ts < 0 or not isinstance(name, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "introduction field types")
    if by != introducer:
        raise ProtocolError(ErrorCode.FORBIDDEN, "an introduction names another introducer")
    check_public_key(key)
    if key == introducer:
        raise ProtocolError(ErrorCode.BAD_FRAME, "an introducer does not introduce itself")
    try:
        check_node_name(name)
    except ProtocolError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, "bad node name in an introduction") from exc
    verify(CONTEXT_INTRODUCTION, introducer, data, sig)
    return Introduction(by=introducer, key=key, name=name, ts=ts)
