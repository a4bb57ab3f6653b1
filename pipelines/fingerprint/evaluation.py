"""The evaluation procedure: search every query, calibrate the per-length no-match thresholds on null
queries and the validation out-of-database queries, score the held-out test queries. Shared by the
trained and the untrained comparison so both are measured identically."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.core.index import SegmentIndex
from avmatch.fingerprint.calibration import Thresholds, calibrate_decision
from avmatch.fingerprint.metrics import build_analysis, evaluate, length_key
from avmatch.fingerprint.params import FpAudioParams, FpEvaluateParams, FpSearchParams
from avmatch.fingerprint.search import NO_CANDIDATE, Match, Penalty, search_with
from avmatch.fingerprint.verify import Peaks, Verifier


def read_ground_truth(path: Path) -> pd.DataFrame:
    """The corpus builder's ground truth as a frame, plus the manifest item id of each query."""
    from avmatch.fingerprint.corpus import read_ground_truth as read_rows

    if not path.exists():
        raise FileNotFoundError(f"{path}: ground truth not found (run the corpus stage)")
    gt = pd.DataFrame(read_rows(path.parent))
    gt["item_id"] = [Path(p).with_suffix("").as_posix() for p in gt["query_path"]]
    return gt


def is_validation(query_id: str, fraction: float) -> bool:
    """Stable split by query id (independent of order and of Python's hash seed)."""
    return (zlib.crc32(query_id.encode()) % 10_000) < fraction * 10_000


@dataclass
class EvaluationResult:
    metrics: dict
    analysis: pd.DataFrame
    thresholds: Thresholds


def evaluate_queries(index: SegmentIndex, gt: pd.DataFrame, query_vectors: dict[str, np.ndarray],
                     search: FpSearchParams, settings: FpEvaluateParams, audio: FpAudioParams,
                     query_lengths_s: list[float], ref_paths: dict[str, str] | None = None,
                     null_vectors: list[tuple] | None = None,
                     penalty: Penalty | None = None, verifier: Verifier | None = None,
                     query_peaks: dict[str, Peaks] | None = None) -> EvaluationResult:
    """Search all queries in one batch; per-length no-match thresholds from the null queries (music not
    in the database) and the validation out-of-database queries; metrics on the test queries.

    A false match is an out-of-database query answered with any track: each length's threshold keeps
    the share of such answers at or below `settings.target_false_match_rate` (fingerprint.evaluate). `penalty`
    (the encoder's hub penalty) applies to every search alike: queries and null queries. Each null query is
    (length_s, vectors) or (length_s, vectors, item id left out of its search): an excerpt of a reference
    is searched as if its own recording were not in the database.

    The decision `verified` (search.score) needs `verifier` (the references' spectral peaks), `query_peaks`
    (item id -> the query's peaks) and each null query's peaks as a fourth element: every answer, the
    null queries' too, gets the share of its peaks found at its alignment.
    """
    ids = list(gt["item_id"])
    have = [i for i in ids if i in query_vectors and len(query_vectors[i])]
    found = search_with(index, [query_vectors[i] for i in have], search, penalty)
    raw: dict[str, Match] = {i: NO_CANDIDATE for i in ids}   # as searched: score = similarity
    verified = search.score == "verified"
    if verified:
        if verifier is None or query_peaks is None:
            raise ValueError("the decision 'verified' needs the references' and the queries' spectral peaks")
        found = [verifier.verify(m, query_peaks[i]) for i, m in zip(have, found)]
    raw.update(zip(have, found))
    val = np.array([is_validation(q, settings.validation_fraction) for q in gt["query_id"]])
    in_db = gt["in_db"].astype(int).to_numpy() == 1
    lengths = gt["length_s"].to_numpy(np.float64)

    null_matches: dict[float, list[Match]] = {}
    for i, v, is_val in zip(ids, lengths, val & ~in_db):
        if is_val:
            null_matches.setdefault(_calibrated_length(float(v), query_lengths_s), []).append(raw[i])
    null_vectors = [(n[0], n[1], n[2] if len(n) > 2 else None, n[3] if len(n) > 3 else None)
                    for n in (null_vectors or []) if len(n[1])]
    if null_vectors:
        left_out = [e for _, _, e, _ in null_vectors]
        null_found = search_with(index, [x for _, x, _, _ in null_vectors], search, penalty,
                                 left_out if any(e is not None for e in left_out) else None)
        if verified:
            if any(p is None for _, _, _, p in null_vectors):
                raise ValueError("the decision 'verified' needs every null query's spectral peaks")
            null_found = [verifier.verify(m, p) for (_, _, _, p), m in zip(null_vectors, null_found)]
        for (v, _, _, _), m in zip(null_vectors, null_found):
            null_matches.setdefault(_calibrated_length(v, query_lengths_s), []).append(m)
    target = settings.target_false_match_rate
    thresholds = (calibrate_decision(null_matches, search.score, search.runner_up_weight, target)
                  if null_matches else Thresholds(0.0))

    test = gt[~val].reset_index(drop=True)
    au = audio
    preds = {q: thresholds.decide(raw[i], search.score, search.runner_up_weight, len(query_vectors.get(i, ())),
                                  au.segment_s, au.hop_s)
             for q, i in zip(test["query_id"], test["item_id"])}
    seq_lens = {q: len(query_vectors.get(i, ())) for q, i in zip(test["query_id"], test["item_id"])}
    analysis = build_analysis(test, preds, audio.hop_s, segment_s=audio.segment_s, ref_paths=ref_paths,
                              query_seq_lens=seq_lens)
    metrics = evaluate(test, preds, audio.hop_s, query_lengths_s, segment_s=audio.segment_s,
                       ref_paths=ref_paths)
    top1 = {q: raw[i] for q, i in zip(test["query_id"], test["item_id"])}
    top1_metrics = evaluate(test, top1, audio.hop_s, query_lengths_s, segment_s=audio.segment_s,
                            ref_paths=ref_paths)
    metrics.update(
        target_false_match_rate=target, decision_score=search.score,
        **thresholds.to_json(),
        false_match_rate_by_length=_oov_rate_by_length(analysis, query_lengths_s),
        top1_hit_rate_without_threshold=top1_metrics["track_hit_rate"],
        speed_changed_hit_rate=_speed_changed(analysis, query_lengths_s),
        n_null_queries={length_key(v): len(s) for v, s in sorted(null_matches.items())},
        n_validation_queries=int(val.sum()), n_test_queries=int((~val).sum()),
        n_queries_without_vectors=len(ids) - len(have))
    return EvaluationResult(metrics, analysis, thresholds)


