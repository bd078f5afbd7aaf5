"""Blob metadata in LMDB: which blobs exist, who references them, who may fetch them.

Every queue append (``WriteTxn.append_to_uid``, node/store.py) calls
:func:`index_append` in the same write transaction, so a blob's reference
counts can never disagree with the queues: a message and the references it
makes are committed together or not at all. Likewise every outbox item
(node/peers.py ``append_item``) calls :func:`grant_payload`, recording that
the peer was sent a message referencing the blob and may fetch it.

Layouts (``sha`` = the 32 raw bytes of the SHA-256, integers big-endian):

  blobs:        sha(32)               -> cbor {size, type, ms, refs, have, pv?, up?}
  blob_refs:    uid(4) | sha(32)      -> cbor {c: count, name, type}
  blob_uploads: uid(4) | sha(32)      -> ms(8)        (the user uploaded it)
  blob_grants:  sha(32) | node(32)    -> b""          (the peer may fetch it)
  blob_wanted:  sha(32)               -> cbor {from: node(32), size, ms}
  blob_quota:   uid(4)                -> level(8) | at_ms(8)  (node/quota.py)

``refs`` counts the queue entries (over all users) that reference the blob;
``have`` says the verified file is in ``DATA/blobs/`` (False while it is
fetched from ``blob_wanted.from``); ``pv`` is the hex hash of the blob's
preview; ``up`` the uids that uploaded it (their ``blob_uploads`` rows go
with the blob). A blob with ``refs == 0`` is reclaimed by the sweep once
its ``ms`` (upload or last use) is older than the grace period.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cbor2
import lmdb

from chinwag.protocol.addresses import node_id_bytes
from chinwag.protocol.attachments import Attachment, parse_attachments
from chinwag.protocol.errors import ErrorCode, ProtocolError

DB_NAMES = ("blobs", "blob_refs", "blob_uploads", "blob_grants", "blob_wanted", "blob_quota")

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
#: Uploaders remembered per blob (their rows are dropped with it).
MAX_UPLOADERS = 16
_MARK = b"attachments"
_MAX_NESTING = 4


@dataclass(frozen=True)
class BlobRow:
    sha256: str
    size: int
    type: str
    ms: int
    refs: int
    have: bool
    preview: str | None


@dataclass(frozen=True)
class UserRef:
    """A user's reference to a blob: how often, and under which name and type."""

    count: int
    name: str
    type: str


def _row(sha: str, raw: bytes) -> BlobRow:
    item = cbor2.loads(raw)
    return BlobRow(
        sha,
        int(item["size"]),
        str(item["type"]),
        int(item["ms"]),
        int(item["refs"]),
        bool(item["have"]),
        item.get("pv"),
    )


def get_blob(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], sha: str) -> BlobRow | None:
    raw = txn.get(bytes.fromhex(sha), db=dbs["blobs"])
    return None if raw is None else _row(sha, bytes(raw))


def get_ref(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, sha: str
) -> UserRef | None:
    raw = txn.get(_U32.pack(uid) + bytes.fromhex(sha), db=dbs["blob_refs"])
    if raw is None:
        return None
    item = cbor2.loads(bytes(raw))
    return UserRef(int(item["c"]), str(item["name"]), str(item["type"]))


def _put(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], sha: str, item: dict[str, Any]) -> None:
    txn.put(bytes.fromhex(sha), cbor2.dumps(item), db=dbs["blobs"])


