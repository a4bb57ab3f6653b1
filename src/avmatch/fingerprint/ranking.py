"""The N best recordings for a query (`avmatch fingerprint identify --top N`).

Rank 1 is exactly the evaluated search's answer (`search.search_queries`: the `max_candidates`
best-voted (recording, offset) pairs rescored), with the same score, so `--top N` never changes
what matches. That pool often holds several offsets of the same recording and so fewer than N
recordings; ranks 2..N therefore also draw on the best-voted offset of each of the N best-voted
recordings. This module reuses the search's voting and rescoring and is separate from it so that
the pipeline's stages, which import `search`, are not touched by a CLI feature.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avmatch.core.index import SegmentIndex, as_float32_matrix
from avmatch.fingerprint.search import Match, Penalty, _keep_top_voted, _vote, rescore_drifting


def _best_pair_per_item(cand: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Per query, the best-voted pair of each of its `n` best-voted recordings."""
    order = np.lexsort((-cand["sim_sum"], -cand["votes"], cand["item"], cand["query"]))
    q, item = cand["query"][order], cand["item"][order]
    first = order[np.r_[True, (q[1:] != q[:-1]) | (item[1:] != item[:-1])]]
    return _keep_top_voted({k: v[first] for k, v in cand.items()}, n)


def _union(pool: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Both sets of pairs, each once; `in_pool` marks the evaluated search's own candidates."""
    both = {k: np.concatenate([pool[k], extra[k]]) for k in pool}
    both["in_pool"] = np.r_[np.ones(len(pool["query"]), bool), np.zeros(len(extra["query"]), bool)]
    keys = np.stack([both["query"], both["item"], both["offset"]], axis=1)
    _, keep = np.unique(keys, axis=0, return_index=True)   # the first copy: the pool's, when in both
    return {k: v[np.sort(keep)] for k, v in both.items()}


def search_ranked(index: SegmentIndex, queries: Sequence[np.ndarray], top_k: int = 20, max_candidates: int = 10,
                  rescore: bool = True, n: int = 1, rates: Sequence[float] = (1.0,),
                  penalty: Penalty | None = None) -> list[list[Match]]:
    """Per query, up to `n` distinct recordings, best first, each at its best offset.

    `runner_up` is the best score of any other recording considered, so `decision_score(m, "margin")`
    is how far a recording stands above the others (below 0 after rank 1). Rank 1's is computed
    over the evaluated pool only, as the evaluated search does.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    mats = [as_float32_matrix(q, index.dim, f"query {j}") for j, q in enumerate(queries)]
    lengths = np.array([len(m) for m in mats], np.int64)
    out: list[list[Match]] = [[] for _ in mats]
    if not mats or lengths.sum() == 0 or index.ntotal == 0:
        return out
    segments = np.concatenate(mats, axis=0)
    q_start = np.r_[0, np.cumsum(lengths)[:-1]]
    sims, rows = index.search(segments, top_k)
    voted = _vote(index, sims, rows, lengths, q_start)
    if voted is None:
        return out
    cand = _union(_keep_top_voted(voted, max_candidates), _best_pair_per_item(voted, n))
    cand["rate"] = np.ones(len(cand["query"]))
    if rescore:   # the same orders as search_queries
        cand["score"], cand["rate"] = rescore_drifting(index, segments, cand, lengths, q_start, rates, penalty)
        order = np.lexsort((-cand["votes"], -cand["score"], cand["query"]))
    else:
        cand["score"] = cand["sim_sum"] / cand["votes"]
        order = np.lexsort((-cand["sim_sum"], -cand["votes"], cand["query"]))
    first: list[dict[int, int]] = [{} for _ in mats]      # per query: recording -> its best position
    top: list[dict[int, float]] = [{} for _ in mats]      # per query: recording -> its highest score
    top_pool: list[dict[int, float]] = [{} for _ in mats]
    winner: list[int | None] = [None] * len(mats)
    for pos in order:
        q, item, score = int(cand["query"][pos]), int(cand["item"][pos]), float(cand["score"][pos])
        top[q][item] = max(top[q].get(item, score), score)
        if cand["in_pool"][pos]:
            top_pool[q][item] = max(top_pool[q].get(item, score), score)
            if winner[q] is None:
                winner[q] = int(pos)
        first[q].setdefault(item, int(pos))
    item_ids = index.item_ids
    for q in range(len(mats)):
        if winner[q] is None:
            continue
        lead = int(cand["item"][winner[q]])
        ranked = [(winner[q], top_pool[q])] + [(pos, top[q]) for item, pos in first[q].items() if item != lead]
        for pos, scores in ranked[:n]:
            item = int(cand["item"][pos])
            others = [s for i, s in scores.items() if i != item]
            out[q].append(Match(item_id=item_ids[item], offset_segment=int(cand["offset"][pos]),
                                score=float(cand["score"][pos]), votes=int(cand["votes"][pos]),
                                runner_up=max(max(others, default=0.0), 0.0), rate=float(cand["rate"][pos])))
    return out
