"""Size limits shared by every part of chinwag (see docs/protocol.md)."""

from __future__ import annotations

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
#: Generic cap on other strings (names, tokens, codes...).
MAX_STRING_BYTES = 1024
