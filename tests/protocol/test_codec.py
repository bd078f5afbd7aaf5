"""Tests for the strict CBOR/JSON codecs in chinwag.protocol.codec."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chinwag.protocol.codec import decode_cbor, decode_json, encode_cbor, encode_json
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.limits import MAX_DEPTH, MAX_ITEMS, MAX_MESSAGE_BYTES, MAX_MESSAGE_ITEMS

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=150, deadline=None)


# ----------------------------------------------------------------- helpers


def depth_of(item: object) -> int:
    """Container nesting depth: a scalar is 0, a bare list or dict is 1."""
    if isinstance(item, dict):
        return 1 + max((depth_of(v) for v in item.values()), default=0)
    if isinstance(item, list):
        return 1 + max((depth_of(v) for v in item), default=0)
    return 0


def assert_allowed(item: object, *, allow_bytes: bool, depth: int = 0) -> None:
    """Only the protocol's types, bounded, may come out of a decoder."""
    if isinstance(item, dict):
        assert type(item) is dict
        assert depth < MAX_DEPTH and len(item) <= MAX_ITEMS
        for key, value in item.items():
            assert type(key) is str
            assert_allowed(value, allow_bytes=allow_bytes, depth=depth + 1)
    elif isinstance(item, list):
        assert type(item) is list
        assert depth < MAX_DEPTH and len(item) <= MAX_ITEMS
        for value in item:
            assert_allowed(value, allow_bytes=allow_bytes, depth=depth + 1)
    elif type(item) is int:
        assert INT_MIN <= item <= INT_MAX
    elif type(item) is bytes:
        assert allow_bytes
    else:
        assert item is None or type(item) in (bool, str), repr(item)


def cbor_code(data: bytes, **kwargs: int) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        decode_cbor(data, **kwargs)
    return info.value.code


def json_code(data: str | bytes, **kwargs: int) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        decode_json(data, **kwargs)
    return info.value.code


def nested_arrays(depth: int) -> bytes:
    """``depth`` arrays, each the only element of the one around it."""
    return b"\x81" * (depth - 1) + b"\x80"


# -------------------------------------------------------------- strategies

ints = st.integers(min_value=INT_MIN, max_value=INT_MAX)
json_scalars = st.none() | st.booleans() | ints | st.text(max_size=20)
cbor_scalars = json_scalars | st.binary(max_size=20)


def values(scalars: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=8), children, max_size=5)
        ),
        max_leaves=25,
    ).filter(lambda v: depth_of(v) <= MAX_DEPTH)


cbor_values = values(cbor_scalars)
json_values = values(json_scalars)


# -------------------------------------------------------------- round trips


@ROUND_TRIP
@given(cbor_values)
def test_cbor_round_trip(value: object) -> None:
    decoded = decode_cbor(encode_cbor(value))
    assert decoded == value
    assert_allowed(decoded, allow_bytes=True)


@ROUND_TRIP
@given(json_values)
def test_json_round_trip(value: object) -> None:
    text = encode_json(value)
    assert decode_json(text) == value
    assert decode_json(text.encode("utf-8")) == value


def test_limits_exactly_are_accepted() -> None:
    assert depth_of(decode_cbor(nested_arrays(MAX_DEPTH))) == MAX_DEPTH
    assert decode_cbor(encode_cbor(list(range(MAX_ITEMS)))) == list(range(MAX_ITEMS))
    wide = {str(k): k for k in range(MAX_ITEMS)}
    assert decode_cbor(encode_cbor(wide)) == wide
    assert decode_cbor(encode_cbor([INT_MIN, INT_MAX])) == [INT_MIN, INT_MAX]
    assert decode_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert decode_json(encode_json(list(range(MAX_ITEMS)))) == list(range(MAX_ITEMS))
    assert decode_json(encode_json(wide)) == wide
    assert decode_json(f"[{INT_MIN},{INT_MAX}]") == [INT_MIN, INT_MAX]
    data = encode_cbor({"a": "x" * 10})
    assert decode_cbor(data, max_bytes=len(data)) == {"a": "x" * 10}


