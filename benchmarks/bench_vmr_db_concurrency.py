"""Concurrent `avmatch vmr add`s measured with plain commands: N writers started at the same time on one
`--db`, each with its own music folder; prints how many tracks the database lost.

    python benchmarks/bench_vmr_db_concurrency.py --writers 2 4 --files-per-writer 2 [--existing] [--work DIR]

Uses the tests' tiny untrained vmr encoder and synthetic tone mixes; each writer is a separate
`python -m avmatch` process. PYTHONPATH picks the avmatch under test.
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

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "vmr")]
from _vmr_tiny_encoder import SR, save_tiny_vmr_encoder  # noqa: E402
from conftest import tone_mix  # noqa: E402


def _tracks_held(db: Path) -> set[str]:
    """Ids of the tracks the database answers with (its published track table, either layout)."""
    current = db / "CURRENT"
    if current.exists():
        tracks = db / "snapshots" / f"{json.loads(current.read_text())['version']:06d}" / "tracks.csv"
    else:
        tracks = db / "tracks.csv"
    return set(pd.read_csv(tracks, dtype={"track_id": str})["track_id"]) if tracks.exists() else set()


def _add(folder: Path, db: Path, encoder: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "avmatch", "vmr", "add", str(folder), "--db", str(db),
                             "--encoder", str(encoder)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def run(writers: int, per_writer: int, work: Path, encoder: Path, existing: bool) -> dict:
    music = work / f"music-{writers}-{existing}"
    expected = set()
    for w in range(writers):
        for j in range(per_writer):
            f = music / f"w{w}" / f"w{w}_rec{j}.wav"
            f.parent.mkdir(parents=True, exist_ok=True)
            sf.write(f, tone_mix(4.0, SR, 100 * w + j), SR, subtype="PCM_16")
            expected.add(f.stem)
    db = work / f"db-{writers}-{existing}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if existing:      # the database exists already (one track): the writers race on updating it
        (music / "seed").mkdir()
        sf.write(music / "seed" / "seed.wav", tone_mix(4.0, SR, 9999), SR, subtype="PCM_16")
        assert _add(music / "seed", db, encoder, env).wait() == 0
    t0 = time.perf_counter()
    procs = [_add(music / f"w{w}", db, encoder, env) for w in range(writers)]
    outs = [p.communicate() for p in procs]
    held = _tracks_held(db)
    return {"writers": writers, "existing_db": existing, "tracks_added": len(expected),
            "exit_codes": [p.returncode for p in procs], "tracks_held": len(held & expected),
            "tracks_lost": len(expected - held), "said_it_waits": sum("waiting for it" in err for _, err in outs),
            "seconds": round(time.perf_counter() - t0, 1),
            "errors": [err.strip().splitlines()[-1][:160] for (_, err), p in zip(outs, procs) if p.returncode]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--files-per-writer", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--existing", action="store_true", help="start from a database holding one track")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vmr-db-concurrent-"))
    encoder = work / "encoder.pt"
    seeds = [work / "calib" / f"c{i}.wav" for i in range(2)]
    for i, f in enumerate(seeds):
        f.parent.mkdir(parents=True, exist_ok=True)
        sf.write(f, tone_mix(4.0, SR, 500 + i), SR, subtype="PCM_16")
    save_tiny_vmr_encoder(encoder, seeds)
    for n in args.writers:
        print(json.dumps(run(n, args.files_per_writer, work, encoder, args.existing)), flush=True)


if __name__ == "__main__":
    main()
