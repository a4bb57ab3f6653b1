#!/usr/bin/env python
"""Which no-match decision holds its false-match rate on music it was not calibrated on (issue 16).

The pipeline's evaluation calibrates one threshold per query length on null queries and reports the
hit rate at 1 % false matches on the demo's test queries; `bench_fingerprint_unseen.py` then checks the
thresholds on real music no corpus uses. Trying a new decision score or null-query source that way
costs a pipeline run per variant. This benchmark computes, once per encoder, every query's decision
features (winner's rescored similarity s1, best other recording's s2, the query's mean similarity to
its nearest background fingerprints, neighbour statistics), for the demo queries, for null queries
and for the unseen-music queries, and then scores every (score, null source) pair from those tables:

* null sources: `train` (excerpts of the training music, what the pipeline uses), `loo` (excerpts of the
  references, each searched with its own recording left out: `evaluate.null_source: refs`), `both`;
  on the unseen music also `own-loo` (leave-one-out excerpts of the unseen database itself);
* searches: hub discount off, on (`hub_weight 1`, the encoder's stored background), and `hubsplit`
  (a background cut from the even-numbered training tracks only, null queries from the odd ones, so
  that the calibration music is not the music the discount was measured against).

Reported per length: hit rate / speed-and-tempo-changed hit rate / false matches on out-of-database
test queries, with Wilson 95 % intervals in `--ci` mode.

    python benchmarks/bench_fingerprint_calibration.py features --root . --out /tmp/cal   # demo + unseen
    python benchmarks/bench_fingerprint_calibration.py report --out /tmp/cal

`features` needs the demo corpus's features stage and a trained encoder (`dvc repro fingerprint_train`);
the unseen music is cut as `bench_fingerprint_unseen.py` cuts it (same seed: 29 references, 12 held out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

LENGTHS = [1.0, 2.0, 3.0, 5.0, 10.0]
SCORES = {
    "margin": lambda d: d.s1 - d.s2,
    "similarity": lambda d: d.s1,
    "s1 - max(s2, background)": lambda d: d.s1 - np.maximum(d.s2, d.qbg1),
    "s1 - mean top-10 neighbours": lambda d: d.s1 - d.mu10,
}


def features(index, queries, sp, penalty=None, bg_index=None, exclude=None) -> pd.DataFrame:
    """One row per query: winner, s1, s2, votes, segments, mean top-10 neighbour similarity, and the
    mean over its segments of the similarity to the nearest background fingerprint (qbg1)."""
    from avmatch.fingerprint.search import (
        EXCLUDE_POOL,
        _first_per_query,
        _keep_top_voted,
        _vote,
        _without_items,
        drift_rates,
        neighbours,
        rescore_drifting,
    )

    lengths = np.array([len(q) for q in queries], np.int64)
    segs = np.concatenate(queries).astype(np.float32)
    q_start = np.r_[0, np.cumsum(lengths)[:-1]]
    seg_query = np.repeat(np.arange(len(lengths)), lengths)
    if exclude is None:
        sims, rows = neighbours(index, segs, sp.top_k, penalty)
    else:
        sims, rows = neighbours(index, segs, sp.top_k * EXCLUDE_POOL, penalty)
        sims, rows = _without_items(index, sims, rows, lengths, exclude, sp.top_k)
    s = np.where(rows >= 0, sims, np.nan)
    with np.errstate(all="ignore"):
        mu10 = np.nanmean(s[:, :10], axis=1)
    cand = _keep_top_voted(_vote(index, sims, rows, lengths, q_start), sp.max_candidates)
    cand["score"], cand["rate"] = rescore_drifting(index, segs, cand, lengths, q_start,
                                                   drift_rates(sp.max_drift, sp.drift_step), penalty)
    order = np.lexsort((-cand["votes"], -cand["score"], cand["query"]))
    best = order[_first_per_query(cand["query"][order])]
    n = len(lengths)
    win, s1, s2 = np.full(n, -1), np.full(n, -np.inf), np.zeros(n)
    win[cand["query"][best]] = cand["item"][best]
    s1[cand["query"][best]] = cand["score"][best]
    other = cand["item"] != win[cand["query"]]
    np.maximum.at(s2, cand["query"][other], np.maximum(cand["score"][other], 0.0))
    out = pd.DataFrame({"nseg": lengths, "item": [index.item_ids[i] if i >= 0 else None for i in win],
                        "s1": s1, "s2": s2})
    out["mu10"] = pd.Series(mu10).groupby(seg_query).mean().reindex(range(n)).to_numpy()
    bs, _ = bg_index.search(segs, 1)
    out["qbg1"] = pd.Series(bs[:, 0]).groupby(seg_query).mean().reindex(range(n)).to_numpy()
    return out


def _music(paths, name):
    from avmatch.core.manifest import read_manifest
    from avmatch.core.pcm_cache import load_pcm

    items = read_manifest(paths.items(name))
    items = items[items["status"] == "ok"]
    return list(items["id"]), [load_pcm(f) for f in items["pcm_file"]]


def _nulls(model, tracks, noises, fp, n, seed):
    from avmatch.fingerprint.calibration import null_excerpts_from
    from avmatch.fingerprint.embedding import embed_many

    cut = null_excerpts_from(tracks, noises, LENGTHS, n, fp.audio.sample_rate, seed, fp.corpus.max_speed_change)
    return cut, embed_many(model, [x for _, x, _ in cut], fp.audio, "cpu", fp.extract.batch_size)


def _index(model, named_audio, fp):
    from avmatch.core.index import SegmentIndex
    from avmatch.fingerprint.embedding import embed_audio

    vecs, rows = [], []
    for k, x in named_audio:
        v, s, _ = embed_audio(model, x, fp.audio, "cpu")
        vecs.append(v)
        rows.append(pd.DataFrame({"item_id": k, "segment": np.arange(len(v)), "start_s": s}))
    return SegmentIndex.build(np.concatenate(vecs), pd.concat(rows, ignore_index=True), "flat")


def run_features(args) -> None:
    import faiss
    import torch
    from bench_fingerprint_unseen import (
        music_files,
        noise_files,
        parse_args,
        split_tracks,
    )

    from avmatch.core.audio import decode_audio
    from avmatch.core.config import load_params
    from avmatch.fingerprint.corpus import read_ground_truth as read_rows
    from avmatch.fingerprint.embedding import embed_audio, embed_many
    from avmatch.fingerprint.hubness import embed_background, penalty_for
    from avmatch.fingerprint.model import load_encoder
    from pipelines.fingerprint.evaluate import REFS_NULL_SEED_OFFSET
    from pipelines.fingerprint.evaluation import is_validation, read_ground_truth
    from pipelines.fingerprint.paths import FingerprintPaths

    torch.set_num_threads(1)
    root, out = Path(args.root).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = load_params(root / "params.yaml")
    fp, seed = params.fingerprint, params.common.seed
    paths = FingerprintPaths.from_params(params, root)
    model = load_encoder(paths.encoder, "cpu")
    _, train = _music(paths, "train")
    _, noise = _music(paths, "noise_train")
    bg_all = model.background
    bg_even = embed_background(model, train[0::2], noise, excerpts=fp.train.background_excerpts, length_s=fp.train.background_length_s,
                               audio=fp.audio, max_speed_change=fp.corpus.max_speed_change,
                               batch_size=fp.extract.batch_size, seed=seed, device="cpu")
    bg_index = faiss.IndexFlatIP(bg_all.shape[1])
    bg_index.add(np.ascontiguousarray(bg_all))
    searches = {"off": None, "hub": penalty_for(bg_all, fp.search.hub_neighbours, 1.0),
                "hubsplit": penalty_for(bg_even, fp.search.hub_neighbours, 1.0)}
    n = args.nulls_per_length
    train_null = _nulls(model, train, noise, fp, n, seed)
    odd_null = _nulls(model, train[1::2], noise, fp, n, seed)

    # the demo corpus: test/validation queries, training-music nulls, leave-one-out reference nulls
    ref_ids, refs = _music(paths, "refs")
    q_ids, q_audio = _music(paths, "queries")
    index = _index(model, zip(ref_ids, refs), fp)
    qv = dict(zip(q_ids, embed_many(model, q_audio, fp.audio, "cpu", fp.extract.batch_size)))
    gt = read_ground_truth(paths.ground_truth)
    gt = gt[[i in qv and len(qv[i]) > 0 for i in gt["item_id"]]].reset_index(drop=True)
    loo = _nulls(model, refs, noise, fp, n, seed + REFS_NULL_SEED_OFFSET)
    # the unseen music: its own database, queries and leave-one-out nulls
    ua = parse_args(["--queries-per-length", str(args.unseen_queries), "--oov-per-length", str(args.unseen_oov)])
    corpus = out / "unseen_corpus"
    u_refs, u_oov, _ = split_tracks(music_files(ua)[0], corpus, ua.db_fraction, ua.seed, ua.max_tracks)
    if not (corpus / "ground_truth.csv").exists():
        from avmatch.fingerprint.corpus import (
            load_noises,
            make_queries,
            write_query_tables,
        )

        cp = fp.corpus.model_copy(update={"oov_fraction": ua.oov_per_length / (ua.oov_per_length + ua.queries_per_length)})
        rows, meta = make_queries(corpus, u_refs, u_oov, load_noises(noise_files(corpus), corpus), cp, ua.seed,
                                  workers=1, queries_per_length=ua.queries_per_length, progress=False)
        write_query_tables(corpus, rows, meta)
    u_gt = read_rows(corpus)
    u_audio = [(Path(t.path).stem, decode_audio(t.path, fp.audio.sample_rate)) for t in u_refs]
    u_index = _index(model, u_audio, fp)
    u_qv = [embed_audio(model, decode_audio(corpus / r["query_path"], fp.audio.sample_rate), fp.audio, "cpu")[0]
            for r in u_gt]
    u_loo = _nulls(model, [x for _, x in u_audio], noise, fp, n, seed + REFS_NULL_SEED_OFFSET)

    def nulls_frame(idx, cut_vecs, label, ids=None, pen=None):
        cut, vecs = cut_vecs
        f = features(idx, vecs, fp.search, pen, bg_index, [ids[k] for _, _, k in cut] if ids else None)
        f["set"], f["in_db"], f["length"], f["deg"], f["truth"] = label, False, [v for v, _, _ in cut], "", None
        return f

    for tag, pen in searches.items():
        f = features(index, [qv[i] for i in gt["item_id"]], fp.search, pen, bg_index)
        val = np.array([is_validation(q, fp.evaluate.validation_fraction) for q in gt["query_id"]])
        f["set"], f["in_db"] = np.where(val, "val", "test"), gt["in_db"].astype(int).to_numpy() == 1
        f["length"], f["deg"], f["truth"] = gt["length_s"].to_numpy(), gt["degradation"].to_numpy(), gt["ref_id"].to_numpy()
        nulls = nulls_frame(index, odd_null if tag == "hubsplit" else train_null, "train", pen=pen)
        pd.concat([f, nulls, nulls_frame(index, loo, "loo", ref_ids, pen)], ignore_index=True).to_parquet(out / f"demo_{tag}.parquet")
        u = features(u_index, u_qv, fp.search, pen, bg_index)
        u["set"], u["in_db"], u["length"] = "test", [bool(r["in_db"]) for r in u_gt], [r["length_s"] for r in u_gt]
        u["deg"], u["truth"] = [r["degradation"] for r in u_gt], [Path(r["ref_id"]).name if r["in_db"] else None for r in u_gt]
        own = nulls_frame(u_index, u_loo, "own-loo", [k for k, _ in u_audio], pen)
        pd.concat([u, own], ignore_index=True).to_parquet(out / f"unseen_{tag}.parquet")
    print(f"features written to {out}")


def _score(d: pd.DataFrame, name: str) -> np.ndarray:
    s = SCORES[name](d).to_numpy(np.float64)
    return np.where(d["item"].notna() & np.isfinite(s), s, -np.inf)


def thresholds(d: pd.DataFrame, name: str, sets: list[str], target: float) -> dict[float, float]:
    """Per length, the calibration the pipeline does (`calibration.calibrate`) on the chosen null sets."""
    from avmatch.fingerprint.search import threshold_for_false_match_rate

    return {v: threshold_for_false_match_rate([], [], _score(d[d["set"].isin(sets) & ~d["in_db"] & np.isclose(d["length"], v)], name), target)
            for v in LENGTHS}


def scored(d: pd.DataFrame, name: str, th: dict[float, float], ci: bool) -> list[str]:
    """Cells of one row; `name` "A|B" accepts a query when either score passes its own threshold."""
    from pipelines.fingerprint.evaluation import wilson_interval

    names = name.split("|")
    ths = th if isinstance(th, list) else [th]
    cells = []
    for v in LENGTHS:
        m = (d["set"] == "test") & np.isclose(d["length"], v)
        acc = np.any([_score(d, n) >= t[v] for n, t in zip(names, ths)], axis=0)
        ind, oov = m & d["in_db"], m & ~d["in_db"]
        hit = ind & acc & (d["item"] == d["truth"])
        moved = ind & d["deg"].isin(["speed", "stretch"])
        k, n, f, nf = int(hit.sum()), int(ind.sum()), int((oov & acc).sum()), int(oov.sum())
        cell = f"{k / max(1, n):.3f} / {int((moved & hit).sum()) / max(1, int(moved.sum())):.2f} / {f}/{nf}"
        if ci:
            lo, hi = wilson_interval(k, n)
            flo, fhi = wilson_interval(f, nf)
            cell += f" [{lo:.2f}, {hi:.2f}] [{flo:.2f}, {fhi:.2f}]"
        cells.append(cell)
    return cells


def run_report(args) -> None:
    out = Path(args.out)
    print("cells: hit rate / speed-and-tempo hit rate / false matches on out-of-database test queries"
          + (" [hit Wilson 95 %] [false-match Wilson 95 %]" if args.ci else ""))
    for tag in args.searches.split(","):
        demo, un = pd.read_parquet(out / f"demo_{tag}.parquet"), pd.read_parquet(out / f"unseen_{tag}.parquet")
        print(f"\n### search: {tag}\n")
        print("| score | calibrated on | evaluated on | " + " | ".join(f"{v:g} s" for v in LENGTHS) + " |")
        print("|---|---|---|" + "---:|" * len(LENGTHS))
        for name in args.scores.split(";"):
            cal = {"train": ["train", "val"], "loo": ["loo", "val"], "both": ["train", "loo", "val"]}
            for source in args.sources.split(","):
                th = thresholds(demo, name, cal[source], args.target)
                print(f"| {name} | demo {source} nulls | demo test | " + " | ".join(scored(demo, name, th, args.ci)) + " |")
                print(f"| {name} | demo {source} nulls | unseen music | " + " | ".join(scored(un, name, th, args.ci)) + " |")
            th = thresholds(un, name, ["own-loo"], args.target)
            print(f"| {name} | unseen own-loo nulls | unseen music | " + " | ".join(scored(un, name, th, args.ci)) + " |")
        for pair in args.either.split(";") if args.either else []:
            # either of two scores, each at half the target: the union keeps the target (Bonferroni)
            ths = [thresholds(demo, n, ["train", "val"], args.target / 2) for n in pair.split("|")]
            for label, d in (("demo test", demo), ("unseen music", un)):
                print(f"| {pair.replace('|', ' or ')} ({args.target / 2:.1%} each) | demo train nulls | {label} | "
                      + " | ".join(scored(d, pair, ths, args.ci)) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features", help="embed and search everything once, write the feature tables")
    f.add_argument("--root", default=".", help="project with a trained encoder and the demo features")
    f.add_argument("--out", required=True, help="folder for the tables (and the unseen corpus)")
    f.add_argument("--nulls-per-length", type=int, default=400)
    f.add_argument("--unseen-queries", type=int, default=60, help="in-database unseen queries per length")
    f.add_argument("--unseen-oov", type=int, default=100, help="out-of-database unseen queries per length")
    r = sub.add_parser("report", help="hit and false-match rates per score, null source and search")
    r.add_argument("--out", required=True)
    r.add_argument("--searches", default="off,hub,hubsplit")
    r.add_argument("--scores", default=";".join(SCORES), help="';'-separated names of SCORES")
    r.add_argument("--sources", default="train,loo,both")
    r.add_argument("--either", default="margin|similarity", help="';'-separated pairs 'A|B': accept when either "
                   "score passes its threshold, each calibrated at half the target ('' = none)")
    r.add_argument("--target", type=float, default=0.01)
    r.add_argument("--ci", action="store_true", help="add Wilson 95 %% intervals")
    args = p.parse_args(argv)
    run_features(args) if args.cmd == "features" else run_report(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
