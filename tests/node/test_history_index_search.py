"""The search of node/history_index.py over postings in many epochs.

Drives the index with queue records and a real LMDB file (no node, no
sockets) and checks ``search_seqs`` against a walk over what was written:
every entry with all the words, newest first, nothing missed or twice, also
when a small budget of blocks makes it stop and resume, and with entries still
waiting in ``index_log``.
"""

from __future__ import annotations

import random
from pathlib import Path

import cbor2
import lmdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chinwag.node import history_index as hi

NODE = "i2myd5vzjyqj47ynkb6v2cl2x6cfqd2oiy7hlh5cjmzaprzyjx7q"
OWNER = f"bob@{NODE}"
WORDS = ("red", "green", "blue", "grey")
PEERS = ("alice", "carol")
UID = 7


def record(sender: str, text: str) -> bytes:
    env = {"from": {"u": sender, "n": NODE}, "to": {"u": "bob", "n": NODE}, "body": {"text": text}}
    return cbor2.dumps({"unit": {"env": cbor2.dumps(env)}})


class Index:
    def __init__(self, path: Path) -> None:
        self.env = lmdb.open(str(path), max_dbs=8, map_size=1 << 28)
        self.dbs = {name: self.env.open_db(name.encode()) for name in hi.DB_NAMES}
        self.entries: list[tuple[str, set[str]]] = []  # seq - 1 -> (peer, words)
        self.log_key = 0

    def write(self, rng: random.Random, count: int, merge: bool) -> None:
        with self.env.begin(write=True) as txn:
            for _ in range(count):
                peer = rng.choice(PEERS)
                words = {w for w in WORDS if rng.random() < 0.3}
                self.entries.append((peer, words))
                self.log_key += 1
                text = " ".join(sorted(words)) or "nothing"
                hi.index_append(
                    txn, self.dbs, UID, OWNER, len(self.entries), record(peer, text), self.log_key
                )
            if merge:
                hi.merge_log(txn, self.dbs)

    def expected(self, terms: list[str], peer: str | None, before: int | None) -> list[int]:
        return [
            seq
            for seq in range(len(self.entries), 0, -1)
            if (before is None or seq < before)
            and set(terms) <= self.entries[seq - 1][1]
            and (peer is None or self.entries[seq - 1][0] == peer)
        ]

    def search(
        self, terms: list[str], peer: str | None, before: int | None, budget: int
    ) -> list[int]:
        conv = None if peer is None else f"{peer}@{NODE}"
        found: list[int] = []
        with self.env.begin() as txn:
            for _ in range(10_000):  # resumes: bounded
                resume = None
                for seq in hi.search_seqs(txn, self.dbs, UID, terms, conv, before, budget):
                    if seq <= 0:
                        resume = -seq + 1
                        break
                    found.append(seq)
                if resume is None:
                    return found
                assert before is None or resume <= before
                before = resume
        raise AssertionError("the search never finished")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32),
    merged=st.integers(260, 1500),  # more than one epoch (256 entries)
    logged=st.integers(0, 40),
    terms=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3, unique=True),
    peer=st.none() | st.sampled_from(PEERS),
    before=st.none() | st.integers(1, 1600),
    budget=st.sampled_from([1, 4, 17, 20_000]),  # blocks read per call
    merges=st.integers(1, 4),  # an epoch's block is appended to by later merges
)
def test_search_finds_every_entry_with_all_terms_across_epochs(
    tmp_path_factory, seed, merged, logged, terms, peer, before, budget, merges
) -> None:
    index = Index(tmp_path_factory.mktemp("index"))
    rng = random.Random(seed)
    for part in range(merges):
        index.write(rng, merged // merges + (part < merged % merges), merge=True)
    index.write(rng, logged, merge=False)
    assert index.search(terms, peer, before, budget) == index.expected(terms, peer, before)


def test_a_term_only_in_old_epochs_is_found_past_empty_ones(tmp_path: Path) -> None:
    index = Index(tmp_path)
    with index.env.begin(write=True) as txn:
        for seq in range(1, 2001):
            text = "needle" if seq in (3, 700) else "hay"
            index.log_key += 1
            hi.index_append(txn, index.dbs, UID, OWNER, seq, record("alice", text), index.log_key)
        hi.merge_log(txn, index.dbs)
    with index.env.begin() as txn:
        assert list(hi.search_seqs(txn, index.dbs, UID, ["needle"], None, None, 20_000)) == [700, 3]
        assert list(hi.search_seqs(txn, index.dbs, UID, ["needle"], None, 700, 20_000)) == [3]
        assert list(hi.search_seqs(txn, index.dbs, UID + 1, ["needle"], None, None, 20_000)) == []
