"""Files attached to a message: the ``body.attachments`` list of an envelope.

An attachment names a blob by its SHA-256 (of the bytes the origin node
stores, i.e. after any metadata was stripped) with the file's name, media
type and size, and for images a small preview blob. It sits inside the
signed envelope, so what a recipient downloads is checked end to end: the
recipient's node verifies the hash of every blob it fetches before serving
it. Sans-I/O: values in, frozen dataclasses or ProtocolError out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ErrorCode, ProtocolError

#: Attachments in one message.
MAX_ATTACHMENTS = 10
#: Characters of a file name.
MAX_NAME_CHARS = 255
#: Characters of a media type (``type/subtype``).
MAX_TYPE_CHARS = 127
#: The protocol's ceiling on one file's size (each node sets its own, lower,
#: limit; see NodeConfig.max_file_bytes).
MAX_FILE_BYTES = 1 << 40
#: Pixels of a preview's side.
MAX_PREVIEW_SIDE = 4096

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_ATT_KEYS = frozenset({"sha256", "name", "type", "size"})
_PREVIEW_KEYS = frozenset({"sha256", "type", "size", "width", "height"})
#: Types a preview may have (it is shown inline).
PREVIEW_TYPES = frozenset({"image/jpeg", "image/png"})


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


def check_sha256(value: object) -> str:
    """A blob hash: 64 lowercase hex digits."""
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        raise _bad("a blob hash is 64 lowercase hex digits (SHA-256)")
    return value


def check_media_type(value: object) -> str:
    """A lowercase ``type/subtype`` without parameters."""
    if not isinstance(value, str) or _MEDIA_TYPE.fullmatch(value) is None:
        raise _bad("an attachment type is a lowercase type/subtype")
    return value


def check_file_name(value: object) -> str:
    """1-255 characters, no path separator, no control character."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
        raise _bad(f"an attachment name is 1-{MAX_NAME_CHARS} characters")
    if "/" in value or "\\" in value or value in (".", ".."):
        raise _bad("an attachment name has no path separator")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _bad("an attachment name has no control characters")
    return value


def _int(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _bad(f"{what} is an integer {low}-{high}")
    return value


@dataclass(frozen=True)
class Preview:
    sha256: str
    type: str
    size: int
    width: int
    height: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "type": self.type,
            "size": self.size,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_wire(cls, item: object) -> Preview:
        if not isinstance(item, Mapping) or set(item) != _PREVIEW_KEYS:
            raise _bad("a preview is {sha256, type, size, width, height}")
        kind = check_media_type(item["type"])
        if kind not in PREVIEW_TYPES:
            raise _bad("a preview is image/jpeg or image/png")
        return cls(
            check_sha256(item["sha256"]),
            kind,
            _int(item["size"], "preview size", 1, MAX_FILE_BYTES),
            _int(item["width"], "preview width", 1, MAX_PREVIEW_SIDE),
            _int(item["height"], "preview height", 1, MAX_PREVIEW_SIDE),
        )


@dataclass(frozen=True)
class Attachment:
    sha256: str
    name: str
    type: str
    size: int
    preview: Preview | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sha256": self.sha256,
            "name": self.name,
            "type": self.type,
            "size": self.size,
        }
        if self.preview is not None:
            out["preview"] = self.preview.to_wire()
        return out

    def hashes(self) -> tuple[str, ...]:
        """The blobs this attachment references (the file, then its preview)."""
        if self.preview is None:
            return (self.sha256,)
        return (self.sha256, self.preview.sha256)

    @classmethod
    def from_wire(cls, item: object, max_size: int = MAX_FILE_BYTES) -> Attachment:
        if not isinstance(item, Mapping):
            raise _bad("an attachment is a map")
        keys = set(item)
        if not _ATT_KEYS <= keys or not keys <= _ATT_KEYS | {"preview"}:
            raise _bad("an attachment is {sha256, name, type, size, preview?}")
        size = item["size"]
        if type(size) is not int or size < 0:
            raise _bad("an attachment size is a non-negative integer")
        if size > max_size:
            raise ProtocolError(
                ErrorCode.TOO_LARGE, f"an attachment is at most {max_size} bytes here"
            )
        preview = Preview.from_wire(item["preview"]) if "preview" in item else None
        return cls(
            check_sha256(item["sha256"]),
            check_file_name(item["name"]),
            check_media_type(item["type"]),
            size,
            preview,
        )


def parse_attachments(value: object, max_size: int = MAX_FILE_BYTES) -> tuple[Attachment, ...]:
    """A list of 1-10 attachments (as sent or as found in an envelope body)."""
    if not isinstance(value, list | tuple):
        raise _bad("attachments is a list")
    if not 0 < len(value) <= MAX_ATTACHMENTS:
        raise _bad(f"attachments is a list of 1-{MAX_ATTACHMENTS}")
    return tuple(Attachment.from_wire(item, max_size) for item in value)


def attachments_of(body: Mapping[str, Any]) -> tuple[Attachment, ...]:
    """The attachments of a decoded envelope body (empty when it has none)."""
    value = body.get("attachments")
    return () if value is None else parse_attachments(value)
