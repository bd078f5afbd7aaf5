"""The history requests (convs, history, read, search) and the search tokenizer, bytes only."""

from __future__ import annotations

import unicodedata

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from chinwag.protocol.errors import ErrorCode, ProtocolError
from chinwag.protocol.frames import (
    Convs,
    History,
    Read,
    Search,
    WireFormat,
    decode_message,
    encode_message,
    encode_request,
    parse_request,
    read_frame,
)
from chinwag.protocol.search_terms import index_terms, matches, normalise, query_terms


def test_defaults_and_exact_wire_forms() -> None:
    assert parse_request({"t": "convs", "rid": 1}) == Convs(1, 50, None)
    assert parse_request({"t": "history", "rid": 2, "conv": "bob@x"}) == History(
        2, "bob@x", 50, None
    )
    assert parse_request({"t": "search", "rid": 3, "q": "hi"}) == Search(3, "hi", None, 20, None)
    assert parse_request({"t": "read", "rid": 4, "conv": "#g@x", "seq": 9}) == Read(4, "#g@x", 9)
    frame = {"t": "search", "q": "hi", "conv": "bob@x", "limit": 5, "before": 7, "rid": 3}
    assert encode_request(parse_request(frame)) == frame
    assert encode_message([{"t": "convs", "rid": 1}], WireFormat.CBOR) == (b"\xa2ateconvscrid\x01")
    assert read_frame("bob@x", 4, 2) == {"t": "read", "conv": "bob@x", "read_seq": 4, "unread": 2}
    around = {"t": "history", "rid": 5, "conv": "bob@x", "limit": 9, "around": 40}
    assert parse_request(around) == History(5, "bob@x", 9, None, around=40)
    assert encode_request(parse_request(around)) == around
    after = {"t": "history", "rid": 6, "conv": "bob@x", "after": 3}
    assert parse_request(after) == History(6, "bob@x", 50, None, after=3)
    assert encode_request(parse_request(after)) == after


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"t": "convs"}, ErrorCode.BAD_FRAME),  # no rid
        ({"t": "convs", "rid": 1, "limit": 0}, ErrorCode.BAD_FRAME),
        ({"t": "convs", "rid": 1, "limit": 201}, ErrorCode.BAD_FRAME),
        ({"t": "convs", "rid": 1, "limit": True}, ErrorCode.BAD_FRAME),
        ({"t": "convs", "rid": 1, "cursor": 3}, ErrorCode.BAD_FRAME),
        ({"t": "convs", "rid": 1, "before": 0}, ErrorCode.BAD_REQUEST),
        ({"t": "convs", "rid": 1, "before": "abc"}, ErrorCode.BAD_REQUEST),
        ({"t": "history", "rid": 1}, ErrorCode.BAD_FRAME),
        ({"t": "history", "rid": 1, "conv": ""}, ErrorCode.BAD_FRAME),
        ({"t": "history", "rid": 1, "conv": "x" * 201}, ErrorCode.BAD_FRAME),
        ({"t": "history", "rid": 1, "conv": "b@x", "before": -5}, ErrorCode.BAD_REQUEST),
        ({"t": "history", "rid": 1, "conv": "b@x", "around": 0}, ErrorCode.BAD_REQUEST),
        ({"t": "history", "rid": 1, "conv": "b@x", "after": "3"}, ErrorCode.BAD_REQUEST),
        (
            {"t": "history", "rid": 1, "conv": "b@x", "around": 5, "before": 9},
            ErrorCode.BAD_REQUEST,
        ),
        ({"t": "history", "rid": 1, "conv": "b@x", "after": 5, "before": 9}, ErrorCode.BAD_REQUEST),
        ({"t": "read", "rid": 1, "conv": "b@x"}, ErrorCode.BAD_FRAME),
        ({"t": "read", "rid": 1, "conv": "b@x", "seq": -1}, ErrorCode.BAD_FRAME),
        ({"t": "search", "rid": 1, "q": ""}, ErrorCode.BAD_FRAME),
        ({"t": "search", "rid": 1, "q": "x" * 201}, ErrorCode.BAD_FRAME),
        ({"t": "search", "rid": 1, "q": "x", "limit": 51}, ErrorCode.BAD_FRAME),
        ({"t": "search", "rid": 1, "q": 5}, ErrorCode.BAD_FRAME),
    ],
)
def test_bad_history_requests_are_typed(frame, code) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(frame)
    assert info.value.code == code


def test_json_carries_the_same_requests() -> None:
    wire = '{"t":"history","rid":"r1","conv":"#team@x","limit":10,"before":42}'
    (frame,) = decode_message(wire, WireFormat.JSON)
    assert parse_request(frame) == History("r1", "#team@x", 10, 42)


# ---------------------------------------------------------------- tokenizer


def test_words_match_regardless_of_case_and_accents() -> None:
    assert index_terms("Crème brûlée, STRASSE! naïve-café 42") == [
        "creme",
        "brulee",
        "strasse",
        "naive",
        "cafe",
        "42",
    ]
    assert query_terms("CRÈME") == ["creme"]
    assert query_terms("Straße") == ["strasse"]
    assert matches("Crème brûlée", query_terms("creme BRULEE"))
    assert not matches("Crème brûlée", query_terms("creme custard"))


def test_cjk_runs_are_bigrams_and_single_characters() -> None:
    assert index_terms("안녕하세요 여러분") == [
        "안", "안녕", "녕", "녕하", "하", "하세", "세", "세요", "요",
        "여", "여러", "러", "러분", "분",
    ]  # fmt: skip
    assert query_terms("여러분") == ["여러", "러분"]
    assert query_terms("안") == ["안"]
    assert matches("안녕하세요 여러분", query_terms("여러분"))
    assert matches("東京の天気はどうですか", query_terms("天気"))
    assert matches("我们明天见面吧", query_terms("明天 见面"))
    assert not matches("我们明天见面吧", query_terms("明见"))
    # Mixed scripts split where the script changes.
    assert query_terms("abc漢字") == ["abc", "漢字"]


def test_kana_keep_their_voicing_and_half_width_is_folded() -> None:
    assert normalise("が") == "が"
    assert normalise("ｶﾞｷﾞ") == "ガギ"
    assert matches("ガギグ", query_terms("ｶﾞｷﾞ"))
    assert not matches("か", query_terms("が"))
    # Hangul survives the decomposition (jamo are recomposed).
    assert normalise("한국어") == "한국어"


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_every_query_of_a_text_matches_it(text: str) -> None:
    # Whatever the text, searching for it finds it (index and query agree).
    terms = query_terms(text)
    if len(index_terms(text)) < 512:
        assert matches(text, terms)
    assert all(term and all(ch.isalnum() for ch in term) for term in index_terms(text))


@settings(max_examples=200)
@given(st.text(max_size=100))
def test_terms_are_normalised_and_stable(text: str) -> None:
    terms = index_terms(text)
    assert index_terms(" ".join(terms)) is not None
    for term in terms:
        assert term == unicodedata.normalize("NFC", term)
        assert normalise(term) == term
