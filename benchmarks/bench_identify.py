#!/usr/bin/env python
"""`avmatch fingerprint identify`: latency per query without and with start-up, and database size.

What a user of the command pays, on real audio (see --audio-dir):

1. Database size: `avmatch fingerprint add` of the real tracks into a new database; bytes of each part
   (shards, the encoder copy, manifest, ...) and per hour of audio, with and without `--keep-pcm`.
2. Start-up, paid once per command: a fresh interpreter importing the command's modules (torch,
   FAISS, ...), loading the encoder, and loading the index (flat: built in memory from the shards).
3. Latency per query: in one process after start-up (`Searcher.identify`: decode, embed, search),
   by query length; and the whole command as a user runs it, `python -m avmatch fingerprint identify`
   with 1 query (start-up included) and with N queries (per query = (T_N - T_1) / (N - 1)).
4. Index load against database size: synthetic shards of 1, 10, 100 h of audio (one 128-d vector per
   0.5 s), loaded as `identify` loads them, next to a saved flat `SegmentIndex` memory-mapped (what
   the database stored before: a second and third copy of every vector).

Queries are excerpts of the real tracks (random offsets, 16 kHz WAV). The encoder is the project's
trained one when found (as `add` finds it), else `--model`, else an untrained one with the
architecture of params.yaml (speed does not depend on the weights).
`--before-src DIR` also measures another checkout's code (e.g. the commit before this change) on the
same audio, encoder and queries, for the database size and the whole-command times.
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

from _report import ROOT, Report, add_common_args, percentile, quiet_env, set_threads  # noqa: E402

TAG = "BENCH_IDENTIFY "


def parse_args(argv=None) -> argparse.Namespace:
    from _audio import add_audio_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="encoder (default: the project's trained one, else untrained)")
    p.add_argument("--tracks", type=int, default=0, help="use the first N real tracks (0 = all)")
    p.add_argument("--lengths", type=float, nargs="+", default=[1.0, 3.0, 5.0, 10.0], help="query lengths (s)")
    p.add_argument("--queries", type=int, default=20, help="queries per length (in-process latency)")
    p.add_argument("--batch", type=int, default=50, help="N, the queries of the whole-command run")
    p.add_argument("--repeats", type=int, default=3, help="runs of each whole command (median)")
    p.add_argument("--load-hours", type=float, nargs="+", default=[1.0, 10.0, 100.0],
                   help="synthetic database sizes for the index load (hours of audio)")
    p.add_argument("--before-src", default=None, help="also measure the code under this src folder")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    add_audio_args(p)
    add_common_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.tracks = args.tracks or 3
        args.lengths, args.queries, args.batch, args.repeats = [1.0, 5.0], 3, 4, 1
        args.load_hours = [0.2]
    return args


# ---------------------------------------------------------------- helpers
def command_env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(src.parent)])
    env.pop("AVMATCH_ROOT", None)
    env["TQDM_DISABLE"] = "1"
    return env


def run_command(src: Path, args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of `avmatch ARGS` in a fresh interpreter running the code under `src`."""
    cmd = [sys.executable, "-c", "from avmatch.cli import app; app()", *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=command_env(src), capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, p


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def encoder_for(args, tmp: Path) -> tuple[Path, float, str]:
    """(encoder file, threshold, description)."""
    from avmatch.fingerprint.encoder_lookup import EncoderNotFound, locate_encoder

    try:
        choice = locate_encoder(Path(args.model) if args.model else None)
        return choice.path, choice.thresholds.default, f"trained encoder {choice.path}"
    except EncoderNotFound:
        if args.model:
            return Path(args.model), 0.1, f"encoder {args.model} (threshold 0.1: speed only)"
    from avmatch.core.config import load_params
    from avmatch.fingerprint.model import FingerprintEncoder, save_encoder

    fp = load_params(ROOT / "params.yaml", systems=["fingerprint"]).fingerprint
    path = tmp / "untrained.pt"
    save_encoder(FingerprintEncoder.from_params(fp.model, fp.logmel, fp.audio), path)
    return path, 0.1, "untrained encoder with the architecture of params.yaml (speed only)"


def write_queries(files: list[Path], lengths: list[float], per_length: int, out: Path) -> dict[float, list[Path]]:
    import numpy as np
    import soundfile as sf

    from avmatch.core.audio import decode_audio

    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    audio = [decode_audio(f, 16000) for f in files]
    queries: dict[float, list[Path]] = {}
    for length in lengths:
        n = int(length * 16000)
        usable = [a for a in audio if len(a) > n]
        for k in range(per_length):
            a = usable[rng.integers(len(usable))]
            start = int(rng.integers(0, len(a) - n))
            path = out / f"q{length:g}s_{k:03d}.wav"
            sf.write(path, a[start:start + n], 16000, subtype="PCM_16")
            queries.setdefault(length, []).append(path)
    return queries


# ---------------------------------------------------------------- child: start-up in a fresh interpreter
def child_startup(db: str, query: str) -> dict:
    t0 = time.perf_counter()
    import avmatch.cli  # noqa: F401
    import faiss  # noqa: F401
    import torch  # noqa: F401

    from avmatch.fingerprint.database import FingerprintDB

    t1 = time.perf_counter()
    searcher = FingerprintDB(db).searcher()
    t2 = time.perf_counter()
    searcher.identify(query)
    t3 = time.perf_counter()
    return {"imports_s": t1 - t0, "model_s": searcher.timings["model_s"], "index_s": searcher.timings["index_s"],
            "open_s": t2 - t1, "first_query_s": t3 - t2}


# ---------------------------------------------------------------- parts
def part_size(src: Path, music: list[Path], model: Path, threshold: float, tmp: Path, keep_pcm: bool,
              label: str) -> tuple[Path, dict]:
    db = tmp / f"db_{label}"
    shutil.rmtree(db, ignore_errors=True)
    args = ["fingerprint", "add", *map(str, music), "--db", str(db), "--model", str(model),
            "--threshold", str(threshold)] + (["--keep-pcm"] if keep_pcm else [])
    seconds, p = run_command(src, args, tmp)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"add failed ({p.returncode}): {p.stderr[-2000:]}")
    parts = {c.name: du(c) for c in sorted(db.iterdir()) if not c.name.startswith(".")}
    return db, {"parts": parts, "add_s": seconds}