def test_scalars_and_empty_containers() -> None:
    scalars: list[object] = [None, True, False, 0, -1, 23, 24, 255, 256, 65536, 1 << 32]
    for value in [*scalars, "", b"", [], {}]:
        assert decode_cbor(encode_cbor(value)) == value
    assert decode_json('{"a":[true,false,null,"\\u00e9\\ud83d\\ude00"]}') == {
        "a": [True, False, None, "é😀"]
    }


# -------------------------------------------------------------- fuzzing


@FUZZ
@given(st.binary(max_size=200))
def test_cbor_random_bytes_only_protocol_errors(data: bytes) -> None:
    try:
        item = decode_cbor(data)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.BAD_FRAME, ErrorCode.TOO_LARGE)
    else:
        assert_allowed(item, allow_bytes=True)
        assert decode_cbor(encode_cbor(item)) == item


mutations = st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(cbor_values, mutations, st.integers(min_value=0, max_value=3))
def test_cbor_mutated_encodings_only_protocol_errors(
    value: object, changes: list[tuple[int, int]], chop: int
) -> None:
    data = bytearray(encode_cbor(value))
    for index, byte in changes:
        data[index % len(data)] = byte
    if chop and len(data) > chop:
        del data[-chop:]
    try:
        item = decode_cbor(bytes(data))
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_FRAME
    else:
        assert_allowed(item, allow_bytes=True)


@FUZZ
@given(st.text(max_size=100) | st.binary(max_size=100))
def test_json_random_input_only_protocol_errors(data: str | bytes) -> None:
    try:
        item = decode_json(data)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_FRAME
    else:
        assert_allowed(item, allow_bytes=False)


@FUZZ
@given(json_values, mutations)
def test_json_mutated_encodings_only_protocol_errors(
    value: object, changes: list[tuple[int, int]]
) -> None:
    data = bytearray(encode_json(value).encode("utf-8"))
    for index, byte in changes:
        data[index % len(data)] = byte
    for form in (bytes(data), bytes(data).decode("utf-8", "replace")):
        try:
            item = decode_json(form)
        except ProtocolError as exc:
            assert exc.code is ErrorCode.BAD_FRAME
        else:
            assert_allowed(item, allow_bytes=False)


# ------------------------------------------------------- CBOR: rejections


def test_cbor_trailing_bytes() -> None:
    assert cbor_code(encode_cbor({"a": 1}) + b"\x00") is ErrorCode.BAD_FRAME
    assert cbor_code(b"\x01\x01") is ErrorCode.BAD_FRAME


def test_cbor_empty_and_truncated() -> None:
    assert cbor_code(b"") is ErrorCode.BAD_FRAME
    assert cbor_code(b"\x82\x01") is ErrorCode.BAD_FRAME  # array of 2, one item
    assert cbor_code(b"\xa1\x61a") is ErrorCode.BAD_FRAME  # map missing a value
    assert cbor_code(b"\x19\x01") is ErrorCode.BAD_FRAME  # 2-byte argument, 1 byte
    assert cbor_code(b"\x63ab") is ErrorCode.BAD_FRAME


