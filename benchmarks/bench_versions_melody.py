#!/usr/bin/env python
"""Versions: a training-free melody embedding (bag of melodic interval n-grams) alone and mixed with the encoder.

Feasibility study for issue 18 (pre-registered in NOTES.md of branch ver12): the test families are settings of one
hymn tune and share the soprano melody, while harmony differs. Per track:

1. predominant melody from the features stage's decoded audio (16 kHz PCM): Essentia `PredominantPitchMelodia`
   after `EqualLoudness` (extractor `melodia`), or the top salient pitch of the project's CQT after a harmonic-sum
   salience (extractor `skyline`); or the top voice of Spotify's basic-pitch polyphonic note transcription
   (extractor `basicpitch`, session 14: its ONNX model run by the package's own `run_inference` on the track's
   original audio at 22.05 kHz, notes decoded by the package's `output_to_notes_polyphonic`, then the highest
   sounding note per model frame);
2. f0 -> MIDI semitones (rounded); notes = runs of one pitch lasting >= `--min-note-s`; unvoiced frames dropped;
   repeated notes merged;
3. intervals between successive notes, clipped to +/-12; n-grams of intervals (n in `--ngrams`);
4. the n-gram counts weighted `l2` (log(1 + tf), L2-normalised) or `tfidf` (idf from the `train` split's tracks,
   no labels), cosine distance. Key-invariant (intervals) and tempo-invariant (notes, not frames) by design,
   robust to dropped / repeated phrases as a bag.

Every setting of the grid is scored on each collection with the project's evaluation (track MAP, bootstrap CI,
MR1); the setting is chosen on `val` (best MAP). The melody distances are also mixed with the encoder's (bpwr
track distances of `--encoder`): both z-scored per query, melody share `w`; `w` is chosen on `val`. Paired per-query
AP differences vs the encoder alone, percentile bootstrap over the queries.

Melodies are cached per content hash and extractor in `--cache`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads

HOP_MELODIA = 128  # Essentia's default hop (samples)


def melodia_f0(pcm_file: str, sr: int) -> tuple[float, object]:
    """(frame rate, f0 in Hz per frame, 0 = unvoiced)."""
    import essentia.standard as es
    import numpy as np

    x = np.load(pcm_file).astype(np.float32)
    f0, _ = es.PredominantPitchMelodia(sampleRate=sr, hopSize=HOP_MELODIA)(es.EqualLoudness(sampleRate=sr)(x))
    return sr / HOP_MELODIA, np.asarray(f0, np.float32)


def skyline_f0(cqt_file: str, f_min: float, bpo: int, frame_rate: float, rel: float = 0.3
               ) -> tuple[float, object]:
    """Top salient pitch of a log-CQT: harmonic-sum salience (harmonics 1-4, weights 0.8^(h-1)), then the highest
    bin whose salience is >= `rel` x the frame's maximum (frames < 5 % of the track's peak are unvoiced)."""
    import numpy as np

    c = np.load(cqt_file).astype(np.float32)
    c = np.maximum(c - np.median(c), 0)
    sal = np.zeros_like(c)
    for h in range(1, 5):
        s = int(round(bpo * np.log2(h)))
        sal[:, : c.shape[1] - s] += 0.8 ** (h - 1) * c[:, s:]
    mx = sal.max(1)
    voiced = mx >= 0.05 * mx.max()
    top = np.array([np.nonzero(r >= rel * m)[0].max() if m > 0 else 0 for r, m in zip(sal, mx)])
    f0 = np.where(voiced, f_min * 2 ** (top / bpo), 0.0).astype(np.float32)
    return frame_rate, f0


def salience_f0(pcm_file: str, sr: int, alpha: float = 0.5, hop: int = 256) -> tuple[float, object]:
    """Top voice from Essentia's harmonic-summation pitch salience (Melodia's, 20 harmonics, 10-cent bins, 80-2000
    Hz) per frame: the highest salience peak >= `alpha` x the frame's strongest peak (frames whose strongest peak is
    < 5 % of the track's strongest are unvoiced)."""
    import essentia.standard as es
    import numpy as np

    x = es.EqualLoudness(sampleRate=sr)(np.load(pcm_file).astype(np.float32))
    win, spec = es.Windowing(type="hann", zeroPadding=2048), es.Spectrum()
    peaks = es.SpectralPeaks(sampleRate=sr, minFrequency=40, maxFrequency=8000, maxPeaks=100,
                             magnitudeThreshold=1e-5, orderBy="magnitude")
    sal = es.PitchSalienceFunction(numberHarmonics=20, harmonicWeight=0.8, referenceFrequency=55, binResolution=10)
    salpk = es.PitchSalienceFunctionPeaks(referenceFrequency=55, binResolution=10, minFrequency=80, maxFrequency=2000)
    f0, strength = [], []
    for fr in es.FrameGenerator(x, frameSize=2048, hopSize=hop, startFromZero=True):
        f, m = peaks(spec(win(fr)))
        b, v = salpk(sal(f, m)) if len(f) and m.max() > 0 else ([], [])
        if len(b) == 0:
            f0.append(0.0), strength.append(0.0)
            continue
        f0.append(55 * 2 ** (float(b[v >= alpha * v.max()].max()) * 10 / 1200)), strength.append(float(v.max()))
    f0, strength = np.asarray(f0, np.float32), np.asarray(strength, np.float32)
    if len(f0):
        f0[strength < 0.05 * strength.max()] = 0
    return sr / hop, f0


