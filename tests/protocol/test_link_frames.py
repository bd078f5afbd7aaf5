"""Link frames after the handshake: bytes in, frozen frames or ProtocolError out."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from chinwag.protocol.addresses import GroupAddress
from chinwag.protocol.codec import encode_cbor
from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.link import (
    MAX_COUNTER,
    Ack,
    DigestEntry,
    Gossip,
    GossipDigest,
    GossipSummary,
    GroupSync,
    Introductions,
    IntroRequest,
    LinkDirection,
    LinkFrame,
    Ping,
    Pong,
    PresenceItem,
    PresenceUpdate,
    Push,
    PushEntry,
    Rejected,
    Resume,
    Sub,
    Unsub,
    decode_link_frame,
    encode_link_frame,
    gossip_summary,
)

HOST = "a" * 52
UNIT = {"env": b"e", "sig": b"s" * 64, "by": b"k" * 32}
RECORD = {"rec": b"r", "sig": b"s" * 64}
RELAY = {**UNIT, "to": b"t" * 32}
REFUSED = {**RELAY, "code": b"no_such_user"}
STATEMENT = {"st": b"x", "sig": b"s" * 64}


def raw(frame: dict[str, Any]) -> bytes:
    return encode_cbor(frame)


def bad(data: bytes, code: ErrorCode = ErrorCode.BAD_FRAME) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_link_frame(data)
    assert info.value.code is code
    return info.value


# ---------------------------------------------------------------- examples
EXAMPLES: list[LinkFrame] = [
    Resume(0),
    Resume(MAX_COUNTER),
    Push((PushEntry(1, "m", UNIT),)),
    Push((PushEntry(5, "gr", RECORD), PushEntry(6, "gs", UNIT)), skip=4),
    Ack(3, (Rejected(2, "forbidden"),)),
    Ack(0),
    Ping(),
    Pong(),
    Gossip((RECORD,)),
    Gossip(()),
    GossipSummary(b"h" * 32),
    GossipDigest((DigestEntry(b"k" * 32, 5), DigestEntry(b"j" * 32, 0))),
    GossipDigest((), reply=True),
    Sub(("alice", "bob"), reset=True),
    Unsub(("alice",)),
    PresenceUpdate((PresenceItem("alice", "online", 5), PresenceItem("bob", "offline", None))),
    PresenceUpdate((PresenceItem("carol", "online", 6, "Carol C."),)),
    GroupSync(GroupAddress("club", HOST), 7),
    Push((PushEntry(1, "rl", RELAY), PushEntry(2, "rd", UNIT), PushEntry(3, "rf", REFUSED))),
    IntroRequest(),
    Introductions((STATEMENT, STATEMENT)),
]


@pytest.mark.parametrize("frame", EXAMPLES, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips(frame: LinkFrame) -> None:
    assert decode_link_frame(encode_link_frame(frame)) == frame


def test_wire_shapes_are_the_documented_ones() -> None:
    assert decode_link_frame(raw({"t": "resume", "applied": 4})) == Resume(4)
    assert decode_link_frame(
        raw({"t": "push", "entries": [{"o": 3, "k": "m", "u": UNIT}], "skip": 2})
    ) == Push((PushEntry(3, "m", UNIT),), 2)
    assert decode_link_frame(
        raw({"t": "ack", "upto": 9, "rejected": [{"oseq": 8, "code": "no_such_user"}]})
    ) == Ack(9, (Rejected(8, "no_such_user"),))
    assert decode_link_frame(raw({"t": "sub", "users": ["al"]})) == Sub(("al",), False)
    assert decode_link_frame(
        raw({"t": "gsync", "group": {"host": HOST, "name": "club"}, "after": 0})
    ) == GroupSync(GroupAddress("club", HOST), 0)
    assert decode_link_frame(
        raw({"t": "push", "entries": [{"o": 1, "k": "rl", "x": RELAY}]})
    ) == Push((PushEntry(1, "rl", RELAY),))
    assert decode_link_frame(
        raw({"t": "push", "entries": [{"o": 1, "k": "rf", "x": REFUSED}]})
    ) == Push((PushEntry(1, "rf", REFUSED),))
    assert decode_link_frame(raw({"t": "introreq"})) == IntroRequest()
    assert decode_link_frame(raw({"t": "intro", "statements": [STATEMENT]})) == Introductions(
        (STATEMENT,)
    )


# ---------------------------------------------------------------- refusals
def test_the_reported_crash_an_ack_rejected_without_code() -> None:
    error = bad(raw({"t": "ack", "upto": 2, "rejected": [{"oseq": 1}]}))
    assert "oseq, code" in error.message


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "resume"},
        {"t": "resume", "applied": -1},
        {"t": "resume", "applied": True},
        {"t": "resume", "applied": "1"},
        {"t": "resume", "applied": 1, "extra": 1},
        {"t": "push", "entries": []},
        {"t": "push", "entries": [{"o": 1, "k": "m", "u": UNIT}] * 257},
        {"t": "push", "entries": [{"o": 0, "k": "m", "u": UNIT}]},
        {"t": "push", "entries": [{"o": 1, "k": "zz", "u": UNIT}]},
        {"t": "push", "entries": [{"o": 1, "k": "m", "r": RECORD}]},
        {"t": "push", "entries": [{"o": 1, "k": "gr", "u": UNIT}]},
        {"t": "push", "entries": [{"o": 1, "k": "m", "u": {**UNIT, "x": b""}}]},
        {"t": "push", "entries": [{"o": 1, "k": "m", "u": {**UNIT, "env": "text"}}]},
        {"t": "push", "entries": [{"o": 1, "k": "m", "u": UNIT, "extra": 1}]},
        {"t": "push", "entries": [{"o": 2, "k": "m", "u": UNIT}, {"o": 2, "k": "m", "u": UNIT}]},
        {"t": "push", "entries": [{"o": 3, "k": "m", "u": UNIT}], "skip": 1},
        {"t": "push", "entries": [{"o": 3, "k": "m", "u": UNIT}], "skip": None},
        {"t": "push", "entries": "nope"},
        {"t": "ack", "upto": 1},
        {"t": "ack", "upto": 1, "rejected": [{"oseq": 2, "code": "x"}]},
        {"t": "ack", "upto": 1, "rejected": [{"oseq": 1, "code": "Not Snake"}]},
        {"t": "ack", "upto": 1, "rejected": [{"oseq": 1, "code": 5}]},
        {"t": "ack", "upto": 1, "rejected": [7]},
        {"t": "ack", "upto": 2**63, "rejected": []},
        {"t": "ping", "x": 1},
        {"t": "pong", "rid": 1},
        {"t": "gossip"},
        {"t": "gossip", "records": [RECORD] * 65},
        {"t": "gossip", "records": [{"rec": b"x"}]},
        {"t": "gsum"},
        {"t": "gsum", "sum": b"short"},
        {"t": "gsum", "sum": "h" * 32},
        {"t": "gdigest", "have": []},
        {"t": "gdigest", "have": [], "reply": 1},
        {"t": "gdigest", "have": [{"n": b"k" * 31, "ts": 1}], "reply": False},
        {"t": "gdigest", "have": [{"n": b"k" * 32, "ts": -1}], "reply": False},
        {"t": "gdigest", "have": [{"n": b"k" * 32}], "reply": False},
        {"t": "gdigest", "have": [{"n": b"k" * 32, "ts": 1}] * 2, "reply": False},
        {"t": "gdigest", "have": [[b"k" * 32, 1]], "reply": False},
        {"t": "sub", "users": ["Not A User"]},
        {"t": "sub", "users": ["al"], "reset": 1},
        {"t": "sub", "users": ["al"] * 1025},
        {"t": "unsub", "users": [3]},
        {"t": "presence", "items": [{"u": "al", "status": "away", "last_active_at": None}]},
        {"t": "presence", "items": [{"u": "al", "status": "online"}]},
        {"t": "presence", "items": [{"u": "al", "status": "online", "last_active_at": -5}]},
        {"t": "gsync", "group": {"host": "nope", "name": "club"}, "after": 0},
        {"t": "gsync", "group": {"host": HOST, "name": "club"}},
        {"t": "push", "entries": [{"o": 1, "k": "rl", "u": UNIT}]},
        {"t": "push", "entries": [{"o": 1, "k": "rl", "x": UNIT}]},
        {"t": "push", "entries": [{"o": 1, "k": "rd", "x": RELAY}]},
        {"t": "push", "entries": [{"o": 1, "k": "rd", "u": RELAY}]},
        {"t": "push", "entries": [{"o": 1, "k": "rf", "x": RELAY}]},
        {"t": "push", "entries": [{"o": 1, "k": "rf", "u": REFUSED}]},
        {"t": "push", "entries": [{"o": 1, "k": "rf", "x": {**REFUSED, "code": "forbidden"}}]},
        {"t": "introreq", "x": 1},
        {"t": "intro"},
        {"t": "intro", "statements": []},
        {"t": "intro", "statements": [STATEMENT] * 65},
        {"t": "intro", "statements": [{"st": b"x"}]},
        {"t": "intro", "statements": [{**STATEMENT, "st": "text"}]},
        {"t": "intro", "statements": [{**STATEMENT, "st": b"x" * 513}]},
        {"t": "hello"},
        {"t": 7},
        {"applied": 1},
    ],
)
def test_malformed_frames_are_bad_frame(frame: dict[str, Any]) -> None:
    bad(raw(frame))


def test_not_a_map_or_not_cbor() -> None:
    bad(raw([1, 2]))
    bad(b"\xff\x00garbage")
    bad(b"")


def test_sizes() -> None:
    small = raw({"t": "sub", "users": ["a" * 32] * 1024, "reset": False})
    assert len(small) <= 64 * 1024
    decode_link_frame(small)
    big_payload = {"env": b"x" * (70 * 1024), "sig": b"", "by": b""}
    push = raw({"t": "push", "entries": [{"o": 1, "k": "m", "u": big_payload}]})
    assert isinstance(decode_link_frame(push), Push)  # a push may be up to 1 MiB
    bad(raw({"t": "ping", "pad": b"x" * (65 * 1024)}), ErrorCode.TOO_LARGE)
    bad(b"\x00" * (1024 * 1024 + 1), ErrorCode.TOO_LARGE)
    # A full intro frame (64 statements at their field bounds) is a small frame.
    full = Introductions(({"st": b"x" * 512, "sig": b"s" * 64},) * 64)
    assert len(encode_link_frame(full)) <= 64 * 1024


def test_introductions_only_on_an_open_link() -> None:
    direction = LinkDirection()
    with pytest.raises(ProtocolError):
        direction.receive(encode_link_frame(IntroRequest()))
    direction = LinkDirection()
    direction.receive(encode_link_frame(Resume(0)))
    assert direction.receive(encode_link_frame(IntroRequest())) == IntroRequest()
    assert direction.receive(encode_link_frame(Introductions((STATEMENT,)))) == Introductions(
        (STATEMENT,)
    )


def test_encoding_refuses_what_decoding_would() -> None:
    with pytest.raises(ProtocolError):
        encode_link_frame(Resume(-1))
    with pytest.raises(ProtocolError):
        encode_link_frame(Ack(1, (Rejected(5, "forbidden"),)))
    with pytest.raises(ProtocolError):
        encode_link_frame(Push(()))
    with pytest.raises(ProtocolError):
        encode_link_frame(Sub(("NOPE",)))


# ---------------------------------------------------------------- state
def test_resume_comes_first_and_only_once() -> None:
    direction = LinkDirection()
    with pytest.raises(ProtocolError, match="not allowed in state awaiting_resume"):
        direction.receive(encode_link_frame(Ping()))
    direction = LinkDirection()
    assert direction.receive(encode_link_frame(Resume(3))) == Resume(3)
    assert direction.receive(encode_link_frame(Ping())) == Ping()
    with pytest.raises(ProtocolError, match="resume not allowed in state open"):
        direction.receive(encode_link_frame(Resume(3)))


def test_push_oseqs_and_acks_only_go_up() -> None:
    direction = LinkDirection()
    direction.receive(encode_link_frame(Resume(0)))
    direction.receive(encode_link_frame(Push((PushEntry(1, "m", UNIT), PushEntry(2, "m", UNIT)))))
    with pytest.raises(ProtocolError, match="oseq went back"):
        direction.receive(encode_link_frame(Push((PushEntry(2, "m", UNIT),))))
    direction.receive(encode_link_frame(Ack(5)))
    direction.receive(encode_link_frame(Ack(5)))
    with pytest.raises(ProtocolError, match="upto went back"):
        direction.receive(encode_link_frame(Ack(4)))


def test_sending_follows_the_same_table() -> None:
    direction = LinkDirection()
    with pytest.raises(ProtocolError):
        direction.send(Ping())
    assert decode_link_frame(direction.send(Resume(0))) == Resume(0)
    with pytest.raises(ProtocolError):
        direction.send(Resume(0))


# ---------------------------------------------------------------- hypothesis
counters = st.integers(0, MAX_COUNTER)
users = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,31}", fullmatch=True)
byte_maps = st.fixed_dictionaries({"env": st.binary(), "sig": st.binary(), "by": st.binary()})
record_maps = st.fixed_dictionaries({"rec": st.binary(max_size=64), "sig": st.binary()})
relay_maps = st.fixed_dictionaries(
    {"env": st.binary(), "sig": st.binary(), "by": st.binary(), "to": st.binary(max_size=32)}
)
refused_maps = st.fixed_dictionaries(
    {
        "env": st.binary(),
        "sig": st.binary(),
        "by": st.binary(),
        "to": st.binary(max_size=32),
        "code": st.binary(max_size=32),
    }
)
statement_maps = st.fixed_dictionaries(
    {"st": st.binary(max_size=512), "sig": st.binary(max_size=64)}
)


@st.composite
def pushes(draw: st.DrawFn) -> Push:
    first = draw(st.integers(1, 1000))
    kinds = draw(
        st.lists(
            st.sampled_from(["m", "gs", "gl", "gr", "gi", "ga", "rl", "rd", "rf"]),
            min_size=1,
            max_size=5,
        )
    )
    shapes = {"gr": record_maps, "rl": relay_maps, "rf": refused_maps}
    entries = tuple(
        PushEntry(first + i, k, draw(shapes.get(k, byte_maps))) for i, k in enumerate(kinds)
    )
    skip = draw(st.none() | st.just(first - 1))
    return Push(entries, skip)


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    upto = draw(st.integers(1, 10_000))
    rejected = draw(
        st.lists(
            st.builds(
                Rejected,
                st.integers(1, upto),
                st.sampled_from(["forbidden", "no_such_user", "internal"]),
            ),
            max_size=4,
        )
    )
    return Ack(upto, tuple(rejected))


frames = st.one_of(
    st.builds(Resume, counters),
    pushes(),
    acks(),
    st.just(Ping()),
    st.just(Pong()),
    st.builds(Gossip, st.lists(record_maps, max_size=3).map(tuple)),
    st.builds(GossipSummary, st.binary(min_size=32, max_size=32)),
    st.builds(
        GossipDigest,
        st.lists(
            st.builds(DigestEntry, st.binary(min_size=32, max_size=32), counters),
            max_size=4,
            unique_by=lambda e: e.key,
        ).map(tuple),
        st.booleans(),
    ),
    st.builds(Sub, st.lists(users, max_size=5).map(tuple), st.booleans()),
    st.builds(Unsub, st.lists(users, max_size=5).map(tuple)),
    st.builds(
        PresenceUpdate,
        st.lists(
            st.builds(
                PresenceItem, users, st.sampled_from(["online", "offline"]), st.none() | counters
            ),
            max_size=4,
        ).map(tuple),
    ),
    st.builds(GroupSync, st.builds(GroupAddress, users, st.just(HOST)), counters),
    st.just(IntroRequest()),
    st.builds(Introductions, st.lists(statement_maps, min_size=1, max_size=3).map(tuple)),
)


@settings(max_examples=300, deadline=None)
@given(frames)
def test_random_frames_round_trip(frame: LinkFrame) -> None:
    assert decode_link_frame(encode_link_frame(frame)) == frame


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    try:
        decode_link_frame(data)
    except ProtocolError:
        pass


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    _containers,
    max_leaves=8,
)


def _mutate(item: Any, path: list[int], choice: int, value: Any) -> Any:
    """Drop, add or replace one field somewhere in a decoded frame."""
    if isinstance(item, dict) and item:
        keys = sorted(item)
        key = keys[path[0] % len(keys)] if path else keys[0]
        out = dict(item)
        if not path or choice == 0:
            if choice == 1:
                del out[key]
            elif choice == 2:
                out["x" + key] = value
            else:
                out[key] = value
            return out
        out[key] = _mutate(item[key], path[1:], choice, value)
        return out
    if isinstance(item, list) and item:
        index = path[0] % len(item) if path else 0
        out_list = list(item)
        if not path:
            out_list[index] = value
        else:
            out_list[index] = _mutate(item[index], path[1:], choice, value)
        return out_list
    return value


@settings(max_examples=500, deadline=None)
@given(
    frames,
    st.lists(st.integers(0, 50), max_size=4),
    st.integers(0, 3),
    json_values,
)
def test_mutated_frames_raise_only_protocol_error(
    frame: LinkFrame, path: list[int], choice: int, value: Any
) -> None:
    import cbor2

    wire = cbor2.loads(encode_link_frame(frame))
    mutated = _mutate(wire, path, choice, value)
    try:
        data = encode_cbor(mutated)
    except Exception:  # noqa: BLE001 - hypothesis built something CBOR cannot say
        return
    direction = LinkDirection()
    try:
        direction.receive(encode_link_frame(Resume(0)))
        direction.receive(data)
    except ProtocolError:
        pass


def test_a_digest_of_many_records_fits_one_frame() -> None:
    have = tuple(DigestEntry(i.to_bytes(32, "big"), 2**62 + i) for i in range(1024))
    frame = GossipDigest(have)
    assert decode_link_frame(encode_link_frame(frame)) == frame
    extra = [{"n": b"z" * 32, "ts": 1}]
    too_many = {"t": "gdigest", "have": [{"n": e.key, "ts": 1} for e in have] + extra}
    bad(raw({**too_many, "reply": False}))


def test_gossip_summary_is_order_free_and_sees_every_change() -> None:
    a, b = DigestEntry(b"a" * 32, 1), DigestEntry(b"b" * 32, 2)
    assert gossip_summary([a, b]) == gossip_summary([b, a])
    assert len(gossip_summary([])) == 32
    assert gossip_summary([a, b]) != gossip_summary([a, DigestEntry(b"b" * 32, 3)])
    assert gossip_summary([a, b]) != gossip_summary([a])


def test_digest_frames_only_after_resume() -> None:
    direction = LinkDirection()
    with pytest.raises(ProtocolError):
        direction.receive(encode_link_frame(GossipSummary(b"h" * 32)))
    direction = LinkDirection()
    direction.receive(encode_link_frame(Resume(0)))
    assert direction.receive(encode_link_frame(GossipSummary(b"h" * 32))) == GossipSummary(
        b"h" * 32
    )
    assert direction.receive(encode_link_frame(GossipDigest(()))) == GossipDigest(())
