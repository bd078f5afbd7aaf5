"""Strict CBOR and JSON codecs for untrusted wire data.

Every frame that arrives from a device or a peer goes through
:func:`decode_cbor` (``chinwag.cbor.v1``) or :func:`decode_json`
(``chinwag.json.v1``). Both are strict and raise only
:class:`~chinwag.protocol.errors.ProtocolError`: ``too_large`` when the input is
over its size cap (checked before anything is parsed), ``bad_frame`` for
everything else.

What may come out of a decoder: ``dict`` with ``str`` keys, ``list``, ``str``,
``bytes`` (CBOR only), ``int`` in the signed 64-bit range, ``bool`` and
``None``. Containers nest at most :data:`~.limits.MAX_DEPTH` deep (a bare
array or map is depth 1) and hold at most :data:`~.limits.MAX_ITEMS` entries
(elements of an array, key/value pairs of a map). The whole input holds at
most ``max_items`` data items (every scalar, string, map key, array and map
counts one; :data:`~.limits.MAX_DECODE_ITEMS` unless the caller passes a
tighter bound, as the device protocol does): more is ``too_large``, found by
counting before any object is built, so a small message that would expand to
a million empty arrays costs a bounded scan and nothing else.

CBOR is checked by a structural pre-scan of the item heads before
:func:`cbor2.loads` runs. The scan rejects tags of any kind (so no bignums,
datetimes or the shared/cyclic references of tags 28/29), indefinite lengths,
floats, ``undefined`` and simple values other than ``true``/``false``/``null``,
reserved additional-information values, integers outside the signed 64-bit
range, map keys that are not text strings, too deep nesting, too many items
in one container or in all, truncated input and trailing bytes. Every
declared length is checked against the bytes that remain before anything is
allocated, so a head that claims a 4 GiB string costs nothing. cbor2 then
decodes with indefinite lengths and duplicate keys refused and validates
UTF-8.

This module is sans-I/O: pure functions over bytes and strings.
"""

from __future__ import annotations

import json
import re
from typing import Any

import cbor2

from .errors import ErrorCode, ProtocolError
from .limits import MAX_DECODE_ITEMS, MAX_DEPTH, MAX_ITEMS, MAX_MESSAGE_BYTES

__all__ = [
    "decode_cbor",
    "decode_cbor_counted",
    "decode_json",
    "decode_json_counted",
    "encode_cbor",
    "encode_json",
]

_INT_MAX = (1 << 63) - 1
_INT_MIN = -(1 << 63)
#: CBOR encodes a negative integer ``n`` as the argument ``-1 - n``.
_NEG_ARG_MAX = -1 - _INT_MIN

# Initial bytes of the only simple values allowed: false, true, null.
_CBOR_FALSE = 0xF4
_CBOR_NULL = 0xF6


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, message)


def _too_large(size: int, max_bytes: int) -> ProtocolError:
    return ProtocolError(
        ErrorCode.TOO_LARGE, f"{size} bytes is over the limit of {max_bytes} bytes"
    )


def _too_many_items(max_items: int) -> ProtocolError:
    return ProtocolError(ErrorCode.TOO_LARGE, f"more than {max_items} data items in one message")


# --------------------------------------------------------------------- CBOR


