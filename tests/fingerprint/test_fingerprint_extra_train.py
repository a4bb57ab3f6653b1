"""`fingerprint.corpus.extra_train_pieces`: more training music that leaves the references and held-out pieces alone.

The extra pieces are planned after the held-out ones (the piece pool and the item planner are sequential), dealt
the references' instruments first (`cover_min_pieces` decks), and rendered in a call of their own; the build in
docs/benchmarks.md (session 10) checked every query, reference and original training file byte for byte. This
checks the planning with a stand-in piece pool (no music21 parsing, no rendering).
"""

from __future__ import annotations

from collections import Counter

import pytest

from avmatch.core.music21_render import Piece
from avmatch.fingerprint import corpus


class _Pool:
    """Numbered pieces per group in order, as a PiecePool hands them out."""

    def __init__(self, groups, seed, cache=None, workers=2):
        self.n = Counter()

    def prefetch(self, counts):
        pass

    def next_piece(self, group: str) -> Piece:
        self.n[group] += 1
        k = self.n[group]
        return Piece(key=f"{group}/{k}", group=group, title=str(k), parts=[[(0.0, 1.0, 60, 80)]],
                     length_ql=200.0, signature=f"{group}/{k}")


@pytest.fixture
def plan(monkeypatch):
    monkeypatch.setattr(corpus, "PiecePool", _Pool)

    def make(extra: int, decks: int = 1):
        return corpus._plan_rendered(corpus.SIZES["demo"], 7, 0.0, 0, 0.0, 0, None, 1, False, extra, decks)
    return make


def test_extra_pieces_leave_refs_heldout_and_training_as_they_were(plan):
    base, more = plan(0), plan(60, decks=2)
    for split in ("ref", "train", "oov"):
        assert more[split] == base[split], split
    assert base["train_extra"] == [] and len(more["train_extra"]) == 60
    used = {p.key for split in ("ref", "train", "oov") for s in more[split] for p in s.pieces}
    assert not used & {p.key for s in more["train_extra"] for p in s.pieces}, "extra pieces are new pieces"


def test_extra_pieces_play_every_reference_instrument_at_least_twice(plan):
    p = plan(120, decks=2)
    have = Counter(s.ensemble for s in p["train_extra"])
    ref = {s.ensemble for s in p["ref"]}
    assert min(have[e] for e in ref) >= 2, {e: have[e] for e in ref if have[e] < 2}
    one_deck = [s.ensemble for s in plan(120, decks=1)["train_extra"]]
    assert one_deck != [s.ensemble for s in p["train_extra"]]   # the second deck is dealt differently
