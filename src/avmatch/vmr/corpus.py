"""Offline video-to-music corpus: real music edited to real footage by a documented rule, as H.264 + AAC mp4.

Music: the recordings of Debian `singularity-music` (16 tracks, CC-BY-SA) and `asterisk-moh-opsound-wav`
(opsound.org artists, CC-BY-SA), fetched with `apt-get download` and unpacked into the cache
(`avmatch.core.debian`), cut into non-overlapping `clip_s` clips (silent ones skipped). Footage:
`avmatch.vmr.footage`. Each clip becomes a music video by the edit rule of `avmatch.vmr.editing` (cuts
on beats and bars, motion following tempo and onsets, grading and footage following timbre and mode).

Splits share no music piece (a whole recording goes to one split, greedily by duration to the size's
fractions) and no footage unit (units are dealt to train / val / test in a seeded order). Training
clips are edited `edits_per_train_clip` times with different footage and draws: the model must learn
the rule, not a pairing of footage with a tune.

Layout under the corpus root::

    music/{train,val,test}/M000001.flac        the tracks (what a music database holds), 16 kHz mono
    videos/{train,val,test}/V000001.mp4        music videos: H.264 picture + AAC soundtrack
    pairs.csv      video_id,music_id,split,piece,clip_start_s,tempo,mode,shots,footage
    sources.csv    split,kind,source,name (music recordings and footage units per split)
    corpus.json    sizes, sources and licences, build time

Test videos also hold files a real collection has (with `include_bad_files`): an empty mp4, a garbage
one and an audio-only one; they are in no pair. Deterministic from the seed; built in a
temporary folder and swapped in at the end.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import tempfile
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avmatch.core import debian
from avmatch.core.corpus_build import stage_timer, swap_in
from avmatch.core.progress import progress

# workers start fresh (spawn): the parent has FFmpeg/torch threads running, and a forked copy of them
# can crash a worker (seen as BrokenProcessPool while encoding the corpus videos)
_SPAWN = multiprocessing.get_context("spawn")

log = logging.getLogger(__name__)

MUSIC_PACKAGES = ("singularity-music", "asterisk-moh-opsound-wav")
SPLITS = ("train", "val", "test")
SAMPLE_RATE = 16000
PAIR_COLUMNS = ["video_id", "music_id", "split", "piece", "clip_start_s", "tempo", "mode", "shots", "footage"]


@dataclass(frozen=True)
class VmrSize:
    clip_s: float
    fractions: tuple[float, float, float]        # of the music (by duration) for train / val / test
    max_clips: tuple[int | None, int | None, int | None]
    edits_per_train_clip: int
    width: int
    height: int
    fps: int
    max_recordings: int | None = None
    max_footage: int | None = None     # footage units used (None: all)


SIZES: dict[str, VmrSize] = {
    "tiny": VmrSize(10.0, (0.45, 0.15, 0.4), (24, 6, 12), 1, 96, 72, 8, max_recordings=6, max_footage=20),
    "demo": VmrSize(10.0, (0.42, 0.06, 0.52), (None, 40, None), 1, 128, 96, 8),
    "large": VmrSize(10.0, (0.42, 0.06, 0.52), (None, None, None), 3, 160, 120, 12),
}


def gather_music(cache: Path | None = None) -> tuple[list[tuple[str, Path]], dict]:
    """(piece name, file) of every recording of MUSIC_PACKAGES, and the packages as sources."""
    recs, sources = [], {}
    for name in MUSIC_PACKAGES:
        pkg = debian.try_fetch_package(name, cache)
        if pkg is None:
            continue
        recs += [(f"{name}:{p.stem}", p) for p in pkg.audio]
        sources[name] = pkg.describe()
    if not recs:
        raise RuntimeError("no music recording available: apt-get download of "
                           f"{', '.join(MUSIC_PACKAGES)} failed (run it once with network access)")
    return recs, sources


def assign_splits(durations: dict[str, float], fractions: tuple[float, ...], rng: np.random.Generator) -> dict[str, str]:
    """Whole pieces to splits: in a seeded order, each piece goes to the split furthest below its share."""
    total = sum(durations.values())
    got = dict.fromkeys(SPLITS, 0.0)
    out = {}
    for name in [sorted(durations)[i] for i in rng.permutation(len(durations))]:
        split = min(SPLITS, key=lambda s: got[s] / total - fractions[SPLITS.index(s)])
        out[name] = split
        got[split] += durations[name]
    return out


def cut_clips(y: np.ndarray, clip_s: float, sr: int = SAMPLE_RATE, min_dbfs: float = -35.0) -> list[tuple[float, np.ndarray]]:
    """Non-overlapping clips of `clip_s` seconds (start, audio), skipping quiet ones."""
    n = int(clip_s * sr)
    out = []
    for a in range(0, len(y) - n + 1, n):
        c = y[a:a + n]
        if 20 * np.log10(np.sqrt(np.mean(c.astype(np.float64) ** 2)) + 1e-12) >= min_dbfs:
            out.append((a / sr, c))
    return out


def _decoded_music(path: Path, cache: Path | None = None) -> np.ndarray:
    """A recording as mono float at SAMPLE_RATE, decoded once into `$AVMATCH_CACHE/vmr_music/` (int16 npy
    keyed by file name and size: decoding 80 minutes of Ogg Vorbis takes a minute)."""
    import os

    from avmatch.core.audio import decode_audio

    path = Path(path)
    folder = (cache or debian.cache_root()) / "vmr_music"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{path.stem}_{path.stat().st_size}_{SAMPLE_RATE}.npy"
    if target.exists():
        return np.load(target).astype(np.float32) / 32767.0
    y = decode_audio(path, SAMPLE_RATE)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.clip(np.round(y * 32767.0), -32767, 32767).astype(np.int16))
    os.replace(tmp, target)
    return y


# ---------------------------------------------------------------- worker
_FOOTAGE_CACHE: dict = {}


def _footage(unit, width: int, height: int, fps: float):
    from avmatch.vmr.footage import LoadedFootage

    key = (unit.path, width, height, fps)
    if key not in _FOOTAGE_CACHE:
        _FOOTAGE_CACHE[key] = LoadedFootage(unit, width, height, fps)
    return _FOOTAGE_CACHE[key]


def _make_video(job: dict) -> dict:
    """Edit one clip to its split's footage and write the mp4 (runs in a worker process)."""
    from avmatch.vmr.editing import plan_shots, render_video
    from avmatch.vmr.music_features import analyse_music
    from avmatch.vmr.mux import write_music_video

    size: VmrSize = job["size"]
    units = job["units"]
    rng = np.random.default_rng(job["seed"])
    a = analyse_music(job["audio"], SAMPLE_RATE)
    shots = plan_shots(a, job["brightness"], rng)
    used = sorted({s.unit for s in shots})
    loaded = {i: _footage(units[i], size.width, size.height, size.fps) for i in used}
    frames = render_video(a, shots, [loaded.get(i) for i in range(len(units))], size.width, size.height, size.fps)
    write_music_video(job["path"], frames, size.fps, job["audio"], SAMPLE_RATE)
    return {"tempo": round(a.tempo, 2), "mode": round(a.mode, 3), "shots": len(shots),
            "footage": ";".join(f"{units[i].source}:{units[i].name}" for i in used)}


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in columns})


