"""The versions pipeline's stages. Each is one plain function `(params, paths, tracker, **options) -> dict`.

corpus -> ingest (metadata cache) -> features (16 kHz PCM + CQT cache) -> train -> extract (test
collection to shards) -> evaluate (track + segment MAP/MR1/NAR, trained vs untrained); baseline
(Essentia chroma + Qmax) reads the same features' PCM and test collection.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.catalog.manifest import build_manifest, read_manifest, write_manifest
from avmatch.config import Params
from avmatch.tracking import StageTracker
from pipelines.io import bad_files_table, write_csv, write_json
from pipelines.versions.paths import VersionsPaths

log = logging.getLogger(__name__)


def corpus(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Build the offline corpus (chorale families + folk-tune versions), or with source shs100k / discogs_vi
    turn that dataset's metadata into the same tracks.csv (docs/datasets.md)."""
    cp = params.versions.corpus
    if cp.source == "builtin":
        from avmatch.corpora.versions import build_versions_corpus

        info = build_versions_corpus(cp.size, cp.seed, paths.corpus, cp.folk_tunes, cp.folk_versions,
                                     cp.chorale_versions, cp.reharm_versions)
    else:
        from avmatch.catalog.version_datasets import import_version_dataset

        def resolve(p: str) -> Path:
            q = Path(p).expanduser()
            return q if q.is_absolute() else paths.root / q

        info = import_version_dataset(cp.source, resolve(cp.metadata), resolve(cp.audio_root), paths.corpus, cp.seed)
    tracker.log_dict(info, "corpus.json")
    return {k: v for k, v in info.items() if isinstance(v, (int, float))}


def _tracks_table(paths: VersionsPaths) -> pd.DataFrame:
    from avmatch.corpora.versions import read_tracks_csv

    if not paths.tracks_csv.exists():
        raise FileNotFoundError(f"{paths.tracks_csv}: no tracks table (run the corpus stage)")
    t = pd.DataFrame(read_tracks_csv(paths.tracks_csv))
    t["file"] = [str(Path(p) if Path(p).is_absolute() else paths.corpus / p) for p in t["path"]]
    return t


