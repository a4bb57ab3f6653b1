#!/usr/bin/env python
"""Run every benchmark in order (`make bench` calls this) and summarise which ones passed.

Order: extraction, search, update, memory, dvc_noop, identify, versions_extraction, versions_query. Each runs as its own process with this Python, so
one benchmark's memory and threads cannot affect the next. Options given here are passed on to every
script (--quick, --doc PATH, --no-doc, --threads N, --audio-dir DIR); full runs (no --quick) write their
results into docs/benchmarks.md. Run on a quiet machine: the numbers are wall-clock times.

Examples:
  python benchmarks/run_all.py --quick            # smoke test of every script (about a minute)
  python benchmarks/run_all.py                    # the real thing (tens of minutes; writes the docs)
  python benchmarks/run_all.py --only search      # one or more of them
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["extraction", "search", "update", "memory", "dvc_noop", "identify", "versions_extraction",
              "versions_query"]
USES_AUDIO = {"extraction", "update", "memory", "identify", "versions_extraction"}
USES_THREADS = {"extraction", "search", "update", "memory", "identify", "versions_extraction", "versions_query"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run of every script (numbers mean nothing)")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None, help="run only these benchmarks")
    p.add_argument("--doc", metavar="PATH", default=None, help="write results into PATH instead of docs/benchmarks.md")
    p.add_argument("--no-doc", action="store_true", help="only print results")
    p.add_argument("--threads", type=int, default=None, help="torch / FAISS threads for every benchmark (default 2)")
    p.add_argument("--audio-dir", default=None, help="real audio to use instead of the default source")
    args = p.parse_args(argv)

    results = []
    for name in args.only or BENCHMARKS:
        cmd = [sys.executable, str(HERE / f"bench_{name}.py")]
        if args.quick:
            cmd.append("--quick")
        if args.doc:
            cmd += ["--doc", args.doc]
        if args.no_doc:
            cmd.append("--no-doc")
        if args.threads is not None and name in USES_THREADS:
            cmd += ["--threads", str(args.threads)]
        if args.audio_dir and name in USES_AUDIO:
            cmd += ["--audio-dir", args.audio_dir]
        print(f"\n==== bench {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        results.append((name, rc, time.perf_counter() - t0))

    print("\n==== summary")
    for name, rc, dt in results:
        print(f"  {name:<11} {'ok' if rc == 0 else f'FAILED (exit {rc})':<16} {dt:6.1f} s")
    return 0 if all(rc == 0 for _, rc, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
