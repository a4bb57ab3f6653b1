#!/usr/bin/env python
"""Extraction speed in × real time, split by stage, against the encoder's pure inference rate.

What is timed (all on CPU with --threads torch threads; real audio, see --audio-dir):

  decode          compressed file -> mono 8 kHz PCM. Whole files: `decode_manifest` with --decode-workers
                  processes into a fresh cache (the pipeline's features stage). With --seconds-per-track:
                  `decode_audio(max_seconds=...)`, one file after the other in this process.
  features        framing (`frame_segments`) + the log-mel front end (`LogMel`) only.
  encoder         the network after the front end only (conv blocks + head + L2 norm), on ready log-mels.
  pure inference  `embed_segments` (front end + network) on pre-made segment batches already in memory:
                  the best a pipeline could do. Rate in segments/s and × real time (1 segment per hop_s
                  = 0.5 s of audio).
  extract_items   the whole extraction path of the pipeline: read PCM cache, frame, embed, write Parquet
                  shards (with its own load / frame / encode / write split).

Goal (issue): the extraction pipeline adds at most 30 % over pure inference, i.e.
time(extract_items) <= 1.3 x time(pure inference) on the same segments.

The encoder is built from params.yaml (untrained weights: speed does not depend on them). Pure inference
and extract_items are run alternately --repeats times and the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads  # noqa: E402

GOAL_OVERHEAD = 0.30


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default=str(ROOT / "params.yaml"), help="parameter file (model, audio, extract batch size)")
    p.add_argument("--tracks", type=int, default=0, help="use the first N audio files (default 0 = all)")
    p.add_argument("--seconds-per-track", type=float, default=0.0,
                   help="cut every track to its first S seconds (default 0 = whole tracks)")
    p.add_argument("--batch-size", type=int, default=0, help="inference batch size (default: fingerprint.extract.batch_size)")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of pure inference and extract_items (median)")
    p.add_argument("--batch-sweep", type=int, nargs="*", default=[32, 64, 128, 256, 512],
                   help="also time pure inference at these batch sizes on the first --sweep-segments segments "
                        "(nothing given = skip)")
    p.add_argument("--sweep-segments", type=int, default=2048, help="segments used by the batch-size sweep")
    p.add_argument("--decode-workers", type=int, default=0, help="decode processes (default: --threads)")
    p.add_argument("--workdir", default=None, help="scratch folder for the shard stores (default: a temp dir)")
    from _audio import add_audio_args

    add_audio_args(p)
    add_common_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.tracks = args.tracks or 1
        args.seconds_per_track = args.seconds_per_track or 12.0
        args.repeats = 1
        args.batch_sweep = [8, 16] if args.batch_sweep else []
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_env(args.verbose, args.quick)
    rep = Report("extraction", "Extraction speed", args)

    import torch
    from _audio import audio_seconds, crop_items, decoded_items, real_audio_files

    from avmatch.core.audio import decode_audio
    from avmatch.core.config import load_params
    from avmatch.core.device import resolve_device
    from avmatch.core.manifest import build_manifest
    from avmatch.core.pcm_cache import decode_manifest, load_pcm
    from avmatch.core.shards import ShardStore
    from avmatch.fingerprint.embedding import extract_items
    from avmatch.fingerprint.logmel import frame_segments
    from avmatch.fingerprint.model import FingerprintEncoder, embed_segments

    threads = set_threads(args.threads)
    rep.refresh_machine()
    params = load_params(args.params)
    fp = params.fingerprint
    sr, hop_s = fp.audio.sample_rate, fp.audio.hop_s
    batch = args.batch_size or fp.extract.batch_size
    device = resolve_device(params.common.device)
    decode_workers = args.decode_workers or threads

    files, source = real_audio_files(args.audio_dir)
    if args.tracks:
        files = files[: args.tracks]
    print(f"[bench] audio: {source}; using {len(files)}", flush=True)
    items = decoded_items(files, sr, workers=decode_workers)  # persistent bench PCM cache, not timed
    tmp_root = Path(tempfile.mkdtemp(prefix="avmatch-bench-extract-", dir=args.workdir))
    if args.seconds_per_track > 0:
        items = crop_items(items, args.seconds_per_track, tmp_root / "pcm_cropped", sr)
    audio_s = audio_seconds(items, sr)
    print(f"[bench] {len(items)} tracks, {audio_s / 60:.1f} min of audio, batch {batch}, {threads} threads, "
          f"device {device}", flush=True)

    # ---------------------------------------------------------------- decode
    if args.seconds_per_track > 0:
        t0 = time.perf_counter()
        for path in items["path"]:
            decode_audio(path, sr, max_seconds=args.seconds_per_track)
        decode_t = time.perf_counter() - t0
        decode_how = f"`decode_audio`, first {args.seconds_per_track:g} s of each file, 1 process"
    else:
        manifest = build_manifest(list(items["path"]), desc="bench ingest")
        t0 = time.perf_counter()
        decoded = decode_manifest(manifest, tmp_root / "pcm_fresh", sr, workers=decode_workers, desc="bench decode")
        decode_t = time.perf_counter() - t0
        if (decoded["status"] != "ok").any():
            print("[bench] warning: some files failed to decode in the timed run", flush=True)
        decode_how = f"`decode_manifest`, {decode_workers} worker processes, fresh cache"

    # ---------------------------------------------------------------- segments in memory
    audio = [load_pcm(p) for p in items["pcm_file"]]
    t0 = time.perf_counter()
    seg_list = [frame_segments(a, sr, fp.audio.segment_s, hop_s) for a in audio]
    frame_t = time.perf_counter() - t0
    segments = torch.cat(seg_list).contiguous()
    del seg_list
    n_seg = int(segments.shape[0])
    seg_audio_s = n_seg * hop_s

    model = FingerprintEncoder.from_params(fp.model, fp.logmel, fp.audio).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    for _ in range(3):  # warm-up: the first calls per batch shape pay for kernel selection and allocation
        embed_segments(model, segments[: min(batch, n_seg)], batch, device)

    # ---------------------------------------------------------------- features / encoder split
    logmel_t = 0.0
    network_t = 0.0
    with torch.inference_mode():
        for i in range(0, n_seg, batch):
            chunk = segments[i: i + batch].to(device)
            t0 = time.perf_counter()
            mel = model.frontend(chunk)
            t1 = time.perf_counter()
            x = model.blocks(mel.unsqueeze(1))
            z = torch.nn.functional.normalize(model.head(x.flatten(1)).float(), dim=1)
            z.cpu()
            t2 = time.perf_counter()
            logmel_t += t1 - t0
            network_t += t2 - t1

    # ---------------------------------------------------------------- pure inference vs extract_items
    pure_ts, extract_ts, ext_reports = [], [], []
    model_hash = "bench-untrained"
    for r in range(args.repeats):
        t0 = time.perf_counter()
        embed_segments(model, segments, batch, device)
        pure_ts.append(time.perf_counter() - t0)
        store = ShardStore(tmp_root / f"shards_{r}", fp.model.dim, model_hash)
        t0 = time.perf_counter()
        er = extract_items(model, items, store, fp.audio, device, batch, fp.extract.shard_items)
        extract_ts.append(time.perf_counter() - t0)
        ext_reports.append(er)
        if er.segments != n_seg:
            print(f"[bench] warning: extract_items made {er.segments} segments, framing {n_seg}", flush=True)
        print(f"[bench] repeat {r + 1}/{args.repeats}: pure {pure_ts[-1]:.2f} s, extract_items {extract_ts[-1]:.2f} s",
              flush=True)
    pure_t = statistics.median(pure_ts)
    extract_t = statistics.median(extract_ts)
    mid = ext_reports[extract_ts.index(sorted(extract_ts)[(len(extract_ts) - 1) // 2])]

    sweep = []
    sub = segments[: min(n_seg, args.sweep_segments)]
    for b in args.batch_sweep or []:
        for _ in range(2):
            embed_segments(model, sub[:b], b, device)  # warm-up for this batch shape
        t0 = time.perf_counter()
        embed_segments(model, sub, b, device)
        dt = time.perf_counter() - t0
        sweep.append({"batch": b, "segments": int(sub.shape[0]), "seconds": dt, "seg_per_s": len(sub) / dt,
                      "xrt": len(sub) * hop_s / dt})

    overhead = extract_t / pure_t - 1.0
    whole_t = decode_t + extract_t
    rows = [
        {"stage": "decode", "what": decode_how, "audio_s": audio_s, "seconds": decode_t, "xrt": audio_s / decode_t,
         "seg_per_s": None},
        {"stage": "features", "what": "framing + log-mel front end", "audio_s": audio_s, "seconds": frame_t + logmel_t,
         "xrt": audio_s / (frame_t + logmel_t), "seg_per_s": n_seg / (frame_t + logmel_t)},
        {"stage": "encoder", "what": "network after the front end", "audio_s": seg_audio_s, "seconds": network_t,
         "xrt": seg_audio_s / network_t, "seg_per_s": n_seg / network_t},
        {"stage": "pure inference", "what": "`embed_segments` on pre-made segment batches", "audio_s": seg_audio_s,
         "seconds": pure_t, "xrt": seg_audio_s / pure_t, "seg_per_s": n_seg / pure_t},
        {"stage": "extract_items", "what": "PCM cache -> frame -> embed -> shards", "audio_s": audio_s,
         "seconds": extract_t, "xrt": audio_s / extract_t, "seg_per_s": n_seg / extract_t},
        {"stage": "decode + extract_items", "what": "compressed files -> shards", "audio_s": audio_s,
         "seconds": whole_t, "xrt": audio_s / whole_t, "seg_per_s": n_seg / whole_t},
    ]
    headers = {"stage": "stage", "what": "what is timed", "audio_s": "audio (s)", "seconds": "time (s)",
               "xrt": "× real time", "seg_per_s": "segments/s"}
    rep.add(f"Audio: {source}, {len(items)} used"
            + (f", each cut to {args.seconds_per_track:g} s" if args.seconds_per_track > 0 else "")
            + f" — {audio_s / 60:.1f} min, {n_seg} segments ({fp.audio.segment_s:g} s every {hop_s:g} s). "
            f"Encoder from `{Path(args.params).name}` (untrained weights, {n_params / 1e6:.2f} M parameters), "
            f"batch {batch}, device {device}, median of {args.repeats} alternating run(s) for pure inference and "
            f"extract_items.")
    rep.table(rows, list(headers), headers)
    phase = mid.seconds
    total_phase = sum(phase.values()) or float("nan")
    rep.table([{"phase": k, "seconds": v, "share": f"{100 * v / total_phase:.1f} %"} for k, v in phase.items()]
              + [{"phase": "outside the phases (store listing, manifest filtering, ...)",
                  "seconds": extract_t - sum(phase.values()), "share": ""}],
              caption="`extract_items` split (its `ExtractionReport`, the median run):")
    if sweep:
        rep.table(sweep, ["batch", "segments", "seconds", "seg_per_s", "xrt"],
                  {"batch": "batch size", "segments": "segments", "seconds": "time (s)", "seg_per_s": "segments/s",
                   "xrt": "× real time"},
                  caption=f"Pure inference against batch size (one pass over the first {int(sub.shape[0])} segments; "
                          f"the pipeline uses {batch}):")
    rep.add(f"**Goal: extraction adds ≤ {GOAL_OVERHEAD:.0%} over pure inference.** extract_items takes "
            f"{extract_t:.2f} s vs {pure_t:.2f} s of pure inference on the same {n_seg} segments: overhead "
            f"**{100 * overhead:+.1f} %** → {'**met**' if overhead <= GOAL_OVERHEAD else '**not met**'}. "
            f"Including decoding from the compressed files: {100 * (whole_t / pure_t - 1):+.1f} %.")
    rep.data = {"rows": rows, "phases": phase, "pure_runs_s": pure_ts, "extract_runs_s": extract_ts,
                "overhead": overhead, "batch_sweep": sweep, "segments": n_seg, "audio_s": audio_s, "batch": batch, "threads": threads}
    rep.finish()
    import shutil

    shutil.rmtree(tmp_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
