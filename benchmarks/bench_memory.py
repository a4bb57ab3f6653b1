#!/usr/bin/env python
"""Peak memory of extraction when the collection grows 10x (goal: flat within ±20 %).

Each collection size runs in a fresh Python process (so one size's allocations cannot hide another's)
that builds the encoder from params.yaml and runs `extract_items` -- read PCM cache, frame, embed, write
Parquet shards -- over N tracks into an empty shard store. The tracks are the real audio (see
--audio-dir), decoded once beforehand (decoding is not part of this measurement) and reused in turn with
their own ids and content hashes to reach N tracks (`replicate_items`).

Reported per size: RSS of the process just before extraction (imports + model), its peak RSS (VmHWM from
/proc/self/status, cross-checked with the child's own ru_maxrss returned by wait4), the growth during extraction
(peak - before) and the extraction speed.

Goal (issue): peak RSS at 10x the tracks stays within ±20 % of the peak at 1x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads  # noqa: E402

GOAL_BAND = 0.20
RESULT_TAG = "BENCH_MEMORY_RESULT "


def parse_args(argv=None) -> argparse.Namespace:
    from _audio import add_audio_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default=str(ROOT / "params.yaml"), help="parameter file (model, audio, extract settings)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100],
                   help="collection sizes in tracks, smallest first (default: 10 100)")
    p.add_argument("--seconds-per-track", type=float, default=0.0, help="cut tracks to S seconds (0 = whole)")
    p.add_argument("--batch-size", type=int, default=0, help="inference batch size (default: fingerprint.extract.batch_size)")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    p.add_argument("--child-items", default=None, help=argparse.SUPPRESS)   # internal: run one size
    p.add_argument("--child-tracks", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--child-store", default=None, help=argparse.SUPPRESS)
    add_audio_args(p)
    add_common_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [1, 2]
        args.seconds_per_track = args.seconds_per_track or 3.0
    return args


def proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child(args) -> int:
    """One collection size, in this fresh process; prints one tagged JSON line."""
    import pandas as pd
    from _audio import replicate_items

    from avmatch.core.config import load_params
    from avmatch.core.device import resolve_device
    from avmatch.core.shards import ShardStore
    from avmatch.fingerprint.embedding import extract_items
    from avmatch.fingerprint.model import FingerprintEncoder

    threads = set_threads(args.threads)
    params = load_params(args.params)
    fp = params.fingerprint
    device = resolve_device(params.common.device)
    items = replicate_items(pd.read_parquet(args.child_items), args.child_tracks)
    model = FingerprintEncoder.from_params(fp.model, fp.logmel, fp.audio).to(device).eval()
    store = ShardStore(args.child_store, fp.model.dim, "bench-untrained")
    rss_before = proc_status_kb("VmRSS")
    hwm_before = proc_status_kb("VmHWM")
    t0 = time.perf_counter()
    rep = extract_items(model, items, store, fp.audio, device, args.batch_size or fp.extract.batch_size,
                        fp.extract.shard_items)
    seconds = time.perf_counter() - t0
    out = {"tracks": len(items), "audio_s": rep.audio_seconds, "segments": rep.segments, "seconds": seconds,
           "rss_before_kb": rss_before, "hwm_before_kb": hwm_before, "hwm_kb": proc_status_kb("VmHWM"),
           "rss_after_kb": proc_status_kb("VmRSS"), "threads": threads}
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0


def run_size(args, items_file: Path, n: int, store: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-items", str(items_file), "--child-tracks", str(n),
           "--child-store", str(store), "--threads", str(args.threads), "--params", args.params,
           "--batch-size", str(args.batch_size), "--no-doc"]
    if args.quick:
        cmd.append("--quick")
    if args.verbose:
        cmd.append("--verbose")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    proc.stdout.close()
    # wait4 reaps exactly this child and returns its own rusage: ru_maxrss (kB on Linux) is its peak RSS,
    # a cross-check of the VmHWM the child reports (RUSAGE_CHILDREN would be a maximum over all sizes).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child for {n} tracks failed with exit code {proc.returncode}")
    line = next((x for x in out.splitlines() if x.startswith(RESULT_TAG)), None)
    if line is None:
        raise RuntimeError(f"child for {n} tracks printed no result:\n{out[-2000:]}")
    res = json.loads(line[len(RESULT_TAG):])
    res["ru_maxrss_kb"] = int(usage.ru_maxrss)
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_env(args.verbose, args.quick)
    if args.child_items:
        return child(args)
    rep = Report("memory", "Extraction memory", args)

    from _audio import audio_seconds, crop_items, decoded_items, real_audio_files

    from avmatch.core.config import load_params

    threads = set_threads(args.threads)
    rep.refresh_machine()
    params = load_params(args.params)
    sr = params.fingerprint.audio.sample_rate
    files, source = real_audio_files(args.audio_dir)
    tmp = Path(tempfile.mkdtemp(prefix="avmatch-bench-memory-", dir=args.workdir))
    rows = []
    try:
        items = decoded_items(files, sr)
        if args.seconds_per_track > 0:
            items = crop_items(items, args.seconds_per_track, tmp / "pcm_cropped", sr)
        items_file = tmp / "items.parquet"
        items.to_parquet(items_file, index=False)
        mean_track_s = audio_seconds(items, sr) / len(items)
        for n in sorted(args.sizes):
            print(f"[bench] {n} tracks in a fresh process ...", flush=True)
            res = run_size(args, items_file, n, tmp / f"store_{n}")
            shutil.rmtree(tmp / f"store_{n}", ignore_errors=True)
            rows.append(res)
            print(f"[bench]   peak RSS {res['hwm_kb'] / 1024:.0f} MB (before extraction {res['rss_before_kb'] / 1024:.0f} MB), "
                  f"{res['seconds']:.1f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = rows[0]
    table = []
    for r in rows:
        table.append({
            "tracks": r["tracks"], "audio_h": r["audio_s"] / 3600, "segments": r["segments"],
            "before_mb": r["rss_before_kb"] / 1024, "peak_mb": r["hwm_kb"] / 1024, "ru_mb": r["ru_maxrss_kb"] / 1024,
            "growth_mb": (r["hwm_kb"] - r["rss_before_kb"]) / 1024,
            "vs_smallest": f"{100 * (r['hwm_kb'] / base['hwm_kb'] - 1):+.1f} %",
            "seconds": r["seconds"], "xrt": r["audio_s"] / r["seconds"] if r["seconds"] else None,
        })
    headers = {"tracks": "tracks", "audio_h": "audio (h)", "segments": "segments",
               "before_mb": "RSS before extraction (MB)", "peak_mb": "peak RSS (MB)", "ru_mb": "ru_maxrss (MB)",
               "growth_mb": "peak − before (MB)", "vs_smallest": "peak vs smallest", "seconds": "time (s)",
               "xrt": "× real time"}
    rep.add(f"Tracks: {source}" + (f", cut to {args.seconds_per_track:g} s" if args.seconds_per_track > 0 else "")
            + f", reused in turn (mean {mean_track_s:.0f} s per track); `extract_items` into an empty shard store, "
            f"batch {args.batch_size or params.fingerprint.extract.batch_size}, shard_items "
            f"{params.fingerprint.extract.shard_items}, {threads} threads, one fresh process per size. Peak RSS = "
            "VmHWM of that process.")
    rep.table(table, list(headers), headers)
    big = rows[-1]
    factor = big["tracks"] / base["tracks"]
    change = big["hwm_kb"] / base["hwm_kb"] - 1
    ok = abs(change) <= GOAL_BAND
    rep.add(f"**Goal: peak RSS flat within ±{GOAL_BAND:.0%} when the collection grows 10×.** "
            f"{base['tracks']} → {big['tracks']} tracks ({factor:g}×): peak {base['hwm_kb'] / 1024:.0f} → "
            f"{big['hwm_kb'] / 1024:.0f} MB, {100 * change:+.1f} % → {'**met**' if ok else '**not met**'}"
            + ("" if factor >= 10 else " (sizes differ by less than 10×)") + ".")
    rep.data = {"rows": rows, "threads": threads}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
