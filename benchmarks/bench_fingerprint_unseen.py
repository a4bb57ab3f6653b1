#!/usr/bin/env python
"""Fingerprinting on real music the project has never seen, as a user gets it.

The demo's numbers come from music the encoder's corpus was built from (rendered music21 scores and
two Debian packages). This benchmark asks what a user gets on *other* recorded music, with the encoder
and the no-match thresholds `avmatch fingerprint add` picks up (or `--model` / `--threshold`):

1. Music: a Debian music package the corpora never use (default `wesnoth-1.16-music`: orchestral and
   folk recordings, Ogg Vorbis, GPL), fetched with `apt-get download` into `$AVMATCH_CACHE/debs`;
   or any folder with `--audio-dir`. A seeded `--db-fraction` of the tracks goes into a database
   (`FingerprintDB.add`, the code behind `avmatch fingerprint add`); the rest are held out.
2. Queries: the demo corpus's own query maker (`avmatch.fingerprint.corpus.make_queries`), so the
   degradations are exactly those of `params.yaml`'s `fingerprint.corpus` (noise from the Sonic Pi
   samples the demo uses, simulated rooms, phone band + codecs, gain, speed and tempo changes), at
   every `query_lengths_s`; out-of-database queries are cut from the held-out tracks.
3. Answers: one `Searcher` (what `avmatch fingerprint identify` runs), each query's best candidate and
   whether it passes the database's threshold for its length.

Reported per query length: hit rate (right recording, accepted), false-match rate on out-of-database
queries (answered at all), both with Wilson 95 % intervals, the top-1 rate without a threshold, and the
hit rate of the speed- and tempo-changed queries alone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads  # noqa: E402

DEFAULT_PACKAGE = "wesnoth-1.16-music"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", default=DEFAULT_PACKAGE, help="Debian music package to test on (default %(default)s)")
    p.add_argument("--audio-dir", default=None, help="test on the audio files under this folder instead")
    p.add_argument("--db-fraction", type=float, default=0.7, help="share of the tracks put in the database")
    p.add_argument("--queries-per-length", type=int, default=60, help="in-database queries per length")
    p.add_argument("--oov-per-length", type=int, default=100,
                   help="out-of-database queries per length (a false-match rate near 1 %% needs hundreds)")
    p.add_argument("--max-tracks", type=int, default=0, help="use at most N tracks (0 = all)")
    p.add_argument("--model", default=None, help="encoder (default: the one `fingerprint add` finds)")
    p.add_argument("--threshold", type=float, default=None, help="one no-match threshold for every length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="scratch folder, kept (default: a temp dir, removed)")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.max_tracks = args.max_tracks or 6
        args.queries_per_length = min(args.queries_per_length, 4)
        args.oov_per_length = min(args.oov_per_length, 4)
    return args


def music_files(args: argparse.Namespace) -> tuple[list[Path], str]:
    from avmatch.core.debian import fetch_package, list_audio

    if args.audio_dir:
        files = list_audio(Path(args.audio_dir))
        source = f"{len(files)} files under {args.audio_dir}"
    else:
        pkg = fetch_package(args.package)
        files = pkg.audio
        source = f"Debian {pkg.name} {pkg.version} ({len(files)} files)"
    if not files:
        raise SystemExit(f"no audio files found ({source})")
    return files, source


def noise_files(work: Path) -> list[Path]:
    """The Sonic Pi noise samples the demo corpus uses for its test noise, copied under `work`."""
    from avmatch.core.debian import fetch_package
    from avmatch.fingerprint.corpus import NOISE_PACKAGE, NOISE_SAMPLES

    pkg = fetch_package(NOISE_PACKAGE)
    chosen = [f for f in pkg.audio if f.stem in NOISE_SAMPLES]
    out = []
    for f in chosen:
        dest = work / "noise" / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
        out.append(dest)
    return out


def split_tracks(files: list[Path], work: Path, fraction: float, seed: int, max_tracks: int):
    """Decode every track once to the query rate: references are written under `work`/refs (their ids
    are what the ground truth names), the held-out rest are out-of-database sources."""
    import numpy as np

    from avmatch.core.audio import MediaError, decode_audio, write_wav
    from avmatch.fingerprint.corpus import QUERY_SR, Track

    rng = np.random.default_rng([seed, 907])
    order = [files[i] for i in rng.permutation(len(files))]
    if max_tracks:
        order = order[:max_tracks]
    n_db = max(1, int(round(len(order) * fraction)))
    refs, oov, bad = [], [], []
    for j, f in enumerate(order):
        try:
            x = decode_audio(f, QUERY_SR)
        except MediaError as exc:
            bad.append((str(f), exc.reason))
            continue
        stem = f.stem.replace(" ", "_")
        if j < n_db:
            path = work / "refs" / f"{stem}.wav"
            write_wav(path, x, QUERY_SR)
            refs.append(Track(f"refs/{stem}", path, "ref", "unseen", stem, len(x) / QUERY_SR))
        else:
            oov.append(Track("", f, "oov", "unseen", stem, len(x) / QUERY_SR))
    return refs, oov, bad


def score_answers(gt, answers) -> list[dict]:
    """Per length: hit rate, false-match rate, top-1 without threshold, speed/tempo-changed hit rate."""
    import numpy as np

    from pipelines.fingerprint.evaluation import wilson_interval

    rows = []
    lengths = sorted({float(r["length_s"]) for r in gt})
    for length in lengths:
        sel = [r for r in gt if np.isclose(float(r["length_s"]), length)]
        ind = [r for r in sel if r["in_db"]]
        oov = [r for r in sel if not r["in_db"]]

        def best(r):
            a = answers[r["query_id"]]
            return a.candidates[0] if a.candidates else None

        def right(r):
            c = best(r)
            return c is not None and c.ref_id == Path(r["ref_id"]).name

        hits = sum(1 for r in ind if right(r) and best(r).match)
        top1 = sum(1 for r in ind if right(r))
        answered = sum(1 for r in oov if best(r) is not None and best(r).match)
        moved = [r for r in ind if r["degradation"] in ("speed", "stretch")]
        moved_hits = sum(1 for r in moved if right(r) and best(r).match)
        lo, hi = wilson_interval(hits, len(ind))
        flo, fhi = wilson_interval(answered, len(oov))
        rows.append({"length": f"{length:g} s", "in-db queries": len(ind),
                     "hit rate": f"{hits / max(1, len(ind)):.3f} [{lo:.2f}, {hi:.2f}]" if ind else "-",
                     "top-1, no threshold": f"{top1 / max(1, len(ind)):.3f}",
                     "speed/tempo hit rate": f"{moved_hits / len(moved):.3f} (n={len(moved)})" if moved else "-",
                     "OOV queries": len(oov),
                     "false-match rate": f"{answered / len(oov):.3f} [{flo:.2f}, {fhi:.2f}]" if oov else "-"})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    from avmatch.core.config import load_params
    from avmatch.fingerprint.corpus import load_noises, make_queries, read_ground_truth, write_query_tables
    from avmatch.fingerprint.database import FingerprintDB
    from avmatch.fingerprint.db_inputs import Source
    from avmatch.fingerprint.encoder_lookup import locate_encoder

    rep = Report("fingerprint_unseen", "Fingerprinting on real music it has never seen", args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_unseen_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        files, source = music_files(args)
        choice = locate_encoder(Path(args.model) if args.model else None, args.threshold)
        corpus = work / "corpus"
        refs, oov, bad = split_tracks(files, corpus, args.db_fraction, args.seed, args.max_tracks)
        cp = load_params(ROOT / "params.yaml", systems=["fingerprint"]).fingerprint.corpus
        n_in, n_oov = args.queries_per_length, args.oov_per_length
        cp = cp.model_copy(update={"oov_fraction": n_oov / (n_in + n_oov)})
        noises = load_noises(noise_files(corpus), corpus)
        t0 = time.perf_counter()
        gt_rows, meta_rows = make_queries(corpus, refs, oov, noises, cp, args.seed, workers=2,
                                          queries_per_length=args.queries_per_length, progress=args.verbose)
        write_query_tables(corpus, gt_rows, meta_rows)
        print(f"[bench] {len(refs)} references, {len(oov)} held out, {len(gt_rows)} queries "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        db = FingerprintDB.create(work / "db", choice)
        report = db.add([Source(t.path) for t in refs])
        if report.errors:
            print(f"[bench] {len(report.errors)} reference(s) failed: {report.errors[:3]}", flush=True)
        searcher = db.searcher()
        gt = read_ground_truth(corpus)
        t0 = time.perf_counter()
        answers = {r["query_id"]: searcher.identify(corpus / r["query_path"]) for r in gt}
        per_query = (time.perf_counter() - t0) / max(1, len(gt))
        rows = score_answers(gt, answers)
        hours = sum(t.duration_s for t in refs) / 3600
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    rep.refresh_machine()
    rep.add(f"Music: {source}; {len(refs)} tracks ({hours:.2f} h) in the database, {len(oov)} held out for "
            f"out-of-database queries{f', {len(bad)} undecodable' if bad else ''}. Encoder: {choice.path} "
            f"(hash {choice.model_hash[:12]}); thresholds: {choice.thresholds.describe()} "
            f"(from {choice.threshold_source}). Degradations: {', '.join(cp.degradations)}; "
            f"{per_query * 1000:.0f} ms per query in one process.")
    rep.table(rows, caption="**Per query length** (hit rate = right recording and accepted; false-match rate = "
                            "out-of-database queries answered with any recording; Wilson 95 % intervals):")
    rep.data = {"rows": rows, "references": len(refs), "held_out": len(oov), "hours": hours}
    rep.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
