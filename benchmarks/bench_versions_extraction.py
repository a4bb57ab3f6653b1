#!/usr/bin/env python
"""Versions pipeline: feature + embedding extraction speed (x real time) and peak memory.

Per real audio file (default: the rendered chorales of the versions corpus, else the Debian
singularity-music tracks): decode to 16 kHz mono (PyAV), CQT (84 bins, 20 ms hop, pooled), 20 s
segments at the configured hop, encoder forward pass. Times each step; x real time = audio seconds /
wall seconds, on `--threads` torch threads (default 2, the target machine). The encoder is the trained
one when models/versions/encoder.pt exists, else a fresh one of the same shape (same cost).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads  # noqa: E402


def main(argv=None) -> int:
    from _audio import add_audio_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    add_audio_args(p)
    p.add_argument("--max-files", type=int, default=40)
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    import torch
    from _audio import real_audio_files

    from avmatch.core.audio import decode_audio
    from avmatch.core.config import load_params
    from avmatch.versions.cqt import cqt, frames_per_second, segment_frames
    from avmatch.versions.model import VersionEncoder, load_encoder
    from avmatch.versions.training import embed_windows

    vp = load_params(ROOT / "params.yaml").versions
    chorales = ROOT / "data/versions/corpus/audio/chorales"
    audio_dir = args.audio_dir or (str(chorales) if chorales.is_dir() else None)
    files, source = real_audio_files(audio_dir)
    files = files[: (3 if args.quick else args.max_files)]
    enc = ROOT / "models/versions/encoder.pt"
    model = load_encoder(enc)[0] if enc.exists() else VersionEncoder.from_params(vp.model, vp.cqt).eval()
    rep = Report("versions_extraction", "Versions: extraction speed", args)
    rep.refresh_machine()
    sr, fps = vp.audio.sample_rate, frames_per_second(vp.cqt)
    seg, hop = int(round(vp.audio.segment_s * fps)), int(round(vp.audio.hop_s * fps))
    t = {"decode": 0.0, "cqt": 0.0, "embed": 0.0}
    audio_s, n_seg = 0.0, 0
    for f in files:
        t0 = time.perf_counter()
        x = decode_audio(f, sr)
        t1 = time.perf_counter()
        win, _ = segment_frames(cqt(x, sr, vp.cqt), seg, hop)
        t2 = time.perf_counter()
        with torch.no_grad():
            embed_windows(model, win, torch.device("cpu"), vp.extract.batch_size)
        t3 = time.perf_counter()
        t["decode"] += t1 - t0
        t["cqt"] += t2 - t1
        t["embed"] += t3 - t2
        audio_s += len(x) / sr
        n_seg += len(win)
    total = sum(t.values())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [{"step": k, "seconds": round(v, 2), "x_realtime": round(audio_s / v, 1) if v else None}
            for k, v in t.items()]
    rows.append({"step": "total", "seconds": round(total, 2), "x_realtime": round(audio_s / total, 1)})
    rep.add(f"Audio: {len(files)} files ({audio_s / 60:.1f} min) from {source}; {n_seg} segments of "
            f"{vp.audio.segment_s:g} s (hop {vp.audio.hop_s:g} s); encoder {'trained' if enc.exists() else 'untrained'}.")
    rep.table(rows, ["step", "seconds", "x_realtime"])
    rep.add(f"Peak RSS of the process: {peak_mb:.0f} MB.")
    rep.data = {"timings": t, "audio_s": audio_s, "segments": n_seg, "peak_rss_mb": peak_mb}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