def record_upload(
    txn: lmdb.Transaction[bytes],
    dbs: dict[str, Any],
    uid: int,
    sha: str,
    size: int,
    media_type: str,
    now_ms: int,
    preview: str | None = None,
) -> str:
    """A user stored ``sha`` (its file is in place): note the blob and the
    uploader. Returns the blob's type: the one it was first stored with (the
    same bytes uploaded again under another claimed type keep it)."""
    key = bytes.fromhex(sha)
    raw = txn.get(key, db=dbs["blobs"])
    item: dict[str, Any] = (
        {"size": size, "type": media_type, "ms": now_ms, "refs": 0, "have": True}
        if raw is None
        else cbor2.loads(bytes(raw))
    )
    item["have"] = True
    item["ms"] = max(int(item["ms"]), now_ms)  # a fresh upload restarts the grace period
    if preview is not None:
        item["pv"] = preview
    uploaders = list(item.get("up", []))
    if uid not in uploaders and len(uploaders) < MAX_UPLOADERS:
        uploaders.append(uid)
    item["up"] = uploaders
    txn.put(key, cbor2.dumps(item), db=dbs["blobs"])
    txn.put(_U32.pack(uid) + key, _U64.pack(now_ms), db=dbs["blob_uploads"])
    txn.delete(key, db=dbs["blob_wanted"])
    return str(item["type"])


def check_sendable(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, attachments: tuple[Attachment, ...]
) -> None:
    """Refuse a send whose blobs are not here, or not the sender's to send.

    A blob may be sent by a user who uploaded it or who has it in their own
    queue (forwarding), and only once its file is here, with the size and
    type (and preview) the attachment claims.
    """
    prefix = _U32.pack(uid)
    for att in attachments:
        sizes = [(att.sha256, att.size, att.type)]
        if att.preview is not None:
            sizes.append((att.preview.sha256, att.preview.size, att.preview.type))
        for sha, size, media_type in sizes:
            row = get_blob(txn, dbs, sha)
            key = prefix + bytes.fromhex(sha)
            mine = (
                txn.get(key, db=dbs["blob_uploads"]) is not None
                or txn.get(key, db=dbs["blob_refs"]) is not None
            )
            if row is None or not mine:
                raise ProtocolError(
                    ErrorCode.NOT_FOUND, f"no blob {sha[:16]}... of yours here; upload it first"
                )
            if not row.have:
                raise ProtocolError(
                    ErrorCode.BLOB_PENDING,
                    f"blob {sha[:16]}... is still being fetched",
                    retry_after_ms=1000,
                )
            if row.size != size or row.type != media_type:
                # What the recipients' nodes will serve is what is stored here.
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"blob {sha[:16]}... is {row.type} of {row.size} bytes, "
                    f"not {media_type} of {size}",
                )


# ---------------------------------------------------------------- records


def find_attachments(data: bytes) -> list[Attachment]:
    """Every attachment in a stored record or outbox payload, at any depth.

    Records and payloads nest signed bytes (a queue record holds a unit whose
    ``env`` is the envelope; a group record holds the inner unit), so byte
    strings that mention attachments are decoded in turn. Records here were
    verified when stored; a malformed one simply has no attachments.
    """
    if _MARK not in data:  # the common case costs one substring search
        return []
    found: list[Attachment] = []
    try:
        _walk(cbor2.loads(data), found, 0)
    except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError, ProtocolError):
        return []
    return found


def _walk(item: Any, found: list[Attachment], depth: int) -> None:
    if depth > _MAX_NESTING:
        return
    if isinstance(item, dict):
        body = item.get("body")
        if isinstance(body, dict) and "attachments" in body:
            found.extend(parse_attachments(body["attachments"]))
        for value in item.values():
            _walk(value, found, depth + 1)
    elif isinstance(item, list):
        for value in item:
            _walk(value, found, depth + 1)
    elif isinstance(item, bytes) and _MARK in item:
        _walk(cbor2.loads(item), found, depth + 1)


def _source(record: bytes, node_id: str) -> bytes | None:
    """The peer to fetch a record's blobs from: the origin of a 1:1 message or
    of a group message hosted here, else the group's host (it relayed it)."""
    try:
        item = cbor2.loads(record)
        unit = item["unit"]
        origin = bytes(unit["by"])
        env = cbor2.loads(unit["env"])
        group = env.get("group")
        if isinstance(group, dict):
            host = node_id_bytes(str(group["host"]))
            if host != node_id_bytes(node_id):
                return host
        return origin
    except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError, ProtocolError):
        return None