def _scan_cbor(data: bytes, max_items: int) -> int:
    """Walk the heads of exactly one CBOR item spanning all of ``data``.

    Returns the number of data items (heads). Raises ``too_large`` as soon as
    that passes ``max_items`` and ``bad_frame`` for anything outside the
    protocol's subset (see the module docstring). Nothing is allocated in
    proportion to a declared length.
    """
    n = len(data)
    i = 0
    # Every pass of the loop reads one head: stop counting at the bound, so
    # a bomb costs at most max_items passes.
    left = max_items
    # The innermost open container: entries still expected and whether it is a
    # map. A map of p pairs expects 2 * p entries, so an even count means a key
    # comes next. Enclosing containers wait on ``stack`` (locals are faster).
    rem = 0
    in_map = False
    depth = 0
    stack: list[tuple[int, bool]] = []
    while True:
        if i >= n:
            raise _bad("truncated CBOR")
        if not left:
            raise _too_many_items(max_items)
        left -= 1
        ib = data[i]
        major = ib >> 5
        if in_map and not rem & 1 and major != 3:
            raise _bad("CBOR map keys must be text strings")
        if major == 7:
            if not _CBOR_FALSE <= ib <= _CBOR_NULL:
                raise _bad("CBOR floats, undefined and simple values are not allowed")
            i += 1
        elif major == 6:
            raise _bad("CBOR tags are not allowed")
        else:
            info = ib & 0x1F
            if info < 24:
                arg = info
                i += 1
            elif info == 24:
                if i + 2 > n:
                    raise _bad("truncated CBOR")
                arg = data[i + 1]
                i += 2
            elif info == 25:
                if i + 3 > n:
                    raise _bad("truncated CBOR")
                arg = data[i + 1] << 8 | data[i + 2]
                i += 3
            elif info == 26:
                if i + 5 > n:
                    raise _bad("truncated CBOR")
                arg = int.from_bytes(data[i + 1 : i + 5], "big")
                i += 5
            elif info == 27:
                if i + 9 > n:
                    raise _bad("truncated CBOR")
                arg = int.from_bytes(data[i + 1 : i + 9], "big")
                i += 9
            elif info == 31:
                raise _bad("indefinite-length CBOR items are not allowed")
            else:
                raise _bad("reserved CBOR additional information")
            if major == 3 or major == 2:
                # Check the declared length against what is left before cbor2
                # allocates anything for it.
                i += arg
                if i > n:
                    raise _bad("truncated CBOR string")
            elif major == 0:
                if arg > _INT_MAX:
                    raise _bad("integer outside the signed 64-bit range")
            elif major == 1:
                if arg > _NEG_ARG_MAX:
                    raise _bad("integer outside the signed 64-bit range")
            else:
                if depth >= MAX_DEPTH:
                    raise _bad(f"nesting deeper than {MAX_DEPTH}")
                if arg > MAX_ITEMS:
                    raise _bad(f"more than {MAX_ITEMS} items in one array or map")
                if arg:
                    stack.append((rem, in_map))
                    if major == 5:
                        rem = 2 * arg
                        in_map = True
                    else:
                        rem = arg
                        in_map = False
                    depth += 1
                    continue
        # One item is complete: count it, closing every container it fills.
        while depth:
            rem -= 1
            if rem:
                break
            rem, in_map = stack.pop()
            depth -= 1
        else:
            break
    if i != n:
        raise _bad("trailing bytes after the CBOR item")
    return max_items - left


def decode_cbor(
    data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, max_items: int = MAX_DECODE_ITEMS
) -> object:
    """Decode one untrusted CBOR item, strictly.

    ``data`` must be exactly one item in the protocol's subset of CBOR (see
    the module docstring). Raises :class:`ProtocolError` with ``too_large``
    if ``len(data) > max_bytes`` (checked first) or it holds more than
    ``max_items`` data items (counted before decoding), and ``bad_frame`` for
    any other problem; no other exception escapes.
    """
    return decode_cbor_counted(data, max_bytes=max_bytes, max_items=max_items)[0]


def decode_cbor_counted(
    data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, max_items: int = MAX_DECODE_ITEMS
) -> tuple[object, int]:
    """:func:`decode_cbor`, also returning how many data items it decoded
    (what the node charges the sender for the work)."""
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            raise _bad("CBOR input must be bytes")
        data = bytes(data)
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    items = _scan_cbor(data, max_items)
    try:
        return (
            cbor2.loads(
                data, allow_indefinite=False, allow_duplicate_keys=False, max_depth=MAX_DEPTH
            ),
            items,
        )
    except Exception as exc:  # cbor2 errors, bad UTF-8, duplicate keys, MemoryError...
        raise _bad(f"invalid CBOR: {exc}") from None


def encode_cbor(obj: object) -> bytes:
    """Encode ``obj`` as CBOR with definite lengths and no value sharing.

    Raises :class:`ProtocolError` (``bad_frame``) if ``obj`` cannot be
    encoded. The caller is trusted to pass only protocol types; this does not
    check that the result would pass :func:`decode_cbor`.
    """
    try:
        return cbor2.dumps(obj)
    except Exception as exc:
        raise _bad(f"cannot encode as CBOR: {exc}") from None


# --------------------------------------------------------------------- JSON


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > MAX_ITEMS:
        raise _bad(f"more than {MAX_ITEMS} items in one object")
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _bad("duplicate key in JSON object")
    return obj


def _json_int(text: str) -> int:
    # A 64-bit integer has at most 20 characters: refuse longer digit strings
    # before converting them.
    if len(text) > 20:
        raise _bad("integer outside the signed 64-bit range")
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _bad("integer outside the signed 64-bit range")
    return value


def _json_float(text: str) -> float:
    raise _bad("floats are not allowed")


def _json_constant(text: str) -> float:
    raise _bad(f"{text} is not allowed")


