"""Find which reference item a query excerpt comes from, and where it starts (offset voting).

A query and the references are cut the same way (1 s segments, 0.5 s hop), so if query
segment i matches segment s of item t, the query starts at segment s - i of t. Every
neighbour of every query segment votes for such an (item, offset) pair; true matches pile
up votes on one pair while chance neighbours scatter. The best-voted pairs are then
re-scored with the full-precision vectors over the whole query (the NMFP "sequence search"),
which also undoes the ranking noise of product quantisation.

Decisions:

* Offsets are never negative: a neighbour implying the query starts before the reference
  does is dropped (queries are excerpts of a reference, so they cannot start before it).
* Rescore = mean over *all* query segments i of dot(q_i, ref[t][offset + i]), where reference
  segments past the end of the track count as 0 similarity (not skipped). Skipping would let
  an alignment that overlaps the track by one lucky segment score as high as a full match;
  counting zeros keeps the score "evidence over the whole query", comparable across
  candidates and usable with one no-match threshold. A genuine excerpt lies inside its track,
  so the true alignment loses nothing.
* Speed changes: a query played r times as fast drifts against the reference (10 s at 3 %:
  0.3 s, more than half a hop). Rescoring therefore also tries alignments that drift linearly,
  reference segment offset + round(i * r) for each rate r in `rates`, and keeps the best; the
  winning rate is reported (1.03: the query plays 3 % fast).
* Hubs: with a `penalty` (`hubness.HubPenalty`), each similarity is reduced by the reference
  segment's hub score, both when neighbours are chosen for voting and when candidates are rescored,
  for every candidate alike, so the winner and the runner-up of the margin are both judged by how
  distinctive their evidence is.
* Without rescore the winner is the top-voted candidate (ties: larger summed similarity) and
  its score is the mean similarity of its votes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from avmatch.core.index import SegmentIndex, as_float32_matrix

if TYPE_CHECKING:
    from avmatch.fingerprint.params import FpSearchParams

# (index rows, their vectors) -> what to subtract from each pair's similarity (e.g. hubness.HubPenalty)
Penalty = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Rescoring gathers (query segment, reference segment) vector pairs; this bounds one batch
# (pairs x dim x 4 bytes x 2 arrays: 32768 x 128 x 8 = 32 MB).
_RESCORE_PAIRS_PER_BATCH = 32768
# how much a drifting alignment must add to the mean similarity to replace the normal-speed one
DRIFT_MIN_GAIN = 0.01
# with a hub penalty, neighbours are re-ranked among this many times top_k raw nearest ones
NEIGHBOUR_POOL = 2
# a search that leaves an item out looks this many times top_k deep, so that top_k others remain
EXCLUDE_POOL = 4


@dataclass(frozen=True)
class Match:
    """Answer for one query: the item and the reference segment where the query starts.

    `item_id` None means no match (no candidate, or rejected by the no-match threshold; the
    score of the best candidate is kept for analysis). `votes` counts query segments whose
    neighbours supported this (item, offset).
    """

    item_id: str | None
    offset_segment: int
    score: float
    votes: int
    runner_up: float = 0.0  # best score of any OTHER item among the candidates (0 when none)
    rate: float = 1.0  # speed of the query against the reference found by rescoring (1.02: 2 % fast)
    verified: float | None = None  # share of the query's spectral peaks found at this alignment (verify.py)

    @property
    def matched(self) -> bool:
        return self.item_id is not None


NO_CANDIDATE = Match(item_id=None, offset_segment=0, score=0.0, votes=0)


def decision_score(match: Match, mode: str, runner_up_weight: float = 1.0) -> Match:
    """The score the no-match threshold is applied to: `similarity` (the rescored mean cosine) or
    `margin`: similarity minus `runner_up_weight` x the best other track's (robust when out-of-database
    music sounds alike). Weight 1 is the classical ratio test's difference (the default); 0.5 trades
    long-query hits for short-query ones on the demo (docs/benchmarks.md). `either` reports the margin
    (its similarity test is `decide`'s). `verified`: the share of the query's spectral peaks found at the
    alignment (`verify.Verifier` sets it; a match without it is an error, not a silent 0)."""
    if mode == "similarity" or match.item_id is None:
        return match
    if mode == "verified":
        if match.verified is None:
            raise ValueError("the decision 'verified' needs the match's spectral verification (verify.Verifier)")
        return replace(match, score=float(match.verified))
    if mode in ("margin", "either"):
        return replace(match, score=match.score - runner_up_weight * match.runner_up)
    raise ValueError(f"unknown score mode {mode!r}; use 'margin', 'similarity', 'either' or 'verified'")


def decide(match: Match, mode: str, runner_up_weight: float, threshold: float,
           similarity_threshold: float | None = None) -> Match:
    """`match` (as searched: its score the similarity) with its decision score, a no-match unless that
    score reaches `threshold` or, for `either`, its similarity reaches `similarity_threshold` (None: no
    similarity test)."""
    scored = decision_score(match, mode, runner_up_weight)
    if mode == "either" and similarity_threshold is not None and match.item_id is not None \
            and match.score >= similarity_threshold:
        return scored
    return apply_threshold(scored, threshold)


def apply_threshold(match: Match, threshold: float) -> Match:
    """Turn a match scoring below `threshold` into a no-match (keeping its score and votes)."""
    if match.item_id is not None and match.score < threshold:
        return replace(match, item_id=None)
    return match


def drift_rates(max_drift: float, step: float) -> tuple[float, ...]:
    """The speeds rescoring tries: 1 +- k * step up to max_drift (1.0 first, so ties keep no drift)."""
    if max_drift < 0 or (max_drift > 0 and step <= 0):
        raise ValueError(f"need max_drift >= 0 and step > 0, got {max_drift}, {step}")
    k = int(round(max_drift / step)) if max_drift > 0 else 0
    return (1.0,) + tuple(1.0 + s * j * step for j in range(1, k + 1) for s in (1.0, -1.0))


def search_with(index: SegmentIndex, queries: Sequence[np.ndarray], sp: "FpSearchParams",
                penalty: Penalty | None = None, exclude: Sequence[str | None] | None = None) -> list[Match]:
    """`search_queries` with the settings of a `fingerprint.search` section (the pipeline and the user
    database search the same way)."""
    return search_queries(index, queries, sp.top_k, sp.max_candidates, sp.rescore,
                          drift_rates(sp.max_drift, sp.drift_step), penalty, exclude)


def search_query(index: SegmentIndex, query_vectors: np.ndarray, top_k: int = 20,
                 max_candidates: int = 10, rescore: bool = True, rates: Sequence[float] = (1.0,),
                 penalty: Penalty | None = None) -> Match:
    """Best (item, offset) for one query given its segment fingerprints (n_segments, dim)."""
    return search_queries(index, [query_vectors], top_k, max_candidates, rescore, rates, penalty)[0]


def search_queries(index: SegmentIndex, queries: Sequence[np.ndarray], top_k: int = 20,
                   max_candidates: int = 10, rescore: bool = True,
                   rates: Sequence[float] = (1.0,), penalty: Penalty | None = None,
                   exclude: Sequence[str | None] | None = None) -> list[Match]:
    """Best (item, offset) for each query, with ONE FAISS search for all their segments.

    Per-query Python loops would pay FAISS's per-call overhead and lose its batched BLAS;
    instead all segments are searched at once, and voting and rescoring are vectorised over
    all queries together. `exclude` (one item id or None per query) leaves that item out of the
    query's answer, as if it were not in the database: how null queries cut from the references
    themselves are searched (`calibration.null_excerpts_from`).
    """
    if top_k < 1 or max_candidates < 1:
        raise ValueError(f"top_k and max_candidates must be >= 1, got {top_k}, {max_candidates}")
    mats = [as_float32_matrix(q, index.dim, f"query {j}") for j, q in enumerate(queries)]
    lengths = np.array([len(m) for m in mats], np.int64)
    n_queries = len(mats)
    if n_queries == 0:
        return []
    if lengths.sum() == 0 or index.ntotal == 0:
        return [NO_CANDIDATE] * n_queries
    all_segments = np.concatenate(mats, axis=0)
    q_start = np.r_[0, np.cumsum(lengths)[:-1]]

    if exclude is None:
        sims, rows = neighbours(index, all_segments, top_k, penalty)
    else:
        sims, rows = neighbours(index, all_segments, top_k * EXCLUDE_POOL, penalty)
        sims, rows = _without_items(index, sims, rows, lengths, exclude, top_k)
    cand = _vote(index, sims, rows, lengths, q_start)
    if cand is None:
        return [NO_CANDIDATE] * n_queries
    cand = _keep_top_voted(cand, max_candidates)
    cand["rate"] = np.ones(len(cand["query"]))
    if rescore:
        cand["score"], cand["rate"] = rescore_drifting(index, all_segments, cand, lengths, q_start, rates, penalty)
        order = np.lexsort((-cand["votes"], -cand["score"], cand["query"]))
    else:
        cand["score"] = cand["sim_sum"] / cand["votes"]
        order = np.lexsort((-cand["sim_sum"], -cand["votes"], cand["query"]))
    best = _first_per_query(cand["query"][order])
    runner_up = _runner_up_scores(cand, order, best, n_queries)
    results = [NO_CANDIDATE] * n_queries
    item_ids = index.item_ids
    for pos in order[best]:
        q = int(cand["query"][pos])
        results[q] = Match(
            item_id=item_ids[int(cand["item"][pos])],
            offset_segment=int(cand["offset"][pos]),
            score=float(cand["score"][pos]),
            votes=int(cand["votes"][pos]),
            runner_up=float(runner_up[q]),
            rate=float(cand["rate"][pos]),
        )
    return results


def neighbours(index: SegmentIndex, segments: np.ndarray, top_k: int,
               penalty: Penalty | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each query segment's `top_k` nearest reference segments, as similarities and rows.

    With a hub penalty the neighbours are ranked by the discounted similarity: `NEIGHBOUR_POOL` x top_k
    are fetched and the top_k best after the discount kept, so that a hub does not take a vote that a
    distinctive segment should have had.
    """
    if penalty is None:
        return index.search(segments, top_k)
    sims, rows = index.search(segments, top_k * NEIGHBOUR_POOL)
    valid = rows >= 0
    adjusted = np.full(sims.shape, -np.inf)
    flat = rows[valid]
    adjusted[valid] = sims[valid] - penalty(flat, index.vectors_at(flat))
    keep = np.argsort(-adjusted, axis=1, kind="stable")[:, :top_k]
    out_rows = np.take_along_axis(rows, keep, axis=1)
    out_sims = np.take_along_axis(adjusted, keep, axis=1)
    out_rows[~np.isfinite(out_sims)] = -1
    return out_sims.astype(np.float32), out_rows


def _without_items(index: SegmentIndex, sims: np.ndarray, rows: np.ndarray, lengths: np.ndarray,
                   exclude: Sequence[str | None], top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each segment's `top_k` nearest neighbours outside its query's excluded item, from a deeper list.

    An excerpt's own recording fills many of its nearest places (neighbouring and repeated segments), so
    dropping them from a list of only `top_k` would leave a null query fewer neighbours than unknown music
    gets; the list searched is `EXCLUDE_POOL` times deeper.
    """
    if len(exclude) != len(lengths):
        raise ValueError(f"{len(exclude)} items to exclude for {len(lengths)} queries")
    codes = {name: code for code, name in enumerate(index.item_ids)}
    per_query = np.array([codes.get(e, -2) if e is not None else -2 for e in exclude], np.int64)
    item = np.where(rows >= 0, index.row_item_codes[np.maximum(rows, 0)], -1)
    gone = (rows < 0) | (item == np.repeat(per_query, lengths)[:, None])
    keep = np.argsort(gone, axis=1, kind="stable")[:, :top_k]   # the nearest remaining, in their order
    out_rows = np.where(np.take_along_axis(gone, keep, axis=1), -1, np.take_along_axis(rows, keep, axis=1))
    return np.take_along_axis(sims, keep, axis=1), out_rows


def _runner_up_scores(cand: dict[str, np.ndarray], order: np.ndarray, best: np.ndarray, n_queries: int) -> np.ndarray:
    """Per query, the best score among candidates of another item than the winner.

    A query from music that is not in the database still finds some similar-sounding segments, so
    its best score alone is a poor no-match signal; how far the winner stands above the best other
    track (the ratio test of classical fingerprinting) separates the two far better under noise.
    """
    winner_item = np.full(n_queries, -1, np.int64)
    winner_item[cand["query"][order[best]]] = cand["item"][order[best]]
    other = cand["item"] != winner_item[cand["query"]]
    out = np.zeros(n_queries, np.float64)
    np.maximum.at(out, cand["query"][other], np.maximum(cand["score"][other], 0.0))
    return out


def _vote(index: SegmentIndex, sims: np.ndarray, rows: np.ndarray, lengths: np.ndarray,
          q_start: np.ndarray) -> dict[str, np.ndarray] | None:
    """Group neighbour votes by (query, item, offset): vote counts and summed similarities."""
    seg_query = np.repeat(np.arange(len(lengths)), lengths)
    seg_pos = np.arange(len(seg_query)) - q_start[seg_query]   # i: position inside its query
    k = rows.shape[1]
    valid = rows >= 0
    r = rows[valid]
    query = np.repeat(seg_query, k)[valid.ravel()]
    offset = index.row_segments[r] - np.repeat(seg_pos, k)[valid.ravel()]
    item = index.row_item_codes[r]
    sim = sims[valid].astype(np.float64)
    keep = offset >= 0
    query, item, offset, sim = query[keep], item[keep], offset[keep], sim[keep]
    if len(query) == 0:
        return None
    order = np.lexsort((offset, item, query))
    query, item, offset, sim = query[order], item[order], offset[order], sim[order]
    new = np.r_[True, (query[1:] != query[:-1]) | (item[1:] != item[:-1]) | (offset[1:] != offset[:-1])]
    group = np.cumsum(new) - 1
    return {
        "query": query[new], "item": item[new], "offset": offset[new],
        "votes": np.bincount(group).astype(np.int64),
        "sim_sum": np.bincount(group, weights=sim),
    }


def _first_per_query(sorted_query: np.ndarray) -> np.ndarray:
    """Positions of the first entry of each query in an array sorted by query."""
    return np.flatnonzero(np.r_[True, sorted_query[1:] != sorted_query[:-1]])


def _keep_top_voted(cand: dict[str, np.ndarray], max_candidates: int) -> dict[str, np.ndarray]:
    """Per query, keep the `max_candidates` pairs with most votes (ties: larger summed similarity)."""
    order = np.lexsort((-cand["sim_sum"], -cand["votes"], cand["query"]))
    q = cand["query"][order]
    firsts = _first_per_query(q)
    first_of = np.repeat(firsts, np.diff(np.r_[firsts, len(q)]))
    rank = np.arange(len(q)) - first_of
    chosen = order[rank < max_candidates]
    return {key: val[chosen] for key, val in cand.items()}


def rescore_drifting(index: SegmentIndex, segments: np.ndarray, cand: dict[str, np.ndarray], lengths: np.ndarray,
                     q_start: np.ndarray, rates: Sequence[float],
                     penalty: Penalty | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's best rescored similarity over the drifting alignments of `rates`, and that rate.

    A drifting alignment must beat the candidate's score at normal speed by `DRIFT_MIN_GAIN` to be taken:
    music repeats itself, and a repeated passage at another offset, drifted, can otherwise edge out the
    true alignment of an unchanged query by a rounding error."""
    best = np.full(len(cand["query"]), -np.inf)
    best_rate = np.ones(len(cand["query"]))
    for r in rates:
        s = _rescore(index, segments, cand, lengths, q_start, float(r), penalty)
        better = s > best + (0.0 if float(r) == 1.0 or not np.isfinite(best).any() else DRIFT_MIN_GAIN)
        best[better] = s[better]
        best_rate[better] = float(r)
    return best, best_rate


def _rescore(index: SegmentIndex, segments: np.ndarray, cand: dict[str, np.ndarray],
             lengths: np.ndarray, q_start: np.ndarray, rate: float = 1.0,
             penalty: Penalty | None = None) -> np.ndarray:
    """Mean over the query's segments of dot(q_i, ref[item][offset + round(i * rate)]) (minus the
    penalty of that reference segment); outside the track = 0."""
    item_first_row, item_first_seg, item_count = index.item_table()
    n_cand = len(cand["query"])
    cand_len = lengths[cand["query"]]
    totals = np.zeros(n_cand, np.float64)
    # Batch candidates so that the gathered pairs stay within _RESCORE_PAIRS_PER_BATCH.
    pair_end = np.cumsum(cand_len)
    lo = 0
    while lo < n_cand:
        budget_end = (pair_end[lo - 1] if lo else 0) + _RESCORE_PAIRS_PER_BATCH
        hi = max(lo + 1, int(np.searchsorted(pair_end, budget_end, side="right")))
        idx = np.arange(lo, hi)
        n_pairs = cand_len[idx]
        pair_cand = np.repeat(idx, n_pairs)
        pair_i = np.arange(n_pairs.sum()) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
        item = cand["item"][pair_cand]
        ref_seg = cand["offset"][pair_cand] + (pair_i if rate == 1.0 else np.rint(pair_i * rate).astype(np.int64))
        first_seg = item_first_seg[item]
        inside = (ref_seg >= first_seg) & (ref_seg < first_seg + item_count[item])
        q_rows = q_start[cand["query"][pair_cand]] + pair_i
        ref_rows = item_first_row[item] + ref_seg - first_seg
        q_vec = segments[q_rows[inside]]
        r_vec = index.vectors_at(ref_rows[inside])
        dots = np.einsum("ij,ij->i", q_vec, r_vec, dtype=np.float64)
        if penalty is not None:
            dots -= penalty(ref_rows[inside], r_vec)
        totals[lo:hi] = np.bincount(pair_cand[inside] - lo, weights=dots, minlength=hi - lo)
        lo = hi
    return totals / cand_len


def threshold_for_false_match_rate(in_db_scores: Sequence[float], in_db_correct: Sequence[bool],
                                   oov_scores: Sequence[float], target_fmr: float) -> float:
    """Lowest no-match threshold whose false-match rate on validation queries is <= target.

    A fingerprinting user calls it a false match when the system names a track that is not
    the one playing. With threshold t (accept a match when score >= t):

        FMR(t) = (#OOV queries with score >= t
                  + #in-db queries answered with a wrong track and score >= t) / #all queries

    In-db queries answered correctly never count as false (rejecting them is a miss, the
    price the threshold trades against). FMR only falls as t rises, so the lowest admissible
    t is just above the (a+1)-th highest false score, a = floor(target * #queries) being the
    number of false matches allowed. Edge cases: with no false candidates at all (no OOV, no
    wrong answers) or a budget covering them all, the threshold is the lowest score (accept
    everything); with no validation queries it is -inf; when scores tie at the cut, all the
    tied ones are rejected (the threshold is the next float above them).
    """
    if not 0.0 <= target_fmr <= 1.0:
        raise ValueError(f"target_fmr must be in [0, 1], got {target_fmr}")
    in_scores = np.asarray(in_db_scores, np.float64).ravel()
    correct = np.asarray(in_db_correct, bool).ravel()
    oov = np.asarray(oov_scores, np.float64).ravel()
    if len(in_scores) != len(correct):
        raise ValueError(f"{len(in_scores)} in-db scores but {len(correct)} correctness flags")
    all_scores = np.concatenate([in_scores, oov])
    if len(all_scores) == 0:
        return float("-inf")
    false_scores = np.sort(np.concatenate([in_scores[~correct], oov]))[::-1]
    allowed = int(np.floor(target_fmr * len(all_scores) + 1e-9))
    if len(false_scores) <= allowed:
        return float(all_scores.min())
    return float(np.nextafter(false_scores[allowed], np.inf))


def false_match_rate(in_db_scores: Sequence[float], in_db_correct: Sequence[bool],
                     oov_scores: Sequence[float], threshold: float) -> float:
    """FMR(threshold) as defined in `threshold_for_false_match_rate` (0 with no queries)."""
    in_scores = np.asarray(in_db_scores, np.float64).ravel()
    correct = np.asarray(in_db_correct, bool).ravel()
    oov = np.asarray(oov_scores, np.float64).ravel()
    total = len(in_scores) + len(oov)
    if total == 0:
        return 0.0
    n_false = int(np.sum(in_scores[~correct] >= threshold) + np.sum(oov >= threshold))
    return n_false / total
