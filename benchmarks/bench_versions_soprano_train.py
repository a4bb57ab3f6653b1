#!/usr/bin/env python
"""Versions (issue 18): a learned soprano (top voice) transcriber over the project's cached CQT.

The melody n-gram embedding of bench_versions_melody.py ranks versions at 0.96 MAP on `test_unseen` when the
soprano comes from the score, but training-free extractors get only ~15 % of interval 3-grams right. This script
trains a small convolutional transcriber on the TRAINING renderings only (split `train` of the corpus; tracks of
cliques in `--dev-share` are held out as `dev` to pick the decoding's minimum note length, never trained on):

* targets: per CQT frame (10 frames/s, frame i centred at 0.1 i + 0.04 s) the MIDI pitch of the soprano (part 0
  of the score, highest note when it holds a chord) sounding then, or "no note"; rebuilt from the track's `piece`
  (music21 cache of the corpus build), `variation` (drop / repeat / excerpt re-applied exactly; reharm / voices /
  setting / none keep the soprano), `transpose` and `tempo_bpm`, with the renderer's own timing (`RenderSpec`:
  repetitions of the tune with a 0.6 s gap until the file's end). Tracks whose rebuilt note end does not match the
  file's length (and is not a crop) are skipped and counted;
* model: 2-D convs over [84 bins, frames] (time context +/- 6 frames, a 49-bin kernel that sees two octaves up and
  down, i.e. the harmonics), 84 pitch logits per frame plus a "no note" logit; cross-entropy, fixed steps, seeded;
* augmentation: pitch shift (bins rolled, target shifted), gain, the project's timbre change (`change_timbre`).

`--out` gets the transcriber (`torch.save` of the state dict and its config); bench_versions_melody.py then runs
it as `--extractors learned --transcriber PATH`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, add_common_args, quiet_env, set_threads

N_BINS = 84
MIDI_LO = 24          # CQT bin 0 = C1 (32.7 Hz) = MIDI 24, 12 bins per octave
NONE = N_BINS         # class index of "no note"
FRAME_S = 0.1         # hop 0.02 s x pool 5
FRAME_CENTRE_S = 0.04  # pooled frame i averages STFT frames 5i..5i+4 (centred at 0.02 k s): centre 0.1 i + 0.04
IGNORE = -100
MIN_SOPRANO_COVER = 0.5  # part 0 must sound during half the time any part sounds (else: not a soprano, skipped)


# ---------------------------------------------------------------- targets
def vary_parts(parts: list, length_ql: float, variation: str) -> tuple[list, float]:
    """The parts after the corpus's structural variation described by `variation` (vary_piece's description):
    'drop@a+span', 'repeat@a+span', 'excerpt@a'; every other description keeps the notes (reharm and voices keep
    part 0, the soprano). Mirrors avmatch.versions.corpus.vary_piece."""
    m = re.match(r"^(drop|repeat)@([0-9.]+)\+([0-9.]+)$", variation or "")
    if m:
        kind, a, span = m.group(1), float(m.group(2)), float(m.group(3))
        if kind == "drop":
            out = [[(round(on - span if on >= a + span else on, 6), d, p, v) for on, d, p, v in part
                    if not (a <= on < a + span)] for part in parts]
            return out, length_ql - span
        out = [sorted([(on if on < a + span else round(on + span, 6), d, p, v) for on, d, p, v in part]
                      + [(round(on + span, 6), d, p, v) for on, d, p, v in part if a <= on < a + span])
               for part in parts]
        return out, length_ql + span
    m = re.match(r"^excerpt@([0-9.]+)$", variation or "")
    if m:
        a = float(m.group(1))
        return [[(round(on - a, 6), d, p, v) for on, d, p, v in part if on >= a] for part in parts], length_ql - a
    return parts, length_ql


def soprano_events(parts: list, length_ql: float, variation: str, transpose: int, bpm: float, duration_s: float
                   ) -> tuple[list[tuple[float, float, int]], bool]:
    """((start_s, end_s, midi) of the soprano as rendered, timing ok). The renderer's timing: the tune repeated
    (0.6 s gap after the last note of all parts) until the file's notes end (`duration_s` - the 1 s tail).
    Timing ok when the rebuilt notes reach the file's end (the file may be a crop at max_s) and part 0 acts as the
    soprano: it sounds during >= MIN_SOPRANO_COVER of the time any part sounds (some scores list an obbligato
    instrument first that plays a few bars only: its "no note" targets would mark the melody as silence)."""
    import numpy as np

    from avmatch.core.music21_render import TAIL_S, Piece, RenderSpec

    vparts, vlen = vary_parts([[tuple(n) for n in p] for p in parts], length_ql, variation)
    piece = Piece("x", "g", "", vparts, vlen, "")
    notes_end = duration_s - TAIL_S
    spec = RenderSpec(name="x", group="g", pieces=[piece] * 8, ensemble="x", programs=[0], bpm=float(bpm),
                      transpose=int(transpose), max_s=notes_end + 1e-6)
    end = spec.notes_end_s
    sop = [(s, e, p) for s, e, part, p, _v in spec.events if part == 0]
    t = np.arange(0.0, max(end, 0.0), 0.05)
    anyp, sopp = np.zeros(len(t), bool), np.zeros(len(t), bool)
    for s, e, part, _p, _v in spec.events:
        sel = (t >= s) & (t < e)
        anyp |= sel
        if part == 0:
            sopp |= sel
    cover = sopp.sum() / max(1, anyp.sum())
    ok = abs(end - notes_end) < 0.02 and cover >= MIN_SOPRANO_COVER
    return sop, bool(ok)


def frame_targets(events: list[tuple[float, float, int]], n_frames: int):
    """Per CQT frame: bin of the highest soprano pitch sounding at the frame's centre (MIDI - 24), NONE when no
    note sounds, IGNORE when the pitch is outside the 84 bins."""
    import numpy as np

    t = np.arange(n_frames) * FRAME_S + FRAME_CENTRE_S
    top = np.full(n_frames, -1, int)
    for s, e, p in events:
        sel = (t >= s) & (t < e)
        top[sel] = np.maximum(top[sel], p)
    y = np.where(top < 0, NONE, top - MIDI_LO)
    y[(top >= 0) & ((top - MIDI_LO < 0) | (top - MIDI_LO >= N_BINS))] = IGNORE
    return y.astype(np.int64)


def track_targets(row, n_frames: int, cache_dir: Path | None = None):
    """(targets, ok) for one tracks.csv row (piece, variation, transpose, tempo_bpm, duration_s); (None, False) when
    the score is not cached."""
    from avmatch.core.music21_render import _cache_file, music21_cache_dir

    f = _cache_file(cache_dir or music21_cache_dir(), row.piece)
    if not f.exists():
        return None, False
    d = json.loads(f.read_text())
    if "parts" not in d:
        return None, False
    ev, ok = soprano_events(d["parts"], float(d["length_ql"]), str(row.variation), int(row.transpose),
                            float(row.tempo_bpm), float(row.duration_s))
    return frame_targets(ev, n_frames), ok


# ---------------------------------------------------------------- model
def build_model(width: int = 16):
    import torch
    from torch import nn

    class Transcriber(nn.Module):
        """[B, bins, frames] log1p CQT (each track divided by its maximum) -> [B, 85, frames] logits."""

        def __init__(self, w: int):
            super().__init__()
            self.c1 = nn.Conv2d(1, w, (3, 5), padding=(1, 2))
            self.c2 = nn.Conv2d(w, w, (49, 1), padding=(24, 0))
            self.c3 = nn.Conv2d(w, 2 * w, (3, 5), padding=(1, 4), dilation=(1, 2))
            self.pitch = nn.Conv2d(2 * w, 1, 1)
            self.none = nn.Conv1d(2 * w, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.c1(x[:, None]))
            h = torch.relu(self.c2(h))
            h = torch.relu(self.c3(h))                       # [B, C, bins, T]
            p = self.pitch(h)[:, 0]                          # [B, bins, T]
            n = self.none(h.amax(2))                         # [B, 1, T]
            return torch.cat([p, n], 1)

    return Transcriber(width)


def normalise(feat):
    """[frames, bins] log1p CQT -> [bins, frames] float32 divided by its maximum."""
    import numpy as np

    x = np.asarray(feat, np.float32).T
    return x / max(1e-4, float(x.max()))


def transcribe(model, feat):
    """MIDI pitch per frame (-1 = no note) of a [frames, bins] CQT."""
    import numpy as np
    import torch

    with torch.no_grad():
        logits = model(torch.from_numpy(normalise(feat))[None])[0]
    k = logits.argmax(0).numpy()
    return np.where(k == NONE, -1, k + MIDI_LO)


def load_transcriber(path: str | Path):
    import torch

    blob = torch.load(path, map_location="cpu", weights_only=False)
    m = build_model(blob["config"]["width"])
    m.load_state_dict(blob["state"])
    m.eval()
    return m, blob["config"]


def learned_f0(cqt_file: str, model) -> tuple[float, object]:
    """(frame rate, f0 in Hz per frame, 0 = no note) of the transcriber: bench_versions_melody's melody format."""
    import numpy as np

    midi = transcribe(model, np.load(cqt_file))
    return 1.0 / FRAME_S, np.where(midi >= 0, 440.0 * 2 ** ((midi - 69) / 12.0), 0.0).astype(np.float32)


