"""Size limits shared by every part of chinwag (see docs/protocol.md)."""

from __future__ import annotations

from typing import Any

from .errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1

#: One frame, encoded.
MAX_FRAME_BYTES = 64 * 1024
#: One WebSocket message (a frame or a batch of frames) after authentication.
MAX_MESSAGE_BYTES = 1024 * 1024
#: One WebSocket message before the session has authenticated.
MAX_PREAUTH_MESSAGE_BYTES = 4 * 1024
#: Frames in one batch.
MAX_BATCH_FRAMES = 256
#: UTF-8 bytes of a message text.
MAX_TEXT_BYTES = 16 * 1024
#: Nesting depth of any decoded CBOR/JSON item.
MAX_DEPTH = 16
#: Items in any one array or map.
MAX_ITEMS = 1024
#: Data items (every scalar, string, key, array and map) in one device
#: message, counted by the pre-scan before anything is built: a batch is at
#: most 256 small frames, so 32 items per frame on average is plenty, and a
#: 1 MiB message of a million empty arrays is refused after 8,192 heads.
MAX_MESSAGE_ITEMS = 8 * 1024
#: The same bound for any other decoded item (link frames, records): generous,
#: since those come from authenticated peers, but still far below one item
#: per byte of a 1 MiB message.
MAX_DECODE_ITEMS = 64 * 1024
#: Generic cap on other strings (names, tokens, codes...).
MAX_STRING_BYTES = 1024


def check_text(value: Any, field: str = "text") -> str:
    """A message text (may be empty): a string of at most
    :data:`MAX_TEXT_BYTES` UTF-8 bytes. A lone surrogate (a JSON frame can
    escape one) has no UTF-8 form and is refused like any other bad text."""
    if not isinstance(value, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"field {field!r} must be a string")
    if len(value) > MAX_TEXT_BYTES:  # cheap first: no encoding of a huge string
        raise ProtocolError(ErrorCode.TOO_LARGE, f"text is limited to {MAX_TEXT_BYTES} bytes")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        bad = f"field {field!r} is not valid unicode"
        raise ProtocolError(ErrorCode.BAD_REQUEST, bad) from None
    if size > MAX_TEXT_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"text is limited to {MAX_TEXT_BYTES} bytes")
    return value
