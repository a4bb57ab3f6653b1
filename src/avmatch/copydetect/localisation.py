"""Temporal localisation of copied segments in a (query × reference) frame similarity matrix.

A copy shows up as a run of high similarities along a diagonal-ish path: query time and reference time
both advance (at any speed between slow motion and fast-forward). Following the temporal network idea
(Tan et al. 2009, used by the VSC22 baseline), we keep the strongest cells of each query row as nodes,
link node (i, j) to (i', j') when 0 < i' - i ≤ max_gap and 0 < j' - j ≤ max_gap (or j' = j for one step,
see below), and take the longest path by summed (similarity - floor) with dynamic programming. Its nodes
are removed and the next path is searched, up to `max_segments` per pair; paths shorter than
`min_frames` nodes are dropped.

Both times must advance from node to node, except that a path may hold a reference frame for one query
frame after a step that advanced it (i' = i + 1, j' = j), so half-speed copies keep their last frame. A
path that could stay on one reference frame for ever followed static or repeated reference frames down a
column: it reported many query seconds against one reference second, then the next column as another
"copy" (docs/benchmarks.md, copy detection, session 6). Slow motion and fast-forward still make paths,
by holding or skipping frames (steps (1, 0) then (1, 1), or (1, 2)). A segment spans the first to the
last node's time interval on each axis; its score is the highest similarity on the path after score
normalisation (paths are found on the raw cosines, so normalisation changes the ranking only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float
    n_frames: int


def _nodes(sim: np.ndarray, per_row: int, floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = min(per_row, sim.shape[1])
    cols = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else np.tile(np.arange(sim.shape[1]), (sim.shape[0], 1))
    rows = np.repeat(np.arange(sim.shape[0]), cols.shape[1])
    cols = cols.reshape(-1)
    s = sim[rows, cols]
    keep = s > floor
    order = np.lexsort((cols[keep], rows[keep]))
    return rows[keep][order], cols[keep][order], s[keep][order]


def diagonal_smooth(sim: np.ndarray, window: int) -> np.ndarray:
    """Mean of each cell and its neighbours on the same diagonal (i + t, j + t), |t| ≤ window // 2, over the
    cells inside the matrix. A copy is a run along a diagonal, so this keeps it and lowers cells that are high
    on their own or along a row or a column (a still or slowly panned reference is alike over many seconds)."""
    h = int(window) // 2
    if h <= 0 or sim.size == 0:
        return sim
    n, m = sim.shape
    pad = np.zeros((n + 2 * h, m + 2 * h), np.float64)
    cnt = np.zeros_like(pad)
    pad[h:h + n, h:h + m] = sim
    cnt[h:h + n, h:h + m] = 1.0
    tot = np.zeros((n, m))
    num = np.zeros((n, m))
    for t in range(-h, h + 1):
        tot += pad[h + t:h + t + n, h + t:h + t + m]
        num += cnt[h + t:h + t + n, h + t:h + t + m]
    return (tot / num).astype(np.float32)


def localise(sim: np.ndarray, q_times: np.ndarray, r_times: np.ndarray, *, per_row: int = 5, floor: float = 0.0,
             max_gap: int = 5, min_frames: int = 2, max_segments: int = 3, smooth: int = 1,
             ref_extend: float = 0.0, bias: np.ndarray | None = None) -> list[Segment]:
    """Copied segments in `sim` [n_query_frames, n_ref_frames] (cosine similarities);
    `q_times`/`r_times` are [n, 2] start/end seconds of each frame's interval. Paths are found on
    the raw similarities; a segment's score is its best *normalised* similarity, sim - bias[row]
    (`bias`: the per-query-frame normalisation term, None = no normalisation).

    `smooth` > 1: nodes are picked on `diagonal_smooth(sim, smooth)` (paths and their weights too; scores
    stay the raw cells'). `ref_extend` > 0: the reference bounds of a segment grow to the run of reference
    frames around the path whose mean similarity to the segment's query frames is within `ref_extend` of the
    best one in the path's span (`_extend_reference`), so a copy of footage that stays alike for many seconds
    (a still or a slow pan) is reported over the frames it cannot be told apart from, not at one guessed
    offset; 0 = off (the path's own bounds)."""
    if sim.size == 0:
        return []
    raw = np.asarray(sim, np.float32)
    ri, ci, s = _nodes(diagonal_smooth(raw, smooth), per_row, floor)
    b = np.zeros(sim.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
    alive = np.ones(len(ri), bool)
    out: list[Segment] = []
    # first node index of each query row, to find predecessors in a window of rows
    row_start = np.searchsorted(ri, np.arange(sim.shape[0] + 1))
    for _ in range(3 * max_segments):  # short high-scoring paths are retired too; bound the rounds
        if len(out) >= max_segments or not alive.any():
            break
        best = np.full(len(ri), -np.inf)
        prev = np.full(len(ri), -1)
        held = np.zeros(len(ri), bool)   # the step into this node kept the reference frame
        w = s - floor
        for n in range(len(ri)):
            if not alive[n]:
                continue
            lo, hi = row_start[max(0, ri[n] - max_gap)], row_start[ri[n]]
            cand = np.arange(lo, hi)
            if len(cand):
                # the reference frame advances, or stays for one step after a step that advanced it
                step_ok = (ci[cand] < ci[n]) | ((ci[cand] == ci[n]) & (ri[cand] == ri[n] - 1) & ~held[cand])
                ok = alive[cand] & step_ok & (ci[cand] >= ci[n] - max_gap)
                cand = cand[ok]
            if len(cand):
                p = cand[np.argmax(best[cand])]
                if best[p] > 0:
                    best[n], prev[n], held[n] = w[n] + best[p], p, ci[p] == ci[n]
                    continue
            best[n] = w[n]
        end = int(np.argmax(best))
        if not np.isfinite(best[end]):
            break
        path = [end]
        while prev[path[-1]] >= 0:
            path.append(int(prev[path[-1]]))
        path = path[::-1]
        q0, q1 = ri[path[0]], ri[path[-1]]
        r0, r1 = ci[path[0]], ci[path[-1]]
        # retire the path and everything inside its box: one copy is reported once
        inside = (ri >= q0) & (ri <= q1) & (ci >= min(r0, r1)) & (ci <= max(r0, r1))
        alive[path] = False
        alive[inside] = False
        if len(path) < min_frames:
            continue
        lo, hi = min(r0, r1), max(r0, r1)
        if ref_extend > 0:
            lo, hi = _extend_reference(raw[q0:q1 + 1], lo, hi, ref_extend)
        out.append(Segment(float(q_times[q0, 0]), float(q_times[q1, 1]), float(r_times[lo, 0]),
                           float(r_times[hi, 1]), float((raw[ri[path], ci[path]] - b[ri[path]]).max()), len(path)))
    return out


def _extend_reference(rows: np.ndarray, lo: int, hi: int, delta: float) -> tuple[int, int]:
    """[lo, hi] grown on both sides over the reference frames whose mean similarity to `rows` (the segment's
    query frames) is at least the best mean in [lo, hi] minus `delta`; stops at the first frame below."""
    profile = rows.mean(axis=0)
    ok = profile >= profile[lo:hi + 1].max() - delta
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < len(profile) - 1 and ok[hi + 1]:
        hi += 1
    return lo, hi


def localise_pairs(pairs, queries: dict, refs: dict, bias: dict, *, per_row: int = 5, floor: float = 0.0,
                   max_gap: int = 5, min_frames: int = 2, max_segments: int = 3, smooth: int = 1,
                   ref_extend: float = 0.0) -> list:
    """VSC22 matches (`avmatch.copydetect.metrics.Match`) for every candidate pair (rows with query_id, ref_id).

    `queries`/`refs` map ids to `VideoFeatures`; `bias` maps query ids to the per-frame normalisation
    bias (see `avmatch.copydetect.candidates`), so the similarity matrix is the normalised one.
    """
    from avmatch.copydetect.metrics import Match

    out = []
    for q_id, r_id in zip(pairs["query_id"], pairs["ref_id"]):
        q, r = queries[q_id], refs[r_id]
        sim = q.features @ r.features.T
        for seg in localise(sim, q.timestamps, r.timestamps, per_row=per_row, floor=floor, max_gap=max_gap,
                            min_frames=min_frames, max_segments=max_segments, smooth=smooth,
                            ref_extend=ref_extend, bias=bias.get(q_id)):
            out.append(Match(q_id, r_id, seg.query_start, seg.query_end, seg.ref_start, seg.ref_end, seg.score))
    return out


def detect_copies(queries: list, refs: list, noise, beta: float, k: int = 20, max_pairs_per_query: int = 25,
                  ref_index=None, **localise_options) -> tuple:
    """Candidate recall then localisation: (Candidates, list of Match). `localise_options` are the
    `copydetect.localise` params (per_row, floor, max_gap, min_frames, max_segments, smooth, ref_extend); `ref_index`, the
    references' `reference_index` when the caller keeps one for many queries (built here otherwise)."""
    import numpy as np

    from avmatch.copydetect.candidates import find_candidates, reference_index

    noise = np.asarray(noise, np.float32)
    index = ref_index if ref_index is not None else reference_index(refs)
    c = find_candidates(index, queries, noise, beta, k, max_pairs_per_query)
    matches = localise_pairs(c.pairs, {q.video_id: q for q in queries}, {r.video_id: r for r in refs}, c.bias,
                             **localise_options)
    return c, matches
