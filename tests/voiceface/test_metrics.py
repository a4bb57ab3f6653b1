"""The voice–face metrics against hand-worked cases (ties included) and against a plain reimplementation of
EFT's definitions written here, on random lists and embeddings."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _vf_cohort import cohort, embeddings

from avmatch.voiceface.evals import EvalLists, EvalSizes, make_eval_lists
from avmatch.voiceface.metrics import (
    MissingEmbeddings,
    auc_score,
    evaluate,
    paired_auc_differences,
    roc_curve,
    roc_points,
)

try:
    import sklearn.metrics as skm
except ImportError:  # pragma: no cover - scikit-learn is optional
    skm = None


def unit(*xy) -> np.ndarray:
    v = np.array(xy, dtype=np.float64)
    return v / np.linalg.norm(v)


def vlist(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["voice", "face", "label"])


# ------------------------------------------------------------------------------------ plain references

def ref_cos(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / math.sqrt(a @ a) / math.sqrt(b @ b))


def ref_auc(labels, scores) -> float:
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return 100 * wins / (len(pos) * len(neg))


def ref_ms(df, voice, face):
    v2f = [1 - ref_cos(voice[r.voice1], face[r.face1]) < 1 - ref_cos(voice[r.voice1], face[r.face2])
           for r in df.itertuples()]
    f2v = [1 - ref_cos(face[r.face1], voice[r.voice1]) < 1 - ref_cos(face[r.face1], voice[r.voice2])
           for r in df.itertuples()]
    return 100 * sum(v2f) / len(v2f), 100 * sum(f2v) / len(f2v)


def ref_1n(df, voice, face, v2f: bool) -> dict[int, float]:
    right: dict[int, list[int]] = {}
    for _, g in df.groupby("item"):
        g = g.sort_values("position")
        if v2f:
            q, gallery = voice[g["voice"].iloc[0]], [face[t] for t in g["face"]]
        else:
            q, gallery = face[g["face"].iloc[0]], [voice[t] for t in g["voice"]]
        d = [1 - ref_cos(q, x) for x in gallery]
        for n in range(2, len(d) + 1):
            best = 0
            for k in range(1, n):
                if d[k] < d[best]:      # the first minimum wins a tie
                    best = k
            right.setdefault(n, []).append(int(best == 0))
    return {n: sum(v) / len(v) for n, v in right.items()}


def ref_map(df, voice, face, v2f: bool) -> float:
    per_group = []
    for _, g in df.groupby("group"):
        qs = [voice[t] for t in g["voice"]] if v2f else [face[t] for t in g["face"]]
        xs = [face[t] for t in g["face"]] if v2f else [voice[t] for t in g["voice"]]
        names = list(g["name"])
        aps = []
        for i, q in enumerate(qs):
            ranked = sorted(range(len(xs)), key=lambda j: 1 - ref_cos(q, xs[j]))
            rel_ranks = [rank + 1 for rank, j in enumerate(ranked) if names[j] == names[i]]
            aps.append(sum((k + 1) / r for k, r in enumerate(rel_ranks)) / len(rel_ranks))
        per_group.append(sum(aps) / len(aps))
    return 100 * sum(per_group) / len(per_group)


# ----------------------------------------------------------------------------------------- by hand

def test_auc_counts_a_tie_as_one_half():
    voice = {"v": unit(1, 0)}
    face = {"same": unit(1, 0), "right": unit(0, 1), "left": unit(0, -1), "back": unit(-1, 0)}
    # scores (cos+1)/2: positives 1.0 and 0.5, negatives 0.5 and 0.0 -> 3 wins + one tie of 4 pairs
    lists = EvalLists({"test_verification": vlist([("v", "same", 1), ("v", "right", 1), ("v", "left", 0),
                                                   ("v", "back", 0)])})
    assert evaluate(voice, face, lists) == {"auc": pytest.approx(87.5)}


def test_float32_score_rounding_makes_ties_as_in_eft():
    # cosines 1e-8 (positive) and 0 (negative): in float32 (cos+1)/2 is 0.5 for both -> a tie
    face64 = {"p": np.array([1e-8, 1.0]), "n": np.array([0.0, 1.0])}
    lists = EvalLists({"test_verification": vlist([("v", "p", 1), ("v", "n", 0)])})
    assert evaluate({"v": np.array([1.0, 0.0])}, face64, lists)["auc"] == 100.0
    f32 = {k: v.astype(np.float32) for k, v in face64.items()}
    assert evaluate({"v": np.array([1.0, 0.0], np.float32)}, f32, lists)["auc"] == 50.0


def test_one_to_two_counts_a_tie_as_wrong():
    voice = {"v1": unit(1, 0), "v2": unit(0, 1), "v3": unit(-1, 0.2)}
    face = {"f1": unit(0, 1), "f2": unit(0, -1), "f3": unit(1, 0.1)}
    rows = [("A", "v1", "f1", "B", "v2", "f2"),   # v2f: d(v1,f1)=1 = d(v1,f2)=1 -> tie, wrong; f2v: f1 is v2 -> wrong
            ("A", "v1", "f3", "B", "v3", "f2")]   # v2f: f3 near v1 -> right; f2v: f3 nearer v1 than v3 -> right
    lists = EvalLists({"test_matching": pd.DataFrame(rows, columns=["name1", "voice1", "face1", "name2",
                                                                    "voice2", "face2"])})
    assert evaluate(voice, face, lists) == {"ms_v2f": 50.0, "ms_f2v": 50.0}


def test_one_to_n_takes_the_first_minimum_over_growing_prefixes():
    voice = {"p": unit(1, 0), "x": unit(0, 1), "y": unit(1, 0)}
    face = {"a": unit(0, 1), "b": unit(0, -1), "c": unit(1, 0)}
    # v2f distances from p: a 1, b 1, c 0 -> n=2: tie between 0 and 1, argmin 0 -> right; n=3: c wins -> wrong
    # f2v from a: p 1, x 0 -> n=2 wrong; n=3 (y at 1) still x -> wrong
    df = pd.DataFrame([(0, 0, "p", "a"), (0, 1, "x", "b"), (0, 2, "y", "c")],
                      columns=["item", "position", "voice", "face"])
    out = evaluate(voice, face, EvalLists({"test_matching_1N": df}))
    assert out == {"1N_v2f": {2: 1.0, 3: 0.0}, "1N_f2v": {2: 0.0, 3: 0.0}}


def test_map_worked_by_hand():
    voice = {"v0": unit(1, 0), "v1": unit(0, 1), "v2": unit(-0.6, -0.8)}
    face = {"f0": unit(1, 0), "f1": unit(0, 1), "f2": unit(1, 1)}
    df = pd.DataFrame([(0, "v0", "f0", "A"), (0, "v1", "f1", "A"), (0, "v2", "f2", "B")],
                      columns=["group", "voice", "face", "name"])
    # v2f: v0 ranks f0(A) f2(B) f1(A): AP (1 + 2/3)/2 = 5/6; v1 likewise 5/6; v2 ranks f0 f1 f2(B): AP 1/3
    # f2v: f0 ranks v0 v1 v2: 1; f1 ranks v1 v0 v2: 1; f2 (B) ranks its voice v2 last: 1/3
    out = evaluate(voice, face, EvalLists({"test_retrieval": df}))
    assert out["map_v2f"] == pytest.approx(100 * (5 / 6 + 5 / 6 + 1 / 3) / 3)
    assert out["map_f2v"] == pytest.approx(100 * 7 / 9)
    # a second group with one perfect query pair: groups weigh the same, whatever their size
    df2 = pd.concat([df, pd.DataFrame([(1, "v0", "f0", "A"), (1, "v2", "f2", "B")], columns=df.columns)])
    out2 = evaluate(voice, face, EvalLists({"test_retrieval": df2}))
    # group 1: v0 ranks f0(A) first (1), v2 (B): f0 at 1.6, f2 at 1.99 -> f2 second: 1/2
    assert out2["map_v2f"] == pytest.approx(100 * ((5 / 6 + 5 / 6 + 1 / 3) / 3 + (1 + 1 / 2) / 2) / 2)


# --------------------------------------------------------------------------------------------- random

@pytest.fixture(scope="module")
def random_case():
    identities, tracks = cohort(seed=3)
    sizes = EvalSizes(verification=300, valid_verification=200, matching=200, retrieval_groups=4,
                      retrieval_group_size=10, retrieval_per_identity=2, matching_1n=60, gallery=10)
    lists = make_eval_lists(identities, tracks, "test", 7, sizes).merged(
        make_eval_lists(identities, tracks, "valid", 7, sizes))
    voice, face = embeddings(tracks, seed=5)
    return lists, voice, face


def test_random_lists_equal_the_plain_definitions(random_case):
    lists, voice, face = random_case
    out = evaluate(voice, face, lists)
    names = {"valid_verification": "valid_auc", "test_verification": "auc", "test_verification_g": "auc_g",
             "test_verification_n": "auc_n", "test_verification_gn": "auc_gn"}
    for name, metric in names.items():
        df = lists[name]
        scores = [(ref_cos(voice[v], face[f]) + 1) / 2 for v, f in zip(df["voice"], df["face"])]
        assert out[metric] == pytest.approx(ref_auc(df["label"], scores), abs=1e-9)
    assert (out["ms_v2f"], out["ms_f2v"]) == pytest.approx(ref_ms(lists["test_matching"], voice, face))
    assert (out["ms_v2f_g"], out["ms_f2v_g"]) == pytest.approx(ref_ms(lists["test_matching_g"], voice, face))
    assert out["map_v2f"] == pytest.approx(ref_map(lists["test_retrieval"], voice, face, True), abs=1e-9)
    assert out["map_f2v"] == pytest.approx(ref_map(lists["test_retrieval"], voice, face, False), abs=1e-9)
    assert out["1N_v2f"] == pytest.approx(ref_1n(lists["test_matching_1N"], voice, face, True))
    assert out["1N_f2v"] == pytest.approx(ref_1n(lists["test_matching_1N"], voice, face, False))
    assert sorted(out["1N_v2f"]) == list(range(2, 11))
    # an identity signal is there: better than chance, not perfect
    assert 55 < out["auc"] < 100 and 1 / 10 < out["1N_v2f"][10] < 1


@pytest.mark.skipif(skm is None, reason="scikit-learn not installed")
def test_auc_and_roc_equal_scikit_learn_exactly(random_case):
    lists, voice, face = random_case
    out = evaluate(voice, face, lists)
    rng = np.random.default_rng(0)
    for name, metric in (("test_verification", "auc"), ("test_verification_gn", "auc_gn")):
        df = lists[name]
        v = np.array([voice[t] for t in df["voice"]])
        f = np.array([face[t] for t in df["face"]])
        score = (np.sum(v * f, 1) / (np.sqrt(np.sum(v * v, 1)) * np.sqrt(np.sum(f * f, 1))) + 1) / 2.0
        assert out[metric] == skm.roc_auc_score(df["label"], score) * 100
        fpr, tpr, _ = skm.roc_curve(df["label"], score)
        pts = roc_points(voice, face, lists)[metric]
        assert np.array_equal(pts["fpr"], fpr) and np.array_equal(pts["tpr"], tpr)
    for _ in range(50):   # many ties: scores on a coarse grid
        y = rng.integers(0, 2, size=40)
        y[:2] = [0, 1]
        s = rng.integers(0, 5, size=40) / 4
        assert auc_score(y, s) == skm.roc_auc_score(y, s)
        assert auc_score(y, s) * 100 == pytest.approx(ref_auc(y, s))


def test_duplicated_entries_count_as_often_as_they_appear(random_case):
    lists, voice, face = random_case
    df = lists["test_verification"]
    doubled = pd.concat([df, df.iloc[:50]], ignore_index=True)
    out = evaluate(voice, face, EvalLists({"test_verification": doubled}))
    scores = [(ref_cos(voice[v], face[f]) + 1) / 2 for v, f in zip(doubled["voice"], doubled["face"])]
    assert out["auc"] == pytest.approx(ref_auc(doubled["label"], scores), abs=1e-9)
    m = lists["test_matching"]
    m2 = pd.concat([m, m.iloc[:1], m.iloc[:1]], ignore_index=True)
    assert (evaluate(voice, face, EvalLists({"test_matching": m2}))["ms_v2f"]
            == pytest.approx(ref_ms(m2, voice, face)[0]))
    # the same track twice in a retrieval group: distances tie, relevant either way
    r = lists["test_retrieval"]
    g0 = r[r["group"] == 0]
    r2 = pd.concat([g0, g0.iloc[:1]], ignore_index=True)
    assert (evaluate(voice, face, EvalLists({"test_retrieval": r2}))["map_v2f"]
            == pytest.approx(ref_map(r2, voice, face, True), abs=1e-9))


def test_absent_lists_give_no_metric_and_missing_embeddings_name_the_track(random_case):
    lists, voice, face = random_case
    only = EvalLists({"test_verification_g": lists["test_verification_g"]}, {"test_verification_g": "/x/g.parquet"})
    assert set(evaluate(voice, face, only)) == {"auc_g"}
    missing = lists["test_verification_g"]["face"].iloc[3]
    face2 = {k: v for k, v in face.items() if k != missing}
    with pytest.raises(MissingEmbeddings, match=rf"face track '{missing}'.*test_verification_g.*/x/g.parquet"):
        evaluate(voice, face2, only)


def test_bootstrap_intervals_bracket_the_estimate_and_repeat_with_the_seed(random_case):
    lists, voice, face = random_case
    out = evaluate(voice, face, lists, bootstrap=200, seed=4)
    again = evaluate(voice, face, lists, bootstrap=200, seed=4)
    assert out == again
    ci = out["ci"]
    for metric in ("auc", "auc_g", "ms_v2f", "ms_f2v_g", "map_v2f", "map_f2v"):
        lo, hi = ci[metric]
        assert lo <= out[metric] <= hi and lo < hi
    for n, (lo, hi) in ci["1N_v2f"].items():
        assert lo <= out["1N_v2f"][n] <= hi
    assert "ci" not in evaluate(voice, face, lists)
    alone = evaluate(voice, face, EvalLists({"test_matching": lists["test_matching"]}), bootstrap=200, seed=4)
    assert alone["ci"]["ms_v2f"] == ci["ms_v2f"]     # one resampling stream per metric


def test_paired_auc_difference_equals_the_two_aucs_and_its_interval_is_the_difference(random_case):
    lists, voice, face = random_case
    rng = np.random.default_rng(3)
    noisy_face = {k: v + rng.normal(0, 2.0, v.shape) for k, v in face.items()}   # a worse model B
    a, b = evaluate(voice, face, lists), evaluate(voice, noisy_face, lists)
    out = paired_auc_differences((voice, face), (voice, noisy_face), lists, bootstrap=200, seed=1)
    for metric in ("auc", "auc_g", "auc_n", "auc_gn"):
        row = out[metric]
        assert row["a"] == pytest.approx(a[metric]) and row["b"] == pytest.approx(b[metric])
        assert row["diff"] == pytest.approx(a[metric] - b[metric])
        lo, hi = row["ci"]
        assert lo <= row["diff"] <= hi
    same = paired_auc_differences((voice, face), (voice, face), lists, bootstrap=50, seed=1)
    assert same["auc"]["diff"] == 0 and same["auc"]["ci"] == [0.0, 0.0]   # shared resamples: no spread at all
    assert out == paired_auc_differences((voice, face), (voice, noisy_face), lists, bootstrap=200, seed=1)


def test_roc_curve_rejects_a_single_class():
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_curve([1, 1], [0.2, 0.3])


def test_one_to_n_galleries_of_unequal_length_and_shuffled_rows(random_case):
    lists, voice, face = random_case
    df = lists["test_matching_1N"]
    short = df[(df["item"] % 3 == 0) & (df["position"] < 4)]          # every third item keeps 4 entries
    mixed = pd.concat([df[df["item"] % 3 != 0], short]).sample(frac=1, random_state=0)
    out = evaluate(voice, face, EvalLists({"test_matching_1N": mixed}))
    for key, v2f in (("1N_v2f", True), ("1N_f2v", False)):
        assert out[key] == pytest.approx(ref_1n(mixed, voice, face, v2f))
    assert out["1N_v2f"] != evaluate(voice, face, EvalLists({"test_matching_1N": df}))["1N_v2f"]


def test_a_zero_embedding_is_an_error_for_auc_not_a_silent_number():
    lists = EvalLists({"test_verification": vlist([("v", "a", 1), ("v", "b", 0)])})
    with pytest.raises(ValueError, match="NaN"):
        evaluate({"v": np.zeros(2)}, {"a": unit(1, 0), "b": unit(0, 1)}, lists)


def test_voice_and_face_vectors_of_different_lengths_are_refused():
    lists = EvalLists({"test_verification": vlist([("v", "a", 1), ("v", "b", 0)])})
    with pytest.raises(ValueError, match=r"one length.*\(3,\).*voice track 'v'.*\(2,\)"):
        evaluate({"v": np.ones(3)}, {"a": unit(1, 0), "b": unit(0, 1)}, lists)


def test_exactly_equal_to_eft_style_numpy_with_tied_duplicates(random_case):
    """Bit-for-bit against the numpy/scipy operations EFT runs (cdist, argsort, argmin, float accumulation),
    on lists where duplicated tracks make exact distance ties."""
    import scipy.spatial.distance as ssd

    lists, voice, face = random_case
    one_n = lists["test_matching_1N"].copy()
    first_face = one_n[one_n["position"] == 0].set_index("item")["face"]
    dup = one_n["position"] == 3
    one_n.loc[dup, "face"] = one_n.loc[dup, "item"].map(first_face)   # the true face again at position 3
    ret = lists["test_retrieval"]
    ret = pd.concat([ret, ret[ret["group"] == 0].iloc[:3]], ignore_index=True)  # duplicates in group 0
    out = evaluate(voice, face, EvalLists({"test_matching_1N": one_n, "test_retrieval": ret}))

    right: dict[int, list[int]] = {}
    for _, g in one_n.groupby("item"):
        d = ssd.cdist(np.array([voice[g["voice"].iloc[0]]]), np.array([face[t] for t in g["face"]]), "cosine")
        d = d.squeeze()
        for n in range(2, len(d) + 1):
            right.setdefault(n, []).append(int(np.argmin(d[:n]) == 0))
    assert out["1N_v2f"] == {n: np.mean(v) for n, v in right.items()}
    assert out["1N_v2f"][10] <= out["1N_v2f"][3]

    def eft_style_map(dist, labels):
        order = dist.argsort()
        res = []
        for i in range(dist.shape[0]):
            p, r = 0.0, 0.0
            for j in range(dist.shape[0]):
                if labels[i] == labels[order[i][j]]:
                    r += 1
                    p += r / (j + 1)
            res.append(p / r if r > 0 else 0)
        return np.mean(res)

    per_group = []
    for _, g in ret.groupby("group"):
        d = ssd.cdist(np.array([voice[t] for t in g["voice"]]), np.array([face[t] for t in g["face"]]), "cosine")
        per_group.append((eft_style_map(d, list(g["name"])), eft_style_map(d.T, list(g["name"]))))
    assert out["map_v2f"] == np.mean([a for a, _ in per_group]) * 100
    assert out["map_f2v"] == np.mean([b for _, b in per_group]) * 100