def audio_hours(db: Path) -> float:
    import pandas as pd

    from avmatch.fingerprint.database import FingerprintDB

    m = FingerprintDB(db).manifest()      # the published version's (or an older layout's) manifest
    ok = m[m["status"] == "ok"]
    if "n_samples" in ok.columns and ok["n_samples"].notna().all():   # older databases
        return float(ok["n_samples"].sum()) / 8000 / 3600
    return float(pd.to_numeric(ok["duration_s"]).sum()) / 3600


def part_latency(db: Path, queries: dict[float, list[Path]]) -> list[dict]:
    from avmatch.fingerprint.database import FingerprintDB

    searcher = FingerprintDB(db).searcher()
    searcher.identify(queries[min(queries)][0])    # warm-up
    rows = []
    for length, files in queries.items():
        times, hits = [], 0
        for f in files:
            t0 = time.perf_counter()
            answer = searcher.identify(f)
            times.append(time.perf_counter() - t0)
            hits += bool(answer.candidates and answer.candidates[0].match)
        rows.append({"query length (s)": length, "queries": len(files),
                     "median (ms)": 1000 * percentile(times, 50), "p95 (ms)": 1000 * percentile(times, 95),
                     "answered as a match": f"{hits}/{len(files)}"})
    return rows


def part_commands(src: Path, db: Path, queries: list[Path], batch: int, repeats: int, cwd: Path) -> dict:
    one, many = [], []
    for _ in range(repeats):
        t, p = run_command(src, ["fingerprint", "identify", str(queries[0]), "--db", str(db)], cwd)
        if p.returncode != 0:
            raise RuntimeError(f"identify failed: {p.stderr[-2000:]}")
        one.append(t)
        t, p = run_command(src, ["fingerprint", "identify", *map(str, queries[:batch]), "--db", str(db)], cwd)
        if p.returncode != 0:
            raise RuntimeError(f"identify failed: {p.stderr[-2000:]}")
        many.append(t)
    t1, tn = percentile(one, 50), percentile(many, 50)
    n = min(batch, len(queries))
    return {"one_s": t1, "many_s": tn, "n": n, "per_query_excl_s": (tn - t1) / (n - 1) if n > 1 else float("nan"),
            "per_query_incl_s": tn / n}


