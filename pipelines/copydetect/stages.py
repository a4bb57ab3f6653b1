"""The copy detection (VSC22) pipeline's stages; each is `(params, paths, tracker, **options) -> dict`.

corpus → ingest (metadata cache) → frames (1 fps decode cache) → train (self-supervised frame
descriptor) → extract (Parquet shards, VSC22 npz, query database) → candidates (FAISS k-NN + CSLS
normalisation) → localise (temporal alignment) → evaluate (VSC22 µAPs; pHash baseline, untrained
encoder and no-normalisation variants through the same recall and localisation).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from avmatch.catalog.manifest import build_manifest, read_manifest, scan_media, write_manifest
from avmatch.config import Params
from avmatch.metrics.vsc import VideoFeatures
from avmatch.tracking import StageTracker
from pipelines.copydetect.paths import SETS, CopydetectPaths
from pipelines.io import bad_files_table, write_csv, write_json

log = logging.getLogger(__name__)


def corpus(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Build the offline corpus (real footage, transformed copies, exact ground truth), or with
    `copydetect.corpus.source: vsc22` check the VSC22 folder at `root` (docs/datasets.md)."""
    cp = params.copydetect.corpus
    if cp.source == "vsc22":
        missing = [str(p) for p in (paths.set_dir("queries"), paths.set_dir("refs"), paths.ground_truth) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"VSC22 layout incomplete under {paths.corpus}: missing {', '.join(missing)}")
        return {"queries": len(scan_media(paths.set_dir("queries"))), "refs": len(scan_media(paths.set_dir("refs")))}
    from avmatch.corpora.copydetect import build_copydetect_corpus

    info = build_copydetect_corpus(cp, paths.corpus)
    tracker.log_dict(info, "corpus.json")
    return {k: v for k, v in info.items() if isinstance(v, (int, float))}


