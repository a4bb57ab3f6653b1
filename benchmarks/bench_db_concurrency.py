"""The issue's scenario, measured with plain commands: N `avmatch fingerprint add` started at the same
time on one new `--db`, each with its own recordings; prints how many recordings the database lost.

    python benchmarks/bench_db_concurrency.py --writers 2 4 --files-per-writer 4 [--existing] [--work DIR]

Uses a tiny untrained encoder and synthetic audio (as the tests do); each writer is a separate
`python -m avmatch` process started together. PYTHONPATH picks the avmatch under test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import save_tiny_fingerprint_encoder, tone_mix  # noqa: E402

SR = 8000


def _project(work: Path) -> Path:
    proj = work / "proj"
    (proj / "models/fingerprint").mkdir(parents=True)
    (proj / "metrics").mkdir()
    (proj / "params.yaml").write_text("fingerprint:\n  index: {type: flat}\n")
    save_tiny_fingerprint_encoder(proj / "models/fingerprint/encoder.pt", seed=0, sr=SR)
    (proj / "metrics/fingerprint.json").write_text(json.dumps({"threshold": 0.2}))
    return proj


def _recordings_held(db: Path) -> set[str]:
    """Ids of the recordings the database answers with (its published manifest, either layout)."""
    current = db / "CURRENT"
    if current.exists():
        version = json.loads(current.read_text())["version"]
        manifest = db / "snapshots" / f"{version:06d}" / "manifest.parquet"
    else:
        manifest = db / "manifest.parquet"
    m = pd.read_parquet(manifest)
    return set(m.loc[m["status"] == "ok", "id"])


def run(writers: int, per_writer: int, work: Path, proj: Path, existing: bool) -> dict:
    music = work / f"music-{writers}-{existing}"
    groups = []
    for w in range(writers):
        group = []
        for j in range(per_writer):
            f = music / f"w{w}" / f"w{w}_rec{j}.wav"
            f.parent.mkdir(parents=True, exist_ok=True)
            sf.write(f, tone_mix(5.0, SR, 100 * w + j), SR, subtype="PCM_16")
            group.append(f)
        groups.append(group)
    db = work / f"db-{writers}-{existing}"
    env = {**os.environ, "AVMATCH_ROOT": str(proj), "OMP_NUM_THREADS": "1"}
    if existing:      # the database exists already (one recording): the writers race on updating it
        seed = music / "seed.wav"
        sf.write(seed, tone_mix(5.0, SR, 9999), SR, subtype="PCM_16")
        subprocess.run([sys.executable, "-m", "avmatch", "fingerprint", "add", str(seed), "--db", str(db), "--workers",
                        "1"], env=env, capture_output=True, check=True)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "avmatch", "fingerprint", "add", *map(str, g), "--db", str(db),
                               "--workers", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for g in groups]
    outs = [p.communicate() for p in procs]
    held = _recordings_held(db)
    expected = {f.stem for g in groups for f in g}
    return {"writers": writers, "existing_db": existing, "recordings_added": len(expected), "exit_codes": [p.returncode for p in procs],
            "recordings_held": len(held & expected), "recordings_lost": len(expected - held),
            "said_it_waits": sum("waiting for it" in err for _, err in outs), "seconds": round(time.perf_counter() - t0, 1),
            "errors": [err.strip().splitlines()[-1][:160] for (_, err), p in zip(outs, procs) if p.returncode]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--files-per-writer", type=int, default=4)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--existing", action="store_true", help="start from a database holding one recording")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="db-concurrent-"))
    proj = _project(work)
    for n in args.writers:
        print(json.dumps(run(n, args.files_per_writer, work, proj, args.existing)), flush=True)


if __name__ == "__main__":
    main()
