#!/usr/bin/env python
"""Versions: where basic-pitch's top voice departs from the soprano, frame by frame (issue 18, session 14).

Analysis only (nothing is chosen from it): for each track of the given splits whose rendered soprano timing can be
rebuilt (`bench_versions_soprano_train.soprano_events`: piece, variation, transpose, tempo, the renderer's own
timing), the basic-pitch model output cached by `bench_versions_melody.py --extractors basicpitch` is decoded with
the package's note decoding (`--bp-onset`, `--bp-frame`), and on every model frame inside a soprano note (30 ms
trimmed at both ends) the top voice (highest decoded note) is compared with the soprano's pitch:

* `exact` top voice = soprano; `octave` an octave (or two) off; `above` / `below` another pitch above / below it
  (above: spurious high notes or partials; below: the soprano note was missed, a lower voice shows through);
  `none` nothing decoded;
* recall: the soprano pitch is among the decoded notes (`recall_events`), its frame likelihood is >= 0.3
  (`recall_post03`), or some octave of it is (`recall_post_any_octave`): the ceiling of any top-voice selection
  over this transcription.

Per-track top-voice accuracy is also split by rendering: one GM program for all parts (`gmN`), a program per part
(`gmN-M-...`), or a named ensemble of the demo soundfonts.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=str(ROOT))
    p.add_argument("--cache", default="/work/scratch/ver14/melody", help="bench_versions_melody's melody cache")
    p.add_argument("--bp-onset", type=float, default=0.5)
    p.add_argument("--bp-frame", type=float, default=0.3)
    p.add_argument("--splits", nargs="+", default=["val", "test_unseen", "test"])
    args = p.parse_args(argv)
    import bench_versions_melody as bm
    import numpy as np
    import pandas as pd
    from bench_versions_soprano_train import soprano_events

    from avmatch.core.config import load_params
    from avmatch.core.music21_render import _cache_file, music21_cache_dir
    from pipelines.versions.paths import VersionsPaths
    from pipelines.versions.shared import ok_items

    root = Path(args.project).resolve()
    paths = VersionsPaths.from_params(load_params(root / "params.yaml"), root)
    tracks = pd.read_csv(paths.tracks_csv).set_index("id")
    bm._import_basic_pitch()
    from basic_pitch.note_creation import model_frames_to_time

    keys = ["exact", "octave", "above", "below", "none", "recall_events", "recall_post03", "recall_post_any_octave"]
    for split in args.splits:
        items = ok_items(paths, (split,))
        agg = dict.fromkeys(keys, 0)
        n_frames_sop, used, by_kind = 0, 0, {}
        for row in items.itertuples():
            meta = tracks.loc[row.id]
            f = _cache_file(music21_cache_dir(), meta["piece"])
            zf = Path(args.cache) / f"{row.content_hash}_basicpitch.npz"
            if not f.exists() or not zf.exists():
                continue
            d = json.loads(f.read_text())
            sop_ev, ok = soprano_events(d["parts"], float(d["length_ql"]), str(meta["variation"]),
                                        int(meta["transpose"]), float(meta["tempo_bpm"]), float(meta["duration_s"]))
            if not ok:
                continue
            z = np.load(zf)
            note = z["note"].astype(np.float32)
            n = len(note)
            times = model_frames_to_time(n)
            top = np.full(n, -1)
            act = np.zeros((n, 128), bool)
            for s, e, pitch, _a in bm.basicpitch_events(note, z["onset"], args.bp_onset, args.bp_frame):
                top[s:e] = np.maximum(top[s:e], pitch)
                act[s:e, pitch] = True
            sop = np.full(n, -1)
            for s, e, pitch in sop_ev:
                sel = (times >= s + 0.03) & (times < e - 0.03)
                sop[sel] = np.maximum(sop[sel], pitch)
            idx = np.nonzero(sop >= 0)[0]
            if not len(idx):
                continue
            used += 1
            tm, sm = top[idx], sop[idx]
            off = (tm - sm) % 12
            agg["exact"] += int((tm == sm).sum())
            agg["octave"] += int(((tm != sm) & (tm >= 0) & (off == 0)).sum())
            agg["above"] += int(((tm > sm) & (off != 0)).sum())
            agg["below"] += int(((tm < sm) & (tm >= 0) & (off != 0)).sum())
            agg["none"] += int((tm < 0).sum())
            agg["recall_events"] += int(act[idx, sm].sum())
            agg["recall_post03"] += int((note[idx, np.clip(sm - 21, 0, 87)] >= 0.3).sum())
            anyoct = np.zeros(len(idx), bool)
            for k in (-24, -12, 0, 12, 24):
                anyoct |= note[idx, np.clip(sm - 21 + k, 0, 87)] >= 0.3
            agg["recall_post_any_octave"] += int(anyoct.sum())
            n_frames_sop += len(idx)
            inst = str(meta["instrument"])
            kind = ("program per part" if re.fullmatch(r"gm\d+(-\d+)+", inst)
                    else "one program" if re.fullmatch(r"gm\d+", inst) else "named ensemble")
            by_kind.setdefault(kind, []).append(float((tm == sm).mean()))
        print(f"{split}: {used} of {len(items)} tracks, {n_frames_sop} soprano frames; "
              + "; ".join(f"{k} {v / max(1, n_frames_sop):.3f}" for k, v in agg.items())
              + " | top voice = soprano per track: "
              + ", ".join(f"{k} {np.mean(v):.3f} (n={len(v)})" for k, v in sorted(by_kind.items())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
