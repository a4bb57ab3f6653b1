#!/usr/bin/env python
"""Time of a no-op `dvc repro` in the project: DVC's own cost when nothing has changed.

Runs `dvc repro` --repeats times (median; default 5) in the project root, after checking with
`dvc status --json` that every stage is up to date. If the pipeline has not been run yet (no dvc.lock)
or something changed (the status is not clean), nothing is timed: the script says why and exits 0,
because a `dvc repro` would then run real stages (minutes of work), not measure DVC's overhead. The
status is checked again before every repetition, so an edit made while the benchmark runs stops it
instead of starting the pipeline. `dvc status` itself is timed as well (it is what DVC does first).

Use --dry to time `dvc repro --dry` instead (same change detection, never runs a stage).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, percentile, quiet_env  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed `dvc repro` runs (median reported)")
    p.add_argument("--project", default=str(ROOT), help="DVC project folder (default: this repository)")
    p.add_argument("--dry", action="store_true", help="time `dvc repro --dry` (never runs a stage)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before one dvc call is given up")
    add_common_args(p, threads=False)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 1
    return args


def dvc_command() -> list[str]:
    local = ROOT / ".venv" / "bin" / "dvc"
    if local.exists():
        return [str(local)]
    found = shutil.which("dvc")
    if found:
        return [found]
    return [sys.executable, "-m", "dvc"]


def run(cmd: list[str], cwd: str, timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - t0, proc


def status(dvc: list[str], cwd: str, timeout: float) -> tuple[float, dict | None, str]:
    """(seconds, parsed `dvc status --json` or None on failure, error text)."""
    dt, proc = run([*dvc, "status", "--json"], cwd, timeout)
    if proc.returncode != 0:
        return dt, None, (proc.stderr or proc.stdout).strip()[-500:]
    try:
        return dt, json.loads(proc.stdout.strip() or "{}"), ""
    except json.JSONDecodeError:
        return dt, None, f"unexpected `dvc status --json` output: {proc.stdout.strip()[:300]}"


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_env(args.verbose, args.quick)
    project = Path(args.project).resolve()
    dvc = dvc_command()
    if not (project / "dvc.yaml").exists():
        print(f"[bench] SKIPPED: {project} has no dvc.yaml", flush=True)
        return 0
    if not (project / "dvc.lock").exists():
        print(f"[bench] SKIPPED: the pipeline has not been run yet in {project} (no dvc.lock); run `make demo` "
              "(or `dvc repro`) first, then this benchmark times a no-op `dvc repro`.", flush=True)
        return 0
    rep = Report("dvc_noop", "No-op dvc repro", args)
    st_t, st, err = status(dvc, str(project), args.timeout)
    if st is None:
        print(f"[bench] SKIPPED: `dvc status` failed: {err}", flush=True)
        return 0
    if st:
        stages = ", ".join(sorted(st)[:8]) + (" ..." if len(st) > 8 else "")
        print(f"[bench] SKIPPED: `dvc status` is not clean (changed: {stages}); a `dvc repro` would run those "
              "stages instead of being a no-op. Run `dvc repro` until `dvc status` says everything is up to date, "
              "then rerun this benchmark.", flush=True)
        return 0

    cmd = [*dvc, "repro"] + (["--dry"] if args.dry else [])
    status_ts, repro_ts = [st_t], []
    for r in range(args.repeats):
        if r > 0:
            dt, st, err = status(dvc, str(project), args.timeout)
            if st is None or st:
                print(f"[bench] STOPPED after {r} run(s): the project changed while benchmarking "
                      f"({err or ', '.join(sorted(st))}); not starting `dvc repro`.", flush=True)
                break
            status_ts.append(dt)
        dt, proc = run(cmd, str(project), args.timeout)
        if proc.returncode != 0:
            print(f"[bench] `{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}", flush=True)
            return 1
        ran = [line for line in proc.stdout.splitlines() if line.startswith("Running stage")]
        if ran:
            print(f"[bench] warning: `dvc repro` ran stages ({'; '.join(ran)}): not a no-op, result discarded",
                  flush=True)
            return 1
        repro_ts.append(dt)
        print(f"[bench] run {r + 1}/{args.repeats}: {dt:.2f} s", flush=True)
    if not repro_ts:
        return 1
    version = subprocess.run([*dvc, "--version"], capture_output=True, text=True).stdout.strip()
    n_stages = sum(1 for line in (project / "dvc.lock").read_text().splitlines()
                   if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"))
    rows = [
        {"command": "`" + " ".join(["dvc", *cmd[1:]]) + "`", "runs": len(repro_ts),
         "median_s": statistics.median(repro_ts), "p90_s": percentile(repro_ts, 90), "min_s": min(repro_ts)},
        {"command": "`dvc status`", "runs": len(status_ts), "median_s": statistics.median(status_ts),
         "p90_s": percentile(status_ts, 90), "min_s": min(status_ts)},
    ]
    headers = {"command": "command", "runs": "runs", "median_s": "median (s)", "p90_s": "p90 (s)", "min_s": "min (s)"}
    rep.add(f"DVC {version}, project `{project.name}` with {n_stages} locked stages, everything up to date.")
    rep.table(rows, list(headers), headers)
    rep.data = {"repro_s": repro_ts, "status_s": status_ts, "dvc": version}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