_JSON_DECODER = json.JSONDecoder(
    object_pairs_hook=_json_pairs,
    parse_int=_json_int,
    parse_float=_json_float,
    parse_constant=_json_constant,
    strict=True,
)
#: A ``\\u`` escape of a UTF-16 surrogate: may decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: A JSON string (escapes skipped whole), unrolled so long strings match fast.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _count_json_items(text: str, max_items: int) -> int:
    """An upper bound on the data items in ``text``, found without building any.

    Outside strings, each item is the top-level one or is preceded by its own
    ``,``, ``:``, ``[`` or ``{`` (an array's first element by ``[``, a key by
    ``{`` or ``,``, a map value by ``:``), so counting those characters, once
    the strings are cut out, bounds the items. Strings are matched left to
    right as the decoder reads them; where the two could disagree (an
    unterminated string) the decoder has already failed.
    """
    bare = _JSON_STRING.sub("", text) if '"' in text else text
    count = 1 + bare.count(",") + bare.count(":") + bare.count("[") + bare.count("{")
    if count > max_items:
        raise _too_many_items(max_items)
    return count


def _check_json_item(item: object, depth: int, check_strings: bool) -> None:
    """Bound nesting and array sizes; optionally refuse lone surrogates."""
    if isinstance(item, dict):
        if depth >= MAX_DEPTH:
            raise _bad(f"nesting deeper than {MAX_DEPTH}")
        if check_strings:
            for key in item:
                _check_json_item(key, depth + 1, check_strings)
        for value in item.values():
            if check_strings or isinstance(value, dict | list):
                _check_json_item(value, depth + 1, check_strings)
    elif isinstance(item, list):
        if depth >= MAX_DEPTH:
            raise _bad(f"nesting deeper than {MAX_DEPTH}")
        if len(item) > MAX_ITEMS:
            raise _bad(f"more than {MAX_ITEMS} items in one array")
        for value in item:
            if check_strings or isinstance(value, dict | list):
                _check_json_item(value, depth + 1, check_strings)
    elif check_strings and isinstance(item, str) and not item.isascii():
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad("lone UTF-16 surrogate in a JSON string") from None


def decode_json(
    data: str | bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, max_items: int = MAX_DECODE_ITEMS
) -> object:
    """Decode one untrusted JSON value, strictly.

    ``data`` is text, or UTF-8 bytes. Raises :class:`ProtocolError` with
    ``too_large`` if its UTF-8 encoding is over ``max_bytes`` (checked first)
    or it may hold more than ``max_items`` data items (counted before
    decoding), and ``bad_frame`` for invalid JSON or UTF-8, trailing data,
    duplicate keys, floats, ``NaN``/``Infinity``, integers outside the signed
    64-bit range, lone surrogates, nesting deeper than ``MAX_DEPTH`` or
    containers with more than ``MAX_ITEMS`` entries. No other exception
    escapes.
    """
    return decode_json_counted(data, max_bytes=max_bytes, max_items=max_items)[0]


def decode_json_counted(
    data: str | bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, max_items: int = MAX_DECODE_ITEMS
) -> tuple[object, int]:
    """:func:`decode_json`, also returning the item count (an upper bound)."""
    if isinstance(data, str):
        # UTF-8 never takes fewer bytes than characters.
        if len(data) > max_bytes:
            raise _too_large(len(data), max_bytes)
        if not data.isascii():
            size = len(data.encode("utf-8", "surrogatepass"))
            if size > max_bytes:
                raise _too_large(size, max_bytes)
            try:
                data.encode("utf-8")
            except UnicodeEncodeError:
                raise _bad("lone UTF-16 surrogate in JSON text") from None
        text = data
    elif isinstance(data, bytes | bytearray | memoryview):
        if len(data) > max_bytes:
            raise _too_large(len(data), max_bytes)
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("JSON text is not valid UTF-8") from None
    else:
        raise _bad("JSON input must be str or bytes")
    items = _count_json_items(text, max_items)
    try:
        item = _JSON_DECODER.decode(text)
    except ProtocolError:
        raise
    except Exception as exc:  # JSONDecodeError, RecursionError, MemoryError...
        raise _bad(f"invalid JSON: {exc}") from None
    # Fast path: too few brackets to nest too deep and too few commas for any
    # array to be too long (objects were counted by _json_pairs).
    check_strings = _SURROGATE_ESCAPE.search(text) is not None
    if (
        check_strings
        or text.count("[") + text.count("{") > MAX_DEPTH
        or text.count(",") >= MAX_ITEMS
    ):
        _check_json_item(item, 0, check_strings)
    return item, items


def encode_json(obj: object) -> str:
    """Encode ``obj`` as compact JSON text (non-ASCII characters kept as is).

    Raises :class:`ProtocolError` (``bad_frame``) if ``obj`` cannot be
    encoded (bytes, NaN, cycles, unknown types...). The caller converts
    bytes and 64-bit ids first (see ``frames``).
    """
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except Exception as exc:
        raise _bad(f"cannot encode as JSON: {exc}") from None
