"""The fingerprint pipeline's `evaluate` stage (dvc.yaml: fingerprint_evaluate)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest
from avmatch.core.pcm_cache import load_pcm
from avmatch.core.tracking import StageTracker
from pipelines.fingerprint.paths import FingerprintPaths
from pipelines.io import write_csv, write_json

# null queries cut from the references use their own seed, so they are not the training-music cuts' positions
REFS_NULL_SEED_OFFSET = 11


def _query_vectors(meta: pd.DataFrame, vectors: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for item_id, rows in meta.groupby("item_id", sort=False).indices.items():
        out[item_id] = vectors[np.sort(rows)]
    return out


def evaluate(params: Params, paths: FingerprintPaths, tracker: StageTracker) -> dict:
    """Search every query, calibrate the per-length no-match thresholds on null queries (and the validation
    out-of-database queries), score the test queries."""
    from avmatch.core.hashing import file_hash
    from avmatch.core.index import SegmentIndex
    from avmatch.core.shards import ShardStore
    from avmatch.fingerprint.metrics import (
        hit_rate_by_degradation,
        hit_rate_by_length,
        plot_hit_rates,
        write_analysis_csv,
        write_results_csv,
    )
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
    model, device = _trained_encoder(params, paths)
    verifier, query_peaks = _verification(params, paths, queries)
    result = evaluate_queries(seg_index, gt, qvecs, fp.search, fp.evaluate, fp.audio, fp.corpus.query_lengths_s,
                              ref_paths, _null_vectors(params, paths, model, device),
                              _hub_penalty(params, paths, model, device), verifier, query_peaks)

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


def _trained_encoder(params: Params, paths: FingerprintPaths):
    from avmatch.core.device import resolve_device
    from avmatch.fingerprint.model import load_encoder

    device = resolve_device(params.common.device)
    return load_encoder(paths.encoder, device), device


def _training_music(paths: FingerprintPaths, name: str) -> list[np.ndarray]:
    items = read_manifest(paths.items(name))
    return [load_pcm(f) for f in items.loc[items["status"] == "ok", "pcm_file"]]


def _hub_penalty(params: Params, paths: FingerprintPaths, model, device):
    """The hub penalty of `model`: against the background stored in its file, or for a model without one
    (the untrained comparison) a background embedded now the way the train stage embeds it."""
    from avmatch.fingerprint.hubness import embed_background, penalty_for

    sp = params.fingerprint.search
    if sp.hub_weight <= 0:
        return None
    background = getattr(model, "background", None)
    if background is None:
        fp = params.fingerprint
        background = embed_background(
            model, _training_music(paths, "train"), _training_music(paths, "noise_train"),
            excerpts=fp.train.background_excerpts, length_s=fp.train.background_length_s, audio=fp.audio,
            max_speed_change=fp.corpus.max_speed_change, batch_size=fp.extract.batch_size, seed=params.common.seed,
            device=device)
    return penalty_for(background, sp.hub_neighbours, sp.hub_weight)


def _verification(params: Params, paths: FingerprintPaths, queries: pd.DataFrame):
    """For the decision `verified`: a verifier holding the references' spectral peaks, and each query's
    peaks (item id -> peaks); (None, None) for the other decisions."""
    fp = params.fingerprint
    if fp.search.score != "verified":
        return None, None
    from avmatch.fingerprint.verify import PeakParams, Verifier, spectral_peaks

    pp = PeakParams.from_params(fp.search.verify, fp.audio.sample_rate)
    refs = read_manifest(paths.items("refs"))
    refs = refs[refs["status"] == "ok"]
    ref_peaks = {i: spectral_peaks(load_pcm(f), pp) for i, f in zip(refs["id"], refs["pcm_file"])}
    ok = queries[queries["status"] == "ok"]
    query_peaks = {i: spectral_peaks(load_pcm(f), pp) for i, f in zip(ok["id"], ok["pcm_file"])}
    return Verifier(ref_peaks, pp, fp.audio.hop_s), query_peaks


def _null_vectors(params: Params, paths: FingerprintPaths, model, device) -> list[tuple]:
    """Fingerprints of null queries of every evaluation length, degraded like the queries (noise from the
    training noise set), that calibrate the per-length no-match thresholds: excerpts of the training music
    (not in the database), and/or (`evaluate.null_source`) excerpts of the references, each searched with
    its own recording left out. The same excerpts for every encoder (seeded). For the decision `verified`
    each also carries its spectral peaks."""
    from avmatch.fingerprint.calibration import null_excerpts_from
    from avmatch.fingerprint.embedding import embed_many

    fp = params.fingerprint
    n = fp.evaluate.null_queries_per_length
    if n == 0:
        return []
    noises = _training_music(paths, "noise_train")
    cuts: list[tuple[float, np.ndarray, str | None]] = []
    if fp.evaluate.null_source in ("train", "both"):
        cuts += [(v, x, None) for v, x, _ in null_excerpts_from(
            _training_music(paths, "train"), noises, fp.corpus.query_lengths_s, n, fp.audio.sample_rate,
            params.common.seed, fp.corpus.max_speed_change)]
    if fp.evaluate.null_source in ("refs", "both"):
        refs = read_manifest(paths.items("refs"))
        refs = refs[refs["status"] == "ok"]
        ids = list(refs["id"])
        cuts += [(v, x, ids[k]) for v, x, k in null_excerpts_from(
            [load_pcm(f) for f in refs["pcm_file"]], noises, fp.corpus.query_lengths_s, n, fp.audio.sample_rate,
            params.common.seed + REFS_NULL_SEED_OFFSET, fp.corpus.max_speed_change)]
    vectors = embed_many(model, [x for _, x, _ in cuts], fp.audio, device, fp.extract.batch_size)
    if fp.search.score == "verified":
        from avmatch.fingerprint.verify import PeakParams, spectral_peaks

        pp = PeakParams.from_params(fp.search.verify, fp.audio.sample_rate)
        return [(v, vec, left_out, spectral_peaks(x, pp)) for (v, x, left_out), vec in zip(cuts, vectors)]
    return [(v, vec, left_out) for (v, _, left_out), vec in zip(cuts, vectors)]


def _evaluate_untrained(params: Params, paths: FingerprintPaths, gt: pd.DataFrame, ref_paths: dict) -> dict:
    """Same evaluation with a randomly initialised encoder (seeded): what training buys."""
    import torch

    from avmatch.core.device import resolve_device
    from avmatch.fingerprint.model import FingerprintEncoder

    fp = params.fingerprint
    torch.manual_seed(params.common.seed)
    device = resolve_device(params.common.device)
    model = FingerprintEncoder.from_params(fp.model, fp.logmel, fp.audio).to(device).eval()
    return _evaluate_in_memory(params, paths, model, device, gt, ref_paths, "untrained")


def _evaluate_in_memory(params: Params, paths: FingerprintPaths, model, device, gt: pd.DataFrame,
                        ref_paths: dict, label: str) -> dict:
    """Embed references and queries with `model` and evaluate, touching none of the pipeline's outputs."""
    return evaluate_in_memory_result(params, paths, model, device, gt, ref_paths, label).metrics