def note_precision(pred_midi, target) -> float:
    """Share of the predicted notes (runs of one pitch, >= 1 frame) whose pitch is the target's on most frames."""
    import itertools

    import numpy as np

    tgt = np.where(target == NONE, -1, np.where(target == IGNORE, -2, target + MIDI_LO))
    ok = n = i = 0
    for p, run in itertools.groupby(pred_midi.tolist()):
        k = sum(1 for _ in run)
        if p >= 0:
            n += 1
            ok += int(np.mean(tgt[i:i + k] == p) > 0.5)
        i += k
    return ok / n if n else 0.0


# ---------------------------------------------------------------- training
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--project", default=str(ROOT), help="project folder (corpus and features inside)")
    p.add_argument("--out", default=None, help="transcriber file to write")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16, help="crops per step")
    p.add_argument("--crop", type=int, default=64, help="frames per crop")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pitch-shift", type=int, default=6, help="max bins of the pitch-shift augmentation")
    p.add_argument("--timbre", type=float, default=1.0, help="strength of change_timbre (0 = off)")
    p.add_argument("--dev-share", type=float, default=0.1, help="share of training cliques held out as dev")
    p.add_argument("--min-notes", nargs="+", type=float, default=[0.1, 0.2, 0.3],
                   help="decoding minimum note lengths compared on dev (3-gram precision)")
    p.add_argument("--medians", nargs="+", type=float, default=[0.0],
                   help="decoding median filters (s) of the frame pitch compared on dev with --min-notes")
    p.add_argument("--load", default=None, help="evaluate this transcriber (no training; --out not written)")
    p.add_argument("--eval-collections", nargs="*", default=[],
                   help="also report frame accuracy / note precision / 3-gram precision on these splits")
    p.add_argument("--check-alignment", type=int, default=0, help="print the alignment check on N training tracks")
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    import numpy as np
    import pandas as pd
    import torch

    from bench_versions_melody import ngram_counts, ngram_precision, notes_from_f0, score_soprano
    from avmatch.versions.training import change_timbre

    root = Path(args.project).resolve()
    items = pd.read_parquet(root / "data/versions/features/items.parquet")
    tracks = pd.read_csv(root / "data/versions/corpus/tracks.csv")
    items = items[items.status == "ok"].merge(
        tracks[["id", "piece", "variation", "transpose", "tempo_bpm"]], on="id")

    def load(split_items):
        feats, ys, skipped = [], [], []
        for r in split_items.itertuples():
            f = np.load(r.cqt_file)
            y, ok = track_targets(r, len(f))
            if y is None or not ok:
                skipped.append(r.id)
                continue
            feats.append(f), ys.append(y)
        return feats, ys, skipped

    train = items[items.split == "train"]
    rng = np.random.default_rng(args.seed)
    cliques = sorted(train.label.unique())
    dev_cl = set(rng.choice(cliques, int(round(args.dev_share * len(cliques))), replace=False).tolist())
    dev, fit = train[train.label.isin(dev_cl)], train[~train.label.isin(dev_cl)]
    t0 = time.perf_counter()
    feats, ys, skipped = load(fit)
    dfeats, dys, dskipped = load(dev)
    print(f"train tracks {len(fit)} (skipped, timing not rebuilt: {len(skipped)}), dev tracks {len(dev)} "
          f"(skipped {len(dskipped)}), targets {time.perf_counter() - t0:.1f} s", flush=True)
    if skipped:
        print("skipped e.g.", skipped[:5], flush=True)
    if args.check_alignment:
        # the target pitch's bin (and its octave) should be among the frame's energetic bins
        rk, base = [], []
        for f, y in list(zip(feats, ys))[: args.check_alignment]:
            v = (y >= 0) & (y < N_BINS)
            fr = np.asarray(f, np.float32)[v]
            yy = y[v]
            rank = (fr > fr[np.arange(len(yy)), yy][:, None]).sum(1)
            rk.append(np.mean(rank < 5))
            shifted = np.roll(yy, 7)  # the same targets 0.7 s late: chance-level alignment
            base.append(np.mean((fr > fr[np.arange(len(yy)), shifted][:, None]).sum(1) < 5))
        print(f"alignment: target bin among the frame's 5 strongest: {np.mean(rk):.3f} (targets shifted 0.7 s: "
              f"{np.mean(base):.3f})", flush=True)
    torch.manual_seed(args.seed)
    model = build_model(args.width)
    if args.load:
        model, _cfg = load_transcriber(args.load)
        args.steps = 0
    elif not args.out:
        p.error("--out is required when training")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(1, args.steps), pct_start=0.1)
    lengths = np.array([len(f) for f in feats])
    prob = lengths / lengths.sum()
    t0 = time.perf_counter()
    model.train()
    for step in range(args.steps):
        xb, yb = [], []
        for _ in range(args.batch):
            i = int(rng.choice(len(feats), p=prob))
            f, y = feats[i], ys[i]
            s = int(rng.integers(0, max(1, len(f) - args.crop + 1)))
            x = np.asarray(f[s:s + args.crop], np.float32).T.copy()      # [bins, T]
            t = y[s:s + args.crop].copy()
            if x.shape[1] < args.crop:
                pad = args.crop - x.shape[1]
                x = np.pad(x, ((0, 0), (0, pad)))
                t = np.pad(t, (0, pad), constant_values=IGNORE)
            k = int(rng.integers(-args.pitch_shift, args.pitch_shift + 1)) if args.pitch_shift else 0
            if k:
                x = np.roll(x, k, 0)
                if k > 0:
                    x[:k] = 0
                else:
                    x[k:] = 0
                pitched = (t >= 0) & (t < N_BINS)
                t = np.where(pitched, t + k, t)
                t[pitched & ((t < 0) | (t >= N_BINS))] = IGNORE
            if args.timbre > 0:
                x = change_timbre(x, args.timbre, rng)
            x = np.log1p(np.expm1(np.maximum(x, 0)) * float(np.exp(rng.uniform(np.log(0.3), np.log(3.0)))))
            xb.append(x / max(1e-4, float(x.max()))), yb.append(t)
        logits = model(torch.from_numpy(np.stack(xb).astype(np.float32)))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(np.stack(yb)), ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} {time.perf_counter() - t0:.0f} s", flush=True)
    model.eval()
    train_s = time.perf_counter() - t0

    def evaluate(fs, ys_, rows, decodings):
        acc, npre, prec = [], [], {m: [] for m in decodings}
        for f, y, r in zip(fs, ys_, rows):
            pm = transcribe(model, f)
            v = y != IGNORE
            pred = np.where(pm < 0, NONE, pm - MIDI_LO)
            acc.append(float(np.mean(pred[v] == y[v])))
            npre.append(note_precision(pm, y))
            ref = score_soprano(r.piece)
            f0 = np.where(pm >= 0, 440.0 * 2 ** ((pm - 69) / 12.0), 0.0)
            for m, med in decodings:
                prec[(m, med)].append(ngram_precision(ngram_counts(notes_from_f0(f0, 1 / FRAME_S, m, med), (3,)),
                                                      ngram_counts(ref, (3,))))
        return float(np.mean(acc)), float(np.mean(npre)), {m: float(np.mean(v)) for m, v in prec.items()}

    dev_rows = [r for r in dev.itertuples() if r.id not in set(dskipped)]
    grid = [(m, med) for m in args.min_notes for med in args.medians]
    fa, npr, pr = evaluate(dfeats, dys, dev_rows, grid)
    best = max(grid, key=lambda k: (pr[k], -k[0], -k[1]))
    print(f"dev: frame accuracy {fa:.3f}, note precision {npr:.3f}, 3-gram precision by (min note, median) "
          f"{ {k: round(v, 3) for k, v in pr.items()} }; chosen {best}", flush=True)
    if not args.load:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": model.state_dict(),
                    "config": {"width": args.width, "steps": args.steps, "seed": args.seed, "min_note_s": best[0],
                               "median_s": best[1], "train_tracks": len(feats), "skipped": len(skipped),
                               "train_s": round(train_s, 1),
                               "dev": {"frame_acc": fa, "note_precision": npr, "trigram_precision": pr[best]}}},
                   args.out)
        print(f"wrote {args.out} (training {train_s:.0f} s)", flush=True)
    for name in args.eval_collections:
        ev = items[items.split == name]
        efeats, eys, eskipped = load(ev)
        rows = [r for r in ev.itertuples() if r.id not in set(eskipped)]
        fa, npr, pr = evaluate(efeats, eys, rows, [best])
        print(f"{name}: tracks {len(rows)} (skipped {len(eskipped)}), frame accuracy {fa:.3f}, note precision "
              f"{npr:.3f}, 3-gram precision (min note, median {best}) {pr[best]:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