def _calibrated_length(length_s: float, query_lengths_s: list[float]) -> float:
    """The evaluation length a query's score calibrates (the nearest in log-length)."""
    lengths = np.asarray(query_lengths_s, np.float64)
    return float(lengths[np.argmin(np.abs(np.log(lengths) - np.log(max(length_s, 1e-3))))])


def _oov_rate_by_length(analysis: pd.DataFrame, lengths: list[float]) -> dict[str, dict]:
    """Per length: the share of test out-of-database queries answered, with its count (few queries:
    read the Wilson 95 % interval, not the point estimate alone)."""
    out = {}
    for v in lengths:
        sel = (~analysis["in_db"].astype(bool)) & np.isclose(analysis["length_s"], v)
        n = int(sel.sum())
        k = int(analysis.loc[sel, "pred_track_path"].astype(str).str.len().gt(0).sum())
        lo, hi = wilson_interval(k, n)
        out[length_key(v)] = {"rate": k / n if n else None, "answered": k, "n": n, "ci95": [lo, hi]}
    return out


def _speed_changed(analysis: pd.DataFrame, lengths: list[float]) -> dict[str, float | None]:
    """Track hit rate of the in-database speed and tempo changed queries, per length."""
    sel = analysis["in_db"].astype(bool) & analysis["degradation"].isin(["speed", "stretch"])
    out = {}
    for v in lengths:
        s = sel & np.isclose(analysis["length_s"], v)
        out[length_key(v)] = float(analysis.loc[s, "track_hit"].astype(bool).mean()) if s.any() else None
    return out


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """The Wilson score interval of a proportion k / n."""
    if n == 0:
        return None, None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return float(max(0.0, c - h)), float(min(1.0, c + h))
