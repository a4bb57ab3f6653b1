"""VSC22 metrics on hand-worked cases (values computed on paper from the challenge's definitions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avmatch.copydetect.metrics import (
    Match,
    VideoFeatures,
    descriptor_ap,
    descriptor_candidates,
    matching_metrics,
    pair_scores,
    pairwise_ap,
    read_matches,
    segment_ap,
    write_matches,
)
from avmatch.copydetect.vsc_npz import read_vsc_npz, write_vsc_npz

BIN = Path(sys.executable).parent


def M(q, r, qs, qe, rs, re, score=1.0):
    return Match(q, r, qs, qe, rs, re, score)


GT = [M("Q1", "R1", 0, 10, 0, 10)]


def test_exact_prediction_scores_one():
    m = matching_metrics(GT, [M("Q1", "R1", 0, 10, 0, 10, 0.7)])
    assert m["segment"].ap == pytest.approx(1.0)
    assert m["pairwise"].ap == pytest.approx(1.0)


def test_half_overlap_is_precision_half_times_recall_half():
    # intersection 5 s on each axis, predicted 10 s, ground truth 10 s -> P = R = 0.5, AP = 0.25
    assert segment_ap(GT, [M("Q1", "R1", 5, 15, 5, 15)]).ap == pytest.approx(0.25)


def test_geometric_mean_of_axes():
    # query axis: P = R = 1; ref axis: pred [0, 20] over gt [0, 10] -> P = 0.5, R = 1
    # P = sqrt(1 * 0.5), R = 1 -> AP = 0.7071
    assert segment_ap(GT, [M("Q1", "R1", 0, 10, 0, 20)]).ap == pytest.approx(np.sqrt(0.5))


def test_split_prediction_adds_up():
    preds = [M("Q1", "R1", 0, 5, 0, 5, 0.9), M("Q1", "R1", 5, 10, 5, 10, 0.8)]
    res = segment_ap(GT, preds)
    assert res.ap == pytest.approx(1.0)   # 1.0 * 0.5 + 1.0 * 0.5
    assert list(res.recalls) == pytest.approx([0.5, 1.0])


def test_overlapping_predictions_count_their_union_once():
    # step 1: [0,6] -> R 0.6, P 1; step 2: union [0,10] -> R 1, P 1; a duplicate adds nothing
    preds = [M("Q1", "R1", 0, 6, 0, 6, 0.9), M("Q1", "R1", 4, 10, 4, 10, 0.8), M("Q1", "R1", 0, 6, 0, 6, 0.7)]
    assert segment_ap(GT, preds).ap == pytest.approx(1.0)
    # a wrong extension lowers precision of later steps: [0,6] then [4,14] -> union [0,14]
    preds = [M("Q1", "R1", 0, 6, 0, 6, 0.9), M("Q1", "R1", 4, 14, 4, 14, 0.8)]
    assert segment_ap(GT, preds).ap == pytest.approx(0.6 + 0.4 * 10 / 14)


def test_ties_form_one_group():
    gt = [M("Q1", "R1", 0, 10, 0, 10), M("Q2", "R2", 0, 10, 0, 10)]
    preds = [M("Q1", "R1", 0, 10, 0, 10, 0.5), M("Q1", "R9", 0, 10, 0, 10, 0.5),  # the tie: right and wrong pair
             M("Q2", "R2", 0, 10, 0, 10, 0.4)]
    # group 1: intersection 10 of gt 20 (R 0.5), predicted 20 (P 0.5); group 2: R 1, P 20/30
    assert segment_ap(gt, preds).ap == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # the order inside a tie does not matter
    assert segment_ap(gt, [preds[1], preds[0], preds[2]]).ap == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_pairs_not_in_ground_truth_only_cost_precision():
    gt = [M("Q1", "R1", 0, 10, 0, 10)]
    preds = [M("Q3", "R3", 0, 30, 0, 30, 0.9), M("Q1", "R1", 0, 10, 0, 10, 0.8)]
    # first step: nothing found; second: R 1, P 10/40
    assert segment_ap(gt, preds).ap == pytest.approx(0.25)
    assert pairwise_ap({("Q1", "R1")}, {("Q3", "R3"): 0.9, ("Q1", "R1"): 0.8}).ap == pytest.approx(0.5)


def test_ground_truth_counts_only_where_a_prediction_box_overlaps_it():
    gt = [M("Q1", "R1", 0, 10, 0, 10), M("Q1", "R1", 20, 30, 20, 30)]
    # the prediction's query span lies on G1 and its ref span on G2, but its box overlaps neither
    assert segment_ap(gt, [M("Q1", "R1", 0, 10, 20, 30)]).ap == pytest.approx(0.0)
    # covering G1 exactly: R = 0.5 on each axis, P = 1
    assert segment_ap(gt, [M("Q1", "R1", 0, 10, 0, 10)]).ap == pytest.approx(0.5)


def test_defined_answers_where_the_official_formula_divides_by_zero():
    assert segment_ap(GT, []).ap == 0.0                       # empty submission
    assert segment_ap([], [M("Q1", "R1", 0, 1, 0, 1)]).ap == 0.0  # empty ground truth
    assert pairwise_ap([], {("Q1", "R1"): 1.0}).ap == 0.0
    # a zero-length prediction first, then the right one: the first group adds no recall
    preds = [M("Q1", "R1", 3, 3, 3, 3, 0.9), M("Q1", "R1", 0, 10, 0, 10, 0.8)]
    assert segment_ap(GT, preds).ap == pytest.approx(1.0)
    # zero-length ground truth on both axes: nothing can be recalled
    assert segment_ap([M("Q1", "R1", 5, 5, 5, 5)], [M("Q1", "R1", 0, 10, 0, 10)]).ap == 0.0


def test_pairwise_ap_hand_worked_with_misses_and_ties():
    gt = {("a", "1"), ("b", "1"), ("c", "1")}
    # a (hit, P 1), x (miss), b (hit, P 2/3); c never predicted -> recall steps of 1/3
    assert pairwise_ap(gt, {("a", "1"): 0.9, ("x", "1"): 0.8, ("b", "1"): 0.7}).ap == pytest.approx((1 + 2 / 3) / 3)
    # ties are not pooled (the official average_precision scores each rank of a stable sort): a hit tied
    # with a miss has precision 1 when listed first, 1/2 when listed second
    assert pairwise_ap(gt, {("a", "1"): 0.9, ("x", "1"): 0.9}).ap == pytest.approx(1 / 3)
    assert pairwise_ap(gt, {("x", "1"): 0.9, ("a", "1"): 0.9}).ap == pytest.approx(0.5 / 3)


def test_negative_match_scores_floor_at_zero_for_pairs_as_the_official_from_matches_does():
    # the miss (listed first) scores -0.5, the hit -0.2: a raw maximum ranks the hit first (pairwise 1.0);
    # the official CandidatePair.from_matches starts each pair's maximum at 0.0, so both pairs score 0 and
    # keep their listed order: the hit is at rank 2, P 1/2
    preds = [M("Q2", "R2", 0, 10, 0, 10, -0.5), M("Q1", "R1", 0, 10, 0, 10, -0.2)]
    m = matching_metrics(GT, preds)
    assert m["pairwise"].ap == pytest.approx(0.5)
    assert pair_scores(preds) == {("Q2", "R2"): 0.0, ("Q1", "R1"): 0.0}
    # the segment µAP ranks the raw scores (the official match_metric has no floor): the hit comes first
    assert m["segment"].ap == pytest.approx(1.0)
    # listed the other way round, the floored tie puts the hit first: 1.0 (a pooled tie would give 0.5)
    assert matching_metrics(GT, preds[::-1])["pairwise"].ap == pytest.approx(1.0)
    # a pair with one positive match keeps that score; above 0 the ranking is the raw one
    preds = [M("Q1", "R1", 0, 10, 0, 10, -0.9), M("Q1", "R1", 0, 10, 0, 10, 0.3), M("Q2", "R2", 0, 10, 0, 10, 0.1)]
    assert matching_metrics(GT, preds)["pairwise"].ap == pytest.approx(1.0)
    assert pair_scores(preds) == {("Q1", "R1"): pytest.approx(0.3), ("Q2", "R2"): pytest.approx(0.1)}
    assert pair_scores([M("Q3", "R3", 0, 1, 0, 1, -4.0)]) == {("Q3", "R3"): 0.0}


def test_descriptor_pairs_keep_negative_similarities_as_the_official_max_aggregation_does():
    # a hit at similarity -0.2 and a miss at -0.5 (no floor): the hit ranks first
    queries = [_vf("Q1", [[1.0, 0.0]])]
    refs = [_vf("R1", [[-0.2, 0.0]]), _vf("R2", [[-0.5, 0.0]])]
    cands = descriptor_candidates(queries, refs)
    assert cands == {("Q1", "R1"): pytest.approx(-0.2), ("Q1", "R2"): pytest.approx(-0.5)}
    assert descriptor_ap([M("Q1", "R1", 0, 1, 0, 1)], queries, refs).ap == pytest.approx(1.0)


def _official_pairwise_ap(gt_pairs: set, matches: list) -> float:
    """The challenge's pairwise µAP written out step by step from its definition (vsc/metrics.py:
    `CandidatePair.from_matches` then `average_precision`), to compare ours with."""
    best: dict = {}
    for m in matches:
        best[m.pair] = max(m.score, best.get(m.pair, 0.0))
    ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)
    hits, total = 0, 0.0
    for rank, (pair, _) in enumerate(ranked, start=1):
        if pair in gt_pairs:
            hits += 1
            total += hits / rank
    return total / len(gt_pairs)


def test_descriptor_top_k_keeps_the_first_tied_frame_pairs_in_query_then_ref_order():
    from avmatch.copydetect.metrics import global_topk

    queries = [_vf("Q1", [[1.0, 0.0], [1.0, 0.0]]), _vf("Q2", [[1.0, 0.0]])]
    refs = [_vf(f"R{i}", [[1.0, 0.0]]) for i in range(1, 5)]          # every frame pair ties at 1.0
    for block in (1 << 20, 4 * 4 * 2):                                 # one block, and one query row per block
        qi, ri, s = global_topk(queries, refs, 5, block_bytes=block)
        assert list(zip(qi.tolist(), ri.tolist())) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
        assert s.tolist() == [1.0] * 5
    # a cut through a tie: similarities 1, 1, 1, 3, 2, 3 and k = 5 keep R0 and R1 of the three at 1 (an
    # arbitrary partition of the tie kept R0 and R2)
    sims = [1.0, 1.0, 1.0, 3.0, 2.0, 3.0]
    qi, ri, s = global_topk([_vf("Q", [[1.0, 0.0]])], [_vf(f"R{i}", [[v, 0.0]]) for i, v in enumerate(sims)], 5)
    assert ri.tolist() == [3, 5, 4, 0, 1] and s.tolist() == [3.0, 3.0, 2.0, 1.0, 1.0]
    # 2 frame pairs per query video -> k = 6: Q1's first frame with R1..R4, its second frame with R1, R2
    assert list(descriptor_candidates(queries, refs, retrieval_per_query=2)) == [("Q1", f"R{i}") for i in range(1, 5)]


def test_pairwise_ap_equals_the_challenge_formula_on_random_submissions():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n_gt = int(rng.integers(1, 8))
        gt = [M(f"q{i}", "r", 0, 1, 0, 1) for i in range(n_gt)]
        # several matches per pair, scores from a coarse grid around 0: many ties, many negatives
        preds = [M(f"q{rng.integers(0, 12)}", "r", 0, 1, 0, 1, float(rng.integers(-4, 5)) / 4)
                 for _ in range(int(rng.integers(1, 20)))]
        expected = _official_pairwise_ap({g.pair for g in gt}, preds)
        assert matching_metrics(gt, preds)["pairwise"].ap == pytest.approx(expected, abs=1e-12)


def test_pairwise_ap_equals_scikit_learn_when_no_scores_tie():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(20):
        n_gt = int(rng.integers(1, 15))
        gt = {(f"q{i}", "r") for i in range(n_gt)}
        pool = [(f"q{i}", "r") for i in range(25)]
        chosen = rng.choice(len(pool), int(rng.integers(1, 25)), replace=False)
        preds = {pool[i]: float(rng.random()) for i in chosen}
        y = np.array([k in gt for k in preds], float)
        s = np.array(list(preds.values()))
        expected = (skm.average_precision_score(y, s) * y.sum() / len(gt)) if y.sum() else 0.0
        assert pairwise_ap(gt, preds).ap == pytest.approx(expected)


def _vf(vid, feats):
    feats = np.asarray(feats, np.float32)
    t = np.arange(len(feats), dtype=np.float64)
    return VideoFeatures(vid, np.stack([t, t + 1], 1), feats)


def test_descriptor_track_max_aggregates_and_ranks_pairs(tmp_path):
    e = np.eye(4, dtype=np.float32)
    queries = [_vf("Q1", [e[0], e[1] * 0.5]), _vf("Q2", [e[2] * 0.3])]
    refs = [_vf("R1", [e[0] * 0.9, e[1]]), _vf("R2", [e[2]]), _vf("R3", [e[3]])]
    cands = descriptor_candidates(queries, refs)
    assert cands[("Q1", "R1")] == pytest.approx(0.9)   # max over the pair's frame similarities
    assert cands[("Q2", "R2")] == pytest.approx(0.3)
    gt = [M("Q1", "R1", 0, 2, 0, 2), M("Q2", "R3", 0, 1, 0, 1)]
    # ranked pairs: (Q1,R1) 0.9 hit, (Q2,R2) 0.3 miss, zero-similarity pairs after; (Q2,R3) ties at 0
    # -> steps: 0.9 (P 1, R 1/2), 0.3 (no hit), 0.0 (six pairs, two hits: P 2/6, R 1)
    assert descriptor_ap(gt, queries, refs).ap == pytest.approx(0.5 + 0.5 / 3)
    # round trip through the VSC22 npz
    write_vsc_npz(tmp_path / "q.npz", queries)
    back = read_vsc_npz(tmp_path / "q.npz", check_rate=True)
    assert [v.video_id for v in back] == ["Q1", "Q2"]
    assert np.allclose(back[0].features, queries[0].features)


def test_cli_commands_print_json(tmp_path):
    write_matches(tmp_path / "gt.csv", GT, gt=True)
    write_matches(tmp_path / "pred.csv", [M("Q1", "R1", 5, 15, 5, 15, 0.5)])
    assert read_matches(tmp_path / "gt.csv", is_gt=True)[0].score == 1.0
    out = subprocess.run([str(BIN / "avmatch"), "metrics", "vsc-matching", "--gt", str(tmp_path / "gt.csv"),
                          "--pred", str(tmp_path / "pred.csv"), "--json"], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got == {"segment_uap": pytest.approx(0.25), "pairwise_uap": pytest.approx(1.0)}
    write_vsc_npz(tmp_path / "q.npz", [_vf("Q1", [[1.0, 0.0]])])
    write_vsc_npz(tmp_path / "r.npz", [_vf("R1", [[1.0, 0.0]]), _vf("R2", [[0.0, 1.0]])])
    out = subprocess.run([str(BIN / "avmatch"), "metrics", "vsc-descriptor", "--gt", str(tmp_path / "gt.csv"),
                          "--query", str(tmp_path / "q.npz"), "--ref", str(tmp_path / "r.npz"), "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"descriptor_uap": pytest.approx(1.0)}
    bad = tmp_path / "bad.csv"
    bad.write_text("query_id,ref_id\nQ1,R1\n")
    p = subprocess.run([str(BIN / "avmatch"), "metrics", "vsc-matching", "--gt", str(tmp_path / "gt.csv"),
                        "--pred", str(bad)], capture_output=True, text=True)
    assert p.returncode == 2 and "missing column" in p.stderr
