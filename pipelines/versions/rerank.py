"""The versions pipeline's `rerank` stage (dvc.yaml: versions_rerank)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.versions.paths import VersionsPaths
from pipelines.versions.qmax_collections import (
    collection_items,
    cqt_chroma_of,
    load_hpcp,
    qmax_scorer,
    write_collections,
)
from pipelines.versions.shared import embed_items, shard_key

log = logging.getLogger(__name__)


def rerank(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Each first stage's ranking of each collection (`versions.rerank.first_stages`: the trained encoder as the
    evaluate stage ranks, the training-free ftm2d, or both mixed), then each query's top K candidates re-ranked
    by Qmax on chroma (optionally fused with the first stage's distance: `fusion`, `weight`), for every K of
    `versions.rerank.ks`: MAP / MR1 / NAR with CIs and the time per query of each configuration (system
    `<first>` alone and `<first>_k<K>`), so a user can pick the trade-off."""
    from avmatch.core.device import resolve_device
    from avmatch.versions.model import load_encoder
    from pipelines.versions.evaluation import plot_results

    rp = params.versions.rerank
    device = resolve_device(params.common.device)
    # the training-free first stages alone need no encoder
    uses_encoder = any(f.split("_")[0] == "encoder" for f in rp.first_stages)
    model = load_encoder(paths.encoder, device)[0] if uses_encoder else None
    scorer = qmax_scorer(params)
    docs, plots, summary = {}, {}, {}
    for split in rp.collections:
        items = collection_items(paths, split, "versions.rerank.collections")
        docs[split], plots[split] = _collection(params, paths, model, device, scorer, items, split)
        for name, block in docs[split]["systems"].items():
            summary.update({f"{split}_{name}_{k}": v for k, v in block["track"].items()})
            summary[f"{split}_{name}_ms_per_query"] = block["ms_per_query"]
    write_collections(paths, tracker, "versions_rerank", docs, plots)
    ranks, pr = [pd.read_csv(paths.plots / f"versions_rerank_{k}.csv") for k in ("ranks", "pr")]
    tracker.log_artifact(plot_results(ranks, pr, paths.results / "versions_rerank.png"), "plots")
    return summary


def _embeddings(params: Params, paths: VersionsPaths, model, device, items: pd.DataFrame):
    """Segment embeddings of the items: the extract stage's shards where they hold them, the encoder otherwise."""
    from avmatch.core.shards import ShardStore

    cols = ["item_id", "segment", "start_s", "end_s"]
    store = ShardStore(paths.shards, params.versions.model.dim, shard_key(params, paths))
    meta, vecs = store.read(dict(zip(items["id"], items["content_hash"]))) if store.root.exists() else (
        pd.DataFrame(columns=cols), np.zeros((0, params.versions.model.dim), np.float32))
    missing = items[~items["id"].isin(set(meta["item_id"]))]
    if len(missing):
        log.info("rerank: embedding %d track(s) the extract stage did not store", len(missing))
        m2, v2 = embed_items(model, missing, params, device, desc="embed")
        meta = pd.concat([meta[cols], m2[cols]], ignore_index=True) if len(meta) else m2
        vecs = np.concatenate([vecs, v2]) if len(vecs) else v2
    return meta, vecs


def _collection(params: Params, paths: VersionsPaths, model, device, scorer, items: pd.DataFrame, split: str
                ) -> tuple[dict, tuple[pd.DataFrame, pd.DataFrame]]:
    from avmatch.core.progress import progress
    from avmatch.versions.rerank import rerank_distances
    from avmatch.versions.retrieval import Collection
    from pipelines.versions.evaluation import evaluate_track_distances, plot_data
    from pipelines.versions.renderings import rendering_shares, track_attributes

    rp, ev = params.versions.rerank, params.versions.evaluate
    coll = None
    if model is not None:
        meta, vecs = _embeddings(params, paths, model, device, items)
        coll = Collection.from_rows(meta, vecs)
        items = items.set_index("id").loc[coll.track_ids].reset_index()
    n = len(items)
    cliques = list(items["label"])

    t1 = time.perf_counter()
    if rp.chroma == "cqt":
        chroma, failed = cqt_chroma_of(params, items), []
    else:
        chroma, failed = load_hpcp(paths, items)   # the hpcp stage's: its metrics file has the HPCP time
    chroma_s = (time.perf_counter() - t1) / n

    # only tracks with another version in the collection are queries (as in evaluate_track_distances): the
    # others' rows are left unranked, they are never scored
    sizes = pd.Series(cliques).value_counts()
    queries = [q for q in range(n) if sizes[cliques[q]] > 1]
    firsts = _first_stages(params, coll, chroma, queries)
    cache: dict[tuple[int, int], tuple[float, float]] = {}

    def align(q: int, j: int) -> float:
        if (q, j) not in cache:
            t = time.perf_counter()
            d = scorer.distance(chroma[q], chroma[j])
            cache[(q, j)] = (d, time.perf_counter() - t)
        return cache[(q, j)][0]

    systems, rows = {}, []
    attrs = track_attributes(paths)

    def shares(d: np.ndarray) -> dict:
        """top-1 same instrument / soundfont (and chance) of this ranking: does it match tunes or renderings?"""
        return rendering_shares({"cliques": cliques, "dist": d}, list(items["id"]), attrs)

    for first, (dist, first_s) in firsts.items():
        res = evaluate_track_distances(dist, cliques, ev.bootstrap, params.common.seed)
        blocks = {first: _block(res, 1000 * first_s, 0, shares(dist))}
        rows.append(plot_data({"track": res, "segment": _NO_SEGMENTS}, f"{first} {split}"))
        # the largest K first: a smaller K's candidates are a prefix of it, so its alignments are reused (timed once)
        for k in sorted(rp.ks, reverse=True):
            rows_q = progress(queries, desc=f"re-rank {split} ({first}, K={k})", total=len(queries), unit="query")
            rd = rerank_distances(dist, k, align, rows=rows_q, weight=rp.weight, fusion=rp.fusion)
            res = evaluate_track_distances(rd, cliques, ev.bootstrap, params.common.seed)
            # time per query: the first stage's ranking + this K's alignments (each timed when it ran); the
            # chroma is the hpcp stage's (or a CQT fold), computed once per track, not per query
            align_s = sum(cache[(q, int(j))][1] for q in queries for j in _top(dist[q], k)) / max(1, len(queries))
            blocks[f"{first}_k{k}"] = _block(res, 1000 * (first_s + align_s), min(k, n - 1), shares(rd))
            rows.append(plot_data({"track": res, "segment": _NO_SEGMENTS}, f"{first} + rerank K={k} {split}"))
        systems.update({first: blocks[first], **{f"{first}_k{k}": blocks[f"{first}_k{k}"] for k in sorted(rp.ks)}})
    doc = {"systems": systems, "tracks": n, "n_queries": len(queries), "chroma": rp.chroma,
           "fusion": rp.fusion, "weight": rp.weight, "failed_files": failed,
           "chroma_load_ms_per_track": 1000 * chroma_s,
           "ms_per_alignment": 1000 * float(np.mean([t for _, t in cache.values()])) if cache else 0.0}
    return doc, (pd.concat([r[0] for r in rows], ignore_index=True), pd.concat([r[1] for r in rows], ignore_index=True))


