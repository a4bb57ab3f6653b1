"""Training material that spans the references' timbres: the planner deals instruments, it changes nothing else.

The fingerprint demo's false matches came from timbres its training music never had (a choir reference,
docs/benchmarks.md, session 8); dealing the references' instruments to the training pieces first fixes the
coverage without moving any piece, tempo, key or crop (the references and held-out pieces stay the same).
"""

from __future__ import annotations

from avmatch.core.music21_render import ENSEMBLES, SOLO, ItemPlanner, Piece


class _Pieces:
    """Numbered pieces of one fixed length per group, in order (what ItemPlanner asks a PiecePool for)."""

    def __init__(self) -> None:
        self.n = 0

    def next_piece(self, group: str) -> Piece:
        self.n += 1
        return Piece(key=f"{group}/{self.n}", group=group, title=str(self.n), parts=[[(0.0, 1.0, 60, 80)]],
                     length_ql=160.0, signature=str(self.n))


def _plan(cover, n=30, group="bach"):
    planner = ItemPlanner(_Pieces(), seed=3, min_s=30.0, max_s=40.0)
    return [planner.make(group, cover) for _ in range(n)]


def test_named_instruments_come_first_then_every_one_before_repeats():
    want = ["choir", "organ", "marimba", "not-an-ensemble"]
    items = _plan(want, n=3 + len(ENSEMBLES))
    assert {i.ensemble for i in items[:3]} == {"choir", "organ", "marimba"}
    assert {i.ensemble for i in items[3:3 + len(ENSEMBLES) - 3]} == set(ENSEMBLES) - {"choir", "organ", "marimba"}
    solo = _plan([], n=len(SOLO), group="oneill")
    assert sorted(i.ensemble for i in solo) == sorted(SOLO)   # a whole deck before any repeats


def test_dealing_moves_nothing_but_the_instruments():
    drawn, dealt = _plan(None), _plan(["choir"])
    for a, b in zip(drawn, dealt):
        assert (a.pieces, a.bpm, a.transpose, a.start_ql, a.max_s, a.reverb) == \
               (b.pieces, b.bpm, b.transpose, b.start_ql, b.max_s, b.reverb)
    assert [a.ensemble for a in drawn] != [b.ensemble for b in dealt]
    assert _plan(["choir"]) == dealt   # seeded


def test_cover_decks_deal_the_named_instruments_on_top_of_that_many_decks():
    want = ["choir", "organ", "marimba"]
    planner = ItemPlanner(_Pieces(), seed=3, min_s=30.0, max_s=40.0, cover_decks=2)
    items = [planner.make("bach", want) for _ in range(2 * len(ENSEMBLES) + 3)]
    n = len(ENSEMBLES)
    for deck in (items[:n], items[n:2 * n]):
        assert {i.ensemble for i in deck[:3]} == set(want)
        assert sorted(i.ensemble for i in deck) == sorted(ENSEMBLES)
