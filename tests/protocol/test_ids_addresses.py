"""Snowflake ids and addresses: pure functions, plain numbers."""

from __future__ import annotations

import subprocess
import sys

import hypothesis.strategies as st
import pytest
from hypothesis import given

from chinwag.protocol.addresses import node_id_bytes, node_id_text, parse_target
from chinwag.protocol.errors import ProtocolError
from chinwag.protocol.ids import EPOCH_MS, MAX_SEQUENCE, IdGenerator, split_id

NOW = EPOCH_MS + 10_000_000


@given(st.lists(st.integers(-5_000, 5_000), min_size=1, max_size=300))
def test_ids_strictly_increase_even_when_the_clock_steps_back(steps) -> None:
    gen = IdGenerator()
    now, last = NOW, 0
    for step in steps:
        now += step
        new = gen.next_id(now)
        assert new > last
        last = new


def test_sequence_overflow_borrows_the_next_millisecond() -> None:
    gen = IdGenerator()
    ids = [gen.next_id(NOW) for _ in range(MAX_SEQUENCE + 3)]
    assert ids == sorted(set(ids))
    assert split_id(ids[-1]).ms == NOW + 1


def test_restart_continues_after_the_last_id() -> None:
    gen = IdGenerator()
    last = gen.next_id(NOW + 500)
    restarted = IdGenerator(last)
    assert restarted.next_id(NOW) > last  # clock behind the stored id
    assert split_id(IdGenerator(last).next_id(NOW + 10_000)).ms == NOW + 10_000


@given(st.binary(min_size=32, max_size=32))
def test_node_id_text_round_trip(raw) -> None:
    text = node_id_text(raw)
    assert len(text) == 52 and text == text.lower()
    assert node_id_bytes(text) == raw


def test_parse_target() -> None:
    assert parse_target("bob").node is None
    assert parse_target("bob@kitchen").node == "kitchen"
    group = parse_target("#team@kitchen")
    assert group.is_group and group.name == "team"
    for bad in ("", "Bob", "bob@", "bob@Bad Node", "a" * 33, "#@x"):
        with pytest.raises(ProtocolError):
            parse_target(bad)


def test_protocol_imports_no_io() -> None:
    code = (
        "import sys, chinwag.protocol.frames, chinwag.protocol.envelope, chinwag.protocol.ids;"
        "bad = {'trio', 'lmdb', 'socket', 'trio_websocket'} & set(sys.modules);"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
