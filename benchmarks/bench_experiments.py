#!/usr/bin/env python
"""Prefect runs with overrides as DVC experiments (issue 13, part 2), on an up-to-date project.

    python benchmarks/bench_experiments.py --project <project whose fingerprint pipeline is up to date>

Against a real Prefect server (started here), it measures:
1. one run with `fingerprint.search.top_k=7` (and `evaluate.compare_untrained=false`), the flow called in a
   new process: wall time, set-up time under the run lock, which stages ran and which DVC restored, and
   whether params.yaml, dvc.lock, metrics, the encoder and the results are byte-identical afterwards;
2. two runs with different overrides (top_k 3 and 4) started at once, each in its own process: wall
   time of each and of both, whether both experiments completed, the workspace unchanged;
3. `dvc exp apply` of the first experiment in a copy of the project, then `dvc repro`: its wall time and
   whether it ran anything.
The project is changed only by the experiments' git refs (`dvc exp remove <name>` removes them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WATCHED = ["params.yaml", "dvc.lock", "metrics/fingerprint.json", "metrics/fingerprint_train.json",
           "models/fingerprint/encoder.pt", "results/fingerprint/results.csv"]
RUN = """
import json, sys, time
from flows.fingerprint import fingerprint_flow
if __name__ == "__main__":
    t = time.perf_counter()
    r = fingerprint_flow(overrides=json.loads(sys.argv[1]), stages=["evaluate"], root=sys.argv[2], experiment=sys.argv[3])
    print("RESULT " + json.dumps({"wall": time.perf_counter() - t,
                                  "ran": [s for s, v in r.items() if v["ran"]],
                                  "restored": [s for s, v in r.items() if not v["ran"]]}))
"""


def digests(project: Path) -> dict[str, str]:
    return {f: hashlib.md5((project / f).read_bytes()).hexdigest() for f in WATCHED if (project / f).exists()}


def start_run(project: Path, overrides: dict, name: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN, json.dumps(overrides), str(project), name], cwd=project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    found = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    setup = [ln for ln in out.splitlines() if "temporary workspace" in ln and "ready in" in ln]
    if proc.returncode != 0 or not found:
        return {"ok": False, "log": out[-3000:]}
    res = json.loads(found[-1][len("RESULT "):])
    res["ok"] = True
    if setup:
        res["setup_s"] = float(setup[-1].split("ready in ")[1].split(" s")[0])
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", required=True)
    args = ap.parse_args(argv)
    project = Path(args.project).resolve()
    sys.path.insert(0, str(ROOT))
    from flows.servers import start_prefect

    home = Path(tempfile.mkdtemp(prefix="bench-exp-prefect-"))
    server = start_prefect(home, prefect_home=home)
    env = dict(os.environ, PREFECT_API_URL=server.url, PREFECT_HOME=str(home), MPLBACKEND="Agg",
               PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=f"{project / 'src'}:{project}",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("AVMATCH_ROOT", None)
    stamp = time.strftime("%H%M%S")
    rows = []
    try:
        before = digests(project)
        one = finish(start_run(project, {"fingerprint.search.top_k": 7, "fingerprint.evaluate.compare_untrained": False},
                               f"bench-top7-{stamp}", env))
        same = digests(project) == before
        rows.append(("one run, top_k 7", one, same))
        t0 = time.perf_counter()
        procs = [start_run(project, {"fingerprint.search.top_k": k, "fingerprint.evaluate.compare_untrained": False},
                           f"bench-top{k}-{stamp}", env) for k in (3, 4)]
        pair = [finish(p) for p in procs]
        both = time.perf_counter() - t0
        same2 = digests(project) == before
        for k, r in zip((3, 4), pair):
            rows.append((f"overlapping run, top_k {k}", r, same2))
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)

    print("| run | completed | wall (s) | set-up under the lock (s) | ran | restored by DVC | workspace byte-identical |")
    print("|---|---|---:|---:|---|---|---|")
    for label, r, same in rows:
        print(f"| {label} | {r['ok']} | {r.get('wall', float('nan')):.1f} | {r.get('setup_s', float('nan')):.1f} | "
              f"{', '.join(r.get('ran', []))} | {', '.join(r.get('restored', []))} | {same} |")
        if not r["ok"]:
            print(r["log"], file=sys.stderr)
    print(f"\nboth overlapping runs, from start to the last one's end: {both:.1f} s")

    copy = Path(tempfile.mkdtemp(prefix="bench-exp-apply-")) / "proj"
    shutil.copytree(project, copy, symlinks=True)
    try:
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "dvc"), "exp", "apply", f"bench-top7-{stamp}"], cwd=copy, env=env,
                       capture_output=True, text=True)
        subprocess.run([str(BIN / "dvc"), "checkout", "fingerprint_evaluate"], cwd=copy, env=env,
                       capture_output=True, text=True)
        apply_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = subprocess.run([str(BIN / "dvc"), "repro", "fingerprint_evaluate"], cwd=copy, env=env,
                             capture_output=True, text=True)
        repro_s = time.perf_counter() - t0
        top_k = subprocess.run([sys.executable, "-c", "import yaml; print(yaml.safe_load(open('params.yaml'))"
                                "['fingerprint']['search']['top_k'])"], cwd=copy, capture_output=True, text=True)
        print(f"\npromotion in a copy: `dvc exp apply` + `dvc checkout fingerprint_evaluate` {apply_s:.1f} s "
              f"(params.yaml top_k now {top_k.stdout.strip()}), then `dvc repro fingerprint_evaluate` {repro_s:.1f} s, "
              f"ran a stage: {'Running stage' in rep.stdout}")
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