BP_FPS = 22050 / 256  # basic-pitch's model frame rate (AUDIO_SAMPLE_RATE / FFT_HOP)


def _import_basic_pitch():
    """Import basic-pitch quietly: `resampy` (only its sonification uses it) is stubbed, and the package's
    warnings about every absent backend (TensorFlow, CoreML, TFLite) are silenced."""
    import logging
    import types

    sys.modules.setdefault("resampy", types.ModuleType("resampy"))
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        import basic_pitch.inference
        import basic_pitch.note_creation
    finally:
        logging.getLogger().setLevel(level)
    return basic_pitch


def basicpitch_model(threads: int = 1):
    """basic-pitch's ICASSP-2022 model (the ONNX file shipped in the pip package), run by onnxruntime on `threads`
    threads. basic-pitch is not a project dependency: install `basic-pitch onnxruntime pretty_midi mido
    importlib_resources mir_eval` with `pip install --no-deps --target DIR` and put DIR on PYTHONPATH."""
    basic_pitch = _import_basic_pitch()
    import onnxruntime as ort
    from basic_pitch.inference import Model

    path = str(basic_pitch.ICASSP_2022_MODEL_PATH)
    if not path.endswith(".onnx"):
        raise RuntimeError(f"basic-pitch picked {path}, not its ONNX model: is TensorFlow / CoreML installed?")
    model = Model(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = threads
    model.model = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    return model


def basicpitch_output(audio_file: str, model) -> dict:
    """basic-pitch's frame-wise note and onset likelihoods [frames, 88] (MIDI 21-108), computed exactly as
    `basic_pitch.inference.predict` does (librosa load at 22.05 kHz mono, 2 s windows overlapping by 30 frames)."""
    import numpy as np

    _import_basic_pitch()
    from basic_pitch.inference import run_inference

    out = run_inference(audio_file, model)
    return {"note": out["note"].astype(np.float16), "onset": out["onset"].astype(np.float16)}


def basicpitch_events(note, onset, onset_thresh: float = 0.5, frame_thresh: float = 0.3,
                      min_note_ms: float = 127.70) -> list[tuple[int, int, int, float]]:
    """Note events (start frame, end frame, MIDI pitch, amplitude) decoded by basic-pitch's own
    `output_to_notes_polyphonic` with `predict`'s defaults (onset 0.5, frame 0.3, 127.7 ms, onsets inferred from
    the frames, the "melodia trick" on, no frequency limits; pitch bends are not needed)."""
    import numpy as np

    _import_basic_pitch()
    from basic_pitch.note_creation import output_to_notes_polyphonic

    min_len = int(np.round(min_note_ms / 1000 * BP_FPS))
    return output_to_notes_polyphonic(np.asarray(note, np.float32).copy(), np.asarray(onset, np.float32).copy(),
                                      onset_thresh=onset_thresh, frame_thresh=frame_thresh, min_note_len=min_len,
                                      infer_onsets=True, max_freq=None, min_freq=None, melodia_trick=True)


def skyline_of_events(events, n_frames: int) -> tuple[float, object]:
    """(frame rate, f0 in Hz per model frame): the highest note sounding in each frame (0 = none). Why the top
    note: the corpus's families share the soprano, the highest part of every setting."""
    import numpy as np

    top = np.full(n_frames, -1, int)
    for start, end, pitch, _amp in events:
        seg = top[start:end]
        np.maximum(seg, int(pitch), out=seg)
    f0 = np.where(top >= 0, 440.0 * 2 ** ((top - 69) / 12.0), 0.0).astype(np.float32)
    return BP_FPS, f0


def notes_from_f0(f0, frame_rate: float, min_note_s: float, median_s: float = 0.0):
    """MIDI note sequence: runs of one rounded pitch lasting >= min_note_s, unvoiced frames dropped, repeats merged
    (the rounded pitch median-filtered over `median_s` first when > 0)."""
    import numpy as np

    f0 = np.asarray(f0, np.float64)
    midi = np.where(f0 > 0, np.round(69 + 12 * np.log2(np.maximum(f0, 1e-6) / 440.0)), -1).astype(int)
    k = int(round(median_s * frame_rate)) | 1
    if median_s > 0 and k > 1 and len(midi) >= k:
        from scipy.ndimage import median_filter

        midi = median_filter(midi, size=k, mode="nearest")
    min_len = max(1, int(round(min_note_s * frame_rate)))
    notes = []
    for p, run in itertools.groupby(midi):
        n = sum(1 for _ in run)
        if p >= 0 and n >= min_len and (not notes or notes[-1] != p):
            notes.append(int(p))
    return np.asarray(notes, int)


def score_soprano(piece_key: str):
    """The score's top voice (music21 cache of the corpus build), repeated notes merged; None if not cached."""
    import json

    import numpy as np

    from avmatch.core.music21_render import _cache_file, music21_cache_dir

    f = _cache_file(music21_cache_dir(), piece_key)
    if not isinstance(piece_key, str) or not f.exists():
        return None
    d = json.loads(f.read_text())
    if "parts" not in d:
        return None
    top: dict[float, int] = {}
    for on, _d, p, _v in d["parts"][0]:
        top[on] = max(top.get(on, 0), p)
    merged: list[int] = []
    for t in sorted(top):
        if not merged or merged[-1] != top[t]:
            merged.append(top[t])
    return np.asarray(merged, int)


def corrupt(notes, p: float, rng):
    """A note sequence with a share `p` of its notes damaged as an extractor would: a third each substituted (a
    random step of 1-7 semitones up or down), deleted, or followed by an inserted spurious note; repeats merged."""
    import numpy as np

    out: list[int] = []
    for n in np.asarray(notes, int).tolist():
        u = rng.random()
        if u < p / 3:
            out.append(n + int(rng.choice([-1, 1])) * int(rng.integers(1, 8)))
        elif u < 2 * p / 3:
            continue
        else:
            out.append(n)
            if u < p:
                out.append(n + int(rng.choice([-1, 1])) * int(rng.integers(1, 8)))
    merged = [x for i, x in enumerate(out) if i == 0 or x != out[i - 1]]
    return np.asarray(merged, int)


def ngram_precision(extracted: dict, reference: dict) -> float:
    """Share of the extracted n-gram occurrences that occur in the reference (the score's soprano)."""
    total = sum(extracted.values())
    return sum(v for k, v in extracted.items() if k in reference) / total if total else 0.0


def ngram_counts(notes, ns: tuple[int, ...], clip: int = 12) -> dict[tuple, int]:
    """Counts of the interval n-grams (tuples (n, i1, ..., in)) of a note sequence; intervals clipped to +/-clip."""
    import numpy as np

    iv = np.clip(np.diff(np.asarray(notes, int)), -clip, clip).tolist()
    out: dict[tuple, int] = {}
    for n in ns:
        for i in range(len(iv) - n + 1):
            k = (n, *iv[i:i + n])
            out[k] = out.get(k, 0) + 1
    return out


def vectors(counts: list[dict], weighting: str, idf: dict | None = None):
    """Sparse [tracks, vocabulary] matrix of weighted, L2-normalised n-gram vectors (vocabulary of these tracks)."""
    import numpy as np
    from scipy import sparse

    vocab: dict[tuple, int] = {}
    rows, cols, vals = [], [], []
    for r, c in enumerate(counts):
        for k, v in c.items():
            j = vocab.setdefault(k, len(vocab))
            w = float(np.log1p(v)) if weighting == "l2" else float(v) * (idf or {}).get(k, idf["__max__"] if idf else 1.0)
            rows.append(r), cols.append(j), vals.append(w)
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(len(counts), max(1, len(vocab))))
    norm = np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel())
    return sparse.diags(1.0 / np.maximum(norm, 1e-12)) @ m


