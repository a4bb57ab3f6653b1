"""Evaluation of audio fingerprint search, with NMFP definitions and file formats.

Definitions (neural-music-fingerprinting, NMFP):

* ground-truth start segment = round(offset_s / hop_s), halves rounded up;
* track hit: the predicted item is the query's reference;
* segment_exact: track hit and predicted start segment == ground truth;
* segment_near: track hit and |difference| <= 1 segment (includes exact);
* segment_far: track hit and |difference| > 1 (right track, wrong position).

These rates are over in-db queries (an in-db query answered "no match" is a miss).
false_match_rate is the share of out-of-db (OOV) queries that returned any track;
wrong_track_rate the share of in-db queries that returned a track other than theirs.

The per-query table (`build_analysis`) carries the NMFP analysis.csv columns, so every summary
and plot here can be recomputed from an analysis.csv read back from disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd

RESULTS_COLUMNS: tuple[str, ...] = (
    "query_fp_path", "query_seq_len", "pred_track_path", "pred_start_segment", "score")
ANALYSIS_COLUMNS: tuple[str, ...] = (
    "query_fp_path", "query_seq_len", "gt_track_path", "gt_start_segment", "pred_track_path",
    "pred_start_segment", "score", "track_hit", "segment_exact", "segment_near", "segment_far",
    "degradation", "length_s", "in_db")
RATE_NAMES: tuple[str, ...] = ("track_hit_rate", "segment_exact", "segment_near", "segment_far")
_FLAG_OF_RATE = {"track_hit_rate": "track_hit", "segment_exact": "segment_exact",
                 "segment_near": "segment_near", "segment_far": "segment_far"}
_FLAGS = ("track_hit", "segment_exact", "segment_near", "segment_far", "in_db")


class MatchLike(Protocol):
    """What evaluation needs of a search answer (avmatch.fingerprint.search.Match fits)."""

    item_id: str | None
    offset_segment: int
    score: float


def length_key(length_s: float) -> str:
    """Metric key of a query length: 1.0 -> "1s", 2.5 -> "2.5s"."""
    return f"{float(length_s):g}s"


def ground_truth_segment(offset_s: float | np.ndarray, hop_s: float) -> np.ndarray:
    """Segment where the query starts in its reference: offset / hop, halves rounded up."""
    return np.floor(np.asarray(offset_s, np.float64) / hop_s + 0.5).astype(np.int64)


def query_segment_count(length_s: float | np.ndarray, hop_s: float = 0.5, segment_s: float = 1.0) -> np.ndarray:
    """Number of whole segments in a query of `length_s` (1 s -> 1, 2 s -> 3, 10 s -> 19)."""
    n = np.floor((np.asarray(length_s, np.float64) - segment_s) / hop_s + 1e-9) + 1
    return np.maximum(n, 0).astype(np.int64)


def _as_bool(values: pd.Series) -> np.ndarray:
    """Booleans from bool, 0/1 or "True"/"False" columns (CSV round trips)."""
    if values.dtype == bool:
        return values.to_numpy()
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.fillna(0).to_numpy(dtype=np.float64) != 0
    text = values.astype(str).str.strip().str.lower()
    return text.isin(["true", "1", "1.0", "yes"]).to_numpy()


def _nonempty(values: pd.Series) -> np.ndarray:
    """True where a path/id column holds a value (not NaN/None/"")."""
    return (values.notna() & (values.astype(str).str.strip() != "")).to_numpy()


# ---------------------------------------------------------------- per-query table
def build_analysis(gt: pd.DataFrame, preds: Mapping[str, MatchLike | None], hop_s: float = 0.5, *,
                   segment_s: float = 1.0, ref_paths: Mapping[str, str] | None = None,
                   query_seq_lens: Mapping[str, int] | None = None) -> pd.DataFrame:
    """One row per ground-truth query with the NMFP analysis columns (+ query_id, ref_id, pred_item_id).

    `preds` maps query_id to its thresholded Match (item_id None = no match); a query missing
    from `preds` counts as no match. Predicted items are shown by their path from `ref_paths`,
    else the reference paths known from `gt`, else the item id. `query_fp_path` is the query's
    `query_path`; `query_seq_len` comes from `query_seq_lens` or is derived from `length_s`.
    """
    need = ["query_id", "query_path", "ref_id", "ref_path", "offset_s", "length_s", "degradation", "in_db"]
    missing = [c for c in need if c not in gt.columns]
    if missing:
        raise ValueError(f"ground truth lacks columns {missing}")
    n = len(gt)
    query_ids = gt["query_id"].astype(str).to_numpy(dtype=object)
    in_db = _as_bool(gt["in_db"])
    has_ref = _nonempty(gt["ref_id"])
    if np.any(in_db & ~has_ref):
        bad = query_ids[in_db & ~has_ref][:5]
        raise ValueError(f"in-db queries without ref_id: {list(bad)}")
    ref_id = np.where(in_db, gt["ref_id"].astype(str).to_numpy(dtype=object), None)
    paths = {str(r): str(p) for r, p in zip(gt["ref_id"], gt["ref_path"]) if pd.notna(r) and str(r) != ""}
    paths.update(ref_paths or {})

    length_s = gt["length_s"].to_numpy(np.float64)
    gt_seg = ground_truth_segment(gt["offset_s"].fillna(0).to_numpy(np.float64), hop_s)
    if query_seq_lens is not None:
        seq_len = np.array([int(query_seq_lens[q]) for q in query_ids], np.int64)
    else:
        seq_len = query_segment_count(length_s, hop_s, segment_s)

    pred_item = np.empty(n, object)
    pred_seg = np.zeros(n, np.int64)
    score = np.full(n, np.nan)
    for j, qid in enumerate(query_ids):
        m = preds.get(qid)
        if m is None:
            continue
        score[j] = float(m.score)
        if m.item_id is not None:
            pred_item[j] = str(m.item_id)
            pred_seg[j] = int(m.offset_segment)
    returned = np.array([p is not None for p in pred_item], bool)
    hit = in_db & returned & (pred_item == ref_id)
    diff = np.abs(pred_seg - gt_seg)
    return pd.DataFrame({
        "query_id": query_ids,
        "query_fp_path": gt["query_path"].astype(str).to_numpy(dtype=object),
        "query_seq_len": seq_len,
        "gt_ref_id": ref_id,
        "gt_track_path": np.where(in_db, gt["ref_path"].astype(str).to_numpy(dtype=object), ""),
        "gt_start_segment": pd.Series(gt_seg, dtype="Int64").where(in_db, pd.NA).array,
        "pred_item_id": pred_item,
        "pred_track_path": np.array([paths.get(p, p) if p is not None else "" for p in pred_item], object),
        "pred_start_segment": pd.Series(pred_seg, dtype="Int64").where(returned, pd.NA).array,
        "score": score,
        "track_hit": hit,
        "segment_exact": hit & (diff == 0),
        "segment_near": hit & (diff <= 1),
        "segment_far": hit & (diff > 1),
        "degradation": gt["degradation"].astype(str).to_numpy(dtype=object),
        "length_s": length_s,
        "in_db": in_db,
    })


# ---------------------------------------------------------------- summaries
def _rate(flags: np.ndarray) -> float | None:
    return float(np.mean(flags)) if len(flags) else None


def _flags(analysis: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {name: _as_bool(analysis[name]) for name in _FLAGS}
    out["returned"] = _nonempty(analysis["pred_track_path"])
    return out


def _group_summary(f: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, Any]:
    in_sel = sel & f["in_db"]
    oov_sel = sel & ~f["in_db"]
    out: dict[str, Any] = {rate: _rate(f[_FLAG_OF_RATE[rate]][in_sel]) for rate in RATE_NAMES}
    out["false_match_rate"] = _rate(f["returned"][oov_sel])
    out["wrong_track_rate"] = _rate((f["returned"] & ~f["track_hit"])[in_sel])
    out["n_queries"] = int(sel.sum())
    return out


def summarize(analysis: pd.DataFrame, query_lengths: Sequence[float] | None = None) -> dict[str, Any]:
    """The DVC metrics dict from a per-query table (see `evaluate`).

    Rates with no query to average over are None (JSON null), not 0, so an empty bucket is
    not mistaken for a total failure.
    """
    f = _flags(analysis)
    lengths = analysis["length_s"].to_numpy(np.float64)
    if query_lengths is None:
        query_lengths = sorted(set(lengths.tolist()))
    metrics: dict[str, Any] = {rate: {} for rate in RATE_NAMES}
    for length in query_lengths:
        sel = np.isclose(lengths, float(length)) & f["in_db"]
        for rate in RATE_NAMES:
            metrics[rate][length_key(length)] = _rate(f[_FLAG_OF_RATE[rate]][sel])
    everyone = np.ones(len(analysis), bool)
    overall = _group_summary(f, everyone)
    metrics["false_match_rate"] = overall["false_match_rate"]
    metrics["wrong_track_rate"] = overall["wrong_track_rate"]
    metrics["n_queries"] = overall["n_queries"]
    degradations = analysis["degradation"].astype(str).to_numpy()
    metrics["by_degradation"] = {
        d: _group_summary(f, degradations == d) for d in sorted(set(degradations.tolist()))}
    return metrics


def evaluate(gt: pd.DataFrame, preds: Mapping[str, MatchLike | None], hop_s: float = 0.5,
             query_lengths: Sequence[float] | None = None, *, segment_s: float = 1.0,
             ref_paths: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Metrics in the DVC metrics.json shape.

    ``{"track_hit_rate": {"1s": .., ...}, "segment_exact": {...}, "segment_near": {...},
    "segment_far": {...}, "false_match_rate": .., "wrong_track_rate": .., "n_queries": ..,
    "by_degradation": {"noise": {"track_hit_rate": .., "segment_exact": .., "segment_near": ..,
    "segment_far": .., "false_match_rate": .., "wrong_track_rate": .., "n_queries": ..}, ...}}``

    Length keys come from `query_lengths` (default: the lengths present in `gt`);
    `by_degradation` pools all lengths.
    """
    analysis = build_analysis(gt, preds, hop_s, segment_s=segment_s, ref_paths=ref_paths)
    return summarize(analysis, query_lengths)