def test_cbor_duplicate_keys() -> None:
    assert cbor_code(b"\xa2\x61a\x01\x61a\x02") is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "data",
    [
        b"\x9f\x01\x02\xff",  # indefinite array
        b"\xbf\x61a\x01\xff",  # indefinite map
        b"\x7f\x61a\x61b\xff",  # indefinite text string
        b"\x5f\x41a\xff",  # indefinite byte string
        b"\xff",  # lone break
    ],
)
def test_cbor_indefinite_lengths(data: bytes) -> None:
    assert cbor_code(data) is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "data",
    [
        b"\xd8\x1c\x81\x01",  # tag 28: shareable
        b"\x82\xd8\x1c\x81\x01\xd8\x1d\x00",  # tags 28/29: shared reference
        b"\xd8\x1c\x81\xd8\x1d\x00",  # cyclic: an array containing itself
        b"\xc2\x49\x01\x00\x00\x00\x00\x00\x00\x00\x00",  # tag 2: bignum 2**64
        b"\xc3\x41\x01",  # tag 3: negative bignum
        b"\xc0\x74" + b"2024-01-01T00:00:00Z",  # tag 0: datetime
        b"\xc1\x1a\x65\x92\x00\x00",  # tag 1: epoch datetime
        b"\xd9\xd9\xf7\x01",  # tag 55799: self-described CBOR
        b"\xa1\x61a\xd8\x20\x61x",  # tag 32 (URI) nested in a map
    ],
)
def test_cbor_tags(data: bytes) -> None:
    assert cbor_code(data) is ErrorCode.BAD_FRAME


def test_cbor_nesting_too_deep() -> None:
    assert cbor_code(nested_arrays(MAX_DEPTH + 1)) is ErrorCode.BAD_FRAME
    assert cbor_code(b"\xa1\x61a" * MAX_DEPTH + b"\xa0") is ErrorCode.BAD_FRAME
    assert cbor_code(nested_arrays(100_000)) is ErrorCode.BAD_FRAME


def test_cbor_too_many_items() -> None:
    assert cbor_code(encode_cbor(list(range(MAX_ITEMS + 1)))) is ErrorCode.BAD_FRAME
    wide = {str(k): k for k in range(MAX_ITEMS + 1)}
    assert cbor_code(encode_cbor(wide)) is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "data",
    [
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xffab",  # byte string of 2**64 - 1
        b"\x7a\xff\xff\xff\xffab",  # text string of 4 GiB
        b"\x9a\xff\xff\xff\xff\x01",  # array of 4 Gi items
        b"\xbb\x00\x00\x00\x01\x00\x00\x00\x00\x61a\x01",  # map of 4 Gi pairs
        b"\x81\x59\xff\xffab",  # byte string of 64 KiB inside an array
    ],
)
def test_cbor_huge_declared_length(data: bytes) -> None:
    assert cbor_code(data) is ErrorCode.BAD_FRAME


def test_cbor_too_large() -> None:
    assert cbor_code(b"\x00" * (MAX_MESSAGE_BYTES + 1)) is ErrorCode.TOO_LARGE
    data = encode_cbor({"a": "x" * 10})
    assert cbor_code(data, max_bytes=len(data) - 1) is ErrorCode.TOO_LARGE
    # Size comes first, even for garbage.
    assert cbor_code(b"\xff" * 11, max_bytes=10) is ErrorCode.TOO_LARGE


@pytest.mark.parametrize(
    "data",
    [
        b"\xf9\x3c\x00",  # half float 1.0
        b"\xfa" + struct.pack(">f", 1.5),
        b"\xfb" + struct.pack(">d", 1.5),
        b"\xfb" + struct.pack(">d", float("nan")),
        b"\xa1\x61a\xfb" + struct.pack(">d", 0.0),  # float inside a map
    ],
)
def test_cbor_floats(data: bytes) -> None:
    assert cbor_code(data) is ErrorCode.BAD_FRAME


@pytest.mark.parametrize("data", [b"\xf7", b"\xf0", b"\xe0", b"\xf8\x20", b"\xf8\xff"])
def test_cbor_undefined_and_simple_values(data: bytes) -> None:
    assert cbor_code(data) is ErrorCode.BAD_FRAME


