"""Group records: the host's signed, ordered log of a group.

The host of ``#name@host`` orders everything that happens in the group:
messages (wrapping the origin's signed unit) and membership changes. Each
record carries the group's next ``gseq`` and is signed by the host under the
group-record context, so members accept them only from the host, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .addresses import GroupAddress
from .codec import decode_cbor, encode_cbor
from .envelope import (
    CONTEXT_GROUP_RECORD,
    NodeKey,
    SignedUnit,
    Verified,
    check_public_key,
    verify,
)
from .errors import ErrorCode, ProtocolError
from .limits import MAX_FRAME_BYTES

KIND_MESSAGE = "msg"
KIND_MEMBERS = "members"
MAX_GROUP_RECORD_BYTES = MAX_FRAME_BYTES + 32 * 1024


@dataclass(frozen=True)
class GroupRecord:
    group: GroupAddress
    gseq: int
    kind: str
    unit: SignedUnit | None
    members: tuple[str, ...]
    event: dict[str, Any]


def make_group_record(
    host: NodeKey,
    group: GroupAddress,
    gseq: int,
    *,
    unit: SignedUnit | None = None,
    members: list[str] | None = None,
    event: dict[str, Any] | None = None,
) -> dict[str, bytes]:
    """Sign a record: a message (``unit``) or a membership change (``members``, ``event``)."""
    if group.host != host.id:
        raise ProtocolError(ErrorCode.FORBIDDEN, "only the host signs its group's records")
    body: dict[str, Any] = {"group": group.to_wire(), "gseq": gseq}
    if unit is not None:
        body.update({"kind": KIND_MESSAGE, "unit": unit.to_wire()})
    else:
        body.update({"kind": KIND_MEMBERS, "members": members or [], "event": event or {}})
    data = encode_cbor(body)
    return {"rec": data, "sig": host.sign(CONTEXT_GROUP_RECORD, data)}


def open_group_record(
    item: object, host_key: bytes, verified: Verified | None = None
) -> GroupRecord:
    """Verify a record against its host's key, then decode and check it.

    ``verified`` (see :class:`~.envelope.Verified`) spares a signature
    checked before over these exact bytes.
    """
    if not isinstance(item, dict) or set(item) != {"rec", "sig"}:
        raise ProtocolError(ErrorCode.BAD_FRAME, "a group record is {rec, sig}")
    data, sig = item["rec"], item["sig"]
    if not isinstance(data, bytes) or not isinstance(sig, bytes) or len(sig) != 64:
        raise ProtocolError(ErrorCode.BAD_FRAME, "group record fields are bytes")
    check_public_key(host_key)
    verify(CONTEXT_GROUP_RECORD, host_key, data, sig, verified)
    body = decode_cbor(data, max_bytes=MAX_GROUP_RECORD_BYTES)
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "a group record body is a map")
    group = GroupAddress.from_wire(body.get("group"))
    gseq, kind = body.get("gseq"), body.get("kind")
    if not isinstance(gseq, int) or isinstance(gseq, bool) or gseq < 1:
        raise ProtocolError(ErrorCode.BAD_FRAME, "gseq is a positive integer")
    if kind == KIND_MESSAGE:
        return GroupRecord(group, gseq, kind, SignedUnit.from_wire(body.get("unit")), (), {})
    if kind == KIND_MEMBERS:
        members, event = body.get("members"), body.get("event")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ProtocolError(ErrorCode.BAD_FRAME, "members is a list of addresses")
        if not isinstance(event, dict):
            raise ProtocolError(ErrorCode.BAD_FRAME, "event is a map")
        return GroupRecord(group, gseq, kind, None, tuple(members), event)
    raise ProtocolError(ErrorCode.BAD_FRAME, "unknown group record kind")
