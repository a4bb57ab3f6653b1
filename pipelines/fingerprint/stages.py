"""The fingerprint pipeline's stages. Each is one plain function `(params, paths, tracker, **options) -> dict`.

`dvc.yaml` runs them through `avmatch stage fingerprint.<name>` and the Prefect flow wraps the same
functions as tasks; the returned dict is the stage's summary (logged to MLflow by the runner).
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd

from avmatch.catalog.manifest import build_manifest, read_manifest, scan_media, write_manifest
from avmatch.config import Params
from avmatch.features.pcm_cache import decode_manifest, load_pcm
from avmatch.tracking import StageTracker
from pipelines.fingerprint.paths import SETS, FingerprintPaths
from pipelines.io import bad_files_table, write_csv, write_json

log = logging.getLogger(__name__)


def corpus(params: Params, paths: FingerprintPaths, tracker: StageTracker) -> dict:
    """Build the offline demo corpus (references, training music, noise, degraded queries, ground truth),
    or with `fingerprint.corpus.source: nafp` link the NAFP dataset at `dataset_root` into the same layout
    and synthesize its queries (docs/datasets.md)."""
    cp = params.fingerprint.corpus
    if cp.source == "nafp":
        from pathlib import Path

        from avmatch.corpora.nafp import import_nafp_corpus

        dataset = Path(cp.dataset_root).expanduser()
        dataset = dataset if dataset.is_absolute() else paths.root / dataset
        info = import_nafp_corpus(dataset, paths.corpus, cp, cp.max_dummy_refs)
    else:
        from avmatch.corpora.fingerprint import build_fingerprint_corpus

        info = build_fingerprint_corpus(cp, paths.corpus)
    tracker.log_dict(info, "corpus.json")
    return {k: v for k, v in info.items() if isinstance(v, (int, float))}


def ingest(params: Params, paths: FingerprintPaths, tracker: StageTracker) -> dict:
    """Manifest per set: every file's header read once; unchanged files reuse the previous rows."""
    summary = {}
    for name in SETS:
        folder = paths.set_dir(name)
        files = scan_media(folder) if folder.exists() else []
        previous = read_manifest(paths.manifest(name)) if paths.manifest(name).exists() else None
        df = build_manifest(files, base=paths.corpus, split=name, previous=previous, desc=f"ingest {name}")
        write_manifest(df, paths.manifest(name))
        summary[f"{name}_files"] = len(df)
        summary[f"{name}_errors"] = int((df["status"] != "ok").sum())
    return summary


def features(params: Params, paths: FingerprintPaths, tracker: StageTracker, workers: int = 2) -> dict:
    """Decode every usable file once to mono 8 kHz PCM (the input of the log-mel front end)."""
    sr = params.fingerprint.audio.sample_rate
    frames = {}
    summary = {}
    for name in SETS:
        items = decode_manifest(read_manifest(paths.manifest(name)), paths.pcm_cache, sr, workers=workers,
                                desc=f"decode {name}")
        write_manifest(items, paths.items(name))
        frames[name] = items
        ok = items[items["status"] == "ok"]
        summary[f"{name}_items"] = len(ok)
        summary[f"{name}_hours"] = float(ok["n_samples"].sum() / sr / 3600)
    bad = bad_files_table(frames)
    write_csv(paths.bad_files, bad)
    for r in bad.itertuples():
        log.warning("skipped %s: %s", r.path, r.reason)
    summary["bad_files"] = len(bad)
    tracker.log_artifact(paths.bad_files)
    return summary


def _load_set_audio(paths: FingerprintPaths, name: str) -> tuple[pd.DataFrame, list[np.ndarray]]:
    items = read_manifest(paths.items(name))
    items = items[items["status"] == "ok"].reset_index(drop=True)
    return items, [load_pcm(p) for p in items["pcm_file"]]