def ingest(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Manifest per set (the metadata cache): each video's header read once, bad files kept as rows."""
    from avmatch.media.video import manifest_probe

    summary = {}
    for name in SETS:
        folder = paths.set_dir(name)
        files = scan_media(folder) if folder.exists() else []
        previous = read_manifest(paths.manifest(name)) if paths.manifest(name).exists() else None
        df = build_manifest(files, base=folder, split=name, previous=previous, desc=f"ingest {name}",
                            probe=manifest_probe)
        write_manifest(df, paths.manifest(name))
        summary[f"{name}_files"] = len(df)
        summary[f"{name}_errors"] = int((df["status"] != "ok").sum())
    return summary


def frames(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Decode every usable video once at 1 fps into the frame cache; list unusable files with reasons."""
    from avmatch.features.frame_cache import decode_manifest_frames

    fp = params.copydetect.frames
    tables, summary = {}, {}
    t0 = time.perf_counter()
    for name in SETS:
        items = decode_manifest_frames(read_manifest(paths.manifest(name)), paths.frame_cache, fp.fps, fp.size,
                                       workers=fp.workers, desc=f"frames {name}")
        write_manifest(items, paths.items(name))
        tables[name] = items
        ok = items[items["status"] == "ok"]
        summary[f"{name}_videos"] = len(ok)
        summary[f"{name}_frames"] = int(ok["n_frames"].sum())
        summary[f"{name}_vfr"] = int((ok["note"] != "").sum())
    bad = bad_files_table(tables)
    write_csv(paths.bad_files, bad)
    for r in bad.itertuples():
        log.warning("skipped %s: %s", r.path, r.reason)
    summary["bad_files"] = len(bad)
    summary["decode_seconds"] = time.perf_counter() - t0
    tracker.log_artifact(paths.bad_files)
    return summary


def _load_frames(paths: CopydetectPaths, name: str) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray]]:
    from avmatch.features.frame_cache import load_frames

    items = read_manifest(paths.items(name))
    items = items[items["status"] == "ok"].reset_index(drop=True)
    frames_, times = [], []
    for f in items["frames_file"]:
        fr, ts = load_frames(f)
        frames_.append(fr)
        times.append(ts)
    return items, frames_, times


def train(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Self-supervised contrastive training of the frame descriptor on the reference frames (and, with
    `train_on_noise`, the noise-set frames)."""
    from avmatch.models.frame_encoder import save_frame_encoder
    from avmatch.training.copydetect import train_frame_encoder

    cd = params.copydetect
    _, videos, _ = _load_frames(paths, "refs")
    if not videos:
        raise RuntimeError(f"no usable reference video in {paths.set_dir('refs')} (see {paths.bad_files})")
    if cd.train.train_on_noise and paths.items("noise").exists():
        videos = videos + _load_frames(paths, "noise")[1]
    result = train_frame_encoder(videos, train_params=cd.train, model_params=cd.model, seed=params.common.seed,
                                 device=params.common.device, checkpoint_dir=paths.checkpoints,
                                 log_fn=lambda m, step: tracker.log_metrics(m, step=step))
    save_frame_encoder(result.model, paths.encoder, {"frames": cd.frames.model_dump()})
    write_csv(paths.plots / "train_history.csv", pd.DataFrame(result.history))
    summary = {"steps": result.steps, "train_seconds": result.seconds,
               "resumed_from_step": -1 if result.resumed_from_step is None else result.resumed_from_step,
               "final_loss": float(result.history[-1]["loss"]) if result.history else float("nan"),
               "train_frames": int(sum(len(v) for v in videos))}
    write_json(paths.metrics / "copydetect_train.json", summary)
    tracker.log_artifact(paths.plots / "train_history.csv", "plots")
    return summary


def _embed_set(model, paths: CopydetectPaths, name: str, batch_size: int, device) -> list[VideoFeatures]:
    from avmatch.models.frame_encoder import embed_frames

    items, frames_, times = _load_frames(paths, name)
    return [VideoFeatures(i, t, embed_frames(model, f, device, batch_size)) for i, f, t in zip(items["id"], frames_, times)]


def extract(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Descriptors of every frame into Parquet shards (resumable), VSC22 npz exports and the query db."""
    from avmatch.copydetect_db import CopyDB
    from avmatch.device import resolve_device
    from avmatch.features.frame_cache import load_frames
    from avmatch.hashing import file_hash
    from avmatch.models.frame_encoder import embed_frames, load_frame_encoder
    from avmatch.store.shards import ShardStore
    from avmatch.store.vsc_npz import write_vsc_npz

    cd = params.copydetect
    if not paths.encoder.exists():
        raise FileNotFoundError(f"{paths.encoder}: no trained encoder (run the train stage first)")
    device = resolve_device(params.common.device)
    model = load_frame_encoder(paths.encoder, device)
    model_hash = file_hash(paths.encoder)
    summary: dict = {}
    exported: dict[str, list[VideoFeatures]] = {}
    for name in SETS:
        items = read_manifest(paths.items(name))
        items = items[items["status"] == "ok"]
        store = ShardStore(paths.shards(name), cd.model.dim, model_hash, reset_on_mismatch=True)
        done = store.done_keys()
        t0, n_frames, n_new = time.perf_counter(), 0, 0
        with store.writer(0, cd.extract.shard_items) as w:
            for row in items.itertuples():
                if (row.id, row.content_hash) in done:
                    continue
                fr, ts = load_frames(row.frames_file)
                w.add_item(row.id, row.content_hash, embed_frames(model, fr, device, cd.extract.batch_size), ts[:, 0], ts[:, 1])
                n_frames += len(fr)
                n_new += 1
        secs = time.perf_counter() - t0
        meta, vecs = store.read(dict(zip(items["id"], items["content_hash"])))
        videos = []
        for vid, rows in meta.groupby("item_id", sort=False).indices.items():
            rows = np.sort(rows)
            videos.append(VideoFeatures(vid, meta[["start_s", "end_s"]].to_numpy(np.float64)[rows], vecs[rows]))
        write_vsc_npz(paths.npz(name), videos)
        exported[name] = videos
        summary.update({f"{name}_videos": len(videos), f"{name}_embedded": n_new,
                        f"{name}_frames_per_s": n_frames / secs if n_frames and secs > 0 else 0.0})
    settings = {"fps": cd.frames.fps, "frame_size": cd.frames.size, "beta": cd.candidates.beta, "k": cd.candidates.k,
                "max_pairs_per_query": cd.candidates.max_pairs_per_query, "localise": cd.localise.model_dump(),
                "min_score": 0.0}
    CopyDB.create(paths.db, paths.encoder, exported["refs"], exported["noise"], settings)
    return summary


def _features(paths: CopydetectPaths, name: str) -> list[VideoFeatures]:
    from avmatch.store.vsc_npz import read_vsc_npz

    return read_vsc_npz(paths.npz(name))


def _noise_matrix(noise: list[VideoFeatures], dim: int) -> np.ndarray:
    return np.concatenate([n.features for n in noise]) if noise else np.zeros((0, dim), np.float32)


def candidates(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """FAISS k-NN of every query frame over the reference frames, CSLS-normalised with the noise set
    (β = copydetect.candidates.beta; 0 = off); pairs ranked by their best frame score."""
    from avmatch.search.copy_candidates import find_candidates, reference_index

    cc = params.copydetect.candidates
    queries, refs = _features(paths, "queries"), _features(paths, "refs")
    noise = _noise_matrix(_features(paths, "noise"), params.copydetect.model.dim)
    index = reference_index(refs)
    t0 = time.perf_counter()
    c = find_candidates(index, queries, noise, cc.beta, cc.k, cc.max_pairs_per_query)
    write_csv(paths.results / "candidates.csv", c.pairs)
    return {"ref_frames": index.ntotal, "query_frames": int(sum(len(q) for q in queries)),
            "recall_seconds": time.perf_counter() - t0, "pairs": len(c.pairs)}


def localise(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Copied segments of every candidate pair by temporal alignment; VSC22 matching CSV."""
    from avmatch.metrics.vsc import write_matches
    from avmatch.search.copy_candidates import noise_bias
    from avmatch.search.localisation import localise_pairs

    cd = params.copydetect
    queries, refs = _features(paths, "queries"), _features(paths, "refs")
    noise = _noise_matrix(_features(paths, "noise"), cd.model.dim)
    q_by, r_by = {q.video_id: q for q in queries}, {r.video_id: r for r in refs}
    pairs = pd.read_csv(paths.results / "candidates.csv", dtype={"query_id": str, "ref_id": str})
    bias = {q.video_id: noise_bias(q.features, noise, cd.candidates.beta) for q in queries}
    t0 = time.perf_counter()
    matches = localise_pairs(pairs, q_by, r_by, bias, **cd.localise.model_dump())
    secs = time.perf_counter() - t0
    write_matches(paths.results / "matches.csv", matches)
    tracker.log_artifact(paths.results / "matches.csv", "results")
    return {"matches": len(matches), "ms_per_pair": 1000 * secs / max(1, len(pairs))}


def _variant_metrics(gt, queries, refs, noise, cd, betas: dict[str, float], stored: dict | None = None) -> tuple[dict, dict]:
    """Descriptor and matching µAPs of one set of descriptors, for each labelled normalisation weight β
    (`stored` matches are used for a label instead of running recall and localisation again)."""
    from avmatch.metrics.vsc import descriptor_ap, matching_metrics
    from avmatch.search.copy_candidates import augment_for_normalisation
    from avmatch.search.localisation import detect_copies

    out, curves = {}, {}
    for label, beta in betas.items():
        if stored is not None and label in stored:
            m = stored[label]
        else:
            _, m = detect_copies(queries, refs, noise, beta, cd.candidates.k, cd.candidates.max_pairs_per_query,
                                 **cd.localise.model_dump())
        qa, ra = augment_for_normalisation(queries, refs, noise, beta) if beta else (queries, refs)
        d = descriptor_ap(gt, qa, ra)
        mm = matching_metrics(gt, m)
        out[label] = {"descriptor_uap": d.ap, "matching_uap": mm["segment"].ap, "pairwise_uap": mm["pairwise"].ap}
        curves[label] = {"descriptor": d, "matching": mm["segment"]}
    return out, curves


def _beta_by_validation(gt, queries, refs, noise, cd) -> dict:
    """β of the CSLS normalisation chosen on held-out queries: queries sorted by id alternate between a
    validation and a test half; the β of `evaluate.beta_grid` with the best validation descriptor µAP is
    compared with no normalisation on the test half (descriptor and matching µAPs)."""
    from avmatch.metrics.vsc import descriptor_ap, matching_metrics
    from avmatch.search.copy_candidates import augment_for_normalisation
    from avmatch.search.localisation import detect_copies

    ids = sorted(q.video_id for q in queries)
    val_ids = set(ids[0::2])
    half = {"val": [q for q in queries if q.video_id in val_ids], "test": [q for q in queries if q.video_id not in val_ids]}
    half_gt = {k: [m for m in gt if m.query_id in {q.video_id for q in v}] for k, v in half.items()}

    def desc(name: str, beta: float) -> float:
        qa, ra = augment_for_normalisation(half[name], refs, noise, beta) if beta else (half[name], refs)
        return descriptor_ap(half_gt[name], qa, ra).ap

    val = {f"beta_{b:g}": desc("val", b) for b in [0.0, *cd.evaluate.beta_grid]}
    best = max(cd.evaluate.beta_grid, key=lambda b: val[f"beta_{b:g}"])
    out: dict = {"chosen_beta": float(best), "val_descriptor_uap": val}
    for label, beta in (("test_raw", 0.0), ("test_normalised", best)):
        _, m = detect_copies(half["test"], refs, noise, beta, cd.candidates.k, cd.candidates.max_pairs_per_query,
                             **cd.localise.model_dump())
        mm = matching_metrics(half_gt["test"], m)
        out[label] = {"descriptor_uap": desc("test", beta), "matching_uap": mm["segment"].ap,
                      "pairwise_uap": mm["pairwise"].ap}
    return out


def _describe_sets(paths: CopydetectPaths, embed) -> tuple[list[VideoFeatures], ...]:
    """Queries, references and noise described by `embed` (frames -> vectors) from the frame cache."""
    out = []
    for name in ("queries", "refs", "noise"):
        items, fr, ts = _load_frames(paths, name)
        out.append([VideoFeatures(i, t, embed(f)) for i, f, t in zip(items["id"], fr, ts)])
    return tuple(out)


def reevaluate(params: Params, paths: CopydetectPaths, tracker: StageTracker, model_file) -> dict:
    """A given (registered) descriptor on the current corpus, same recall and localisation (scheduled runs)."""
    from avmatch.device import resolve_device
    from avmatch.metrics.vsc import read_matches
    from avmatch.models.frame_encoder import embed_frames, load_frame_encoder

    cd = params.copydetect
    device = resolve_device(params.common.device)
    model = load_frame_encoder(model_file, device)
    q, r, n = _describe_sets(paths, lambda f: embed_frames(model, f, device, cd.extract.batch_size))
    metrics, _ = _variant_metrics(read_matches(paths.ground_truth, is_gt=True), q, r,
                                  _noise_matrix(n, cd.model.dim), cd, {"main": cd.candidates.beta})
    tracker.log_dict(metrics, "reevaluate_metrics.json")
    return metrics["main"]


def evaluate(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """VSC22 descriptor µAP and matching segment/pairwise µAP of the trained descriptor, with the
    pHash baseline and the untrained encoder through the same recall and localisation."""
    from avmatch.features.phash import phash_descriptors
    from avmatch.metrics.vsc import plot_pr_curves, read_matches
    from avmatch.models.frame_encoder import FrameEncoder

    cd = params.copydetect
    gt = read_matches(paths.ground_truth, is_gt=True)
    queries, refs = _features(paths, "queries"), _features(paths, "refs")
    noise = _noise_matrix(_features(paths, "noise"), cd.model.dim)
    # "main": the pipeline's settings (its stored matches); "raw" / "normalised": β = 0 / evaluate.normalised_beta
    betas = {"main": cd.candidates.beta, "raw": 0.0, "normalised": cd.evaluate.normalised_beta}
    stored = {"main": read_matches(paths.results / "matches.csv")}
    compare, curves = {}, {}
    compare["trained"], curves["trained"] = _variant_metrics(gt, queries, refs, noise, cd, betas, stored)
    if cd.evaluate.beta_grid:
        compare["trained"]["beta_by_validation"] = _beta_by_validation(gt, queries, refs, noise, cd)

    def from_frames(embed) -> tuple[list[VideoFeatures], ...]:
        return _describe_sets(paths, embed)

    if cd.evaluate.phash_baseline:
        t0 = time.perf_counter()
        pq, pr, pn = from_frames(phash_descriptors)
        compare["phash"], curves["phash"] = _variant_metrics(gt, pq, pr, _noise_matrix(pn, 64), cd, betas)
        compare["phash"]["seconds"] = time.perf_counter() - t0
    if cd.evaluate.compare_untrained:
        import torch

        from avmatch.models.frame_encoder import embed_frames

        torch.manual_seed(params.common.seed)
        model = FrameEncoder(cd.model.dim, cd.model.channels, cd.model.input_size).eval()
        uq, ur, un = from_frames(lambda f: embed_frames(model, f, "cpu", cd.extract.batch_size))
        compare["untrained"], curves["untrained"] = _variant_metrics(gt, uq, ur, _noise_matrix(un, cd.model.dim), cd, betas)

    main = compare["trained"]["main"]
    write_json(paths.metrics / "copydetect.json", main)
    write_json(paths.metrics / "copydetect_compare.json", compare)
    if "phash" in compare:
        write_json(paths.metrics / "copydetect_baseline.json", compare["phash"]["main"])
    paths.plots.mkdir(parents=True, exist_ok=True)
    for track in ("matching", "descriptor"):
        sel = {f"{v} ({n})": c[n][track] for v, c in curves.items() for n in ("raw", "normalised")}
        plot_pr_curves(sel, paths.results / f"pr_{track}.png", f"VSC22 {track} track: precision-recall")
        tracker.log_artifact(paths.results / f"pr_{track}.png", "plots")
        rows = [{"variant": k, "recall": r, "precision": p} for k, res in sel.items()
                for r, p in zip(res.recalls, res.precisions)]
        write_csv(paths.plots / f"pr_{track}.csv", pd.DataFrame(rows, columns=["variant", "recall", "precision"]))
    tracker.log_dict(compare, "copydetect_compare.json")
    summary = dict(main)

    def flatten(prefix: str, d: dict) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                flatten(f"{prefix}_{k}", v)
            elif isinstance(v, (int, float)):
                summary[f"{prefix}_{k}"] = v

    for variant, by_norm in compare.items():
        flatten(variant, {k: v for k, v in by_norm.items() if isinstance(v, dict)})
    return summary


STAGES = {"corpus": corpus, "ingest": ingest, "frames": frames, "train": train, "extract": extract,
          "candidates": candidates, "localise": localise, "evaluate": evaluate}