def index_append(
    txn: lmdb.Transaction[bytes],
    dbs: dict[str, Any],
    uid: int,
    record: bytes,
    node_id: str,
    now_ms: int,
) -> bool:
    """Count the references ``record`` (just appended to ``uid``'s queue) makes.

    A blob not here yet (a message from another node) gets a ``blobs`` row
    with ``have = False`` and a ``blob_wanted`` row naming the peer to fetch
    it from (node/blob_fetch.py). Returns True when such a row was added.
    """
    attachments = find_attachments(record)
    wanted = False
    if not attachments:
        return False
    prefix = _U32.pack(uid)
    source: bytes | None = None
    own = node_id_bytes(node_id)
    for att in attachments:
        parts = [(att.sha256, att.size, att.type, att.name)]
        if att.preview is not None:
            parts.append(
                (att.preview.sha256, att.preview.size, att.preview.type, f"preview-{att.name}")
            )
        for sha, size, media_type, name in parts:
            key = bytes.fromhex(sha)
            raw = txn.get(key, db=dbs["blobs"])
            if raw is None:
                item: dict[str, Any] = {
                    "size": size,
                    "type": media_type,
                    "ms": now_ms,
                    "refs": 0,
                    "have": False,
                }
                if source is None:
                    source = _source(record, node_id)
                if source is not None and source != own:
                    txn.put(
                        key,
                        cbor2.dumps({"from": source, "size": size, "ms": now_ms}),
                        db=dbs["blob_wanted"],
                    )
                    wanted = True
            else:
                item = cbor2.loads(bytes(raw))
            item["refs"] = int(item["refs"]) + 1
            item["ms"] = max(int(item["ms"]), now_ms)
            if att.preview is not None and sha == att.sha256:
                item.setdefault("pv", att.preview.sha256)
            txn.put(key, cbor2.dumps(item), db=dbs["blobs"])
            ref_raw = txn.get(prefix + key, db=dbs["blob_refs"])
            ref: dict[str, Any] = (
                {"c": 0, "name": name, "type": media_type}
                if ref_raw is None
                else cbor2.loads(bytes(ref_raw))
            )
            ref["c"] = int(ref["c"]) + 1
            txn.put(prefix + key, cbor2.dumps(ref), db=dbs["blob_refs"])
    return wanted


def release_record(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int, record: bytes, now_ms: int
) -> None:
    """Take back the references ``record`` made in ``uid``'s queue: for a
    queue entry that is rewritten or removed (e.g. a deleted message), in the
    same transaction. A blob left with no reference is reclaimed by the sweep
    after the grace period (``ms`` restarts it now)."""
    prefix = _U32.pack(uid)
    for att in find_attachments(record):
        for sha in att.hashes():
            key = bytes.fromhex(sha)
            raw = txn.get(key, db=dbs["blobs"])
            if raw is not None:
                item = cbor2.loads(bytes(raw))
                item["refs"] = max(0, int(item["refs"]) - 1)
                item["ms"] = max(int(item["ms"]), now_ms)
                txn.put(key, cbor2.dumps(item), db=dbs["blobs"])
            ref_raw = txn.get(prefix + key, db=dbs["blob_refs"])
            if ref_raw is None:
                continue
            ref: dict[str, Any] = cbor2.loads(bytes(ref_raw))
            ref["c"] = int(ref["c"]) - 1
            if ref["c"] <= 0:
                txn.delete(prefix + key, db=dbs["blob_refs"])
            else:
                txn.put(prefix + key, cbor2.dumps(ref), db=dbs["blob_refs"])


