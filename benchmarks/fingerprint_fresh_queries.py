#!/usr/bin/env python
"""Fresh demo-style fingerprint test queries that nobody has looked at (issue 16): a confirmation set.

The demo corpus's references stay as they are; the corpus builder's own query maker
(`avmatch.fingerprint.corpus.make_queries`: the same lengths, degradations, test noises and speed changes)
cuts new excerpts at new offsets with another seed (`--query-seed`), and the out-of-database queries come from
the demo's own held-out music: the corpus plan is re-made with the corpus's seed (it must name the same held-out
sources as corpus.json, else this stops) and only the held-out music21 pieces are rendered again (into OUT;
samples may differ slightly from the demo build's, whose rendering batches also held the references; the pieces,
instruments and tempi are the same), plus the held-out recorded files from the Debian cache.

    python benchmarks/fingerprint_fresh_queries.py OUT --corpus /work/fplarge/data/fingerprint/corpus \\
        --query-seed 1211 --queries-per-length 75

OUT gets ground_truth.csv, query_params.csv, queries/ and `refs` (a symlink to the corpus's references, so
the ground truth's paths are the demo's). `bench_fingerprint_verify.py --queries OUT` scores them as a test
set with thresholds calibrated as the evaluate stage does (never on these queries). Nothing in the corpus is
written.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from avmatch.core.device import available_cores  # noqa: E402
from avmatch.core.music21_render import RENDER_SR, render_many  # noqa: E402
from avmatch.fingerprint import corpus as fc  # noqa: E402
from avmatch.fingerprint.params import FpCorpusParams  # noqa: E402


def heldout_tracks(corpus: Path, summary: dict, params: FpCorpusParams, out: Path, workers: int) -> list[fc.Track]:
    """The demo's held-out sources for out-of-database queries, re-planned with the corpus's seed."""
    seed = int(summary["seed"])
    spec = fc.SIZES[params.size]
    rec_split, rec_sources = fc._recorded_tracks(seed, None)
    pkg_of = {}
    for name in rec_sources:
        root_dir = fc.debian.debs_dir(None) / name
        for files in rec_split.values():
            for f in files:
                if root_dir in f.parents:
                    pkg_of[f] = name
    rec = {k: [fc.Track(id="", path=f, split=k, source=pkg_of[f], name=f"{pkg_of[f]}:{f.name}") for f in v]
           for k, v in rec_split.items()}
    fc._measure(rec["ref"] + rec["train"] + rec["oov"], workers)
    plan = fc._plan_rendered(spec, seed, sum(t.duration_s for t in rec["ref"]), len(rec["ref"]),
                             sum(t.duration_s for t in rec["train"]), len(rec["train"]), None, workers,
                             params.cover_ref_instruments, params.extra_train_pieces, params.cover_min_pieces)
    with open(corpus / "tracks.csv") as fh:
        tracks = list(csv.DictReader(fh))
    want_refs = sorted(Path(t["path"]).stem for t in tracks if t["split"] == "ref" and t["source"] == "music21")
    if sorted(s.name for s in plan["ref"]) != want_refs:
        raise SystemExit("the re-made plan's references differ from the corpus's: not the same held-out music")
    names = sorted([s.name for s in plan["oov"]] + [t.name for t in rec["oov"]])
    if names != sorted(summary["oov_sources"]):
        raise SystemExit(f"held-out sources differ from corpus.json's oov_sources: {names}")
    folder = out / "_heldout"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(s, folder / f"{s.name}.flac") for s in plan["oov"]]
    todo = [j for j in jobs if not j[1].exists()]
    if todo:
        render_many(todo, workers, RENDER_SR, True, desc="render held-out music")
    rendered = [fc.Track(id="", path=p, split="oov", source="music21", name=s.name) for s, p in jobs]
    fc._measure(rendered, workers)
    return rendered + rec["oov"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--corpus", type=Path, required=True, help="the demo corpus (read only)")
    ap.add_argument("--query-seed", type=int, required=True, help="seed of the new queries (the demo's is 7)")
    ap.add_argument("--queries-per-length", type=int, default=75)
    args = ap.parse_args()
    corpus, out = args.corpus.resolve(), args.out.resolve()
    summary = json.loads((corpus / "corpus.json").read_text())
    params = FpCorpusParams(**summary["params"])
    if args.query_seed == int(summary["seed"]):
        ap.error("--query-seed is the corpus's own seed: these would be the demo's queries")
    if (out / "ground_truth.csv").exists():
        ap.error(f"{out} already holds queries")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    workers = available_cores()
    oov = heldout_tracks(corpus, summary, params, out, workers)
    if not (out / "refs").exists():
        (out / "refs").symlink_to(corpus / "refs")
    with open(corpus / "tracks.csv") as fh:
        refs = [fc.Track(id=t["id"], path=out / t["path"], split="ref", source=t["source"], name=t["id"],
                         duration_s=float(t["duration_s"])) for t in csv.DictReader(fh) if t["split"] == "ref"]
    test_noises = fc.load_noises(sorted((corpus / "noise" / "test").iterdir()), corpus)
    gt, meta = fc.make_queries(out, refs, oov, test_noises, params, args.query_seed, workers,
                               args.queries_per_length)
    fc.write_query_tables(out, gt, meta)
    (out / "fresh.json").write_text(json.dumps({
        "corpus": str(corpus), "corpus_seed": summary["seed"], "query_seed": args.query_seed,
        "queries_per_length": args.queries_per_length, "n_queries": len(gt),
        "n_in_db": sum(r["in_db"] == "1" for r in gt), "oov_sources": sorted(t.name for t in oov),
        "seconds": round(time.time() - t0, 1)}, indent=1) + "\n")
    print(f"{len(gt)} queries in {out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
