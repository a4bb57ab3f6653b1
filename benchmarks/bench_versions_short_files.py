#!/usr/bin/env python
"""Versions CLI: how a file shorter than one segment is best embedded (issue 18: short files were refused).

For each of the first `--tracks` tracks of a versions corpus (tracks.csv + audio), an excerpt of
`--seconds` seconds (from 30 % into the track) is embedded three ways and compared (bpwr-3) with the
full tracks, embedded as `avmatch versions add` embeds them:

* `looped` (what `avmatch versions add/query` does: `Embedder.embed_file` on the excerpt written to
  a WAV): the excerpt's CQT repeated to one segment's length;
* `shorter`: one segment of the excerpt's own length (the encoder is convolutional + GeM pooling);
* `zero-padded`: the CQT padded with silence to one segment.

Reported per method: the share of excerpts whose closest track is their own track (Wilson 95 % CI),
the mean rank of the own track, and the mean distance to it and to the other tracks. Needs a
trained encoder (`--encoder`, default models/versions/encoder.pt) and its corpus (`--corpus`,
default data/versions/corpus).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return c - h, c + h


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default=str(ROOT / "models/versions/encoder.pt"))
    p.add_argument("--corpus", default=str(ROOT / "data/versions/corpus"))
    p.add_argument("--tracks", type=int, default=40)
    p.add_argument("--seconds", type=float, nargs="+", default=[5.0, 10.0, 15.0])
    a = p.parse_args(argv)

    import pandas as pd
    import soundfile as sf
    import torch

    from avmatch.core.audio import decode_audio
    from avmatch.versions.cqt import cqt, frames_per_second
    from avmatch.versions.db_encoder import Embedder
    from avmatch.versions.segment_pairs import pad_tracks, track_distances
    from avmatch.versions.training import embed_windows

    emb = Embedder.load(Path(a.encoder))
    corpus = Path(a.corpus)
    tracks = pd.read_csv(corpus / "tracks.csv").iloc[:a.tracks]
    sr, fps = emb.audio.sample_rate, frames_per_second(emb.cqt)
    seg = int(round(emb.audio.segment_s * fps))
    full, audio = [], []
    for path in tracks["path"]:
        full.append(emb.embed_file(corpus / path)[0])
        audio.append(decode_audio(corpus / path, sr))
    rows = np.concatenate([np.full(len(v), i) for i, v in enumerate(full)])
    pc, pm = pad_tracks(np.concatenate(full), rows, len(full))
    print(f"{len(full)} tracks of {corpus}, encoder {a.encoder} (segment {emb.audio.segment_s:g} s)\n")
    print("| excerpt | method | own track first (95% CI) | mean rank of own track | own distance | others |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in a.seconds:
            got: dict[str, list[np.ndarray]] = {"looped": [], "shorter": [], "zero-padded": []}
            for i, x in enumerate(audio):
                s0 = int(len(x) * 0.3)
                ex = x[s0:s0 + int(seconds * sr)]
                wav = Path(tmp) / f"{i}.wav"
                sf.write(wav, ex, sr)
                got["looped"].append(emb.embed_file(wav)[0][0])
                f = cqt(ex, sr, emb.cqt)
                got["shorter"].append(embed_windows(emb.model, f.T[None].astype(np.float32), emb.device)[0])
                z = np.zeros((seg, f.shape[1]), np.float32)
                z[:len(f)] = f[:seg]
                got["zero-padded"].append(embed_windows(emb.model, z.T[None], emb.device)[0])
            for method, vecs in got.items():
                q = torch.from_numpy(np.stack(vecs))[:, None]
                d, _ = track_distances(q, torch.ones(len(vecs), 1, dtype=torch.bool), pc, pm, "bpwr-3")
                n = len(vecs)
                ranks = np.array([(d[i] < d[i, i]).sum() + 1 for i in range(n)])
                top1 = float(np.mean(ranks == 1))
                lo, hi = wilson(top1, n)
                others = d[~np.eye(n, dtype=bool)].mean()
                print(f"| {seconds:g} s | {method} | {top1:.2f} ({lo:.2f}-{hi:.2f}) | {ranks.mean():.2f} | "
                      f"{np.diag(d).mean():.3f} | {others:.3f} |")
    print(f"\nchance of the own track first: {1 / len(full):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