def grant_payload(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], peer: bytes, payload: dict[str, Any]
) -> None:
    """``peer`` is being sent ``payload``: it may fetch the blobs it references
    (as may the destination of a relayed unit, ``payload["to"]``)."""
    peers = [peer]
    to = payload.get("to")
    if isinstance(to, bytes) and len(to) == 32:
        peers.append(to)
    for value in payload.values():
        if isinstance(value, bytes) and _MARK in value:
            for att in find_attachments(value):
                for sha in att.hashes():
                    for one in peers:
                        txn.put(bytes.fromhex(sha) + one, b"", db=dbs["blob_grants"])


def may_fetch(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], sha: str, peer: bytes) -> bool:
    return txn.get(bytes.fromhex(sha) + peer, db=dbs["blob_grants"]) is not None


def drop_user(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], uid: int) -> None:
    """A removed user's references go (their blobs may then be reclaimed)."""
    prefix = _U32.pack(uid)
    for key, value in list(_prefix_items(txn, dbs["blob_refs"], prefix)):
        sha = key[4:]
        raw = txn.get(sha, db=dbs["blobs"])
        if raw is not None:
            item = cbor2.loads(bytes(raw))
            item["refs"] = max(0, int(item["refs"]) - int(cbor2.loads(value)["c"]))
            txn.put(sha, cbor2.dumps(item), db=dbs["blobs"])
        txn.delete(key, db=dbs["blob_refs"])
    for key, _ in list(_prefix_items(txn, dbs["blob_uploads"], prefix)):
        txn.delete(key, db=dbs["blob_uploads"])
    txn.delete(prefix, db=dbs["blob_quota"])


def reclaimable(
    txn: lmdb.Transaction[bytes], dbs: dict[str, Any], before_ms: int, limit: int
) -> list[str]:
    """Blobs no message references, unused since ``before_ms`` (at most ``limit``)."""
    out: list[str] = []
    with txn.cursor(db=dbs["blobs"]) as cursor:
        for key, value in cursor:
            item = cbor2.loads(value)
            if int(item["refs"]) == 0 and int(item["ms"]) < before_ms:
                out.append(bytes(key).hex())
                if len(out) >= limit:
                    break
    return out


def forget_blob(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], sha: str) -> None:
    """Drop every row of an unreferenced blob (its file goes after the commit)."""
    key = bytes.fromhex(sha)
    raw = txn.get(key, db=dbs["blobs"])
    if raw is not None:
        for uid in cbor2.loads(bytes(raw)).get("up", []):
            txn.delete(_U32.pack(int(uid)) + key, db=dbs["blob_uploads"])
    txn.delete(key, db=dbs["blobs"])
    txn.delete(key, db=dbs["blob_wanted"])
    for gkey, _ in list(_prefix_items(txn, dbs["blob_grants"], key)):
        txn.delete(gkey, db=dbs["blob_grants"])


@dataclass(frozen=True)
class Wanted:
    sha256: str
    source: bytes
    size: int
    ms: int


def list_wanted(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], limit: int) -> list[Wanted]:
    out: list[Wanted] = []
    with txn.cursor(db=dbs["blob_wanted"]) as cursor:
        for key, value in cursor:
            item = cbor2.loads(value)
            out.append(Wanted(bytes(key).hex(), bytes(item["from"]), int(item["size"]), item["ms"]))
            if len(out) >= limit:
                break
    return out


def mark_fetched(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], sha: str) -> None:
    """The fetched file is verified and in place: serve it from now on."""
    key = bytes.fromhex(sha)
    raw = txn.get(key, db=dbs["blobs"])
    if raw is not None:
        item = cbor2.loads(bytes(raw))
        item["have"] = True
        txn.put(key, cbor2.dumps(item), db=dbs["blobs"])
    txn.delete(key, db=dbs["blob_wanted"])


def _prefix_items(
    txn: lmdb.Transaction[bytes], db: Any, prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    with txn.cursor(db=db) as cursor:
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not bytes(key).startswith(prefix):
                return
            yield bytes(key), bytes(value)