def evaluate_in_memory_result(params: Params, paths: FingerprintPaths, model, device, gt: pd.DataFrame,
                              ref_paths: dict, label: str):
    """`_evaluate_in_memory` with the whole EvaluationResult (per-query analysis, thresholds): for benchmarks."""
    from avmatch.core.index import SegmentIndex
    from avmatch.core.progress import progress
    from avmatch.fingerprint.embedding import embed_audio
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
    verifier, query_peaks = _verification(params, paths, read_manifest(paths.items("queries")))
    result = evaluate_queries(seg_index, gt, {k: v for k, (v, _, _) in queries.items()}, fp.search, fp.evaluate,
                              fp.audio, fp.corpus.query_lengths_s, ref_paths, _null_vectors(params, paths, model, device),
                              _hub_penalty(params, paths, model, device), verifier, query_peaks)
    return result


def headline(metrics: dict, prefix: str = "") -> dict:
    """The flat numbers of an evaluation (what MLflow, the registry and regression checks compare)."""
    out = {f"{prefix}{k}": v for k, v in metrics.items() if not isinstance(v, (dict, str))}
    for group in ("track_hit_rate", "segment_exact", "segment_near"):
        out.update({f"{prefix}{group}_{k}": v for k, v in metrics.get(group, {}).items()})
    return out


def reevaluate(params: Params, paths: FingerprintPaths, tracker: StageTracker, model_file) -> dict:
    """Evaluate a given (registered) encoder on the current references and queries (scheduled runs)."""
    from avmatch.core.device import resolve_device
    from avmatch.fingerprint.model import load_encoder
    from pipelines.fingerprint.evaluation import read_ground_truth

    device = resolve_device(params.common.device)
    model = load_encoder(model_file, device)
    refs = read_manifest(paths.items("refs"))
    metrics = _evaluate_in_memory(params, paths, model, device, read_ground_truth(paths.ground_truth),
                                  dict(zip(refs["id"], refs["path"])), "reevaluate")
    tracker.log_dict(metrics, "reevaluate_metrics.json")
    return headline(metrics)