def _first_stages(params: Params, coll, chroma: list[np.ndarray], queries: list[int]
                  ) -> dict[str, tuple[np.ndarray, float]]:
    """{name: ([N, N] distances, seconds per query)} of each of `versions.rerank.first_stages`. Per query: the
    encoder's track ranking, ftm2d's N vector distances, qmax_coarse's N coarse alignments (rows of the queries
    only); the ftm2d vectors, like the embeddings, are computed once per track and not counted."""
    from avmatch.versions.rerank import coarse_qmax_distances, ftm2d, vector_distances, zscore_rows
    from avmatch.versions.retrieval import track_distance_matrix

    rp, ev = params.versions.rerank, params.versions.evaluate
    n = len(chroma)
    names = set(rp.first_stages)
    need = {part for name in names for part in (["encoder", name[len("encoder_"):]] if name.startswith("encoder_")
                                                 else [name])}
    out: dict[str, tuple[np.ndarray, float]] = {}
    if "encoder" in need:
        t0 = time.perf_counter()
        out["encoder"] = (track_distance_matrix(coll, ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates),
                          (time.perf_counter() - t0) / n)
    if "ftm2d" in need:
        vecs = np.stack([ftm2d(c if len(c) else np.zeros((1, 12), np.float32), rp.ftm2d.patch, power=rp.ftm2d.power)
                         for c in chroma])
        t0 = time.perf_counter()
        d = vector_distances(vecs)
        d[[len(c) == 0 for c in chroma]] = np.inf   # a track without chroma is no query of this stage
        out["ftm2d"] = (d, (time.perf_counter() - t0) / n)
    if "qmax_coarse" in need:
        coarse = qmax_scorer(params, frame_stack=rp.coarse.frame_stack)
        t0 = time.perf_counter()
        d = coarse_qmax_distances(chroma, coarse.distance, rp.coarse.pool, rows=queries)
        out["qmax_coarse"] = (d, (time.perf_counter() - t0) / max(1, len(queries)))
    for name in names:
        if name.startswith("encoder_"):
            other = name[len("encoder_"):]
            t0 = time.perf_counter()
            a, b = zscore_rows(out["encoder"][0]), zscore_rows(out[other][0])
            ok = np.isfinite(a) & np.isfinite(b)
            mixed = np.full(a.shape, np.inf)
            mixed[ok] = (1 - rp.first_mix) * a[ok] + rp.first_mix * b[ok]
            out[name] = (mixed, out["encoder"][1] + out[other][1] + (time.perf_counter() - t0) / n)
    return {name: out[name] for name in rp.first_stages}


_NO_SEGMENTS = {"ranks": np.zeros(0), "pr": (np.zeros(0), np.zeros(0))}


def _top(row: np.ndarray, k: int) -> np.ndarray:
    """The k nearest finite candidates of one query row, in the encoder's order (as rerank_distances picks them)."""
    cols = np.flatnonzero(np.isfinite(row))
    return cols[np.argsort(row[cols], kind="stable")][:k]


def _block(res: dict, ms_per_query: float, alignments: int, shares: dict | None = None) -> dict:
    return {"track": res["metrics"], "ci95": res["ci95"], "n_queries": res["n_queries"],
            "ms_per_query": ms_per_query, "alignments_per_query": alignments, **(shares or {})}