def part_load(db: Path, hours: list[float], tmp: Path) -> list[dict]:
    """Index load time from the shards against database size (synthetic vectors, real code)."""
    import numpy as np
    import pandas as pd

    from avmatch.core.index import SegmentIndex
    from avmatch.core.manifest import MANIFEST_COLUMNS, write_manifest
    from avmatch.core.shards import ShardStore
    from avmatch.fingerprint.database import FingerprintDB

    real = FingerprintDB(db)
    dim, hop = int(real.meta["dim"]), real.audio.hop_s
    rows = []
    rng = np.random.default_rng(0)
    for h in hours:
        big = tmp / f"load_{h:g}h"
        shutil.rmtree(big, ignore_errors=True)
        big.mkdir()
        for f in ("db.json", "model.pt"):
            shutil.copy2(db / f, big / f)
        track_s = 240.0
        n_tracks = max(1, int(round(h * 3600 / track_s)))
        per = int(track_s / hop)
        store = ShardStore(big / "shards", dim, real.model_hash)
        manifest = []
        with store.writer(shard_items=32) as w:
            for k in range(n_tracks):
                v = rng.standard_normal((per, dim)).astype(np.float32)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                starts = np.arange(per, dtype=np.float32) * hop
                w.add_item(f"track{k:06d}", f"h{k:06d}", v, starts, starts + 1.0)
                manifest.append({**dict.fromkeys(MANIFEST_COLUMNS), "id": f"track{k:06d}", "path": f"/music/{k}.flac",
                                 "content_hash": f"h{k:06d}", "duration_s": track_s, "status": "ok", "error": ""})
        write_manifest(pd.DataFrame(manifest), big / "manifest.parquet")
        fdb = FingerprintDB(big)
        t0 = time.perf_counter()
        seg = fdb.load_index()
        t_load = time.perf_counter() - t0
        old_dir = tmp / f"old_index_{h:g}h"
        seg.save(old_dir)            # the layout the database used to store next to the shards
        del seg
        t0 = time.perf_counter()
        old = SegmentIndex.load(old_dir)
        t_old = time.perf_counter() - t0
        rows.append({"audio (h)": h, "segments": old.ntotal, "shards (MB)": du(big / "shards") / 1e6,
                     "load from shards (s)": t_load, "old: stored index + vectors (MB)": du(old_dir) / 1e6,
                     "old: SegmentIndex.load (s)": t_old})
        del old
        shutil.rmtree(old_dir, ignore_errors=True)
        shutil.rmtree(big, ignore_errors=True)
    return rows


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:    # before anything is imported: the child times the imports
        quiet_env()
        db, query = argv[1].split("::", 1)
        print(TAG + json.dumps(child_startup(db, query)))
        return 0
    args = parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    from _audio import real_audio_files

    rep = Report("identify", "Fingerprint identify: latency and database size", args)
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="bench_identify_"))
    tmp.mkdir(parents=True, exist_ok=True)
    src = ROOT / "src"
    try:
        files, source = real_audio_files(args.audio_dir)
        if args.tracks:
            files = files[:args.tracks]
        model, threshold, model_desc = encoder_for(args, tmp)
        print(f"[bench] {source}; {model_desc}", flush=True)
        queries = write_queries(files, args.lengths, args.queries, tmp / "queries")
        flat = [q for length in args.lengths for q in queries[length]]
        batch = flat[: args.batch] if len(flat) >= args.batch else (flat * (args.batch // len(flat) + 1))[: args.batch]

        # 1. size
        db, size = part_size(src, files, model, threshold, tmp, False, "new")
        hours = audio_hours(db)
        _, size_pcm = part_size(src, files, model, threshold, tmp, True, "pcm")
        size_rows = [{"layout": "this version", **_size_row(size["parts"], hours)},
                     {"layout": "this version, --keep-pcm", **_size_row(size_pcm["parts"], hours)}]
        before = None
        if args.before_src:
            before_db, before_size = part_size(Path(args.before_src), files, model, threshold, tmp, False, "before")
            size_rows.append({"layout": f"before ({args.before_src})", **_size_row(before_size["parts"], hours)})
            before = before_db
        print(f"[bench] database: {hours:.2f} h of audio, {size['parts']}", flush=True)

        # 2. start-up in a fresh interpreter
        starts = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--child", f"{db}::{flat[0]}"],
                                 capture_output=True, text=True, check=True, env=command_env(src)).stdout
            starts.append(json.loads(next(ln for ln in out.splitlines() if ln.startswith(TAG))[len(TAG):]))
        startup = {k: percentile([s[k] for s in starts], 50) for k in starts[0]}

        # 3. latency
        latency = part_latency(db, queries)
        cmds = [("this version", part_commands(src, db, batch, args.batch, args.repeats, tmp))]
        if before is not None:
            cmds.append((f"before ({args.before_src})",
                         part_commands(Path(args.before_src), before, batch, args.batch, args.repeats, tmp)))

        # 4. index load against size
        loads = part_load(db, args.load_hours, tmp)
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)

    rep.refresh_machine()
    rep.add(f"Audio: {source}, {hours:.2f} h. Encoder: {model_desc}. Queries: excerpts at random offsets "
            f"(16 kHz WAV). Whole-command times are medians of {args.repeats} run(s) of a fresh "
            f"`python -c 'from avmatch.cli import app; app()' fingerprint ...` (what the `avmatch` script runs).")
    rep.table(size_rows, caption="**Database size** (`fingerprint add` of the real tracks; MB, and MB per hour "
                                 "of audio; the encoder copy is a fixed 2 MB whatever the size):")
    rep.table([{"step": "imports (torch, FAISS, avmatch)", "seconds": startup["imports_s"]},
               {"step": "encoder load", "seconds": startup["model_s"]},
               {"step": "index load (flat, built from the shards)", "seconds": startup["index_s"]},
               {"step": "start-up total", "seconds": startup["imports_s"] + startup["open_s"]},
               {"step": "first query", "seconds": startup["first_query_s"]}],
              caption=f"**Start-up, paid once per command** (fresh interpreter, median of {args.repeats}):")
    rep.table(latency, caption="**Latency per query after start-up** (one process, `Searcher.identify`: decode, "
                               "embed, search, rescore):")
    rep.table([{"code": name, "1 query, whole command (s)": c["one_s"],
                f"{c['n']} queries, whole command (s)": c["many_s"],
                "per query excluding start-up (ms)": 1000 * c["per_query_excl_s"],
                "per query including start-up (ms)": 1000 * c["per_query_incl_s"]} for name, c in cmds],
              caption="**Whole command** (`fingerprint identify` with 1 query, then with N queries of mixed "
                      "lengths; excluding start-up = (T_N - T_1) / (N - 1), including = T_N / N):")
    rep.table(loads, caption="**Index load against database size** (synthetic shards of 4-min tracks, one "
                             "128-d vector per 0.5 s; `FingerprintDB.load_index` reads the shards and builds the "
                             "flat index; before, the database also stored the index and a vector file, "
                             "memory-mapped at load):")
    rep.data = {"size": size_rows, "startup": startup, "latency": latency, "commands": dict(cmds), "load": loads,
                "audio_hours": hours}
    rep.finish()
    return 0


def _size_row(parts: dict[str, int], hours: float) -> dict:
    total = sum(parts.values())
    fixed = parts.get("model.pt", 0)
    row = {"total (MB)": total / 1e6, "MB per hour of audio (without the encoder copy)": (total - fixed) / 1e6 / hours}
    row["parts (MB)"] = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in parts.items())
    return row


if __name__ == "__main__":
    sys.exit(main())
