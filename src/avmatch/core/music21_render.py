"""Real music from the scores music21 ships, rendered to audio with FluidSynth.

Pipeline: music21 parses a score once (slow, so the note list is cached as JSON in
`$AVMATCH_CACHE/music21/`, keyed by the piece's corpus path) -> a `RenderSpec` says which piece(s),
which General-MIDI instruments, tempo, transposition and crop -> `spec_to_midi` writes a small
Standard MIDI File -> the `fluidsynth` command line renders it with a GM soundfont -> mono FLAC,
peak-normalised, with an exactly known length.

`PiecePool` hands out parsed pieces group by group (Bach chorales, Palestrina, Monteverdi, trecento,
Essen folk songs, O'Neill's and Ryan's fiddle tunes, Aird's airs) in a seeded order, skipping any
piece whose opening melody was already handed out (so two harmonisations of one hymn tune, or two
variants of one folk song, never end up in different splits or twice in one).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RENDER_SR = 22050
CACHE_VERSION = 1
TAIL_S = 1.0  # release / reverb tail kept after the last note-off

# ---------------------------------------------------------------- groups of the music21 corpus
@dataclass(frozen=True)
class Group:
    folder: str        # folder of the music21 corpus
    suffix: str        # file type used from it
    bpm: float         # base tempo in quarter notes per minute (varied by a factor 0.7-1.3)
    polyphonic: bool
    numbered: bool     # .abc collections with many tunes per file (X: numbers)
    pieces_per_item: float = 1.0  # rough, for prefetching
    max_bytes: int = 0  # skip bigger files (parsing time grows with them); 0 = no limit


GROUPS: dict[str, Group] = {
    "bach": Group("bach", ".mxl", 72, True, False, 1.1, 20_000),
    "palestrina": Group("palestrina", ".krn", 110, True, False, 1.0, 5_000),
    "monteverdi": Group("monteverdi", ".mxl", 100, True, False, 1.0, 16_000),
    "trecento": Group("trecento", ".xml", 100, True, False, 1.0, 250_000),
    "essen": Group("essenFolksong", ".abc", 100, False, True, 3.0),
    "oneill": Group("oneills1850", ".abc", 120, False, True, 1.3),
    "ryans": Group("ryansMammoth", ".abc", 120, False, True, 1.3),
    "airds": Group("airdsAirs", ".abc", 90, False, True, 1.5),
}

# General MIDI programs (0-based). Ensembles give one program per part, top voice first.
ENSEMBLES: dict[str, list[int]] = {
    "piano": [0], "brightpiano": [1], "epiano": [4], "harpsichord": [6], "organ": [19], "reedorgan": [20],
    "accordion": [21], "guitar": [24], "steelguitar": [25], "vibes": [11], "marimba": [12],
    "strings": [40, 40, 41, 42, 43], "ensemble": [48], "synthstrings": [50], "choir": [52, 52, 53, 52],
    "brass": [56, 60, 57, 58], "winds": [73, 68, 71, 70], "saxes": [64, 65, 66, 67],
    "recorders": [74, 74, 74, 74], "synth": [81, 80, 89, 38],
}
SOLO: dict[str, int] = {
    "piano": 0, "epiano": 4, "harpsichord": 6, "celesta": 8, "vibes": 11, "marimba": 12, "organ": 19,
    "accordion": 21, "harmonica": 22, "guitar": 24, "steelguitar": 25, "violin": 40, "cello": 42,
    "trumpet": 56, "horn": 60, "sax": 65, "oboe": 68, "clarinet": 71, "flute": 73, "recorder": 74,
    "panflute": 75, "whistle": 78, "ocarina": 79, "squarelead": 80, "sitar": 104, "banjo": 105,
    "kalimba": 108, "steeldrums": 114,
}


class RenderError(RuntimeError):
    """FluidSynth or a soundfont is missing, or a rendering came out wrong."""


# ---------------------------------------------------------------- tools
def find_fluidsynth() -> str:
    exe = os.environ.get("AVMATCH_FLUIDSYNTH") or shutil.which("fluidsynth")
    if not exe:
        raise RenderError("the 'fluidsynth' command was not found; install it with "
                          "'apt-get install fluidsynth fluid-soundfont-gm' (or conda-forge fluidsynth)")
    return exe


def find_soundfont() -> Path:
    """A General MIDI soundfont: $AVMATCH_SOUNDFONT, Debian's FluidR3_GM, or pretty_midi's TimGM6mb."""
    candidates: list[Path] = []
    if os.environ.get("AVMATCH_SOUNDFONT"):
        candidates.append(Path(os.environ["AVMATCH_SOUNDFONT"]))
    candidates += [Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/soundfonts/FluidR3_GM.sf2"),
                   Path("/usr/share/sounds/sf2/default-GM.sf2"), Path("/usr/share/soundfonts/default.sf2")]
    if os.environ.get("CONDA_PREFIX"):
        candidates.append(Path(os.environ["CONDA_PREFIX"]) / "share" / "soundfonts" / "default.sf2")
    try:
        import importlib.util

        spec = importlib.util.find_spec("pretty_midi")
        if spec and spec.origin:
            candidates.append(Path(spec.origin).parent / "TimGM6mb.sf2")
    except (ImportError, ValueError):
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise RenderError("no General MIDI soundfont found (looked in " + ", ".join(str(c) for c in candidates)
                      + "); install one with 'apt-get install fluidsynth fluid-soundfont-gm' "
                      "or point AVMATCH_SOUNDFONT at an .sf2 file")


def fluidsynth_version(exe: str | None = None) -> str:
    try:
        out = subprocess.run([exe or find_fluidsynth(), "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"version\s+([\d.]+)", out)
        return m.group(1) if m else "unknown"
    except (OSError, subprocess.SubprocessError, RenderError):
        return "unknown"


def music21_cache_dir(cache: Path | None = None) -> Path:
    from avmatch.core.debian import cache_root

    return (cache or cache_root()) / "music21"


def _corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


# ---------------------------------------------------------------- pieces
@dataclass
class Piece:
    """The notes of one score: per part a list of (onset_ql, duration_ql, midi pitch, velocity)."""

    key: str
    group: str
    title: str
    parts: list[list[tuple[float, float, int, int]]]
    length_ql: float
    signature: str

    @property
    def slug(self) -> str:
        return piece_slug(self.key)


def piece_slug(key: str) -> str:
    """'bach/bwv66.6.mxl' -> 'bwv66-6'; 'essenFolksong/han1.abc#5' -> 'han1-5'."""
    path, _, num = key.partition("#")
    stem = Path(path).stem
    s = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:32].strip("-")
    return f"{s}-{num}" if num else s


def list_candidates(group: str) -> list[str]:
    """Every piece key of a group, sorted (keys are corpus paths, '#N' for tune N of a collection)."""
    g = GROUPS[group]
    folder = _corpus_root() / g.folder
    files = sorted(p for p in folder.iterdir() if p.suffix == g.suffix and p.is_file()
                   and (not g.max_bytes or p.stat().st_size <= g.max_bytes))
    keys: list[str] = []
    for f in files:
        rel = f"{g.folder}/{f.name}"
        if g.numbered:
            text = f.read_text(encoding="utf-8", errors="replace")
            nums = sorted({int(n) for n in re.findall(r"^X:\s*(\d+)", text, flags=re.M)})
            keys += [f"{rel}#{n}" for n in nums]
        else:
            keys.append(rel)
    return keys


def _cache_file(cache_dir: Path, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key.replace("#", "__"))
    return cache_dir / f"{safe}.json"


def _melody_signature(parts: list[list[tuple[float, float, int, int]]], key: str) -> str:
    """Transposition-free opening of the top voice: the first 12 intervals (or the key if too short)."""
    top: dict[float, int] = {}
    for on, _d, p, _v in parts[0]:
        top[on] = max(top.get(on, 0), p)
    pitches = [top[t] for t in sorted(top)]
    if len(pitches) < 9:
        return "key:" + key
    return ",".join(str(b - a) for a, b in zip(pitches[:13], pitches[1:13]))


def extract_piece(key: str) -> dict:
    """Parse one score with music21 and return its notes as a JSON-able dict (or {'error': ...})."""
    from music21 import converter, stream

    path, _, num = key.partition("#")
    try:
        full = _corpus_root() / path
        # forceSource: music21 would otherwise pickle every parse into its scratch folder; we cache JSON
        s = converter.parse(full, number=int(num), forceSource=True) if num else converter.parse(full, forceSource=True)
        if isinstance(s, stream.Opus):
            s = s.scores[0]
        title = ""
        if s.metadata is not None:
            title = s.metadata.title or s.metadata.movementName or ""
        parts_in = list(s.parts) if s.parts else [s]
        parts: list[list[tuple[float, float, int, int]]] = []
        for part in parts_in:
            flat = part.stripTies().flatten()
            notes = []
            for n in flat.notes:
                ql = float(n.quarterLength)
                if ql <= 0 or n.duration.isGrace or not hasattr(n, "pitches"):
                    continue
                vel = n.volume.velocity if n.volume is not None and n.volume.velocity else 80
                for p in n.pitches:
                    notes.append((round(float(n.offset), 6), round(ql, 6), int(p.midi), int(vel)))
            if notes:
                notes.sort()
                parts.append(notes)
        if not parts:
            return {"v": CACHE_VERSION, "key": key, "error": "no pitched notes"}
        # top voice first: the part with the highest mean pitch leads (scores list soprano first already)
        length = max(on + d for p in parts for on, d, _, _ in p)
        return {"v": CACHE_VERSION, "key": key, "title": str(title), "parts": parts, "length_ql": length,
                "signature": _melody_signature(parts, key)}
    except Exception as exc:  # music21 raises many kinds; a bad score is skipped, not fatal
        return {"v": CACHE_VERSION, "key": key, "error": f"{type(exc).__name__}: {exc}"[:300]}


def _extract_to_cache(args: tuple[str, str]) -> tuple[str, dict]:
    import time

    key, cache_dir = args
    t0 = time.perf_counter()
    data = extract_piece(key)
    data["parse_s"] = round(time.perf_counter() - t0, 3)
    target = _cache_file(Path(cache_dir), key)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, target)
    return key, data


def _piece_from_dict(data: dict, group: str) -> Piece | None:
    if "error" in data:
        return None
    parts = [[tuple(n) for n in p] for p in data["parts"]]
    return Piece(data["key"], group, data.get("title", ""), parts, float(data["length_ql"]), data["signature"])


def load_pieces(keys: list[str], group_of: dict[str, str], cache: Path | None = None, workers: int = 2,
                progress: bool = True) -> dict[str, Piece | None]:
    """Parsed pieces for `keys` (None for scores music21 cannot use); misses parsed in a process pool."""
    from tqdm import tqdm

    cache_dir = music21_cache_dir(cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Piece | None] = {}
    missing: list[str] = []
    for k in keys:
        f = _cache_file(cache_dir, k)
        if f.exists():
            try:
                data = json.loads(f.read_text())
                if data.get("v") == CACHE_VERSION and data.get("key") == k:
                    out[k] = _piece_from_dict(data, group_of[k])
                    continue
            except (json.JSONDecodeError, OSError):
                pass
        missing.append(k)
    if missing:
        bar = tqdm(total=len(missing), desc="parse music21 scores", unit="score", disable=not progress)
        args = [(k, str(cache_dir)) for k in missing]
        if workers > 1 and len(missing) > 2:
            # fork: workers only parse scores, and spawn cannot start from an interactive __main__
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
                for k, data in ex.map(_extract_to_cache, args):
                    out[k] = _piece_from_dict(data, group_of[k])
                    bar.update()
        else:
            for a in args:
                k, data = _extract_to_cache(a)
                out[k] = _piece_from_dict(data, group_of[k])
                bar.update()
        bar.close()
    bad = [k for k in keys if out.get(k) is None]
    if bad:
        log.info("music21: %d of %d scores unusable (e.g. %s)", len(bad), len(keys), bad[0])
    return out


class PiecePool:
    """Parsed, de-duplicated pieces per group in a seeded order; parses more on demand."""

    def __init__(self, groups: list[str], seed: int, cache: Path | None = None, workers: int = 2,
                 progress: bool = True):
        self.cache, self.workers, self.progress = cache, workers, progress
        self.order: dict[str, list[str]] = {}
        self.pos: dict[str, int] = {}
        for i, g in enumerate(sorted(groups)):
            keys = list_candidates(g)
            rng = np.random.default_rng([seed, 1009, i])
            self.order[g] = [keys[j] for j in rng.permutation(len(keys))]
            self.pos[g] = 0
        self.parsed: dict[str, Piece | None] = {}
        self.seen_signatures: set[str] = set()
        self.used: list[str] = []

    def prefetch(self, counts: dict[str, int]) -> None:
        """Parse (in one pool) the next `counts[g]` candidates of each group not parsed yet."""
        keys, group_of = [], {}
        for g, n in counts.items():
            start = self.pos[g]
            for k in self.order[g][start:start + n]:
                if k not in self.parsed:
                    keys.append(k)
                    group_of[k] = g
        if keys:
            self.parsed.update(load_pieces(keys, group_of, self.cache, self.workers, self.progress))

    def next_piece(self, group: str) -> Piece:
        order = self.order[group]
        while True:
            i = self.pos[group]
            if i >= len(order):
                raise RuntimeError(f"music21 group '{group}' ran out of usable pieces")
            k = order[i]
            if k not in self.parsed:
                self.prefetch({group: max(8, 4 * self.workers)})
            self.pos[group] = i + 1
            piece = self.parsed[k]
            if piece is None or piece.length_ql < 4 or piece.signature in self.seen_signatures:
                continue
            self.seen_signatures.add(piece.signature)
            self.used.append(k)
            return piece


# ---------------------------------------------------------------- render specs and MIDI
@dataclass
class RenderSpec:
    """One audio file: pieces played one after another, cropped to `max_s` seconds of notes."""

    name: str
    group: str
    pieces: list[Piece]
    ensemble: str
    programs: list[int]
    bpm: float
    transpose: int = 0
    start_ql: float = 0.0
    max_s: float = 60.0
    gap_s: float = 0.6
    reverb: int = 40
    soundfont: Path | None = None  # None: find_soundfont() (FluidR3_GM when installed)
    events: list[tuple[float, float, int, int, int]] = field(default_factory=list, repr=False)

    def __post_init__(self):
        self.events = self._events()

    @property
    def titles(self) -> list[str]:
        return [p.title for p in self.pieces]

    def _events(self) -> list[tuple[float, float, int, int, int]]:
        """(start_s, end_s, part, pitch, velocity), cropped at max_s."""
        spq = 60.0 / self.bpm
        ev = []
        t0 = 0.0
        for i, piece in enumerate(self.pieces):
            start_ql = self.start_ql if i == 0 else 0.0
            end = t0
            for pi, part in enumerate(piece.parts):
                for on, dur, pitch, vel in part:
                    if on < start_ql:
                        continue
                    s = t0 + (on - start_ql) * spq
                    e = s + dur * spq
                    if s >= self.max_s:
                        continue
                    e = min(e, self.max_s)
                    p = min(max(pitch + self.transpose, 12), 115)
                    ev.append((s, e, pi, p, vel))
                    end = max(end, e)
            t0 = end + self.gap_s
            if t0 >= self.max_s:
                break
        ev.sort()
        return ev

    @property
    def notes_end_s(self) -> float:
        return max((e for _, e, _, _, _ in self.events), default=0.0)

    @property
    def duration_s(self) -> float:
        """Exact length of the rendered file."""
        return round(self.notes_end_s + TAIL_S, 3)

    def describe(self) -> dict:
        return {"group": self.group, "pieces": [p.key for p in self.pieces], "titles": self.titles,
                "ensemble": self.ensemble, "programs": self.programs, "tempo_bpm": int(self.bpm),
                "transpose": self.transpose, "start_ql": self.start_ql,
                "soundfont": self.soundfont.name if self.soundfont else ""}


def _varlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


TICKS_PER_S = 960  # 120 bpm at 480 ticks per quarter note
GUARD_S = 2.0      # silence between the pieces of one batch (reverb tail dies away)
_CHANNELS = [c for c in range(16) if c != 9]  # channel 10 (index 9) is percussion in GM


def _spec_events(spec: RenderSpec, t0: float) -> list[tuple[int, int, bytes]]:
    """(tick, order, MIDI bytes) of one spec placed at t0 seconds: setup, notes, silence at its end."""
    tps = TICKS_PER_S
    start, end = int(round(t0 * tps)), int(round((t0 + spec.duration_s) * tps))
    n_parts = max((p for _, _, p, _, _ in spec.events), default=-1) + 1
    ev: list[tuple[int, int, bytes]] = []
    for part in range(n_parts):
        ch = _CHANNELS[min(part, len(_CHANNELS) - 1)]
        prog = spec.programs[min(part, len(spec.programs) - 1)] if spec.programs else 0
        ev += [(start, 1, bytes([0xB0 | ch, 121, 0])), (start, 2, bytes([0xC0 | ch, prog])),
               (start, 2, bytes([0xB0 | ch, 7, 100])), (start, 2, bytes([0xB0 | ch, 91, spec.reverb])),
               (start, 2, bytes([0xB0 | ch, 93, 0]))]
    for s, e, p, pitch, vel in spec.events:
        ch = _CHANNELS[min(p, len(_CHANNELS) - 1)]
        on, off = start + int(round(s * tps)), start + int(round(e * tps))
        off = max(off, on + 1)
        # note-offs before note-ons at one tick, so a repeated pitch is not cut short
        ev.append((off, 3, bytes([0x80 | ch, pitch, 0])))
        ev.append((on, 4, bytes([0x90 | ch, pitch, max(1, min(127, vel))])))
    for ch in _CHANNELS[:max(n_parts, 1)]:
        ev.append((end, 0, bytes([0xB0 | ch, 120, 0])))  # all sound off: nothing rings into the next piece
        ev.append((end, 0, bytes([0xB0 | ch, 123, 0])))
    return ev


def specs_to_midi(specs: list[RenderSpec], offsets_s: list[float]) -> bytes:
    """A type-0 Standard MIDI File playing each spec from its offset (seconds)."""
    ev: list[tuple[int, int, bytes]] = []
    for spec, t0 in zip(specs, offsets_s):
        ev += _spec_events(spec, t0)
    ev.sort(key=lambda x: (x[0], x[1], x[2]))
    body = bytearray(_varlen(0) + b"\xff\x51\x03" + (500000).to_bytes(3, "big"))
    last = 0
    for tick, _o, data in ev:
        body += _varlen(tick - last) + data
        last = tick
    body += _varlen(0) + b"\xff\x2f\x00"
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(body)) + bytes(body))


def spec_to_midi(spec: RenderSpec) -> bytes:
    return specs_to_midi([spec], [0.0])


# ---------------------------------------------------------------- rendering
def _fluidsynth_render(midi: bytes, sample_rate: int, soundfont: Path, exe: str, label: str) -> np.ndarray:
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="avmatch-fs-") as tmp:
        mid = Path(tmp) / "x.mid"
        wav = Path(tmp) / "x.wav"
        mid.write_bytes(midi)
        cmd = [exe, "-ni", "-q", "-F", str(wav), "-T", "wav", "-O", "float", "-r", str(sample_rate),
               "-g", "0.5", "-o", "synth.cpu-cores=1", str(soundfont), str(mid)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not wav.exists():
            raise RenderError(f"fluidsynth failed on {label}: {(proc.stderr or proc.stdout).strip()[-300:]}")
        data, sr = sf.read(wav, dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise RenderError(f"fluidsynth wrote {sr} Hz, asked for {sample_rate}")
    return data.mean(axis=1)


def _finish(x: np.ndarray, spec: RenderSpec, sample_rate: int) -> np.ndarray:
    """Exact length, short fade-out, peak at -1 dBFS; refuse silence."""
    n = int(round(spec.duration_s * sample_rate))
    x = x[:n] if len(x) >= n else np.concatenate([x, np.zeros(n - len(x), np.float32)])
    x = np.array(x, dtype=np.float32)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak < 1e-4:
        raise RenderError(f"rendering of {spec.name} is silent (peak {peak:.2e})")
    fade = min(len(x), int(0.05 * sample_rate))
    x[len(x) - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return (x * (0.891 / peak)).astype(np.float32)


def render_audio(spec: RenderSpec, sample_rate: int = RENDER_SR, soundfont: Path | None = None,
                 fluidsynth: str | None = None) -> np.ndarray:
    """Render one spec with FluidSynth: mono float32, peak -1 dBFS, exactly `spec.duration_s` long."""
    x = _fluidsynth_render(spec_to_midi(spec), sample_rate, soundfont or spec.soundfont or find_soundfont(),
                           fluidsynth or find_fluidsynth(), spec.name)
    return _finish(x, spec, sample_rate)


def render_batch(specs: list[RenderSpec], sample_rate: int = RENDER_SR, soundfont: Path | None = None,
                 fluidsynth: str | None = None) -> list[np.ndarray]:
    """Render several specs in ONE FluidSynth run (the soundfont loads once, ~0.3 s saved per file):
    they play one after another with GUARD_S of silence and all-sound-off between, then are cut apart
    at their known sample positions. Every spec is rendered with `soundfont` (default: the first spec's
    own soundfont, else find_soundfont())."""
    offsets, t = [], 0.0
    for spec in specs:
        offsets.append(t)
        t += spec.duration_s + GUARD_S
    x = _fluidsynth_render(specs_to_midi(specs, offsets), sample_rate, soundfont or specs[0].soundfont or find_soundfont(),
                           fluidsynth or find_fluidsynth(), f"{specs[0].name} (+{len(specs) - 1})")
    out = []
    for spec, t0 in zip(specs, offsets):
        a = int(round(t0 * sample_rate))
        out.append(_finish(x[a:a + int(round(spec.duration_s * sample_rate))], spec, sample_rate))
    return out


def _write_flac(x: np.ndarray, path: Path, sample_rate: int) -> dict:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sample_rate, format="FLAC", subtype="PCM_16")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return {"path": str(path), "duration_s": len(x) / sample_rate, "rms": rms}


def render_to_file(spec: RenderSpec, path: Path, sample_rate: int = RENDER_SR, soundfont: Path | None = None,
                   fluidsynth: str | None = None) -> dict:
    """Render one spec and write FLAC (16 bit); returns path, duration_s, rms."""
    return _write_flac(render_audio(spec, sample_rate, soundfont, fluidsynth), path, sample_rate)


def _render_batch_to_files(jobs: list[tuple[RenderSpec, Path]], sample_rate: int, soundfont: Path, exe: str
                           ) -> list[dict]:
    xs = render_batch([s for s, _ in jobs], sample_rate, soundfont, exe)
    return [_write_flac(x, path, sample_rate) for x, (_, path) in zip(xs, jobs)]


def render_many(jobs: list[tuple[RenderSpec, Path]], workers: int = 2, sample_rate: int = RENDER_SR,
                progress: bool = True, desc: str = "render", batch_s: float = 240.0) -> list[dict]:
    """Render to FLAC files in parallel (threads driving fluidsynth processes), in batches of about
    `batch_s` seconds of audio, each batch with one soundfont (a spec's own, else find_soundfont());
    results in the order of `jobs`. Batches depend only on the job list, so the output is deterministic.
    An .sf3 file (Ogg-compressed samples) is decoded at every load (5-10 s for a GM set), so its batches
    are 4x longer."""
    from tqdm import tqdm

    exe = find_fluidsynth()
    default_sf = None if all(s.soundfont for s, _ in jobs) else find_soundfont()
    by_sf: dict[Path, list[int]] = {}
    for i, (spec, _) in enumerate(jobs):
        by_sf.setdefault(spec.soundfont or default_sf, []).append(i)  # type: ignore[arg-type]
    total = sum(s.duration_s for s, _ in jobs)
    base_s = max(30.0, min(batch_s, total / max(1, 2 * workers)))  # enough batches to keep workers busy
    batches: list[tuple[Path, list[int]]] = []
    for sf2, idx in by_sf.items():
        limit = base_s * (4 if sf2.suffix.lower() == ".sf3" else 1)
        acc, cur = 0.0, []
        for i in idx:
            if cur and acc + jobs[i][0].duration_s > limit:
                batches.append((sf2, cur))
                acc, cur = 0.0, []
            cur.append(i)
            acc += jobs[i][0].duration_s
        if cur:
            batches.append((sf2, cur))
    # longest first, so no worker is left alone with a long .sf3 batch at the end (the output does not
    # depend on the order: each batch is rendered on its own)
    batches.sort(key=lambda b: -sum(jobs[i][0].duration_s for i in b[1]))
    results: list[dict | None] = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex, \
            tqdm(total=len(jobs), desc=desc, unit="file", disable=not progress) as bar:
        futs = {ex.submit(_render_batch_to_files, [jobs[i] for i in b], sample_rate, sf2, exe): b
                for sf2, b in batches}
        for fut in as_completed(futs):
            for i, res in zip(futs[fut], fut.result()):
                results[i] = res
            bar.update(len(futs[fut]))
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------- planning items
class ItemPlanner:
    """Turns pieces from a PiecePool into RenderSpecs with seeded instrument / tempo / key / crop.

    Short pieces are first slowed down (tempo factor not below 0.7), then joined with the next
    pieces of the same group into a medley (as folk tunes are played in sets) until `min_s`; long
    pieces are cropped to a seeded length in [min_s, max_s], from a seeded start bar.
    """

    def __init__(self, pool: PiecePool, seed: int, min_s: float, max_s: float, cover_decks: int = 1):
        self.pool, self.min_s, self.max_s = pool, min_s, max_s
        self.seed = seed
        self.count = 0
        self.names: set[str] = set()
        self.decks: dict[str, list[str]] = {}
        self.cover_decks = int(cover_decks)
        self.dealt_first: Counter[str] = Counter()

    def _dealt(self, kind: str, names: list[str], first: Sequence[str]) -> str:
        """The next instrument (set) of a seeded shuffled deck: the `first` ones, then all of `names`,
        dealt anew when empty, so every one is used once before any is used twice. The first
        `cover_decks` decks of each kind put the `first` ones on top: given enough items, every named
        instrument is dealt at least `cover_decks` times."""
        deck = self.decks.setdefault(kind, [])
        if not deck:
            rng = np.random.default_rng([self.seed, 2029, self.count, len(names)])
            want = [n for n in dict.fromkeys(first) if n in names] if self.dealt_first[kind] < self.cover_decks else []
            self.dealt_first[kind] += 1
            rest = [n for n in names if n not in want]
            deck.extend([rest[int(i)] for i in rng.permutation(len(rest))]
                        + [want[int(i)] for i in rng.permutation(len(want))])   # popped from the end: want first
        return deck.pop()

    def make(self, group: str, cover: Sequence[str] | None = None) -> RenderSpec:
        """One item of `group`. `cover` (instrument names, e.g. the references'): its instruments are dealt
        from a deck, those named first, then every ensemble or solo instrument before any repeats: training
        material that spans the timbres the references have. Otherwise drawn independently."""
        g = GROUPS[group]
        rng = np.random.default_rng([self.seed, 2027, self.count])
        self.count += 1
        target = float(rng.uniform(self.min_s, self.max_s))
        factor = float(rng.uniform(0.7, 1.3))
        bpm = float(round(g.bpm * factor))
        pieces = [self.pool.next_piece(group)]
        secs = pieces[0].length_ql * 60.0 / bpm
        if secs < self.min_s:
            slowest = round(g.bpm * 0.7)
            bpm = float(max(slowest, math.floor(pieces[0].length_ql * 60.0 / self.min_s)))
            secs = pieces[0].length_ql * 60.0 / bpm
        gap = 0.6
        while secs < self.min_s and len(pieces) < 12:
            nxt = self.pool.next_piece(group)
            pieces.append(nxt)
            secs += gap + nxt.length_ql * 60.0 / bpm
        start_ql = 0.0
        if len(pieces) == 1 and secs > target + 4 and rng.random() < 0.6:
            spare_ql = pieces[0].length_ql - target * bpm / 60.0
            bars = int(spare_ql // 4)
            start_ql = 4.0 * int(rng.integers(0, bars + 1)) if bars > 0 else 0.0
        table = ENSEMBLES if g.polyphonic else SOLO
        ens = sorted(table)[int(rng.integers(len(table)))]   # drawn even when dealt: the later draws stay put
        if cover is not None:
            ens = self._dealt("ensemble" if g.polyphonic else "solo", sorted(table), cover)
        programs = list(table[ens]) if g.polyphonic else [table[ens]]
        transpose = int(rng.integers(-4, 5))
        reverb = int(rng.integers(20, 80))
        medley = f"_medley{len(pieces)}" if len(pieces) > 1 else ""
        name = f"{group}_{pieces[0].slug}{medley}_{ens}_t{int(bpm):03d}"
        base, k = name, 2
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return RenderSpec(name=name, group=group, pieces=pieces, ensemble=ens, programs=programs, bpm=bpm,
                          transpose=transpose, start_ql=start_ql, max_s=target, gap_s=gap, reverb=reverb)


def weighted_schedule(weights: dict[str, float]):
    """Smooth weighted round robin over groups: a deterministic, well-mixed infinite sequence."""
    keys = sorted(weights)
    current = {k: 0.0 for k in keys}
    total = sum(weights.values())
    while True:
        for k in keys:
            current[k] += weights[k]
        best = max(keys, key=lambda k: (current[k], k))
        current[best] -= total
        yield best