# ---------------------------------------------------------------- NMFP files
def _write_csv_atomically(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    frame.to_csv(tmp, index=False, na_rep="")
    os.replace(tmp, out)
    return out


def _as_frame(rows: pd.DataFrame | Iterable[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"rows lack columns {missing}")
    return frame.loc[:, list(columns)].copy()


def write_results_csv(path: str | os.PathLike[str], rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> Path:
    """NMFP results.csv: query_fp_path,query_seq_len,pred_track_path,pred_start_segment,score.

    `rows` is a DataFrame (e.g. `build_analysis` output) or dicts with those keys; a query
    without match has empty pred_track_path and pred_start_segment.
    """
    frame = _as_frame(rows, RESULTS_COLUMNS)
    frame["pred_start_segment"] = pd.array(frame["pred_start_segment"], dtype="Int64")
    return _write_csv_atomically(frame, path)


def write_analysis_csv(path: str | os.PathLike[str], analysis: pd.DataFrame) -> Path:
    """NMFP-style analysis.csv, one row per query, flags written as 0/1."""
    frame = _as_frame(analysis, ANALYSIS_COLUMNS)
    for name in _FLAGS:
        frame[name] = _as_bool(frame[name]).astype(np.int8)
    for name in ("gt_start_segment", "pred_start_segment"):
        frame[name] = pd.array(frame[name], dtype="Int64")
    return _write_csv_atomically(frame, path)


def read_analysis_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read an analysis.csv back (empty paths stay empty strings, flags become bool)."""
    frame = pd.read_csv(path, dtype={"gt_track_path": str, "pred_track_path": str, "query_fp_path": str,
                                     "degradation": str}, keep_default_na=False, na_values={"score": [""]})
    for name in _FLAGS:
        frame[name] = _as_bool(frame[name])
    for name in ("gt_start_segment", "pred_start_segment"):
        frame[name] = pd.to_numeric(frame[name].replace("", pd.NA)).astype("Int64")
    return frame


# ---------------------------------------------------------------- plot data
def hit_rate_by_length(analysis: pd.DataFrame) -> pd.DataFrame:
    """DVC plot data: in-db rates per query length (length_s, track_hit_rate, segment_exact, segment_near)."""
    f = _flags(analysis)
    frame = pd.DataFrame({"length_s": analysis["length_s"].to_numpy(np.float64), "track_hit_rate": f["track_hit"],
                          "segment_exact": f["segment_exact"], "segment_near": f["segment_near"]})[f["in_db"]]
    out = frame.groupby("length_s", as_index=False).mean()
    return out.astype({"track_hit_rate": float, "segment_exact": float, "segment_near": float})


def hit_rate_by_degradation(analysis: pd.DataFrame) -> pd.DataFrame:
    """DVC plot data, long format: in-db track hit rate per (degradation, length_s)."""
    f = _flags(analysis)
    frame = pd.DataFrame({"degradation": analysis["degradation"].astype(str).to_numpy(dtype=object),
                          "length_s": analysis["length_s"].to_numpy(np.float64),
                          "track_hit_rate": f["track_hit"]})[f["in_db"]]
    out = frame.groupby(["degradation", "length_s"], as_index=False).mean()
    return out.astype({"track_hit_rate": float}).sort_values(["degradation", "length_s"], ignore_index=True)


def plot_hit_rates(analysis: pd.DataFrame, path_png: str | os.PathLike[str]) -> Path:
    """PNG of track hit rate vs query length, one line per degradation (plus all), for MLflow.

    Uses the object-oriented Figure API, not pyplot, so it is thread-safe and needs no display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for degradation, group in hit_rate_by_degradation(analysis).groupby("degradation"):
        ax.plot(group["length_s"], group["track_hit_rate"], marker="o", label=str(degradation))
    overall = hit_rate_by_length(analysis)
    if len(overall):
        ax.plot(overall["length_s"], overall["track_hit_rate"], color="black", linestyle="--",
                marker="s", label="all")
    ax.set_xlabel("query length (s)")
    ax.set_ylabel("track hit rate (in-db queries)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    out = Path(path_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