def idf_of(counts: list[dict]) -> dict:
    import numpy as np

    df: dict[tuple, int] = {}
    for c in counts:
        for k in c:
            df[k] = df.get(k, 0) + 1
    n = len(counts)
    idf = {k: float(np.log((n + 1) / (v + 1)) + 1) for k, v in df.items()}
    idf["__max__"] = float(np.log(n + 1) + 1)
    return idf


def cosine_distances(m):
    import numpy as np

    d = 1.0 - np.asarray((m @ m.T).todense(), np.float64)
    np.fill_diagonal(d, np.inf)
    return d


def mixed(d_enc, d_mel, w: float):
    from avmatch.versions.rerank import zscore_rows

    return (1 - w) * zscore_rows(d_enc) + w * zscore_rows(d_mel)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--project", default=str(ROOT), help="project folder (features and encoder inside)")
    p.add_argument("--encoder", default=None,
                   help="encoder file whose distances the melody is mixed with (without it: melody rows only)")
    p.add_argument("--collections", nargs="+", default=["val", "test_unseen", "test"])
    p.add_argument("--extractors", nargs="+", default=["melodia"], choices=["melodia", "skyline", "salience", "learned", "basicpitch"])
    p.add_argument("--transcriber", default=None,
                   help="extractor `learned`: a soprano transcriber of bench_versions_soprano_train.py")
    p.add_argument("--ngrams", nargs="+", default=["2", "3", "4", "2,3,4"], help="n sets, comma-separated")
    p.add_argument("--weightings", nargs="+", default=["l2", "tfidf"], choices=["l2", "tfidf"])
    p.add_argument("--min-note-s", type=float, default=0.08)
    p.add_argument("--median-s", type=float, default=0.0, help="median filter of the rounded pitch (s; 0 = none)")
    p.add_argument("--alpha", type=float, default=0.5, help="salience extractor: peak threshold (x frame max)")
    p.add_argument("--bp-onset", type=float, default=0.5, help="basicpitch: onset threshold (package default)")
    p.add_argument("--bp-frame", type=float, default=0.3, help="basicpitch: frame threshold (package default)")
    p.add_argument("--bp-min-note-ms", type=float, default=127.70,
                   help="basicpitch: minimum note event length, ms (package default)")
    p.add_argument("--tune", type=int, default=0, metavar="N",
                   help="only print the extractors' mean 3-gram precision on the first N `train` tracks with a score "
                        "soprano (settings are tuned there, never on val / test), then stop")
    p.add_argument("--precision-only", action="store_true",
                   help="stop after the 3-gram precision rows (a pre-registered gate before any melody MAP)")
    p.add_argument("--mix-weights", nargs="+", type=float, default=[round(0.1 * i, 1) for i in range(11)])
    p.add_argument("--oracle-noise", nargs="*", type=float, default=[],
                   help="also score the score's soprano with this share of its notes damaged (how good must extraction be?)")
    p.add_argument("--cache", default="/work/scratch/ver12/melody", help="melody cache folder")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    import numpy as np
    import pandas as pd
    import yaml

    from bench_versions_unseen import embed_variant, params_for_encoder

    from avmatch.core.config import load_params
    from avmatch.core.device import resolve_device
    from avmatch.core.progress import progress
    from avmatch.versions.metrics import confidence_interval, per_query
    from avmatch.versions.model import load_encoder
    from avmatch.versions.retrieval import Collection, track_distance_matrix
    from pipelines.versions.evaluation import evaluate_track_distances
    from pipelines.versions.paths import VersionsPaths
    from pipelines.versions.renderings import rendering_shares, track_attributes
    from pipelines.versions.shared import ok_items

    root = Path(args.project).resolve()
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.set)}
    base = load_params(root / "params.yaml", overrides)
    paths = VersionsPaths.from_params(base, root)
    device = resolve_device("cpu")
    if args.encoder:
        model, cfg = load_encoder(Path(args.encoder), device)
        params = params_for_encoder(base, cfg)
    else:
        model, params = None, base
    ev = params.versions.evaluate
    cq = params.versions.cqt
    sr = params.versions.audio.sample_rate
    attrs = track_attributes(paths)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    ns_sets = [tuple(int(x) for x in s.split(",")) for s in args.ngrams]
    seed = params.common.seed

    transcriber = None
    if "learned" in args.extractors:
        if not args.transcriber:
            p.error("--extractors learned needs --transcriber")
        from bench_versions_soprano_train import learned_f0, load_transcriber

        transcriber, _tcfg = load_transcriber(args.transcriber)
    bp_model = basicpitch_model(args.threads) if "basicpitch" in args.extractors else None
    bp_memo: dict = {}

    def tag(extractor: str) -> str:
        if extractor == "salience":
            return f"salience{args.alpha}"
        if extractor == "learned":
            return f"learned_{Path(args.transcriber).stem}"
        return extractor  # basicpitch: the cache holds the model output, decoded per setting below

    def melody(row, extractor: str):
        f = cache / f"{row.content_hash}_{tag(extractor)}.npz"
        if extractor == "basicpitch":
            key = row.content_hash
            if key not in bp_memo:
                if not f.exists():
                    t = time.perf_counter()
                    audio = Path(row.path) if Path(row.path).is_absolute() else paths.corpus / row.path  # as ingest does
                    out = basicpitch_output(str(audio), bp_model)
                    np.savez(f, seconds=time.perf_counter() - t, **out)
                z = np.load(f)
                t = time.perf_counter()
                ev = basicpitch_events(z["note"], z["onset"], args.bp_onset, args.bp_frame, args.bp_min_note_ms)
                bp_memo[key] = (*skyline_of_events(ev, len(z["note"])), time.perf_counter() - t)
            return bp_memo[key][:2]
        if f.exists():
            z = np.load(f)
            return float(z["rate"]), z["f0"]
        t = time.perf_counter()
        if extractor == "melodia":
            rate, f0 = melodia_f0(row.pcm_file, sr)
        elif extractor == "salience":
            rate, f0 = salience_f0(row.pcm_file, sr, args.alpha)
        elif extractor == "learned":
            rate, f0 = learned_f0(row.cqt_file, transcriber)
        else:
            rate, f0 = skyline_f0(row.cqt_file, cq.f_min, cq.bins_per_octave, 1.0 / (cq.hop_s * cq.pool))
        np.savez(f, rate=rate, f0=f0, seconds=time.perf_counter() - t)
        return rate, f0

    def counts_of(items, extractor, ns):
        out = []
        for row in items.itertuples():
            rate, f0 = melody(row, extractor)
            out.append(ngram_counts(notes_from_f0(f0, rate, args.min_note_s, args.median_s), ns))
        return out

    rep = Report("versions_melody", "Versions: melody n-gram embedding", args)
    rep.refresh_machine()
    coll_items = {}
    for name in args.collections:
        items = ok_items(paths, (name,))
        coll_items[name] = items.head(12) if args.quick else items
    train = ok_items(paths, ("train",))
    if args.quick:
        train = train.head(12)
    pieces = pd.read_csv(paths.tracks_csv).set_index("id")["piece"].to_dict() \
        if paths.tracks_csv.exists() else {}
    if args.tune:
        # settings are tuned on training tracks only: the first N `train` tracks whose score soprano is known
        tr = train[[score_soprano(pieces.get(t)) is not None for t in train["id"]]].head(args.tune)
        for extractor in args.extractors:
            prec = [ngram_precision(c, ngram_counts(score_soprano(pieces.get(t)), (3,)))
                    for c, t in zip(counts_of(tr, extractor, (3,)), tr["id"])]
            print(f"tune {extractor} {tag(extractor)} bp onset {args.bp_onset} frame {args.bp_frame} min note "
                  f"{args.bp_min_note_ms} ms, skyline min note {args.min_note_s} s, median {args.median_s} s: "
                  f"train[:{len(tr)}] 3-gram precision {np.mean(prec):.3f}", flush=True)
        return 0
    # extract (and time) every melody once
    ext_ms = {}
    for extractor in args.extractors:
        secs = []
        for name, items in [*coll_items.items(), ("train", train)] if "tfidf" in args.weightings else coll_items.items():
            for row in progress(items.itertuples(), desc=f"{extractor} {name}", total=len(items), unit="track"):
                melody(row, extractor)
                secs.append(float(np.load(cache / f"{row.content_hash}_{tag(extractor)}.npz")["seconds"])
                            + (bp_memo[row.content_hash][2] if extractor == "basicpitch" else 0.0))
        ext_ms[extractor] = round(1000 * float(np.mean(secs)), 1)

    # encoder distances
    enc = {}
    for name, items in coll_items.items() if model is not None else ():
        meta, vecs = embed_variant(model, items, params, device, "plain")
        coll = Collection.from_rows(meta, vecs)
        if list(coll.track_ids) != list(items["id"]):
            raise RuntimeError("track order differs")
        enc[name] = track_distance_matrix(coll, ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates)

    def score(dist, items):
        cl = list(items["label"])
        res = evaluate_track_distances(dist, cl, ev.bootstrap, seed)
        return res

    def paired(dist, other, items):
        if other is None:
            return "(no encoder)"
        c = np.asarray(list(items["label"]), dtype=object)
        valid = ~np.eye(len(c), dtype=bool)
        rel = (c[:, None] == c[None]) & valid
        diff = per_query(dist, rel, valid)["AP"] - per_query(other, rel, valid)["AP"]
        lo, hi = confidence_interval(diff, ev.bootstrap, seed)
        return f"{diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"

    rows = []
    sop = {name: [score_soprano(pieces.get(t)) for t in items["id"]] for name, items in coll_items.items()}
    for name, items in coll_items.items():
        if any(x is None for x in sop[name]):
            continue
        for ns in ns_sets:
            d = cosine_distances(vectors([ngram_counts(x, ns) for x in sop[name]], "l2"))
            res = score(d, items)
            lo, hi = res["ci95"]["MAP"]
            rows.append({"system": f"score soprano n={','.join(map(str, ns))} l2 (oracle: not from audio)",
                         "collection": name, "track MAP": res["metrics"]["MAP"], "95% CI": f"[{lo:.3f}, {hi:.3f}]",
                         "MR1": res["metrics"]["MR1"], "paired vs encoder": paired(d, enc.get(name), items)})
            print(rows[-1], flush=True)
        for noise in args.oracle_noise:
            rng = np.random.default_rng(seed)
            damaged = [corrupt(x, noise, rng) for x in sop[name]]
            prec = np.mean([ngram_precision(ngram_counts(d, (3,)), ngram_counts(x, (3,))) for d, x in zip(damaged, sop[name])])
            for ns in ns_sets:
                d = cosine_distances(vectors([ngram_counts(x, ns) for x in damaged], "l2"))
                res = score(d, items)
                lo, hi = res["ci95"]["MAP"]
                rows.append({"system": f"score soprano, {noise:.0%} of notes damaged (3-gram precision {prec:.3f}), "
                                       f"n={','.join(map(str, ns))} l2", "collection": name,
                             "track MAP": res["metrics"]["MAP"], "95% CI": f"[{lo:.3f}, {hi:.3f}]",
                             "MR1": res["metrics"]["MR1"], "paired vs encoder": paired(d, enc.get(name), items)})
                print(rows[-1], flush=True)
        for extractor in args.extractors:
            ex = counts_of(items, extractor, (3,))
            prec = [ngram_precision(e, ngram_counts(x, (3,))) for e, x in zip(ex, sop[name])]
            rows.append({"system": f"{extractor}: interval 3-gram precision vs the score's soprano",
                         "collection": name, "track MAP": round(float(np.mean(prec)), 3)})
            print(rows[-1], flush=True)
            # chance: the same extracted melody against the soprano of another piece (the next track of the
            # collection, cyclically, whose piece differs)
            pc = list(items["id"].map(pieces))
            other = [next(j % len(pc) for j in range(i + 1, i + 1 + len(pc)) if pc[j % len(pc)] != pc[i])
                     for i in range(len(pc))]
            chance = [ngram_precision(e, ngram_counts(sop[name][j], (3,))) for e, j in zip(ex, other)]
            rows.append({"system": f"{extractor}: 3-gram precision vs another piece's soprano (chance)",
                         "collection": name, "track MAP": round(float(np.mean(chance)), 3)})
            print(rows[-1], flush=True)
    if args.precision_only:
        rep.add(f"precision only (no melody MAP); extraction ms per track: {ext_ms}")
        rep.table(rows)
        print(rep.finish())
        return 0
    best = None  # (val MAP, setting)
    mel_dist = {}
    for extractor, ns, weighting in itertools.product(args.extractors, ns_sets, args.weightings):
        idf = idf_of(counts_of(train, extractor, ns)) if weighting == "tfidf" else None
        setting = (extractor, ns, weighting)
        for name, items in coll_items.items():
            t0 = time.perf_counter()
            d = cosine_distances(vectors(counts_of(items, extractor, ns), weighting, idf))
            t1 = time.perf_counter()
            mel_dist[(setting, name)] = d
            res = score(d, items)
            lo, hi = res["ci95"]["MAP"]
            sh = rendering_shares({"cliques": list(items["label"]), "dist": d}, list(items["id"]), attrs)
            rows.append({"system": f"melody {extractor} n={','.join(map(str, ns))} {weighting}", "collection": name,
                         "track MAP": res["metrics"]["MAP"], "95% CI": f"[{lo:.3f}, {hi:.3f}]",
                         "MR1": res["metrics"]["MR1"], "paired vs encoder": paired(d, enc.get(name), items),
                         "top-1 same instrument (chance)": f"{sh.get('top1_same_instrument', float('nan')):.3f} "
                                                           f"({sh.get('top1_same_instrument_chance', float('nan')):.3f})",
                         "ms (vectors + distances, all tracks)": round(1000 * (t1 - t0), 1)})
            print(rows[-1], flush=True)
            if name == "val" and (best is None or res["metrics"]["MAP"] > best[0]):
                best = (res["metrics"]["MAP"], setting)
    for name, items in coll_items.items() if enc else ():
        res = score(enc[name], items)
        lo, hi = res["ci95"]["MAP"]
        rows.append({"system": "encoder alone", "collection": name, "track MAP": res["metrics"]["MAP"],
                     "95% CI": f"[{lo:.3f}, {hi:.3f}]", "MR1": res["metrics"]["MR1"]})
        print(rows[-1], flush=True)
    if best is not None and not enc:
        rep.add(f"setting chosen on val: {best[1]} (val MAP {best[0]:.3f}); no encoder given, so no mix rows; "
                f"melody extraction ms per track: {ext_ms}")
    if best is not None and "val" in coll_items and enc:
        setting = best[1]
        # mix weight chosen on val
        wbest = max(args.mix_weights, key=lambda w: (score(mixed(enc["val"], mel_dist[(setting, "val")], w),
                                                           coll_items["val"])["metrics"]["MAP"], -w))
        for w in args.mix_weights:
            m = mixed(enc["val"], mel_dist[(setting, "val")], w)
            print(f"val mix w={w}: MAP {score(m, coll_items['val'])['metrics']['MAP']:.3f}", flush=True)
        for name, items in coll_items.items():
            for w in sorted({wbest, 0.5}):
                d = mixed(enc[name], mel_dist[(setting, name)], w)
                res = score(d, items)
                lo, hi = res["ci95"]["MAP"]
                sh = rendering_shares({"cliques": list(items["label"]), "dist": d}, list(items["id"]), attrs)
                rows.append({"system": f"encoder + melody {setting[0]} n={','.join(map(str, setting[1]))} "
                                       f"{setting[2]}, share {w}" + (" (val-chosen)" if w == wbest else ""),
                             "collection": name, "track MAP": res["metrics"]["MAP"], "95% CI": f"[{lo:.3f}, {hi:.3f}]",
                             "MR1": res["metrics"]["MR1"], "paired vs encoder": paired(d, enc.get(name), items),
                             "top-1 same instrument (chance)": f"{sh.get('top1_same_instrument', float('nan')):.3f} "
                                                               f"({sh.get('top1_same_instrument_chance', float('nan')):.3f})"})
                print(rows[-1], flush=True)
        rep.add(f"setting chosen on val: {best[1]} (val MAP {best[0]:.3f}); mix share chosen on val: {wbest}; "
                 f"melody extraction ms per track: {ext_ms}")
    rep.table(rows)
    print(rep.finish())
    return 0


if __name__ == "__main__":
    sys.exit(main())