def write_bad_videos(folder: Path) -> list[Path]:
    """An empty mp4, a garbage mp4 and an audio-only mp4 (no picture): files a real collection holds;
    never paired, reported by the frames stage."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    empty, garbage, audio_only = folder / "V900001.mp4", folder / "V900002.mp4", folder / "V900003.mp4"
    empty.write_bytes(b"")
    garbage.write_bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with av.open(str(audio_only), "w") as out:
        st = out.add_stream("aac", rate=SAMPLE_RATE)
        st.layout = "mono"
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="flt", layout="mono")
        fr.sample_rate = SAMPLE_RATE
        for p in st.encode(fr):
            out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return [empty, garbage, audio_only]


def build_vmr_corpus(params, root: Path, cache: Path | None = None) -> dict:
    """Build the corpus of the module docstring under `root`; `params`: `VmrCorpusParams`."""
    import soundfile as sf

    from avmatch.vmr.footage import LoadedFootage, gather_footage

    t0 = time.time()
    stages: dict[str, float] = {}
    stage = stage_timer(stages, log)
    size = SIZES[params.size]
    seed = int(params.seed)
    recs, sources = gather_music(cache)
    if size.max_recordings:
        pick = np.random.default_rng([seed, 1]).permutation(len(recs))[: size.max_recordings]
        recs = [recs[i] for i in sorted(pick)]
    with ProcessPoolExecutor(max_workers=max(1, int(params.workers)), mp_context=_SPAWN) as pool:
        decoded = list(progress(pool.map(_decoded_music, [p for _, p in recs], [cache] * len(recs)),
                                "decode music", len(recs), "file"))
    audio = {name: y for (name, _), y in zip(recs, decoded)}
    split_of = assign_splits({k: len(v) / SAMPLE_RATE for k, v in audio.items()}, size.fractions,
                             np.random.default_rng([seed, 2]))
    stage("music")
    units, fsources = gather_footage(cache)
    sources.update(fsources)
    order = np.random.default_rng([seed, 3]).permutation(len(units))
    if size.max_footage:   # keep every real video, photos up to the limit
        n_videos = sum(units[i].kind == "video" for i in order)
        photos_kept = [i for i in order if units[i].kind == "photo"][: max(0, size.max_footage - n_videos)]
        order = np.array([i for i in order if units[i].kind == "video" or i in set(photos_kept)])
    dealt: dict[str, list] = {s: [] for s in SPLITS}
    videos = [units[i] for i in order if units[i].kind == "video"]
    photos = [units[i] for i in order if units[i].kind == "photo"]
    for j, u in enumerate(videos + photos):   # round robin 2:1:2 keeps real videos in every split
        dealt[("train", "test", "val", "train", "test")[j % 5]].append(u)
    brightness = {s: [LoadedFootage(u, size.width, size.height, size.fps).brightness for u in dealt[s]] for s in SPLITS}
    stage("footage")

    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        jobs, pairs, src_rows = [], [], []
        m_no, v_no = 0, 0
        for split in SPLITS:
            clips = [(name, start, y) for name in sorted(audio) if split_of[name] == split
                     for start, y in cut_clips(audio[name], size.clip_s)]
            cap = size.max_clips[SPLITS.index(split)]
            if cap is not None and len(clips) > cap:
                keep = np.sort(np.random.default_rng([seed, 4, SPLITS.index(split)]).permutation(len(clips))[:cap])
                clips = [clips[i] for i in keep]
            src_rows += [{"split": split, "kind": "music", "source": n.split(":")[0], "name": n.split(":", 1)[1]}
                         for n in sorted(audio) if split_of[n] == split]
            src_rows += [{"split": split, "kind": u.kind, "source": u.source, "name": u.name} for u in dealt[split]]
            edits = size.edits_per_train_clip if split == "train" else 1
            for name, start, y in clips:
                m_no += 1
                mid = f"M{m_no:06d}"
                mpath = tmp / "music" / split / f"{mid}.flac"
                mpath.parent.mkdir(parents=True, exist_ok=True)
                sf.write(mpath, y, SAMPLE_RATE)
                for e in range(edits):
                    v_no += 1
                    vid = f"V{v_no:06d}"
                    jobs.append({"size": size, "units": dealt[split], "brightness": brightness[split], "audio": y,
                                 "seed": [seed, 5, v_no], "path": tmp / "videos" / split / f"{vid}.mp4"})
                    pairs.append({"video_id": vid, "music_id": mid, "split": split, "piece": name,
                                  "clip_start_s": start})
        stage("music clips")
        workers = max(1, int(params.workers))
        if workers > 1:
            from avmatch.vmr.music_features import warm_librosa_kernels

            warm_librosa_kernels()   # before the workers start: see its docstring
            with ProcessPoolExecutor(max_workers=workers, mp_context=_SPAWN) as pool:
                made = list(progress(pool.map(_make_video, jobs, chunksize=4), "music videos", len(jobs), "video"))
        else:
            made = [_make_video(j) for j in progress(jobs, "music videos", len(jobs), "video")]
        for p, m in zip(pairs, made):
            p.update(m)
        stage("music videos")
        if params.include_bad_files:
            write_bad_videos(tmp / "videos" / "test")
        _write_csv(tmp / "pairs.csv", PAIR_COLUMNS, pairs)
        _write_csv(tmp / "sources.csv", ["split", "kind", "source", "name"], src_rows)
        info = {f"{s}_pairs": sum(p["split"] == s for p in pairs) for s in SPLITS}
        info.update({f"{s}_music": len({p["music_id"] for p in pairs if p["split"] == s}) for s in SPLITS})
        info.update({f"{s}_pieces": sum(v == s for v in split_of.values()) for s in SPLITS})
        info.update({f"{s}_footage": len(dealt[s]) for s in SPLITS})
        info.update(size=params.size, seed=seed, clip_s=size.clip_s, sources=sources, stages_s=stages,
                    bad_files=3 if params.include_bad_files else 0, build_seconds=round(time.time() - t0, 1))
        (tmp / "corpus.json").write_text(json.dumps(info, indent=2, default=str))
        swap_in(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return info
