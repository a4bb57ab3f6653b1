"""The evaluation procedure: search every query, pick the no-match threshold on the validation
queries, score the held-out test queries. Shared by the trained and the untrained comparison so
both are measured identically."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.core.index import SegmentIndex
from avmatch.fingerprint.metrics import build_analysis, evaluate
from avmatch.fingerprint.params import FingerprintParams
from avmatch.fingerprint.search import (
    NO_CANDIDATE,
    Match,
    apply_threshold,
    decision_score,
    search_queries,
    threshold_for_false_match_rate,
)


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
    threshold: float


def evaluate_queries(index: SegmentIndex, gt: pd.DataFrame, query_vectors: dict[str, np.ndarray],
                     fp: FingerprintParams, ref_paths: dict[str, str] | None = None) -> EvaluationResult:
    """Search all queries in one batch; threshold on validation OOV queries; metrics on the rest."""
    ids = list(gt["item_id"])
    have = [i for i in ids if i in query_vectors and len(query_vectors[i])]
    found = search_queries(index, [query_vectors[i] for i in have], fp.search.top_k, fp.search.max_candidates,
                           fp.search.rescore)
    raw: dict[str, Match] = {i: NO_CANDIDATE for i in ids}
    raw.update({i: decision_score(m, fp.search.score) for i, m in zip(have, found)})
    val = np.array([is_validation(q, fp.evaluate.validation_fraction) for q in gt["query_id"]])
    in_db = gt["in_db"].astype(int).to_numpy() == 1
    v_oov = [raw[i].score for i, m in zip(ids, val & ~in_db) if m and raw[i].item_id is not None]
    # false match = an out-of-database query answered with any track; the threshold keeps the share
    # of such answers on validation queries at or below the target
    n_val_oov = int((val & ~in_db).sum())
    v_oov += [-np.inf] * (n_val_oov - len(v_oov))
    threshold = threshold_for_false_match_rate([], [], v_oov, fp.evaluate.target_false_match_rate) if n_val_oov else 0.0
    threshold = float(max(threshold, -1.0))
    test = gt[~val].reset_index(drop=True)
    preds = {q: apply_threshold(raw[i], threshold) for q, i in zip(test["query_id"], test["item_id"])}
    seq_lens = {q: len(query_vectors.get(i, ())) for q, i in zip(test["query_id"], test["item_id"])}
    analysis = build_analysis(test, preds, fp.audio.hop_s, segment_s=fp.audio.segment_s, ref_paths=ref_paths,
                              query_seq_lens=seq_lens)
    metrics = evaluate(test, preds, fp.audio.hop_s, fp.corpus.query_lengths_s, segment_s=fp.audio.segment_s,
                       ref_paths=ref_paths)
    metrics.update(threshold=threshold, n_validation_queries=int(val.sum()), n_test_queries=int((~val).sum()),
                   n_queries_without_vectors=len(ids) - len(have))
    return EvaluationResult(metrics, analysis, threshold)
