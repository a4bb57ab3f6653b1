"""Offline corpus for musical version identification, built deterministically from a seed.

Real versions: the Bach chorales music21 ships include many *settings of one hymn tune*: different
harmonisations, keys and voicings by the composer. Titles are not reliable for grouping them (they
are catalogue numbers), so settings are grouped by their soprano melody: the first
`SIGNATURE_INTERVALS` melodic intervals of the top voice with repeated notes merged (transposition-free).
With 10 intervals this gives ~68 families with ~190 settings; settings whose melody matches no other
one are *distractors* (in the test collection, never queries). Every setting is rendered with its own
instrument ensemble, tempo and transposition.

Family-disjoint splits leave few training pairs, so the corpus adds *folk tunes* (Essen and O'Neill
collections) rendered as several versions each: another solo instrument, key and tempo, a dropped or
repeated phrase, or an excerpt. They are training material only (`source=folk`).

Renderings that training never hears: training material is rendered with several General MIDI soundfonts
(`TRAIN_SOUNDFONTS`) and, for half of the tracks, a random General MIDI program per part from the training
programs; the `val` split (model selection) and the `test_unseen` collection (the test families and
distractors rendered again: key +/-5 semitones, 60-120 quarter notes per minute, a phrase dropped or
repeated) use other soundfonts (`UNSEEN_SOUNDFONTS`) and only programs no training track uses
(`UNSEEN_PROGRAMS`). The `test` collection stays as it was (FluidR3_GM, the named ensembles), so its
numbers compare with earlier runs.

Layout under the corpus root::

    audio/chorales/*.flac  audio/folk/*.flac  audio/distractors/*.flac  audio/unseen/*.flac
    tracks.csv    id,path,clique,split,source,title,instrument,tempo_bpm,transpose,variation,duration_s,piece,
                  soundfont
    corpus.json   summary (families, settings, sizes, build time)

tracks.csv is the contract with the pipeline (the SHS100K / Discogs-VI adapters write the same
table). The corpus is built in `<root>.tmp` and swapped in at the end.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avmatch.core.corpus_build import stage_timer, swap_in
from avmatch.core.device import available_cores
from avmatch.core.music21_render import (
    ENSEMBLES,
    GROUPS,
    SOLO,
    Piece,
    PiecePool,
    RenderSpec,
    find_fluidsynth,
    list_candidates,
    load_pieces,
    piece_slug,
    render_many,
)
from avmatch.core.soundfonts import soundfont_paths

log = logging.getLogger(__name__)

TRACK_COLUMNS = ["id", "path", "clique", "split", "source", "title", "instrument", "tempo_bpm", "transpose",
                 "variation", "duration_s", "piece", "soundfont"]
SIGNATURE_INTERVALS = 10
RENDER_SR = 16000  # the versions pipeline decodes to 16 kHz mono
DEFAULT_SOUNDFONT = "FluidR3_GM"  # the `test` collection's (and every track's before several were used)
TRAIN_SOUNDFONTS = ("FluidR3_GM", "FluidR3Mono_GM", "sf_GMbank", "OPL-3_FM_128M")
UNSEEN_SOUNDFONTS = ("TimGM6mb", "MuseScore_General_Lite")
# General MIDI programs (0-based) no training track is rendered with: none of the named ensembles' or solo
# instruments' programs, two or three per instrument family (pianos, chromatic percussion, organs, guitars,
# strings, ensembles, brass, reeds, pipes, leads, pads, ethnic)
UNSEEN_PROGRAMS = (2, 5, 7, 10, 13, 15, 16, 18, 23, 26, 28, 44, 46, 49, 51, 54, 59, 61, 63, 69, 72, 77, 82, 84,
                   87, 88, 91, 94, 106, 109, 110)
# training programs: the named ensembles' and solo instruments', and the rest of the melodic programs (no
# basses as a top voice, no sound effects, percussion, timpani or orchestra hit)
_NOT_MELODIC = set(range(32, 40)) | set(range(96, 104)) | set(range(112, 128)) | {47, 55}
TRAIN_PROGRAMS = tuple(p for p in range(128) if p not in UNSEEN_PROGRAMS and p not in _NOT_MELODIC)


@dataclass(frozen=True)
class VerSize:
    test_families: int      # 0 = all remaining families
    val_families: int
    train_families: int
    distractors: int
    folk_tunes: int
    chorale_s: tuple[float, float]  # min / max seconds of a chorale rendering
    folk_s: tuple[float, float]
    folk_test_tunes: int = 0  # held-out folk tunes (other tunes than training) added to the test collection
    chorale_versions: int = 0  # unused single chorales rendered as several versions each (training material)
    chorale_version_s: tuple[float, float] = (21.0, 28.0)


SIZES = {
    # tiny: the end-to-end test's corpus; its 1-minute training cannot learn chorale harmonisations, so its
    # test collection also holds versions of held-out folk tunes (the kind of pair it trains on)
    "tiny": VerSize(6, 3, 6, 4, 16, (21.0, 26.0), (21.0, 25.0), 6, 0),
    "demo": VerSize(0, 10, 24, 40, 120, (21.0, 45.0), (21.0, 30.0), 0, 150),
    "large": VerSize(0, 10, 24, 120, 600, (21.0, 80.0), (21.0, 45.0), 0, 150),
}


def soprano_signature(piece: Piece, n: int = SIGNATURE_INTERVALS) -> str | None:
    """Transposition-free opening of the top voice with repeated notes merged (passing rhythm changes
    between settings do not matter); None when the melody is shorter than `n` intervals."""
    top: dict[float, int] = {}
    for on, _d, p, _v in piece.parts[0]:
        top[on] = max(top.get(on, 0), p)
    pitches = [top[t] for t in sorted(top)]
    merged = pitches[:1]
    for p in pitches[1:]:
        if p != merged[-1]:
            merged.append(p)
    if len(merged) < n + 1:
        return None
    return ",".join(str(b - a) for a, b in zip(merged[:n], merged[1:n + 1]))


def _notes_hash(piece: Piece) -> str:
    return hashlib.md5(json.dumps(piece.parts).encode()).hexdigest()


def chorale_families(pieces: dict[str, Piece | None]) -> tuple[list[list[Piece]], list[Piece]]:
    """(families with >= 2 distinct settings, sorted; singletons) grouped by soprano signature.
    Identical note content (the same setting stored twice) counts once."""
    groups: dict[str, list[Piece]] = defaultdict(list)
    seen: set[str] = set()
    for key in sorted(pieces):
        p = pieces[key]
        if p is None or p.length_ql < 8:
            continue
        h = _notes_hash(p)
        if h in seen:
            continue
        seen.add(h)
        groups[soprano_signature(p) or f"key:{key}"].append(p)
    fams = [sorted(v, key=lambda p: p.key) for _, v in sorted(groups.items()) if len(v) >= 2]
    singles = [v[0] for _, v in sorted(groups.items()) if len(v) == 1]
    return fams, singles


# ---------------------------------------------------------------- variations of a piece
def _shift_parts(piece: Piece, keep, shift) -> list[list[tuple[float, float, int, int]]]:
    return [[(round(shift(on), 6), d, p, v) for on, d, p, v in part if keep(on)] for part in piece.parts]


def vary_piece(piece: Piece, kind: str, rng: np.random.Generator) -> tuple[Piece, str]:
    """A structural variation of a tune: 'drop' removes a phrase (4 or 8 beats), 'repeat' plays one twice,
    'excerpt' starts later in the tune, 'voices' (part-songs) keeps the top voice and a subset of the others;
    anything else returns the tune unchanged."""
    length = piece.length_ql
    span = float(rng.choice([4.0, 8.0]))
    if kind in ("drop", "repeat") and length > 3 * span:
        a = 4.0 * int(rng.integers(1, max(2, int((length - span) // 4))))
        a = min(a, length - span)
        if kind == "drop":
            parts = _shift_parts(piece, lambda on: not (a <= on < a + span),
                                 lambda on: on - span if on >= a + span else on)
            new_len = length - span
        else:
            parts = [sorted([(on if on < a + span else round(on + span, 6), d, p, v) for on, d, p, v in part]
                            + [(round(on + span, 6), d, p, v) for on, d, p, v in part if a <= on < a + span])
                     for part in piece.parts]
            new_len = length + span
        return Piece(piece.key, piece.group, piece.title, parts, new_len, piece.signature), f"{kind}@{a:g}+{span:g}"
    if kind == "voices" and len(piece.parts) >= 3:
        # another voicing of the same tune: the top voice (the melody) kept, inner / lower voices dropped
        n = len(piece.parts)
        options = [[0], [0, n - 1], [0, 1, n - 1], [0, n - 2, n - 1]]
        keep = options[int(rng.integers(len(options)))]
        parts = [piece.parts[i] for i in keep]
        return (Piece(piece.key, piece.group, piece.title, parts, length, piece.signature),
                "voices:" + "".join("SATB"[min(i, 3)] for i in keep))
    if kind == "excerpt" and length > 16:
        a = 4.0 * int(rng.integers(1, max(2, int(length // 8))))
        parts = _shift_parts(piece, lambda on: on >= a, lambda on: on - a)
        return Piece(piece.key, piece.group, piece.title, parts, length - a, piece.signature), f"excerpt@{a:g}"
    return piece, "none"


def _pc_histogram(parts: list[list[tuple[float, float, int, int]]]) -> np.ndarray:
    h = np.zeros(12)
    for part in parts:
        for _on, d, p, _v in part:
            h[p % 12] += d
    return h / max(1e-9, h.sum())


def reharmonise(piece: Piece, donor: Piece) -> tuple[Piece, str]:
    """The melody (top voice) of `piece` over the lower voices of another setting (`donor`), transposed to the
    key that fits the melody best (pitch-class histograms) and repeated to the melody's length: a synthetic
    re-harmonisation (same tune, other harmony, bass and voice leading), as the chorale families are real ones."""
    lower = donor.parts[1:]
    if not lower or donor.length_ql <= 0:
        return piece, "none"
    hs, hl = _pc_histogram(piece.parts[:1]), _pc_histogram(lower)
    shift = max(range(-6, 6), key=lambda k: (float(hs @ np.roll(hl, k)), -abs(k)))
    parts = [piece.parts[0]]
    for part in lower:
        notes = []
        rep = 0
        while rep * donor.length_ql < piece.length_ql:
            off = rep * donor.length_ql
            notes += [(round(on + off, 6), min(d, piece.length_ql - on - off), p + shift, v)
                      for on, d, p, v in part if on + off < piece.length_ql]
            rep += 1
        parts.append(notes)
    return (Piece(piece.key, piece.group, piece.title, parts, piece.length_ql, piece.signature),
            f"reharm:{piece_slug(donor.key)}{shift:+d}")


def _repeat_until(piece: Piece, bpm: float, min_s: float) -> tuple[list[Piece], float]:
    """Folk tunes are short: play them again (as the repeat of an AABB tune) until `min_s` seconds."""
    out, secs = [piece], piece.length_ql * 60.0 / bpm
    while secs < min_s and len(out) < 8:
        out.append(piece)
        secs += 0.6 + piece.length_ql * 60.0 / bpm
    return out, secs


def _chorale_spec(piece: Piece, name: str, rng: np.random.Generator, dur: tuple[float, float]) -> RenderSpec:
    ens = sorted(ENSEMBLES)[int(rng.integers(len(ENSEMBLES)))]
    bpm = float(round(GROUPS["bach"].bpm * rng.uniform(0.75, 1.3)))
    secs = piece.length_ql * 60.0 / bpm
    if secs < dur[0]:
        bpm = float(max(30, int(piece.length_ql * 60.0 / (dur[0] + 0.5))))
    pieces, _ = _repeat_until(piece, bpm, dur[0])
    return RenderSpec(name=f"{name}_{ens}_t{int(bpm):03d}", group="bach", pieces=pieces, ensemble=ens,
                      programs=ENSEMBLES[ens], bpm=bpm, transpose=int(rng.integers(-5, 6)), max_s=dur[1],
                      reverb=int(rng.integers(20, 80)))


def _folk_spec(piece: Piece, name: str, rng: np.random.Generator, dur: tuple[float, float], kind: str,
               instrument: str) -> tuple[RenderSpec, str]:
    varied, desc = vary_piece(piece, kind, rng)
    bpm = float(round(GROUPS[piece.group].bpm * rng.uniform(0.8, 1.25)))
    pieces, _ = _repeat_until(varied, bpm, dur[0])
    spec = RenderSpec(name=f"{name}_{instrument}_t{int(bpm):03d}", group=piece.group, pieces=pieces,
                      ensemble=instrument, programs=[SOLO[instrument]], bpm=bpm, transpose=int(rng.integers(-5, 7)),
                      max_s=float(rng.uniform(*dur)), reverb=int(rng.integers(20, 80)))
    return spec, desc


def _chorale_version_spec(piece: Piece, name: str, rng: np.random.Generator, dur: tuple[float, float], kind: str,
                          donor: Piece | None = None) -> tuple[RenderSpec, str]:
    """One version of a chorale that belongs to no family: its own ensemble, tempo, key and variation
    ('reharm': its melody over the lower voices of `donor`)."""
    varied, desc = reharmonise(piece, donor) if kind == "reharm" and donor is not None else vary_piece(piece, kind, rng)
    ens = sorted(ENSEMBLES)[int(rng.integers(len(ENSEMBLES)))]
    if len(varied.parts) == 1:  # the melody alone: a solo instrument
        ens = sorted(SOLO)[int(rng.integers(len(SOLO)))]
        programs = [SOLO[ens]]
    else:
        programs = ENSEMBLES[ens]
    bpm = float(round(GROUPS["bach"].bpm * rng.uniform(0.75, 1.3)))
    pieces, _ = _repeat_until(varied, bpm, dur[0])
    spec = RenderSpec(name=f"{name}_{ens}_t{int(bpm):03d}", group="bach", pieces=pieces, ensemble=ens,
                      programs=programs, bpm=bpm, transpose=int(rng.integers(-5, 6)),
                      max_s=float(rng.uniform(*dur)), reverb=int(rng.integers(20, 80)))
    return spec, desc


def _sf_tag(name: str) -> str:
    return name.split("_")[0].split("-")[0].lower()


def random_programs(n_parts: int, pool: tuple[int, ...], rng: np.random.Generator) -> tuple[str, list[int]]:
    """An instrument choice from `pool`: on half the draws one program for every part (a piano, an organ, a
    string section), otherwise a program per part drawn independently (a mixed ensemble); (name, programs)."""
    if n_parts <= 1 or rng.random() < 0.5:
        p = int(pool[int(rng.integers(len(pool)))])
        return f"gm{p}", [p]
    progs = [int(pool[int(i)]) for i in rng.integers(len(pool), size=n_parts)]
    return "gm" + "-".join(map(str, progs)), progs


def render_for_training(spec: RenderSpec, soundfonts: dict[str, Path], names: tuple[str, ...],
                        rng: np.random.Generator) -> RenderSpec:
    """`spec` re-assigned to a random training soundfont and, on half of the tracks, to random training
    programs (so neither the ensemble nor the samples of one soundfont tell versions apart)."""
    sf = names[int(rng.integers(len(names)))]
    if rng.random() < 0.5:
        ens, programs = random_programs(max(1, len(spec.pieces[0].parts)), TRAIN_PROGRAMS, rng)
        spec.name = spec.name.replace(f"_{spec.ensemble}_t", f"_{ens}_t")
        spec.ensemble, spec.programs = ens, programs
    spec.soundfont = soundfonts[sf]
    spec.name = f"{spec.name}_{_sf_tag(sf)}"
    return spec


def _unseen_spec(piece: Piece, name: str, rng: np.random.Generator, dur: tuple[float, float],
                 soundfonts: dict[str, Path], names: tuple[str, ...]) -> tuple[RenderSpec, str]:
    """A rendering training never hears: an unseen soundfont and unseen programs, key +/-5 semitones, 60-120
    quarter notes per minute, and a phrase dropped or repeated on two thirds of the tracks."""
    varied, desc = vary_piece(piece, ["none", "drop", "repeat"][int(rng.integers(3))], rng)
    ens, programs = random_programs(max(1, len(varied.parts)), UNSEEN_PROGRAMS, rng)
    bpm = float(rng.integers(60, 121))
    pieces, _ = _repeat_until(varied, bpm, dur[0])
    sf = names[int(rng.integers(len(names)))]
    spec = RenderSpec(name=f"{name}_{ens}_t{int(bpm):03d}_{_sf_tag(sf)}", group=piece.group, pieces=pieces,
                      ensemble=ens, programs=programs, bpm=bpm, transpose=int(rng.integers(-5, 6)), max_s=dur[1],
                      reverb=int(rng.integers(20, 80)), soundfont=soundfonts[sf])
    return spec, desc


def _slug(key: str) -> str:
    from avmatch.core.music21_render import piece_slug

    return piece_slug(key)


def build_versions_corpus(size: str = "demo", seed: int = 11, root: Path | str = "data/versions/corpus",
                          folk_tunes: int | None = None, folk_versions: int = 3,
                          chorale_versions: int | None = None, reharm_versions: int = 1,
                          train_soundfonts: tuple[str, ...] = TRAIN_SOUNDFONTS,
                          unseen_soundfonts: tuple[str, ...] = UNSEEN_SOUNDFONTS, unseen_val: bool = True) -> dict:
    """Build the corpus described in the module docstring; returns the content of corpus.json."""
    t0 = time.time()
    spec = SIZES[size]
    root = Path(root).resolve()
    tmp = root.with_name(root.name + ".tmp")
    workers = available_cores()
    train_soundfonts, unseen_soundfonts = tuple(train_soundfonts), tuple(unseen_soundfonts)
    if set(train_soundfonts) & set(unseen_soundfonts) or not train_soundfonts or not unseen_soundfonts:
        raise ValueError(f"training soundfonts {train_soundfonts} and unseen soundfonts {unseen_soundfonts} must "
                         "both be given and share none")
    # fail before any work when rendering is impossible
    find_fluidsynth()
    sfs = soundfont_paths(sorted({DEFAULT_SOUNDFONT, *train_soundfonts, *unseen_soundfonts}))
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    stages: dict[str, float] = {}
    stage = stage_timer(stages, log)

    # 1. chorale families -----------------------------------------------------------------------
    keys = list_candidates("bach")
    pieces = load_pieces(keys, {k: "bach" for k in keys}, workers=workers)
    families, singles = chorale_families(pieces)
    rng = np.random.default_rng([seed, 5])
    order = rng.permutation(len(families))
    n_val, n_train = spec.val_families, spec.train_families
    n_test = spec.test_families or max(1, len(families) - n_val - n_train)
    split_of: dict[int, str] = {}
    for rank, fi in enumerate(order):
        split_of[int(fi)] = ("test" if rank < n_test else "val" if rank < n_test + n_val
                             else "train" if rank < n_test + n_val + n_train else "")
    all_singles = singles
    singles = [singles[i] for i in rng.permutation(len(singles))[:spec.distractors]]
    stage("chorale_families")

    jobs: list[tuple[RenderSpec, Path, dict]] = []
    for fi, fam in enumerate(families):
        split = split_of[fi]
        if not split:
            continue
        for p in fam:
            r = np.random.default_rng([seed, 7, fi, len(jobs)])
            s = _chorale_spec(p, f"fam{fi:03d}_{_slug(p.key)}", r, spec.chorale_s)
            s.soundfont = sfs[DEFAULT_SOUNDFONT]
            if split == "train":
                s = render_for_training(s, sfs, train_soundfonts, np.random.default_rng([seed, 31, fi, len(jobs)]))
            elif split == "val" and unseen_val:  # model selection on renderings training never hears
                s, _ = _unseen_spec(p, f"fam{fi:03d}_{_slug(p.key)}", np.random.default_rng([seed, 37, fi, len(jobs)]),
                                    spec.chorale_s, sfs, unseen_soundfonts)
            jobs.append((s, tmp / "audio" / "chorales" / f"{s.name}.flac",
                         {"clique": f"chorale{fi:03d}", "split": split, "source": "chorales", "variation": "setting",
                          "piece": p.key}))
    for i, p in enumerate(singles):
        r = np.random.default_rng([seed, 9, i])
        s = _chorale_spec(p, f"solo_{_slug(p.key)}", r, spec.chorale_s)
        s.soundfont = sfs[DEFAULT_SOUNDFONT]
        jobs.append((s, tmp / "audio" / "distractors" / f"{s.name}.flac",
                     {"clique": f"distractor_{_slug(p.key)}", "split": "test", "source": "distractor",
                      "variation": "setting", "piece": p.key}))

    # 1a. test_unseen: the test families' settings and the distractors again, rendered as training never hears
    for fi, fam in enumerate(families):
        if split_of[fi] != "test":
            continue
        for p in fam:
            s, desc = _unseen_spec(p, f"fam{fi:03d}_{_slug(p.key)}", np.random.default_rng([seed, 41, fi, len(jobs)]),
                                   spec.chorale_s, sfs, unseen_soundfonts)
            jobs.append((s, tmp / "audio" / "unseen" / f"{s.name}.flac",
                         {"clique": f"chorale{fi:03d}", "split": "test_unseen", "source": "chorales",
                          "variation": desc, "piece": p.key}))
    for i, p in enumerate(singles):
        s, desc = _unseen_spec(p, f"solo_{_slug(p.key)}", np.random.default_rng([seed, 43, i]), spec.chorale_s, sfs,
                               unseen_soundfonts)
        jobs.append((s, tmp / "audio" / "unseen" / f"{s.name}.flac",
                     {"clique": f"distractor_{_slug(p.key)}", "split": "test_unseen", "source": "distractor",
                      "variation": desc, "piece": p.key}))

    # 1b. single chorales no test split uses, as versions (training material) -------------------------
    # another ensemble / key / tempo, a dropped or repeated phrase, an excerpt, or another voicing (melody
    # kept, other voices dropped). Pieces whose opening is close to a family's (first 6 intervals) are left
    # out, so no held-out tune leaks into training under another signature.
    n_cv = spec.chorale_versions if chorale_versions is None else chorale_versions
    if n_cv:
        near = {",".join((soprano_signature(p) or "").split(",")[:6]) for fam in families for p in fam}
        used = {p.key for p in singles}  # the distractors
        pool_cv = [p for p in all_singles if p.key not in used
                   and ",".join((soprano_signature(p) or "x").split(",")[:6]) not in near]
        pick = np.random.default_rng([seed, 17]).permutation(len(pool_cv))[:n_cv]
        # version 0 as written, versions 1..reharm_versions re-harmonised (the melody over another chorale's
        # lower voices, a different donor each: what tells the chorale families' settings apart), the rest any
        # variation
        cv_kinds = ["reharm", "voices", "drop", "repeat", "excerpt"]
        for ci, pi in enumerate(sorted(pick)):
            p = pool_cv[int(pi)]
            r = np.random.default_rng([seed, 19, ci])
            for vi in range(3):
                kind = ("none" if vi == 0 else "reharm" if vi <= reharm_versions
                        else cv_kinds[int(r.integers(len(cv_kinds)))])
                donor = pool_cv[int(r.integers(len(pool_cv)))]
                while donor is p:
                    donor = pool_cv[int(r.integers(len(pool_cv)))]
                s, desc = _chorale_version_spec(p, f"cv{ci:03d}v{vi}_{_slug(p.key)}", r, spec.chorale_version_s, kind,
                                                donor)
                s = render_for_training(s, sfs, train_soundfonts, np.random.default_rng([seed, 47, ci, vi]))
                jobs.append((s, tmp / "audio" / "chorale_versions" / f"{s.name}.flac",
                             {"clique": f"cv{ci:03d}", "split": "train", "source": "chorale_versions",
                              "variation": desc, "piece": p.key}))

    # 2. folk tunes as versions (training material) --------------------------------------------------
    n_folk = spec.folk_tunes if folk_tunes is None else folk_tunes
    if n_folk + spec.folk_test_tunes:
        pool = PiecePool(["essen", "oneill"], seed, workers=workers)
        pool.seen_signatures |= {p.signature for fam in families for p in fam}
        n_all = n_folk + spec.folk_test_tunes
        pool.prefetch({"essen": int(n_all * 0.6 / 3) + 8, "oneill": int(n_all * 0.4 / 1.3) + 8})
        kinds = ["none", "drop", "repeat", "excerpt"]
        for ti in range(n_folk + spec.folk_test_tunes):
            group = "essen" if ti % 5 < 3 else "oneill"
            piece = pool.next_piece(group)
            r = np.random.default_rng([seed, 13, ti])
            instruments = [sorted(SOLO)[j] for j in r.permutation(len(SOLO))[:folk_versions]]
            for vi in range(folk_versions):
                kind = kinds[0] if vi == 0 else kinds[int(r.integers(len(kinds)))]
                s, desc = _folk_spec(piece, f"folk{ti:04d}v{vi}_{_slug(piece.key)}", r, spec.folk_s, kind,
                                     instruments[vi])
                if ti < n_folk:
                    s = render_for_training(s, sfs, train_soundfonts, np.random.default_rng([seed, 53, ti, vi]))
                else:
                    s.soundfont = sfs[DEFAULT_SOUNDFONT]
                jobs.append((s, tmp / "audio" / "folk" / f"{s.name}.flac",
                             {"clique": f"folk{ti:04d}", "split": "train" if ti < n_folk else "test",
                              "source": "folk", "variation": desc,
                              "piece": piece.key}))
    stage("plan")

    # rendered at the pipeline's sample rate (16 kHz): nothing above 8 kHz is used, and synthesis costs per sample
    results = render_many([(s, p) for s, p, _ in jobs], workers, RENDER_SR, progress=True,
                          desc="render versions (FluidSynth)")
    stage("render")

    rows = []
    for (s, path, info), res in zip(jobs, results):
        rows.append({"id": path.relative_to(tmp).with_suffix("").as_posix(), "path": path.relative_to(tmp).as_posix(),
                     "title": s.pieces[0].title or s.pieces[0].key, "instrument": s.ensemble,
                     "tempo_bpm": int(s.bpm), "transpose": s.transpose, "duration_s": f"{res['duration_s']:.3f}",
                     "soundfont": s.soundfont.name if s.soundfont else "", **info})
    write_tracks_csv(tmp / "tracks.csv", rows)
    count = defaultdict(int)
    for r in rows:
        count[(r["source"], r["split"])] += 1
    fam_split = defaultdict(int)
    for fi, s in split_of.items():
        if s:
            fam_split[s] += 1
    summary = {
        "size": size, "seed": seed, "n_tracks": len(rows),
        "chorale_families": {"all": len(families), "settings": sum(len(f) for f in families), **fam_split},
        "distractors": len(singles), "folk_tunes": n_folk, "folk_test_tunes": spec.folk_test_tunes,
        "folk_versions": folk_versions, "chorale_versions": n_cv,
        "reharm_versions": reharm_versions, "render_sample_rate": RENDER_SR,
        "tracks_by_source_split": {f"{a}/{b}": n for (a, b), n in sorted(count.items())},
        "hours": round(sum(float(r["duration_s"]) for r in rows) / 3600, 3),
        "signature_intervals": SIGNATURE_INTERVALS, "stage_seconds": stages,
        "soundfonts": {"test": DEFAULT_SOUNDFONT, "train": list(train_soundfonts),
                       "val_and_test_unseen": list(unseen_soundfonts),
                       "files": {n: str(p) for n, p in sorted(sfs.items())}},
        "unseen_programs": list(UNSEEN_PROGRAMS), "unseen_val": unseen_val,
    }
    summary["build_seconds"] = round(time.time() - t0, 1)
    (tmp / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    swap_in(tmp, root)
    log.info("versions corpus %s: %d tracks (%.2f h) in %.0f s", root, len(rows), summary["hours"],
             summary["build_seconds"])
    return summary


def write_tracks_csv(path: Path, rows: list[dict]) -> None:
    """The tracks table every source (builtin corpus, SHS100K, Discogs-VI) produces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=TRACK_COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in sorted(rows, key=lambda r: r["id"]):
            w.writerow({c: r.get(c, "") for c in TRACK_COLUMNS})


def read_tracks_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