@pytest.mark.parametrize("data", [b"\x1c", b"\x3d", b"\x5e", b"\x9c", b"\xbe"])
def test_cbor_reserved_additional_info(data: bytes) -> None:
    assert cbor_code(data) is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "data",
    [
        b"\xa1\x01\x02",  # int key
        b"\xa1\x41a\x01",  # bytes key
        b"\xa1\x81\x01\x01",  # array key
        b"\xa1\xa0\x01",  # map key
        b"\xa1\xf6\x01",  # null key
        b"\xa2\x61a\x01\xf5\x02",  # second key is true
    ],
)
def test_cbor_non_text_map_keys(data: bytes) -> None:
    assert cbor_code(data) is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "data",
    [
        b"\x62\xc3\x28",  # bad continuation byte
        b"\x63\xed\xa0\x80",  # UTF-8 encoded surrogate
        b"\x61\xff",
        b"\xa1\x62\xc3\x28\x01",  # in a map key
    ],
)
def test_cbor_invalid_utf8(data: bytes) -> None:
    assert cbor_code(data) is ErrorCode.BAD_FRAME


def test_cbor_integers_outside_64_bits() -> None:
    assert cbor_code(b"\x1b" + (1 << 63).to_bytes(8, "big")) is ErrorCode.BAD_FRAME
    assert cbor_code(b"\x1b" + b"\xff" * 8) is ErrorCode.BAD_FRAME
    assert cbor_code(b"\x3b" + (1 << 63).to_bytes(8, "big")) is ErrorCode.BAD_FRAME
    assert decode_cbor(b"\x3b" + ((1 << 63) - 1).to_bytes(8, "big")) == INT_MIN


def test_cbor_bytes_like_and_wrong_type() -> None:
    data = encode_cbor({"a": [1, b"x"]})
    assert decode_cbor(bytearray(data)) == {"a": [1, b"x"]}  # type: ignore[arg-type]
    assert decode_cbor(memoryview(data)) == {"a": [1, b"x"]}  # type: ignore[arg-type]
    assert cbor_code("\x00") is ErrorCode.BAD_FRAME  # type: ignore[arg-type]


def test_encode_cbor_errors() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    for bad in (object(), cyclic, {"a": object()}):
        with pytest.raises(ProtocolError) as info:
            encode_cbor(bad)
        assert info.value.code is ErrorCode.BAD_FRAME


def test_encode_cbor_definite_lengths() -> None:
    assert encode_cbor({"a": [1, 2]}) == b"\xa1\x61a\x82\x01\x02"
    assert encode_cbor(["x", "x"]) == b"\x82\x61x\x61x"  # no value sharing


# ------------------------------------------------------- JSON: rejections


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1} x',
        "{}{}",
        "[1]]",
        "",
        "   ",
        "[1,]",
        "{'a':1}",
        '{"a":1,}',
        '"\x01"',  # raw control character
        "\ufeff{}",  # byte order mark
        "undefined",
    ],
)
def test_json_invalid_or_trailing(text: str) -> None:
    assert json_code(text) is ErrorCode.BAD_FRAME
    assert json_code(text.encode("utf-8")) is ErrorCode.BAD_FRAME


def test_json_duplicate_keys() -> None:
    assert json_code('{"a":1,"a":2}') is ErrorCode.BAD_FRAME
    assert json_code('{"x":{"a":1,"b":2,"a":1}}') is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "text", ["1.0", "[1e3]", "1E+2", "-0.0", '{"a":0.5}', "NaN", "Infinity", "[-Infinity]"]
)
def test_json_floats_and_constants(text: str) -> None:
    assert json_code(text) is ErrorCode.BAD_FRAME


def test_json_integers_outside_64_bits() -> None:
    assert json_code(str(INT_MAX + 1)) is ErrorCode.BAD_FRAME
    assert json_code(str(INT_MIN - 1)) is ErrorCode.BAD_FRAME
    assert json_code("9" * 5000) is ErrorCode.BAD_FRAME
    assert json_code("[" + "9" * 100_000 + "]") is ErrorCode.BAD_FRAME