def train(params: Params, paths: FingerprintPaths, tracker: StageTracker) -> dict:
    """Contrastive training of the fingerprint encoder with on-the-fly degradations; resumable."""
    from avmatch.models.nafp import save_encoder
    from avmatch.training.fingerprint import train_fingerprinter

    fp = params.fingerprint
    items, audio = _load_set_audio(paths, "train")
    if not audio:
        raise RuntimeError(f"no usable training audio in {paths.set_dir('train')} (see {paths.bad_files})")
    _, noise = _load_set_audio(paths, "noise_train")
    rng = np.random.default_rng(params.common.seed)
    order = rng.permutation(len(audio))
    n_val = max(1, len(audio) // 10) if len(audio) > 3 else 0
    val_audio = [audio[i] for i in order[:n_val]]
    train_audio = [audio[i] for i in order[n_val:]]

    def on_log(metrics: dict, step: int) -> None:
        tracker.log_metrics(metrics, step=step)

    result = train_fingerprinter(
        train_audio, noise, train_params=fp.train, model_params=fp.model, logmel_params=fp.logmel,
        audio_params=fp.audio, common_params=params.common, checkpoint_dir=paths.checkpoints, log=on_log,
        val_audio=val_audio or None)
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    save_encoder(result.model, paths.encoder, {"model": fp.model.model_dump(), "logmel": fp.logmel.model_dump(),
                                               "audio": fp.audio.model_dump()})
    history = pd.DataFrame(result.history)
    write_csv(paths.plots / "train_history.csv", history)
    def last(key: str) -> float:
        values = [h[key] for h in result.history if h.get(key) is not None]
        return float(values[-1]) if values else float("nan")

    summary = {"steps": result.steps, "train_seconds": result.seconds,
               "resumed_from_step": result.resumed_from_step if result.resumed_from_step is not None else -1,
               "final_loss": last("loss"), "val_top1": last("val_top1")}
    write_json(paths.metrics / "fingerprint_train.json", summary)
    tracker.log_artifact(paths.plots / "train_history.csv", "plots")
    return summary


def _model_and_device(params: Params, paths: FingerprintPaths):
    from avmatch.device import resolve_device
    from avmatch.hashing import file_hash
    from avmatch.models.nafp import load_encoder

    if not paths.encoder.exists():
        raise FileNotFoundError(f"{paths.encoder}: no trained encoder (run the train stage first)")
    device = resolve_device(params.common.device)
    return load_encoder(paths.encoder, device), device, file_hash(paths.encoder)


def extract(params: Params, paths: FingerprintPaths, tracker: StageTracker, partition: int = 0,
            num_partitions: int | None = None) -> dict:
    """Embed references and queries into Parquet shards (resumable, incremental, partitionable)."""
    from avmatch.embedding import extract_items
    from avmatch.store.export import export_nmfp
    from avmatch.store.shards import ShardStore

    fp = params.fingerprint
    num_partitions = num_partitions or fp.extract.num_partitions
    if not 0 <= partition < num_partitions:
        raise ValueError(f"--partition {partition} is outside 0..{num_partitions - 1}")
    model, device, model_hash = _model_and_device(params, paths)
    summary: dict = {}
    for name in ("refs", "queries"):
        items = read_manifest(paths.items(name))
        store = ShardStore(paths.shards(name), fp.model.dim, model_hash, reset_on_mismatch=True)
        rep = extract_items(model, items, store, fp.audio, device, fp.extract.batch_size, fp.extract.shard_items,
                            partition, num_partitions, desc=f"extract {name}")
        for k, v in rep.as_dict().items():
            if isinstance(v, dict):
                summary.update({f"{name}_{k}_{kk}": vv for kk, vv in v.items()})
            else:
                summary[f"{name}_{k}"] = v
    if num_partitions == 1:
        refs = read_manifest(paths.items("refs"))
        current = dict(zip(refs["id"], refs["content_hash"]))
        meta, vectors = ShardStore(paths.shards("refs"), fp.model.dim, model_hash).read(current)
        export_nmfp(meta, vectors, paths.export, dict(zip(refs["id"], refs["path"])))
    return summary


STAGES = {
    "corpus": corpus,
    "ingest": ingest,
    "features": features,
    "train": train,
    "extract": extract,
}


def index(params: Params, paths: FingerprintPaths, tracker: StageTracker) -> dict:
    """FAISS index (flat or IVF-PQ) over the reference segments, with its id map, saved to disk."""
    from avmatch.hashing import file_hash
    from avmatch.index.faiss_index import SegmentIndex
    from avmatch.store.shards import ShardStore

    fp = params.fingerprint
    refs = read_manifest(paths.items("refs"))
    refs = refs[refs["status"] == "ok"]
    store = ShardStore(paths.shards("refs"), fp.model.dim, file_hash(paths.encoder))
    current = dict(zip(refs["id"], refs["content_hash"]))
    ix = fp.index
    if ix.partitions > 1:
        seg_index = _index_by_partition(store, current, ix, paths)
    else:
        meta, vectors = store.read(current)
        if len(vectors) == 0:
            raise RuntimeError(f"no reference fingerprints in {paths.shards('refs')} (run the extract stage)")
        seg_index = SegmentIndex.build(vectors, meta[["item_id", "segment", "start_s"]], ix.type, nlist=ix.nlist,
                                       pq_m=ix.pq_m, pq_nbits=ix.pq_nbits, nprobe=ix.nprobe)
        if paths.index.exists():
            shutil.rmtree(paths.index)
        seg_index.save(paths.index)
    return {"segments": seg_index.ntotal, "items": len(seg_index.item_ids),
            "bytes_per_segment": seg_index.bytes_per_segment(), "partitions": ix.partitions}


def _index_by_partition(store, current: dict, ix, paths: FingerprintPaths):
    """Train once on a sample, add each partition to its own copy, merge (docs/scaling.md)."""
    from avmatch.index.partitioned import add_partition, merge_partitions, partition_offsets, train_shared
    from avmatch.progress import progress

    work = paths.data / "index_parts"
    if work.exists():
        shutil.rmtree(work)
    sizes, sample = [], []
    rng = np.random.default_rng(0)
    per_part = max(1, ix.train_sample // ix.partitions)
    for p in range(ix.partitions):   # pass 1: sizes (for global ids) and the training sample
        meta, vectors = store.read(current, p, ix.partitions)
        sizes.append(len(vectors))
        if len(vectors):
            sample.append(vectors[np.sort(rng.choice(len(vectors), min(per_part, len(vectors)), replace=False))])
    if not sum(sizes):
        raise RuntimeError(f"no reference fingerprints in {store.root} (run the extract stage)")
    trained = train_shared(work, store.dim, ix.type, np.concatenate(sample), nlist=ix.nlist, pq_m=ix.pq_m,
                           pq_nbits=ix.pq_nbits, nprobe=ix.nprobe)
    offsets = partition_offsets(sizes)
    parts = []
    for p in progress(range(ix.partitions), desc="index partitions", unit="part"):
        if not sizes[p]:
            continue
        meta, vectors = store.read(current, p, ix.partitions)
        parts.append(add_partition(trained, vectors, meta[["item_id", "segment", "start_s"]], work / f"part-{p:03d}",
                                   offsets[p]))
    merged = merge_partitions(trained, parts, paths.index, ondisk=ix.ondisk)
    shutil.rmtree(work)
    return merged


def _query_vectors(meta: pd.DataFrame, vectors: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for item_id, rows in meta.groupby("item_id", sort=False).indices.items():
        out[item_id] = vectors[np.sort(rows)]
    return out


def evaluate(params: Params, paths: FingerprintPaths, tracker: StageTracker) -> dict:
    """Search every query, choose the no-match threshold on validation queries, score the test queries."""
    from avmatch.hashing import file_hash
    from avmatch.index.faiss_index import SegmentIndex
    from avmatch.metrics.fingerprint import (hit_rate_by_degradation, hit_rate_by_length, plot_hit_rates,
                                             write_analysis_csv, write_results_csv)
    from avmatch.store.shards import ShardStore
    from pipelines.fingerprint.evaluation import evaluate_queries, read_ground_truth

    fp = params.fingerprint
    gt = read_ground_truth(paths.ground_truth)
    queries = read_manifest(paths.items("queries"))
    store = ShardStore(paths.shards("queries"), fp.model.dim, file_hash(paths.encoder))
    meta, vectors = store.read(dict(zip(queries["id"], queries["content_hash"])))
    qvecs = _query_vectors(meta, vectors)
    refs = read_manifest(paths.items("refs"))
    ref_paths = dict(zip(refs["id"], refs["path"]))
    seg_index = SegmentIndex.load(paths.index)
    result = evaluate_queries(seg_index, gt, qvecs, fp, ref_paths)

    paths.results.mkdir(parents=True, exist_ok=True)
    write_results_csv(paths.results / "results.csv", result.analysis)
    write_analysis_csv(paths.results / "analysis.csv", result.analysis)
    write_csv(paths.plots / "hit_rate_by_length.csv", hit_rate_by_length(result.analysis))
    by_deg = hit_rate_by_degradation(result.analysis)
    wide = by_deg.pivot(index="length_s", columns="degradation", values="track_hit_rate").reset_index()
    write_csv(paths.plots / "hit_rate_by_degradation.csv", wide)
    plot_hit_rates(result.analysis, paths.results / "hit_rates.png")
    write_json(paths.metrics / "fingerprint.json", result.metrics)
    tracker.log_metrics(result.metrics)
    for f in ("results.csv", "analysis.csv", "hit_rates.png"):
        tracker.log_artifact(paths.results / f, "results")
    tracker.log_artifact(paths.plots / "hit_rate_by_length.csv", "plots")
    tracker.log_artifact(paths.plots / "hit_rate_by_degradation.csv", "plots")

    untrained = _evaluate_untrained(params, paths, gt, ref_paths) if fp.evaluate.compare_untrained else {}
    write_json(paths.metrics / "fingerprint_untrained.json", untrained)
    tracker.log_dict(untrained, "untrained_metrics.json")
    summary = headline(result.metrics)
    summary.update({f"untrained_track_hit_rate_{k}": v for k, v in untrained.get("track_hit_rate", {}).items()})
    return summary


def _evaluate_untrained(params: Params, paths: FingerprintPaths, gt: pd.DataFrame, ref_paths: dict) -> dict:
    """Same evaluation with a randomly initialised encoder (seeded): what training buys."""
    import torch

    from avmatch.device import resolve_device
    from avmatch.models.nafp import FingerprintEncoder

    fp = params.fingerprint
    torch.manual_seed(params.common.seed)
    device = resolve_device(params.common.device)
    model = FingerprintEncoder.from_params(fp.model, fp.logmel, fp.audio).to(device).eval()
    return _evaluate_in_memory(params, paths, model, device, gt, ref_paths, "untrained")


def _evaluate_in_memory(params: Params, paths: FingerprintPaths, model, device, gt: pd.DataFrame,
                        ref_paths: dict, label: str) -> dict:
    """Embed references and queries with `model` and evaluate, touching none of the pipeline's outputs."""
    from avmatch.embedding import embed_audio
    from avmatch.index.faiss_index import SegmentIndex
    from avmatch.progress import progress
    from pipelines.fingerprint.evaluation import evaluate_queries

    fp = params.fingerprint

    def embed_set(name: str) -> dict[str, tuple]:
        items = read_manifest(paths.items(name))
        items = items[items["status"] == "ok"]
        out = {}
        for row in progress(items.itertuples(), desc=f"{label} {name}", total=len(items), unit="item"):
            out[row.id] = embed_audio(model, load_pcm(row.pcm_file), fp.audio, device, fp.extract.batch_size)
        return out

    refs = embed_set("refs")
    vecs = np.concatenate([v for v, _, _ in refs.values()])
    idmap = pd.concat([pd.DataFrame({"item_id": k, "segment": np.arange(len(v)), "start_s": s})
                       for k, (v, s, _) in refs.items()], ignore_index=True)
    seg_index = SegmentIndex.build(vecs, idmap, "flat")
    queries = embed_set("queries")
    result = evaluate_queries(seg_index, gt, {k: v for k, (v, _, _) in queries.items()}, fp, ref_paths)
    return result.metrics


def headline(metrics: dict, prefix: str = "") -> dict:
    """The flat numbers of an evaluation (what MLflow, the registry and regression checks compare)."""
    out = {f"{prefix}{k}": v for k, v in metrics.items() if not isinstance(v, dict)}
    for group in ("track_hit_rate", "segment_exact", "segment_near"):
        out.update({f"{prefix}{group}_{k}": v for k, v in metrics.get(group, {}).items()})
    return out


def reevaluate(params: Params, paths: FingerprintPaths, tracker: StageTracker, model_file) -> dict:
    """Evaluate a given (registered) encoder on the current references and queries (scheduled runs)."""
    from avmatch.device import resolve_device
    from avmatch.models.nafp import load_encoder
    from pipelines.fingerprint.evaluation import read_ground_truth

    device = resolve_device(params.common.device)
    model = load_encoder(model_file, device)
    refs = read_manifest(paths.items("refs"))
    metrics = _evaluate_in_memory(params, paths, model, device, read_ground_truth(paths.ground_truth),
                                  dict(zip(refs["id"], refs["path"])), "reevaluate")
    tracker.log_dict(metrics, "reevaluate_metrics.json")
    return headline(metrics)


STAGES.update({"index": index, "evaluate": evaluate})
