"""Offline demo corpus for neural audio fingerprinting, built deterministically from a seed.

References are real music: music21 scores rendered with FluidSynth (varied General-MIDI instruments,
tempi, keys) plus recorded tracks from Debian music packages. Training audio comes from *other*
pieces; noise recordings (Sonic Pi ambience / vinyl hiss, Asterisk speech prompts as speech and
babble) are split into train and test files. Queries are excerpts of the references (1-10 s) through
one degradation each (real noise at an SNR, a simulated room, a phone band + lossy codec, gain,
clean), plus out-of-database queries cut from held-out music, with exact ground truth.

Layout under the corpus root::

    refs/  train/  noise/train/  noise/test/  queries/
    ground_truth.csv   query_id,query_path,ref_id,ref_path,offset_s,length_s,degradation,snr_db,in_db
    query_params.csv   query_id,degradation,params (JSON: noise file, rt60, codec/bitrate, gain...)
    tracks.csv         every reference and training file with its source, instrument, tempo, duration
    corpus.json        summary (sizes, hours, sources and licences, build time)

Item ids are paths relative to the root without extension (`refs/bach_bwv269-..._organ_t072`).
The corpus is built in `<root>.tmp` and renamed at the end: a killed build leaves no half corpus.
Query making (`make_queries`, `load_noises`, `write_query_tables`) is public: `avmatch.fingerprint.nafp`
builds the same queries and ground truth over the NAFP dataset.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import signal

from avmatch.core import debian
from avmatch.core.audio import MediaError, decode_audio, write_wav
from avmatch.core.corpus_build import stage_timer, swap_in
from avmatch.core.device import available_cores
from avmatch.core.music21_render import (
    GROUPS,
    RENDER_SR,
    ItemPlanner,
    PiecePool,
    RenderSpec,
    find_fluidsynth,
    find_soundfont,
    fluidsynth_version,
    render_many,
    weighted_schedule,
)
from avmatch.fingerprint import degrade
from avmatch.fingerprint.params import FpCorpusParams

log = logging.getLogger(__name__)

GT_COLUMNS = ["query_id", "query_path", "ref_id", "ref_path", "offset_s", "length_s", "degradation", "snr_db", "in_db"]
QUERY_SR = RENDER_SR          # sample rate of the wav queries (and of the rendered references)
PHONE_SR = 8000               # narrow-band phone line for mp3 / opus
AAC_SR = 16000                # AAC pads to 1024-sample frames that FFmpeg does not trim: 64 ms frames at 16 kHz
                              # keep the decoded length within +-32 ms of the nominal one
CODEC_BITRATES = {"mp3": (16000, 24000, 32000), "aac": (16000, 24000, 32000), "opus": (8000, 12000, 16000)}

MUSIC_PACKAGES = ("singularity-music", "asterisk-moh-opsound-wav")
NOISE_PACKAGE = "sonic-pi-samples"
SPEECH_PACKAGE = "asterisk-core-sounds-en-wav"
# Sonic Pi samples that are noise / ambience rather than notes or drum hits
NOISE_SAMPLES = (
    "vinyl_hiss", "vinyl_rewind", "rand-stream", "ambi_dark_woosh", "ambi_drone", "ambi_glass_hum",
    "ambi_glass_rub", "ambi_haunted_hum", "ambi_lunar_land", "ambi_sauna", "ambi_swoosh", "ambi_choir",
    "loop_3d_printer", "misc_cineboom", "drum_roll", "perc_door", "perc_till", "loop_drone_g_97",
)

# music21 groups and their share of the rendered items
WEIGHTS = {"bach": 0.30, "palestrina": 0.10, "monteverdi": 0.03, "trecento": 0.04, "essen": 0.17,
           "oneill": 0.17, "ryans": 0.12, "airds": 0.07}
TINY_WEIGHTS = {"bach": 0.4, "oneill": 0.3, "essen": 0.3}


@dataclass(frozen=True)
class SizeSpec:
    ref_n: int             # at least this many reference tracks
    ref_s: float           # and at least this many seconds of reference audio
    train_n: int
    train_s: float
    oov_n: int             # held-out rendered pieces for out-of-database queries
    dur_s: tuple[float, float]  # length range of a rendered item
    queries_per_length: int
    recorded: bool         # use Debian recorded music (when params.include_recorded too)
    weights: dict[str, float] = field(default_factory=lambda: dict(WEIGHTS))
    noise_samples: int | None = None  # Sonic Pi noise files per split (None: all)
    speech_files: int = 2  # speech and babble files per split
    speech_s: float = 30.0


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(8, 0.0, 6, 0.0, 2, (28.0, 34.0), 8, False, dict(TINY_WEIGHTS), 4, 1, 12.0),
    "demo": SizeSpec(100, 1.1 * 3600, 40, 35 * 60, 40, (30.0, 48.0), 100, True),
    "large": SizeSpec(500, 5.5 * 3600, 200, 3 * 3600, 40, (30.0, 60.0), 500, True, speech_files=4),
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x.astype(np.float32)
    g = np.gcd(sr_in, sr_out)
    return signal.resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


# ---------------------------------------------------------------- tracks
@dataclass
class Track:
    """One audio file of the corpus (reference or training) or a held-out source for OOV queries."""

    id: str                  # path relative to root without extension ("" for held-out sources)
    path: Path               # absolute path of the audio (inside the build dir, or the cache for held-out)
    split: str               # ref | train | oov
    source: str              # music21 | debian package name
    name: str
    duration_s: float = 0.0
    info: dict = field(default_factory=dict)

    def rel(self, root: Path) -> str:
        return self.path.relative_to(root).as_posix()


def _recorded_tracks(seed: int, cache: Path | None) -> tuple[dict[str, list[Path]], dict[str, dict]]:
    """Debian recorded music split into refs / train / oov (seeded); {} when apt cannot supply it."""
    split: dict[str, list[Path]] = {"ref": [], "train": [], "oov": []}
    sources: dict[str, dict] = {}
    for i, name in enumerate(MUSIC_PACKAGES):
        pkg = debian.try_fetch_package(name, cache)
        if pkg is None or not pkg.audio:
            continue
        rng = np.random.default_rng([seed, 31, i])
        if name == "singularity-music":
            # 13 full tracks + 3 short jingles (music/lose, music/win): jingles go to training
            main = [p for p in pkg.audio if p.parent.name == "music"]
            extra = [p for p in pkg.audio if p.parent.name != "music"]
            main = [main[j] for j in rng.permutation(len(main))]
            parts = {"ref": main[:9], "oov": main[9:10], "train": main[10:] + extra}
        else:
            files = [pkg.audio[j] for j in rng.permutation(len(pkg.audio))]
            parts = {"ref": files[:3], "oov": files[3:4], "train": files[4:]}
        for k, v in parts.items():
            split[k] += v
        sources[name] = pkg.describe() | {"refs": len(parts["ref"]), "train": len(parts["train"]),
                                          "oov": len(parts["oov"])}
    return split, sources


def _plan_rendered(spec: SizeSpec, seed: int, rec_ref_s: float, rec_ref_n: int, rec_train_s: float,
                   rec_train_n: int, cache: Path | None, workers: int, cover_ref_instruments: bool = False,
                   extra_train: int = 0, cover_decks: int = 1) -> dict[str, list[RenderSpec]]:
    """Choose music21 pieces (disjoint across splits) and how to render each: refs, train, oov.

    `cover_ref_instruments`: the training pieces get the references' instruments first (dealt, not drawn;
    the first `cover_decks` decks), so that the encoder and the null queries cut from the training music
    have heard every timbre of the database; the pieces themselves, and so the references and held-out
    pieces, are the same either way. `extra_train`: more training pieces ("train_extra"), planned after the
    held-out ones (the planner and the piece pool are sequential, so this leaves every earlier item as it was)
    and always dealt the references' instruments first: they exist to cover the database's timbres."""
    pool = PiecePool(list(spec.weights), seed, cache, workers)
    planner = ItemPlanner(pool, seed, *spec.dur_s, cover_decks=cover_decks)
    mean_s = sum(spec.dur_s) / 2
    need = {
        "ref": (max(spec.ref_n - rec_ref_n, 0), max(spec.ref_s - rec_ref_s, 0.0)),
        "train": (max(spec.train_n - rec_train_n, 0), max(spec.train_s - rec_train_s, 0.0)),
        "oov": (spec.oov_n, 0.0),
        "train_extra": (int(extra_train), 0.0),
    }
    est_items = sum(max(n, s / mean_s) for k, (n, s) in need.items() if k != "train_extra")
    total_w = sum(spec.weights.values())
    pool.prefetch({g: int(np.ceil(est_items * w / total_w * GROUPS[g].pieces_per_item * 1.25)) + 2
                   for g, w in spec.weights.items()})
    weights = dict(spec.weights)
    sched = weighted_schedule(weights)
    out: dict[str, list[RenderSpec]] = {"ref": [], "train": [], "oov": [], "train_extra": []}
    for split, (n_min, s_min) in need.items():
        secs = 0.0
        while len(out[split]) < n_min or secs < s_min:
            g = next(sched)
            try:
                cover = [r.ensemble for r in out["ref"]] \
                    if split == "train_extra" or (split == "train" and cover_ref_instruments) else None
                item = planner.make(g, cover)
            except RuntimeError as exc:  # a group ran out of pieces (large corpora): drop it
                log.warning("%s", exc)
                weights.pop(g)
                if not weights:
                    raise
                sched = weighted_schedule(weights)
                continue
            out[split].append(item)
            secs += item.duration_s
    return out


# ---------------------------------------------------------------- noise
def _speech_stream(prompt, order: list[int], length: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Prompts one after another with short pauses, each at the same loudness."""
    out = np.zeros(length, np.float32)
    pos = int(rng.uniform(0.0, 0.3) * sr)
    k = 0
    while pos < length and k < 10 * len(order):
        p = prompt(order[k % len(order)])
        k += 1
        if len(p) < sr // 4:
            continue
        n = min(len(p), length - pos)
        out[pos:pos + n] = p[:n] / (degrade.rms(p) + 1e-6) * 0.1
        pos += n + int(rng.uniform(0.1, 0.5) * sr)
    return out