def test_json_nesting_too_deep() -> None:
    assert json_code("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)) is ErrorCode.BAD_FRAME
    assert json_code('{"a":' * (MAX_DEPTH + 1) + "{}" + "}" * (MAX_DEPTH + 1)) is (
        ErrorCode.BAD_FRAME
    )
    # Deep enough to exhaust the parser's recursion, still under the size cap.
    deep = "[" * 500_000 + "]" * 500_000
    assert json_code(deep, max_items=10**6) is ErrorCode.BAD_FRAME
    assert json_code('{"a":' * 150_000 + "1" + "}" * 150_000, max_items=10**6) is (
        ErrorCode.BAD_FRAME
    )
    # With the default item bound such a message is refused before parsing.
    assert json_code(deep) is ErrorCode.TOO_LARGE


def test_json_too_many_items() -> None:
    assert json_code(encode_json(list(range(MAX_ITEMS + 1)))) is ErrorCode.BAD_FRAME
    wide = {str(k): k for k in range(MAX_ITEMS + 1)}
    assert json_code(encode_json(wide)) is ErrorCode.BAD_FRAME
    # Many commas inside strings alone don't make an array too long.
    assert decode_json(encode_json(["," * 5000])) == ["," * 5000]


def test_json_too_large() -> None:
    assert json_code(" " * (MAX_MESSAGE_BYTES + 1)) is ErrorCode.TOO_LARGE
    assert json_code(b" " * (MAX_MESSAGE_BYTES + 1)) is ErrorCode.TOO_LARGE
    # The cap is on UTF-8 bytes, not characters.
    assert decode_json('"éé"', max_bytes=6) == "éé"
    assert json_code('"ééé"', max_bytes=7) is ErrorCode.TOO_LARGE
    assert json_code("[[[[[[", max_bytes=5) is ErrorCode.TOO_LARGE


def test_json_invalid_unicode() -> None:
    assert json_code(b'"\xff"') is ErrorCode.BAD_FRAME
    assert json_code(b'"\xed\xa0\x80"') is ErrorCode.BAD_FRAME  # encoded surrogate
    assert json_code('"\ud800"') is ErrorCode.BAD_FRAME  # raw lone surrogate in str
    assert json_code('"\\ud800"') is ErrorCode.BAD_FRAME  # escaped lone surrogate
    assert json_code('{"\\uDFFF":1}') is ErrorCode.BAD_FRAME  # ... in a key
    assert json_code('["ok", ["\\ud83d"]]') is ErrorCode.BAD_FRAME
    assert decode_json('"\\\\ud800"') == "\\ud800"  # an escaped backslash is fine


def test_json_wrong_type() -> None:
    assert json_code(123) is ErrorCode.BAD_FRAME  # type: ignore[arg-type]


def test_encode_json_compact_and_unescaped() -> None:
    assert encode_json({"a": [1, "é", None, True]}) == '{"a":[1,"é",null,true]}'


def test_encode_json_errors() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    for bad in (b"x", float("nan"), cyclic, object(), {"a": {1, 2}}):
        with pytest.raises(ProtocolError) as info:
            encode_json(bad)
        assert info.value.code is ErrorCode.BAD_FRAME


# ------------------------------------------------- total items (decoder bombs)


def cbor_array_head(count: int) -> bytes:
    return bytes([0x99]) + count.to_bytes(2, "big") if count > 23 else bytes([0x80 | count])


def empty_arrays_bomb(frames: int = 248, rows: int = 4) -> bytes:
    """A batch of heartbeats, each padded with ``rows`` x 1,024 empty arrays.

    About 1 MiB that cbor2 would turn into about a million lists; every
    container is within MAX_ITEMS and MAX_DEPTH, and each frame is far
    under the 64 KiB frame cap.
    """
    row = cbor_array_head(1024) + b"\x80" * 1024
    frame = b"\xa2\x61t\x69heartbeat\x61p" + cbor_array_head(rows) + row * rows
    return cbor_array_head(frames) + frame * frames


def test_cbor_counted_returns_every_data_item() -> None:
    from chinwag.protocol.codec import decode_cbor_counted

    assert decode_cbor_counted(encode_cbor(1)) == (1, 1)
    # map + 2 keys + "x" + [1, 2] (array + 2) = 7
    data = encode_cbor({"t": "x", "l": [1, 2]})
    assert decode_cbor_counted(data) == ({"t": "x", "l": [1, 2]}, 7)
    assert decode_cbor(data, max_items=7) == {"t": "x", "l": [1, 2]}
    assert cbor_code(data, max_items=6) is ErrorCode.TOO_LARGE


def test_cbor_item_bomb_is_refused_by_the_prescan() -> None:
    from chinwag.protocol.frames import WireFormat, decode_message

    bomb = empty_arrays_bomb()
    assert len(bomb) <= MAX_MESSAGE_BYTES
    with pytest.raises(ProtocolError) as info:
        decode_message(bomb, WireFormat.CBOR, max_items=MAX_MESSAGE_ITEMS)
    assert info.value.code is ErrorCode.TOO_LARGE
    # Refused during the scan, long before its end: a broken tail is never seen.
    assert cbor_code(bomb[:-1] + b"\xff", max_items=8192) is ErrorCode.TOO_LARGE


def test_message_item_bound_admits_a_full_batch_of_sends() -> None:
    from chinwag.protocol.frames import WireFormat, decode_message, encode_message

    frames = [
        {"t": "send", "rid": f"r{i}", "to": "bob@kitchen", "text": "hi", "cid": f"c{i}"}
        for i in range(256)
    ]
    for fmt in WireFormat:
        message = encode_message(frames, fmt)
        assert len(decode_message(message, fmt, max_items=MAX_MESSAGE_ITEMS)) == 256


def test_json_item_bomb_is_refused_before_decoding() -> None:
    from chinwag.protocol.frames import WireFormat, decode_message

    frame = '{"t":"heartbeat","p":[' + ",".join(["[]"] * 1000) + "]}"
    bomb = "[" + ",".join([frame] * 256) + "]"
    assert len(bomb) <= MAX_MESSAGE_BYTES
    with pytest.raises(ProtocolError) as info:
        decode_message(bomb, WireFormat.JSON, max_items=MAX_MESSAGE_ITEMS)
    assert info.value.code is ErrorCode.TOO_LARGE
    # Counted before decoding: the unterminated tail is never reached.
    assert json_code(bomb + '"', max_items=8192) is ErrorCode.TOO_LARGE


def test_json_item_count_skips_strings() -> None:
    from chinwag.protocol.codec import decode_json_counted

    text = encode_json({"t": "send", "text": '[{,:]}" \\ ' * 1000})
    value, items = decode_json_counted(text, max_items=5)
    assert value["text"].startswith("[{,:]}")
    assert items == 5  # 1 + two ':' + one ',' + one '{': an upper bound of 5
    assert json_code("[1,2,3]", max_items=3) is ErrorCode.TOO_LARGE


def true_items(item: object) -> int:
    if isinstance(item, dict):
        return 1 + sum(1 + true_items(v) for v in item.values())
    if isinstance(item, list):
        return 1 + sum(true_items(v) for v in item)
    return 1


@ROUND_TRIP
@given(cbor_values)
def test_cbor_item_count_is_exact(value: object) -> None:
    from chinwag.protocol.codec import decode_cbor_counted

    assert decode_cbor_counted(encode_cbor(value))[1] == true_items(value)


@ROUND_TRIP
@given(json_values)
def test_json_item_count_bounds_the_items(value: object) -> None:
    from chinwag.protocol.codec import decode_json_counted

    items = decode_json_counted(encode_json(value))[1]
    assert true_items(value) <= items <= 2 * true_items(value)
