"""What the Qmax baseline and re-rank stages share: chroma of a collection's tracks, the Qmax scorer from
params, and writing one metrics file for several collections (the first one also at the top level, as a
single-collection file had it)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.io import write_csv, write_json
from pipelines.versions.paths import VersionsPaths
from pipelines.versions.shared import ok_items

log = logging.getLogger(__name__)


def collection_items(paths: VersionsPaths, split: str, key: str) -> pd.DataFrame:
    """The decodable tracks of one collection (a split of the corpus); fewer than two is an error naming
    `key`, the params list that asked for it."""
    items = ok_items(paths, (split,))
    if len(items) < 2:
        raise RuntimeError(f"collection '{split}' has {len(items)} decodable track(s) in {paths.items}: "
                           f"{key} must name splits of the corpus")
    return items


def qmax_scorer(params: Params, frame_stack: int | None = None):
    """Essentia cross-similarity + Qmax with `versions.baseline.qmax` (optionally another frame stack)."""
    from avmatch.versions.qmax_baseline import QmaxScorer, QmaxSettings

    q = params.versions.baseline.qmax
    return QmaxScorer(QmaxSettings(frame_stack or q.frame_stack, q.binarize_percentile, q.oti, q.dis_onset,
                                   q.dis_extension, q.alignment, q.distance))


def hpcp_chroma(params: Params, items: pd.DataFrame, desc: str) -> tuple[list[np.ndarray], list[str]]:
    """HPCP of each track, decoded from its file at `versions.baseline.hpcp.sample_rate`; files that fail to
    decode get an empty chroma and are named in the returned list (logged with the reason)."""
    from avmatch.core.audio import MediaError, decode_audio
    from avmatch.core.progress import progress
    from avmatch.versions.qmax_baseline import hpcp

    hp = params.versions.baseline.hpcp
    out, failed = [], []
    for path in progress(items["path"], desc=desc, total=len(items), unit="track"):
        try:
            audio = decode_audio(path, hp.sample_rate)
        except MediaError as exc:
            log.error("%s: %s (left out of the Qmax collection)", path, exc.reason)
            out.append(np.zeros((0, 12), np.float32))
            failed.append(str(path))
            continue
        out.append(hpcp(audio, hp.sample_rate, hp.frame_size, hp.hop_size, hp.pool))
    return out, failed


def hpcp_splits(params: Params) -> tuple[str, ...]:
    """The splits whose tracks the hpcp stage stores: every collection of the baseline and the re-ranker."""
    return tuple(dict.fromkeys([*params.versions.baseline.collections, *params.versions.rerank.collections]))


def load_hpcp(paths: VersionsPaths, items: pd.DataFrame) -> tuple[list[np.ndarray], list[str]]:
    """The hpcp stage's stored HPCP of each item (an empty [0, 12] chroma where it failed to decode, those
    files returned as the second value); an item it never saw is an error naming the cause."""
    index = pd.read_csv(paths.hpcp / "index.csv") if (paths.hpcp / "index.csv").exists() else None
    if index is None or not set(items["content_hash"]) <= set(index["content_hash"]):
        raise RuntimeError(f"{paths.hpcp} lacks HPCP of some tracks: run the versions hpcp stage for these "
                           "collections (it stores versions.baseline.collections + versions.rerank.collections)")
    out, failed = [], []
    for h, path in zip(items["content_hash"], items["path"]):
        f = paths.hpcp / f"{h}.npy"
        if f.exists():
            out.append(np.load(f))
        else:
            out.append(np.zeros((0, 12), np.float32))
            failed.append(str(path))
    return out, failed


def cqt_chroma_of(params: Params, items: pd.DataFrame) -> list[np.ndarray]:
    """The features stage's cached CQT of each track folded to 12 pitch classes (versions.rerank.cqt_pool)."""
    from avmatch.versions.rerank import cqt_chroma

    return [cqt_chroma(np.load(f), params.versions.cqt.bins_per_octave, params.versions.rerank.cqt_pool)
            for f in items["cqt_file"]]


def write_collections(paths: VersionsPaths, tracker: StageTracker, name: str, docs: dict[str, dict],
                      plots: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> dict:
    """metrics/<name>.json: the first collection's document at the top level plus `collections` with every
    collection's; plots/versions/<name>_{ranks,pr}.csv with every collection's rows; MLflow: each document's
    flat numbers prefixed by the collection name."""
    first = next(iter(docs))
    doc = {**docs[first], "collections": docs}
    write_json(paths.metrics / f"{name}.json", doc)
    for i, kind in enumerate(("ranks", "pr")):
        frames = [p[i] for p in plots.values() if len(p[i])]
        write_csv(paths.plots / f"{name}_{kind}.csv", pd.concat(frames, ignore_index=True) if frames
                  else pd.DataFrame())
    tracker.log_metrics({f"{c}_{k}": v for c, d in docs.items() for k, v in _flat(d).items()})
    tracker.log_dict(doc, f"{name}.json")
    return doc


def _flat(doc: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a metrics document as `a_b_c` keys (lists and strings left out)."""
    out: dict[str, float] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}_"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            out[key] = float(v)
    return out


def training_teacher(params: Params, paths: VersionsPaths, items: pd.DataFrame) -> np.ndarray:
    """The coarse Qmax's [N, N] distances between the training tracks `items` (versions.train.distill_teacher: the
    CQT folded to chroma, pooled, Qmax with versions.baseline.qmax and a shorter frame stack;
    `avmatch.versions.distill.teacher_distances`), for the distillation term (versions.train.distill_weight).
    Cached beside the training checkpoints, keyed by the tracks' content and order and the settings: ~N^2 / 2
    alignments, ~6 min of CPU for the demo's 885 training tracks."""
    import hashlib
    import json

    from avmatch.core.progress import progress
    from avmatch.versions.distill import teacher_distances
    from avmatch.versions.rerank import cqt_chroma

    dt, bpo = params.versions.train.distill_teacher, params.versions.cqt.bins_per_octave
    key = hashlib.sha256(json.dumps([list(items["content_hash"]), dt.model_dump(), bpo,
                                     params.versions.baseline.qmax.model_dump()]).encode()).hexdigest()[:16]
    f = paths.checkpoints / f"teacher_{key}.npy"
    if f.exists():
        return np.load(f)
    n = len(items)
    pairs = progress(((i, j) for i in range(n) for j in range(i + 1, n)), desc="teacher (coarse Qmax)",
                     total=n * (n - 1) // 2, unit="pair")
    chroma = [cqt_chroma(np.load(p), bpo, dt.cqt_pool) for p in items["cqt_file"]]
    d = teacher_distances(chroma, qmax_scorer(params, dt.frame_stack).distances, dt.pool, pairs)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f"{f.stem}.tmp.npy")
    np.save(tmp, d)
    tmp.replace(f)
    log.info("teacher distances of %d training tracks cached in %s", n, f)
    return d