def _synthetic_noise(kind: str, sr: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(sr * seconds)
    white = rng.standard_normal(n)
    if kind == "pink":
        spec = np.fft.rfft(white)
        spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
        x = np.fft.irfft(spec, n)
    elif kind == "brown":
        x = np.cumsum(white)
        x = signal.detrend(x)
    else:  # mains hum + hiss
        t = np.arange(n) / sr
        x = sum(np.sin(2 * np.pi * 50 * h * t) / h for h in (1, 2, 3, 5)) + 0.3 * white
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def _build_noise(tmp: Path, seed: int, spec: SizeSpec, cache: Path | None, progress: bool
                 ) -> tuple[dict[str, list[Path]], dict[str, dict]]:
    from tqdm import tqdm

    out: dict[str, list[Path]] = {"train": [], "test": []}
    sources: dict[str, dict] = {}
    jobs: list[tuple[str, Path, callable]] = []  # (split, target, producer)

    sonic = debian.try_fetch_package(NOISE_PACKAGE, cache)
    if sonic is not None:
        files = [p for p in sonic.audio if p.stem in NOISE_SAMPLES]
        rng = np.random.default_rng([seed, 51])
        files = [files[i] for i in rng.permutation(len(files))]
        half = len(files) // 2
        per = {"train": files[:half], "test": files[half:2 * half]}
        n = spec.noise_samples
        for split, fs in per.items():
            for f in (fs[:n] if n else fs):
                jobs.append((split, tmp / "noise" / split / f"sonicpi_{_slug(f.stem)}.wav",
                             lambda f=f: (decode_audio(f, 44100), 44100)))
        sources[NOISE_PACKAGE] = sonic.describe() | {"noise_train": len(per["train"][:n] if n else per["train"]),
                                                     "noise_test": len(per["test"][:n] if n else per["test"])}
    else:
        log.warning("no Debian noise recordings: using synthetic noise (pink, brown, hum); "
                    "install apt so that '%s' can be downloaded for real noise", NOISE_PACKAGE)
        for i, split in enumerate(("train", "test")):
            for kind in ("pink", "brown", "hum"):
                jobs.append((split, tmp / "noise" / split / f"synthetic_{kind}.wav",
                             lambda kind=kind, i=i: (_synthetic_noise(kind, 16000, 20.0,
                                                                      np.random.default_rng([seed, 53, i])), 16000)))
        sources["synthetic-noise"] = {"kind": "synthetic", "why": "Debian packages unavailable"}

    speech = debian.try_fetch_package(SPEECH_PACKAGE, cache)
    if speech is not None and speech.audio:
        rng = np.random.default_rng([seed, 57])
        order = [int(i) for i in rng.permutation(len(speech.audio))]
        halves = {"train": order[: len(order) // 2], "test": order[len(order) // 2:]}  # disjoint prompts
        sr = 8000
        decoded: dict[int, np.ndarray] = {}

        def prompt(j: int) -> np.ndarray:
            if j not in decoded:
                try:
                    decoded[j] = decode_audio(speech.audio[j], sr)
                except MediaError as exc:
                    log.warning("skipping speech prompt: %s", exc)
                    decoded[j] = np.zeros(0, np.float32)
            return decoded[j]

        def make_speech(split: str, k: int, voices: int):
            r = np.random.default_rng([seed, 59, 0 if split == "train" else 1, k, voices])
            length = int(spec.speech_s * sr)
            mix = np.zeros(length, np.float32)
            for _ in range(voices):
                idx = halves[split]
                mix += _speech_stream(prompt, [idx[i] for i in r.permutation(len(idx))], length, r, sr)
            return (0.9 * mix / (np.max(np.abs(mix)) + 1e-9)).astype(np.float32), sr

        for split in halves:
            for k in range(spec.speech_files):
                jobs.append((split, tmp / "noise" / split / f"speech_{k:02d}.wav",
                             lambda split=split, k=k: make_speech(split, k, 1)))
                jobs.append((split, tmp / "noise" / split / f"babble_{k:02d}.wav",
                             lambda split=split, k=k: make_speech(split, k, 4)))
        sources[SPEECH_PACKAGE] = speech.describe() | {
            "speech_train": 2 * spec.speech_files, "speech_test": 2 * spec.speech_files,
            "note": "prompts concatenated (speech_*) or 4 streams overlaid (babble_*); disjoint prompts per split"}

    for split, target, produce in tqdm(jobs, desc="noise", unit="file", disable=not progress):
        try:
            x, sr = produce()
        except MediaError as exc:
            log.warning("skipping noise file: %s", exc)
            continue
        if len(x) < sr:  # noise recordings of at least 1 s
            continue
        write_wav(target, x, sr)
        out[split].append(target)
    return out, sources


# ---------------------------------------------------------------- queries
@dataclass
class QueryPlan:
    index: int                 # stable index used to seed the query's random choices
    source: Track
    length_s: float
    degradation: str
    in_db: bool
    query_id: str = ""


def _plan_queries(params: FpCorpusParams, qpl: int, refs: list[Track], oov: list[Track], seed: int
                  ) -> list[QueryPlan]:
    """`qpl` in-database queries per length from `refs`, plus out-of-database ones from `oov`."""
    lengths = [float(x) for x in params.query_lengths_s]
    degs = list(params.degradations)
    rng = np.random.default_rng([seed, 61])
    plans: list[QueryPlan] = []
    max_len = max(lengths)

    def cycle(tracks: list[Track], n: int, need_s: float) -> list[Track]:
        ok = [t for t in tracks if t.duration_s >= need_s + 0.5]
        if not ok:
            raise RuntimeError(f"no source is longer than {need_s} s for queries of that length")
        out: list[Track] = []
        while len(out) < n:
            out += [ok[i] for i in rng.permutation(len(ok))]
        return out[:n]

    idx = 0
    for li, length in enumerate(lengths):
        srcs = cycle(refs, qpl, length)
        for j in range(qpl):
            plans.append(QueryPlan(idx, srcs[j], length, degs[(j + li) % len(degs)], True))
            idx += 1
    n_in = len(plans)
    f = params.oov_fraction
    n_oov = int(round(n_in * f / (1.0 - f))) if f > 0 and oov else 0
    if f > 0 and not oov:
        log.warning("no held-out music: no out-of-database queries")
    oov_sources = cycle(oov, n_oov, max_len) if n_oov else []
    for j in range(n_oov):
        length = lengths[j % len(lengths)]
        deg = degs[(j // len(lengths) + j) % len(degs)]
        src = oov_sources[j]
        if src.duration_s < length + 0.5:
            src = max(oov, key=lambda t: t.duration_s)
        plans.append(QueryPlan(idx, src, length, deg, False))
        idx += 1
    order = rng.permutation(len(plans))  # query ids say nothing about in/out of database or source
    width = max(5, len(str(len(plans))))
    for rank, i in enumerate(order):
        plans[int(i)].query_id = f"queries/q{rank + 1:0{width}d}"
    return plans


def _pick_offset(x: np.ndarray, n: int, track_rms: float, rng: np.random.Generator, sr: int) -> int:
    """A start sample (on a 1 ms grid) whose excerpt is not near-silent; seeded, deterministic."""
    last_ms = int((len(x) - n) * 1000 // sr) - 10
    if last_ms <= 0:
        return 0
    best, best_rms = 0, -1.0
    for _ in range(30):
        ms = int(rng.integers(0, last_ms + 1))
        start = int(round(ms * sr / 1000))
        r = degrade.rms(x[start:start + n])
        if r >= max(0.2 * track_rms, 1e-3):
            return start
        if r > best_rms:
            best, best_rms = start, r
    return best


def _make_queries_for_source(root: Path, src: Track, plans: list[QueryPlan], noises: list[tuple[str, np.ndarray]],
                             params: FpCorpusParams, seed: int, sr: int = QUERY_SR) -> list[tuple[dict, dict]]:
    x = decode_audio(src.path, sr)
    track_rms = degrade.rms(x)
    rows = []
    for q in plans:
        rng = np.random.default_rng([seed, 71, q.index])
        info: dict = {}
        deg = q.degradation
        codec = None
        if deg == "phone_codec":
            codec = str(rng.choice(sorted(CODEC_BITRATES)))
        if codec == "aac":  # whole AAC frames only, so the decoded file has exactly this length
            n_codec = max(1, int(round(q.length_s * AAC_SR / 1024))) * 1024
            n = int(round(n_codec * sr / AAC_SR))
        else:
            n = int(round(q.length_s * sr))
        rate = 1.0
        if deg in ("speed", "stretch"):   # faster or slower by 0.5 % .. max_speed_change
            rate = 1.0 + float(rng.choice([-1.0, 1.0]) * rng.uniform(0.005, params.max_speed_change))
        start = _pick_offset(x, int(np.ceil(n * max(rate, 1.0))), track_rms, rng, sr)
        y = x[start:start + n].copy()
        snr = None
        ext = ".wav"
        if deg == "clean":
            out = y
        elif deg == "gain":
            gain_db = float(rng.choice([-1.0, 1.0]) * rng.uniform(3.0, 12.0))
            out = degrade.change_gain(y, gain_db)
            info = {"gain_db": round(gain_db, 2), "clipped_fraction": round(float(np.mean(np.abs(out) >= 0.999)), 4)}
        elif deg == "noise":
            name, noise = noises[int(rng.integers(len(noises)))]
            snr = float(rng.uniform(*params.snr_db))
            out = degrade.mix_at_snr(y, noise, snr, rng)
            info = {"noise": name, "snr_db": round(snr, 2)}
        elif deg == "reverb":
            rt60 = float(rng.uniform(0.3, 1.0))
            rir = degrade.simulate_rir(sr, rt60, rng)
            pre = min(start, len(rir))  # the room also rings with what was played just before
            out = degrade.apply_rir(x[start - pre:start + n], rir)[pre:]
            info = {"rt60_s": round(rt60, 3)}
        elif deg == "speed":
            out = degrade.change_speed(x, start, n, rate)
            info = {"rate": round(rate, 5), "pitch": "moves with the speed"}
        elif deg == "stretch":
            src_n = int(round(n * rate))
            out = degrade.time_stretch(x[start:start + src_n], rate)[:n]
            out = np.pad(out, (0, n - len(out)))
            info = {"rate": round(rate, 5), "pitch": "unchanged"}
        elif deg == "phone_codec":
            bitrate = int(rng.choice(CODEC_BITRATES[codec]))
            band = degrade.bandlimit(y, sr, 300.0, 3400.0)
            csr = AAC_SR if codec == "aac" else PHONE_SR
            z = _resample(band, sr, csr)
            m = int(round(q.length_s * csr)) if codec != "aac" else n_codec
            z = z[:m] if len(z) >= m else np.concatenate([z, np.zeros(m - len(z), np.float32)])
            peak = float(np.max(np.abs(z)))
            if peak > 0.98:
                z = z * (0.98 / peak)
            ext = degrade.codec_extension(codec)
            info = {"codec": codec, "bitrate": bitrate, "sample_rate": csr, "band_hz": [300, 3400]}
            out = z
        else:
            raise ValueError(f"unknown degradation {deg!r}")
        if deg not in ("gain", "phone_codec"):
            peak = float(np.max(np.abs(out)))
            if peak > 0.99:  # a scale, never a clip, except for the gain degradation
                out = out * (0.99 / peak)
        qpath = root / f"{q.query_id}{ext}"
        if deg == "phone_codec":
            qpath.parent.mkdir(parents=True, exist_ok=True)
            degrade.write_codec(qpath, out, info["sample_rate"], codec, info["bitrate"])
        else:
            write_wav(qpath, out, sr)
        offset_s = start / sr
        gt = {"query_id": q.query_id, "query_path": qpath.relative_to(root).as_posix(),
              "ref_id": src.id if q.in_db else "", "ref_path": src.rel(root) if q.in_db else "",
              "offset_s": f"{offset_s:.3f}" if q.in_db else "", "length_s": f"{q.length_s:.3f}",
              "degradation": deg, "snr_db": f"{snr:.2f}" if snr is not None else "", "in_db": "1" if q.in_db else "0"}
        meta = dict(info)
        if not q.in_db:
            meta |= {"oov_source": src.name, "oov_offset_s": round(offset_s, 3)}
        rows.append((gt, {"query_id": q.query_id, "degradation": deg, "params": json.dumps(meta, sort_keys=True)}))
    return rows


_QUERY_CTX: dict = {}


def _init_query_worker(root: Path, noises, params: FpCorpusParams, seed: int, sr: int = QUERY_SR) -> None:
    _QUERY_CTX.update(root=root, noises=noises, params=params, seed=seed, sr=sr)


def _query_task(src: Track, plans: list[QueryPlan]) -> list[tuple[dict, dict]]:
    c = _QUERY_CTX
    return _make_queries_for_source(c["root"], src, plans, c["noises"], c["params"], c["seed"], c["sr"])


def _query_executor(workers: int, root: Path, noises, params: FpCorpusParams, seed: int, sr: int = QUERY_SR):
    """Processes (decoding is GIL-bound in PyAV's Python loop); forked, so the noise arrays are shared
    and nothing big is pickled. Threads where fork does not exist."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" in multiprocessing.get_all_start_methods() and workers > 1:
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_init_query_worker, initargs=(root, noises, params, seed, sr))
    _init_query_worker(root, noises, params, seed, sr)
    return ThreadPoolExecutor(max_workers=workers)


def load_noises(paths: list[Path], root: Path, sr: int = QUERY_SR) -> list[tuple[str, np.ndarray]]:
    """The noise recordings that 'noise' queries mix in, decoded once at `sr`, each named by its path
    relative to the corpus root (the name recorded in query_params.csv)."""
    return [(Path(p).relative_to(root).as_posix(), decode_audio(p, sr)) for p in paths]


def make_queries(root: Path, refs: list[Track], oov: list[Track], noises: list[tuple[str, np.ndarray]],
                 params: FpCorpusParams, seed: int, workers: int, queries_per_length: int | None = None,
                 sr: int = QUERY_SR, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Plan and write the degraded queries under `root`/queries (shared by every corpus builder).

    `refs` are the in-database sources (their `id` and `path` inside `root` are what the ground truth
    names); `oov` are held-out sources for out-of-database queries (any path). Queries per length:
    `queries_per_length`, else params.queries_per_length, else the size default. Deterministic for a
    seed whatever `workers` is. Returns (ground-truth rows, query-param rows), both sorted by query id;
    `write_query_tables` writes them.
    """
    from tqdm import tqdm

    qpl = queries_per_length or params.queries_per_length or SIZES[params.size].queries_per_length
    plans = _plan_queries(params, qpl, refs, oov, seed)
    by_source: dict[str, list[QueryPlan]] = {}
    src_of: dict[str, Track] = {}
    for q in plans:
        key = str(q.source.path)
        by_source.setdefault(key, []).append(q)
        src_of[key] = q.source
    gt_rows, meta_rows = [], []
    with _query_executor(workers, root, noises, params, seed, sr) as ex, \
            tqdm(total=len(plans), desc="queries", unit="query", disable=not progress) as bar:
        futs = {ex.submit(_query_task, src_of[k], qs): len(qs)
                for k, qs in sorted(by_source.items(), key=lambda kv: (-src_of[kv[0]].duration_s, kv[0]))}
        for fut in as_completed(futs):
            for gt, meta in fut.result():
                gt_rows.append(gt)
                meta_rows.append(meta)
            bar.update(futs[fut])
    gt_rows.sort(key=lambda r: r["query_id"])
    meta_rows.sort(key=lambda r: r["query_id"])
    return gt_rows, meta_rows


def write_query_tables(root: Path, gt_rows: list[dict], meta_rows: list[dict]) -> None:
    """ground_truth.csv and query_params.csv under `root`."""
    with open(root / "ground_truth.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=GT_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(gt_rows)
    with open(root / "query_params.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["query_id", "degradation", "params"], lineterminator="\n")
        w.writeheader()
        w.writerows(meta_rows)


# ---------------------------------------------------------------- the builder
def _copy_recorded(files: list[Path], folder: Path, pkg_of: dict[Path, str], split: str) -> list[Track]:
    tracks = []
    for f in files:
        short = {"singularity-music": "singularity", "asterisk-moh-opsound-wav": "moh"}.get(pkg_of[f], pkg_of[f])
        name = f"{short}_{_slug(f.stem)}"
        target = folder / f"{name}{f.suffix.lower()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
        tracks.append(Track(id="", path=target, split=split, source=pkg_of[f], name=name,
                            info={"title": f.stem, "original": f.name}))
    return tracks


def _measure(tracks: list[Track], workers: int) -> None:
    """Durations of recorded files from their headers (exact for wav / Ogg; the query maker still
    bounds every excerpt by the decoded length), decoding only when a header has none."""
    from avmatch.core.audio import probe_audio

    def one(t: Track) -> float:
        try:
            d = probe_audio(t.path).duration_s
        except MediaError:
            d = float("nan")
        return d if np.isfinite(d) and d > 0 else len(decode_audio(t.path, QUERY_SR)) / QUERY_SR

    todo = [t for t in tracks if not t.duration_s]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for t, d in zip(todo, ex.map(one, todo)):
            t.duration_s = d


def build_fingerprint_corpus(params: FpCorpusParams, root: Path | None = None) -> dict:
    """Build the corpus described in the module docstring; returns the content of corpus.json."""
    t0 = time.time()
    spec = SIZES[params.size]
    seed = int(params.seed)
    root = Path(root if root is not None else params.root).resolve()
    tmp = root.with_name(root.name + ".tmp")
    workers = available_cores()
    cache = None  # debian/music21 helpers resolve $AVMATCH_CACHE themselves
    progress = True

    exe, sf2 = find_fluidsynth(), find_soundfont()  # fail before any work when rendering is impossible
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    stages: dict[str, float] = {}
    stage = stage_timer(stages, log)

    # 1. recorded music (Debian) ------------------------------------------------------------
    rec_split: dict[str, list[Path]] = {"ref": [], "train": [], "oov": []}
    rec_sources: dict[str, dict] = {}
    pkg_of: dict[Path, str] = {}
    if spec.recorded and params.include_recorded:
        rec_split, rec_sources = _recorded_tracks(seed, cache)
        if not rec_sources:
            log.warning("no Debian recorded music available: building from music21 renderings only")
        for name in rec_sources:
            root_dir = debian.debs_dir(cache) / name
            for files in rec_split.values():
                for f in files:
                    if root_dir in f.parents:
                        pkg_of[f] = name
    rec_refs = _copy_recorded(rec_split["ref"], tmp / "refs", pkg_of, "ref")
    rec_train = _copy_recorded(rec_split["train"], tmp / "train", pkg_of, "train")
    rec_oov = [Track(id="", path=f, split="oov", source=pkg_of[f], name=f"{pkg_of[f]}:{f.name}")
               for f in rec_split["oov"]]
    _measure(rec_refs + rec_train + rec_oov, workers)
    stage("recorded")

    # 2. music21 renderings -----------------------------------------------------------------------
    plan = _plan_rendered(spec, seed, sum(t.duration_s for t in rec_refs), len(rec_refs),
                          sum(t.duration_s for t in rec_train), len(rec_train), cache, workers,
                          params.cover_ref_instruments, params.extra_train_pieces, params.cover_min_pieces)
    stage("plan_music21")
    folders = {"ref": tmp / "refs", "train": tmp / "train", "oov": tmp / "_heldout"}
    # the extra training pieces are rendered in a call of their own: render_many batches jobs in list order and
    # a piece's samples depend on its batch, so this keeps every reference and held-out rendering (and so every
    # query) as it was without them
    splits = [(split, s) for split in ("ref", "train", "oov", "train_extra") for s in plan[split]]
    jobs = [(s, folders[split.replace("_extra", "")] / f"{s.name}.flac") for split, s in splits]
    n_base = len(jobs) - len(plan["train_extra"])
    results = render_many(jobs[:n_base], workers, RENDER_SR, progress, desc="render music21 (FluidSynth)")
    if plan["train_extra"]:
        results += render_many(jobs[n_base:], workers, RENDER_SR, progress, desc="render extra training music")
    rendered: dict[str, list[Track]] = {"ref": [], "train": [], "oov": []}
    for (split, _), (s, path), res in zip(splits, jobs, results):
        split = split.replace("_extra", "")
        rendered[split].append(Track(id="", path=path, split=split, source="music21", name=s.name,
                                     duration_s=res["duration_s"], info=s.describe() | {"rms": round(res["rms"], 4)}))

    stage("render")
    refs = rendered["ref"] + rec_refs
    train = rendered["train"] + rec_train
    oov = rendered["oov"] + rec_oov
    for t in refs + train:
        t.id = t.path.relative_to(tmp).with_suffix("").as_posix()
    ids = [t.id for t in refs + train]
    if len(set(ids)) != len(ids):
        raise RuntimeError("duplicate item ids in the corpus")

    # 3. noise ----------------------------------------------------------------------------------------
    noise_split, noise_sources = _build_noise(tmp, seed, spec, cache, progress)
    if not noise_split["test"] and "noise" in params.degradations:
        raise RuntimeError("no test noise recordings: cannot make 'noise' queries")
    test_noises = load_noises(noise_split["test"], tmp)
    stage("noise")

    # 4. queries --------------------------------------------------------------------------------------
    gt_rows, meta_rows = make_queries(tmp, refs, oov, test_noises, params, seed, workers,
                                      params.queries_per_length or spec.queries_per_length, progress=progress)
    stage("queries")

    # 5. tables and summary ---------------------------------------------------------------------------
    write_query_tables(tmp, gt_rows, meta_rows)
    with open(tmp / "tracks.csv", "w", newline="") as fh:
        cols = ["id", "path", "split", "source", "group", "title", "instrument", "tempo_bpm", "transpose", "duration_s",
                "pieces"]
        w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for t in sorted(refs + train, key=lambda t: t.id):
            titles = t.info.get("titles") or [t.info.get("title", "")]
            w.writerow({"id": t.id, "path": t.rel(tmp), "split": t.split, "source": t.source,
                        "group": t.info.get("group", ""), "title": " / ".join(str(x) for x in titles),
                        "instrument": t.info.get("ensemble", ""), "tempo_bpm": t.info.get("tempo_bpm", ""),
                        "transpose": t.info.get("transpose", ""), "duration_s": f"{t.duration_s:.3f}",
                        "pieces": ";".join(t.info.get("pieces", [])) or t.info.get("original", "")})
    shutil.rmtree(tmp / "_heldout", ignore_errors=True)

    import music21

    groups = Counter((t.split, t.info["group"]) for t in rendered["ref"] + rendered["train"] + rendered["oov"])
    sources = {"music21": {"kind": "music21 corpus rendered with FluidSynth", "music21_version": music21.__version__,
                           "fluidsynth_version": fluidsynth_version(exe), "soundfont": sf2.name,
                           "refs": len(rendered["ref"]), "train": len(rendered["train"]), "oov": len(rendered["oov"]),
                           "groups": {g: {s: groups[(s, g)] for s in ("ref", "train", "oov") if groups[(s, g)]}
                                      for g in sorted({g for _, g in groups})}}}
    sources |= rec_sources | noise_sources
    in_db = [r for r in gt_rows if r["in_db"] == "1"]
    summary = {
        "size": params.size, "seed": seed,
        "n_refs": len(refs), "ref_hours": round(sum(t.duration_s for t in refs) / 3600, 4),
        "n_train": len(train), "train_hours": round(sum(t.duration_s for t in train) / 3600, 4),
        # how many training pieces are played by each reference instrument (0: a timbre training never hears)
        "train_pieces_per_ref_instrument": {e: sum(t.info.get("ensemble") == e for t in rendered["train"])
                                            for e in sorted({r.info["ensemble"] for r in rendered["ref"]})},
        "n_queries": len(gt_rows), "n_queries_in_db": len(in_db), "n_queries_oov": len(gt_rows) - len(in_db),
        "queries_by_length": dict(sorted(Counter(r["length_s"] for r in gt_rows).items(), key=lambda kv: float(kv[0]))),
        "queries_by_degradation": dict(sorted(Counter(r["degradation"] for r in gt_rows).items())),
        "n_noise_train": len(noise_split["train"]), "n_noise_test": len(noise_split["test"]),
        "sample_rate": QUERY_SR, "oov_sources": sorted(t.name for t in oov),
        "sources": sources,
        "params": params.model_dump(mode="json"),
        "stage_seconds": stages,
        "build_seconds": None,
    }
    summary["build_seconds"] = round(time.time() - t0, 1)
    (tmp / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")

    # 6. swap in atomically ---------------------------------------------------------------------------
    swap_in(tmp, root)
    log.info("fingerprint corpus %s: %d refs (%.2f h), %d train, %d queries in %.0f s", root, summary["n_refs"],
             summary["ref_hours"], summary["n_train"], summary["n_queries"], summary["build_seconds"])
    return summary


def read_ground_truth(root: str | os.PathLike) -> list[dict]:
    """ground_truth.csv as dicts with typed values (offset_s / snr_db None when empty, in_db bool)."""
    rows = []
    with open(Path(root) / "ground_truth.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append(r | {"offset_s": float(r["offset_s"]) if r["offset_s"] else None,
                             "length_s": float(r["length_s"]),
                             "snr_db": float(r["snr_db"]) if r["snr_db"] else None,
                             "in_db": r["in_db"] == "1"})
    return rows


def main(argv: list[str] | None = None) -> None:
    """`python -m avmatch.fingerprint.corpus --size tiny --root data/fingerprint/corpus`"""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="demo", choices=sorted(SIZES))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--root", default=None)
    ap.add_argument("--no-recorded", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = FpCorpusParams(size=a.size, seed=a.seed, include_recorded=not a.no_recorded, **({"root": a.root} if a.root else {}))
    summary = build_fingerprint_corpus(p)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("sources", "params")}, indent=2))


if __name__ == "__main__":
    main()