def ingest(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Metadata cache: every listed file probed once (unchanged files reuse their row); missing or
    unreadable files become rows with status=error and the reason. Split and clique come from tracks.csv."""
    tracks = _tracks_table(paths)
    previous = read_manifest(paths.manifest) if paths.manifest.exists() else None
    df = build_manifest([Path(f) for f in tracks["file"]], base=paths.corpus, previous=previous, desc="ingest versions")
    df["id"] = tracks["id"].to_numpy()  # ids from the table (the adapters' files may live outside the corpus)
    df["split"] = tracks["split"].to_numpy()
    df["label"] = tracks["clique"].to_numpy()
    df["source"] = tracks["source"].to_numpy()
    write_manifest(df, paths.manifest)
    return {"files": len(df), "errors": int((df["status"] != "ok").sum()),
            **{f"{s}_files": int((df["split"] == s).sum()) for s in ("train", "val", "test")}}


def features(params: Params, paths: VersionsPaths, tracker: StageTracker, workers: int = 2) -> dict:
    """Decode to mono 16 kHz once (PCM cache), then the CQT of every track (CQT cache, per content hash).
    Tracks shorter than one segment are recorded as bad files with that reason."""
    from avmatch.features.cqt import cached_cqt
    from avmatch.features.pcm_cache import decode_manifest
    from avmatch.progress import progress

    vp = params.versions
    sr = vp.audio.sample_rate
    items = decode_manifest(read_manifest(paths.manifest), paths.pcm_cache, sr, workers=workers, desc="decode versions")
    items["cqt_file"] = ""
    t0 = time.perf_counter()
    for i in progress(list(items.index[items["status"] == "ok"]), desc="CQT", unit="file"):
        row = items.loc[i]
        if row["n_samples"] < vp.audio.segment_s * sr:
            items.loc[i, ["status", "error"]] = ["error", f"shorter than one segment ({row['n_samples'] / sr:.1f} s "
                                                          f"< {vp.audio.segment_s:g} s)"]
            continue
        items.loc[i, "cqt_file"] = str(cached_cqt(row["pcm_file"], row["content_hash"], paths.cqt_cache, sr, vp.cqt))
    cqt_s = time.perf_counter() - t0
    write_manifest(items, paths.items)
    bad = bad_files_table({"tracks": items})
    write_csv(paths.bad_files, bad)
    for r in bad.itertuples():
        log.warning("skipped %s: %s", r.path, r.reason)
    tracker.log_artifact(paths.bad_files)
    ok = items[items["status"] == "ok"]
    return {"items": len(ok), "bad_files": len(bad), "hours": float(ok["n_samples"].sum() / sr / 3600),
            "cqt_seconds": cqt_s}


def _ok_items(paths: VersionsPaths, splits: tuple[str, ...]) -> pd.DataFrame:
    items = read_manifest(paths.items)
    return items[(items["status"] == "ok") & items["split"].isin(splits)].reset_index(drop=True)


def _seg_frames(params: Params) -> tuple[int, int]:
    from avmatch.features.cqt import frames_per_second

    fps = frames_per_second(params.versions.cqt)
    return int(round(params.versions.audio.segment_s * fps)), max(1, int(round(params.versions.audio.hop_s * fps)))


def embed_items(model, items: pd.DataFrame, params: Params, device, desc: str = "embed"
                ) -> tuple[pd.DataFrame, np.ndarray]:
    """Segment embeddings of every item (rows: item_id, segment, start_s, end_s)."""
    from avmatch.features.cqt import frames_per_second, segment_frames
    from avmatch.progress import progress
    from avmatch.training.versions import embed_windows

    seg, hop = _seg_frames(params)
    fps = frames_per_second(params.versions.cqt)
    metas, vecs = [], []
    for row in progress(items.itertuples(), desc=desc, total=len(items), unit="track"):
        win, starts = segment_frames(np.load(row.cqt_file).astype(np.float32), seg, hop)
        v = embed_windows(model, win, device, params.versions.extract.batch_size)
        metas.append(pd.DataFrame({"item_id": row.id, "segment": np.arange(len(v)), "start_s": starts / fps,
                                   "end_s": (starts + seg) / fps}))
        vecs.append(v)
    if not metas:
        empty = pd.DataFrame(columns=["item_id", "segment", "start_s", "end_s"])
        return empty, np.zeros((0, params.versions.model.dim), np.float32)
    return pd.concat(metas, ignore_index=True), np.concatenate(vecs)


def _validation_map(params: Params, items: pd.DataFrame):
    def score(model, device) -> float:
        return track_map(model, device, params, items)

    return score


def track_map(model, device, params: Params, items: pd.DataFrame) -> float:
    """Track-level MAP of a model over `items` (every track queries the others; full tracks, no augmentation)."""
    from avmatch.search.version_retrieval import Collection, track_distance_matrix
    from pipelines.versions.evaluation import evaluate_track_distances

    ev = params.versions.evaluate
    clique_of = dict(zip(items["id"], items["label"]))
    meta, vecs = embed_items(model, items, params, device, desc="track MAP")
    coll = Collection.from_rows(meta, vecs)
    dist = track_distance_matrix(coll, ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates)
    res = evaluate_track_distances(dist, [clique_of[t] for t in coll.track_ids], bootstrap=0)
    return float(res["metrics"]["MAP"])


def train(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Contrastive training (CLEWS loss by default) on the train split of the chosen sources; the weights
    with the best validation MAP are kept."""
    from avmatch.models.clews import save_encoder
    from avmatch.training.versions import train_version_encoder

    vp = params.versions
    tr = _ok_items(paths, ("train",))
    if vp.corpus.source == "builtin":   # `sources` picks among the built corpus' materials
        tr = tr[tr["source"].isin(vp.train.sources)].reset_index(drop=True)
    # an imported dataset (SHS100K, Discogs-VI) trains on all of its train split
    if tr.empty:
        raise RuntimeError(f"no usable training tracks in the train split (corpus source {vp.corpus.source}, "
                           f"training sources {vp.train.sources}; see {paths.bad_files})")
    feats = [np.load(f) for f in tr["cqt_file"]]
    val = _ok_items(paths, ("val",))
    seg, _ = _seg_frames(params)

    def on_log(metrics: dict, step: int) -> None:
        tracker.log_metrics(metrics, step=step)

    result = train_version_encoder(feats, list(tr["label"]), _validation_map(params, val) if len(val) else None,
                                   vp.train, vp.model, vp.cqt, seg, params.common.seed, params.common.device, on_log,
                                   list(tr["source"]))
    save_encoder(result.model, paths.encoder, {"model": vp.model.model_dump(), "cqt": vp.cqt.model_dump(),
                                               "audio": vp.audio.model_dump()})
    history = pd.DataFrame(result.history)
    write_csv(paths.plots / "train_history.csv", history)
    tracker.log_artifact(paths.plots / "train_history.csv", "plots")
    # what training learnt on its own material (seen cliques, clean full tracks) vs the seeded untrained encoder
    import torch

    from avmatch.device import resolve_device
    from avmatch.models.clews import VersionEncoder

    device = resolve_device(params.common.device)
    torch.manual_seed(params.common.seed)
    untrained = VersionEncoder.from_params(vp.model, vp.cqt).to(device).eval()
    summary_fit = {"train_map": track_map(result.model, device, params, tr),
                   "train_map_untrained": track_map(untrained, device, params, tr)}
    summary = {**summary_fit, "steps": result.steps, "train_seconds": result.seconds, "best_step": result.best_step,
               "best_val_map": result.best_val_map, "train_tracks": len(tr),
               "train_cliques": int(tr["label"].nunique()),
               **{f"train_tracks_{s}": int((tr["source"] == s).sum()) for s in vp.train.sources}}
    write_json(paths.metrics / "versions_train.json", summary)
    return summary


def _shard_key(params: Params, paths: VersionsPaths) -> str:
    """What the stored embeddings depend on: the encoder and how tracks are cut into segments (a changed
    hop or segment length must re-extract, not reuse shards of the old segmentation)."""
    from avmatch.hashing import file_hash

    a = params.versions.audio
    return f"{file_hash(paths.encoder)}-seg{a.segment_s:g}-hop{a.hop_s:g}"


def extract(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Per-track segment embeddings of the test collection into resumable Parquet shards."""
    from avmatch.device import resolve_device
    from avmatch.models.clews import load_encoder
    from avmatch.store.shards import ShardStore

    vp = params.versions
    device = resolve_device(params.common.device)
    model, _ = load_encoder(paths.encoder, device)
    items = _ok_items(paths, ("test",))
    store = ShardStore(paths.shards, vp.model.dim, _shard_key(params, paths), reset_on_mismatch=True)
    done = store.done_keys()
    todo = items[[(i, h) not in done for i, h in zip(items["id"], items["content_hash"])]]
    t0 = time.perf_counter()
    segments = 0
    with store.writer(0, vp.extract.shard_items) as writer:
        for start in range(0, len(todo), vp.extract.shard_items):
            chunk = todo.iloc[start:start + vp.extract.shard_items]
            meta, vecs = embed_items(model, chunk, params, device, desc="extract versions")
            for row in chunk.itertuples():
                sel = (meta["item_id"] == row.id).to_numpy()
                writer.add_item(row.id, row.content_hash, vecs[sel], meta["start_s"].to_numpy()[sel],
                                meta["end_s"].to_numpy()[sel])
            segments += len(meta)
    seconds = time.perf_counter() - t0
    audio_s = float(todo["n_samples"].sum() / vp.audio.sample_rate)
    return {"items": len(items), "embedded": len(todo), "resumed_skipped": len(items) - len(todo),
            "segments": segments, "x_realtime": audio_s / seconds if seconds > 0 else 0.0}


def _write_eval_outputs(paths: VersionsPaths, tracker: StageTracker, name: str, result: dict, extra: dict,
                        label: str) -> dict:
    from pipelines.versions.evaluation import metrics_json, plot_data

    m = metrics_json(result, extra)
    write_json(paths.metrics / f"{name}.json", m)
    ranks, pr = plot_data(result, label)
    write_csv(paths.plots / f"{name}_ranks.csv", ranks)
    write_csv(paths.plots / f"{name}_pr.csv", pr)
    tracker.log_metrics({f"{label}_{lvl}_{k}": v for lvl in ("track", "segment") for k, v in m[lvl].items()})
    tracker.log_dict(m, f"{name}.json")
    return m


def evaluate(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Every test track queries all others; segment queries against all segments; trained and untrained."""
    import torch

    from avmatch.device import resolve_device
    from avmatch.models.clews import VersionEncoder
    from avmatch.search.version_retrieval import Collection
    from avmatch.store.shards import ShardStore
    from pipelines.versions.evaluation import evaluate_collection, plot_results

    vp, ev = params.versions, params.versions.evaluate
    items = _ok_items(paths, ("test",))
    clique_of = dict(zip(items["id"], items["label"]))
    store = ShardStore(paths.shards, vp.model.dim, _shard_key(params, paths))
    meta, vecs = store.read(dict(zip(items["id"], items["content_hash"])))
    if len(vecs) == 0:
        raise RuntimeError(f"no test embeddings in {paths.shards} (run the extract stage)")
    args = (ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates, ev.max_segment_queries, ev.bootstrap,
            params.common.seed)
    t0 = time.perf_counter()
    res = evaluate_collection(Collection.from_rows(meta, vecs), clique_of, *args)
    per_query_s = (time.perf_counter() - t0) / max(1, res["track"]["n_queries"])
    m = _write_eval_outputs(paths, tracker, "versions", res, {"reduction": ev.reduction, "tracks": len(items),
                                                              "seconds_per_query": per_query_s}, "trained")
    ranks, pr = [pd.read_csv(paths.plots / f"versions_{k}.csv") for k in ("ranks", "pr")]
    summary = {f"{lvl}_{k}": v for lvl in ("track", "segment") for k, v in m[lvl].items()}
    if ev.compare_untrained:
        torch.manual_seed(params.common.seed)
        device = resolve_device(params.common.device)
        model = VersionEncoder.from_params(vp.model, vp.cqt).to(device).eval()
        umeta, uvecs = embed_items(model, items, params, device, desc="untrained")
        ures = evaluate_collection(Collection.from_rows(umeta, uvecs), clique_of, *args)
        um = _write_eval_outputs(paths, tracker, "versions_untrained", ures, {"reduction": ev.reduction}, "untrained")
        summary.update({f"untrained_{lvl}_{k}": v for lvl in ("track", "segment") for k, v in um[lvl].items()})
        ranks = pd.concat([ranks, pd.read_csv(paths.plots / "versions_untrained_ranks.csv")])
        pr = pd.concat([pr, pd.read_csv(paths.plots / "versions_untrained_pr.csv")])
    png = plot_results(ranks, pr, paths.results / "versions.png")
    tracker.log_artifact(png, "plots")
    summary["seconds_per_query"] = per_query_s
    return summary


def reevaluate(params: Params, paths: VersionsPaths, tracker: StageTracker, model_file) -> dict:
    """A given (registered) encoder on the current test collection (scheduled runs); flat metrics."""
    from avmatch.device import resolve_device
    from avmatch.models.clews import load_encoder
    from avmatch.search.version_retrieval import Collection
    from pipelines.versions.evaluation import evaluate_collection, metrics_json

    ev = params.versions.evaluate
    device = resolve_device(params.common.device)
    model, _ = load_encoder(model_file, device)
    items = _ok_items(paths, ("test",))
    meta, vecs = embed_items(model, items, params, device, desc="reevaluate")
    res = evaluate_collection(Collection.from_rows(meta, vecs), dict(zip(items["id"], items["label"])),
                              ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates, ev.max_segment_queries,
                              0, params.common.seed)
    m = metrics_json(res)
    tracker.log_dict(m, "reevaluate_metrics.json")
    return {f"{lvl}_{k}": v for lvl in ("track", "segment") for k, v in m[lvl].items()}


def baseline(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Essentia chroma cross-similarity + Qmax on the same test collection (track level; segment level
    with the same 20 s segments against each other)."""
    from avmatch.features.pcm_cache import load_pcm
    from avmatch.metrics.versions import per_query, precision_recall, summarize
    from avmatch.progress import progress
    from avmatch.search.qmax_baseline import QmaxScorer, hpcp
    from pipelines.versions.evaluation import evaluate_track_distances, plot_results

    vp, bp = params.versions, params.versions.baseline
    items = _ok_items(paths, ("test",))
    if len(items) > bp.max_tracks:
        items = items.sample(bp.max_tracks, random_state=params.common.seed).sort_values("id").reset_index(drop=True)
        log.warning("baseline: test collection capped at %d tracks (versions.baseline.max_tracks)", bp.max_tracks)
    sr = vp.audio.sample_rate
    t0 = time.perf_counter()
    chroma = [hpcp(load_pcm(f), sr, bp.frame_size, bp.hop_size)
              for f in progress(items["pcm_file"], desc="HPCP", total=len(items), unit="track")]
    feat_s = time.perf_counter() - t0
    scorer = QmaxScorer(bp.frame_stack)
    n = len(items)
    dist = np.full((n, n), np.inf, np.float32)
    t1 = time.perf_counter()
    # each unordered pair is aligned once (both directions share it): half the cost; a query's time is
    # reported as the time of its n-1 alignments
    for i in progress(range(n), desc="Qmax", total=n, unit="query"):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = scorer.distance(chroma[i], chroma[j])
    pairs = n * (n - 1) / 2
    query_s = (time.perf_counter() - t1) / max(1.0, pairs) * (n - 1)
    cliques = list(items["label"])
    track = evaluate_track_distances(dist, cliques, vp.evaluate.bootstrap, params.common.seed)

    # segment level: 20 s chroma windows (hop as at extraction) aligned against each other with Qmax
    fps = sr / bp.hop_size
    seg, hop = int(round(vp.audio.segment_s * fps)), max(1, int(round(vp.audio.hop_s * fps)))
    segs, owner = [], []
    for ti, c in enumerate(chroma):
        for s in range(0, max(1, len(c) - seg + 1), hop):
            segs.append(c[s:s + seg])
            owner.append(ti)
    owner_a = np.asarray(owner)
    rng = np.random.default_rng(params.common.seed)
    sizes = pd.Series(cliques).value_counts()
    cand_rows = np.flatnonzero([sizes[cliques[t]] > 1 for t in owner_a])
    q_rows = np.sort(rng.choice(cand_rows, min(len(cand_rows), bp.max_segment_queries), replace=False))
    sd = np.full((len(q_rows), len(segs)), np.inf, np.float32)
    for qi, r in enumerate(progress(q_rows, desc="Qmax segments", total=len(q_rows), unit="query")):
        for j in range(len(segs)):
            if owner_a[j] != owner_a[r]:
                sd[qi, j] = scorer.distance(segs[r], segs[j])
    c_rows = np.asarray(cliques, dtype=object)[owner_a]
    valid = owner_a[None, :] != owner_a[q_rows][:, None]
    relevant = (c_rows[None, :] == c_rows[q_rows][:, None]) & valid
    pq = per_query(sd, relevant, valid)
    sp, sci = summarize(pq, vp.evaluate.bootstrap, params.common.seed)
    segment = {"metrics": sp, "ci95": sci, "n_queries": int(len(pq["AP"])), "ranks": pq["R1"],
               "pr": precision_recall(sd, relevant, valid)}
    res = {"track": track, "segment": segment}
    m = _write_eval_outputs(paths, tracker, "versions_baseline", res,
                            {"tracks": n, "seconds_per_query": query_s, "chroma_seconds": feat_s,
                             "method": "essentia HPCP + ChromaCrossSimilarity (OTI) + CoverSongSimilarity (Qmax)"},
                            "qmax")
    ranks, pr = [pd.read_csv(paths.plots / f"versions_baseline_{k}.csv") for k in ("ranks", "pr")]
    tracker.log_artifact(plot_results(ranks, pr, paths.results / "versions_baseline.png"), "plots")
    return {**{f"{lvl}_{k}": v for lvl in ("track", "segment") for k, v in m[lvl].items()},
            "seconds_per_query": query_s, "tracks": n}


STAGES = {
    "corpus": corpus,
    "ingest": ingest,
    "features": features,
    "train": train,
    "extract": extract,
    "evaluate": evaluate,
    "baseline": baseline,
}
