#!/usr/bin/env python
"""Orchestration overhead: the share of a pipeline's wall time spent outside the stage functions.

The same stages run three ways in a project where the pipeline has run once (e.g. after `make demo`):

1. `dvc repro -f -s <pipeline>_<stage> ...` (DVC forces each stage, in order),
2. the Prefect flow in a fresh process (`python -m flows.<pipeline> --stages ...`) against a running
   Prefect server started here on a free loopback port,
3. the flow's deployment triggered through the server's API and executed by `python -m flows.serve`.

The time inside the stage functions is what each stage's MLflow run records (`stage_seconds`, the
runner's measurement around the function); overhead = 1 - sum(stage_seconds) / wall time, with wall
time from launching the command to its exit (process start, imports, DVC's hashing and lock
writing, Prefect's task and flow bookkeeping, MLflow run creation). Flow start latency is the time
from launching the command (or creating the deployment run) to the first stage's MLflow run start.
The goal is overhead <= 10 %.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import ROOT, Report, add_common_args, quiet_env, verdict  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=str(ROOT), help="project where the pipeline has run (default: this one)")
    p.add_argument("--pipeline", default="fingerprint")
    p.add_argument("--stages", nargs="+", default=["ingest", "features", "extract", "index", "evaluate"],
                   help="stages to run (the corpus and training stages are left out by default: minutes of "
                        "work whose overhead share would only look smaller)")
    p.add_argument("--skip", nargs="*", default=[], choices=["dvc", "flow", "deployment"])
    p.add_argument("--fresh-train", action="store_true",
                   help="delete the training checkpoints before each run, so a forced train stage trains from "
                        "scratch (all its max_steps) instead of resuming from its last checkpoint")
    add_common_args(p, threads=False)
    return p.parse_args(argv)


def stage_runs(project: Path, pipeline: str, since_ms: int, orchestrator: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"avmatch-{pipeline}")
    runs = client.search_runs([exp.experiment_id], f"tags.orchestrator = '{orchestrator}' and "
                              f"attributes.start_time >= {since_ms}", max_results=200)
    return [r for r in runs if "stage_seconds" in r.data.metrics]


def measure(name: str, cmd: list[str] | None, project: Path, pipeline: str, orchestrator: str, n_stages: int,
            env: dict, trigger=None, fresh: Path | None = None) -> dict:
    if fresh is not None and fresh.exists():
        import shutil

        shutil.rmtree(fresh)
    since = int(time.time() * 1000)
    t0 = time.perf_counter()
    if cmd:
        proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    else:
        trigger()
    wall = time.perf_counter() - t0
    runs = stage_runs(project, pipeline, since, orchestrator)
    if len(runs) != n_stages:
        raise RuntimeError(f"{name}: expected {n_stages} stage runs in MLflow, found {len(runs)}")
    inside = sum(r.data.metrics["stage_seconds"] for r in runs)
    first = min(r.info.start_time for r in runs)
    return {"how": name, "wall_s": wall, "stages_s": inside, "outside_s": wall - inside,
            "overhead_pct": 100 * (wall - inside) / wall, "start_latency_s": (first - since) / 1000,
            "met": verdict((wall - inside) / wall <= 0.10)}


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_env(args.verbose, args.quick)
    project = Path(args.project).resolve()
    if not (project / "dvc.lock").exists() or not (project / "mlflow.db").exists():
        print(f"[bench] SKIPPED: run the pipeline once in {project} first (make demo)", flush=True)
        return 0
    from flows.servers import prefect_env, start_prefect, start_runner, stop_process

    rep = Report("orchestration", "Orchestration overhead", args)
    bin_dir = Path(sys.executable).parent
    stages = args.stages
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    rows = []
    fresh = project / "models" / f"{args.pipeline}_checkpoints" if args.fresh_train else None
    if "dvc" not in args.skip:
        targets = [f"{args.pipeline}_{s}" for s in stages]
        rows.append(measure("`dvc repro -f -s` (stages in order)", [str(bin_dir / "dvc"), "repro", "-f", "-s", *targets],
                            project, args.pipeline, "cli", len(stages), env, fresh=fresh))
        print(f"[bench] {rows[-1]}", flush=True)
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    server = start_prefect(project, prefect_home=home)
    try:
        flow_env = {**prefect_env(home, server.url), **{k: env[k] for k in ("MPLBACKEND", "TQDM_DISABLE")}}
        flow_env.pop("MLFLOW_TRACKING_URI", None)
        if "flow" not in args.skip:
            rows.append(measure("Prefect flow, new process (`python -m flows.%s`)" % args.pipeline,
                                [sys.executable, "-m", f"flows.{args.pipeline}", "--stages", *stages],
                                project, args.pipeline, "prefect", len(stages), flow_env, fresh=fresh))
            print(f"[bench] {rows[-1]}", flush=True)
        if "deployment" not in args.skip:
            runner = start_runner(project, server.url, prefect_home=home, extra_env={"TQDM_DISABLE": "1"})
            try:
                from prefect.deployments import run_deployment
                from prefect.settings import PREFECT_API_URL, temporary_settings

                with temporary_settings({PREFECT_API_URL: server.url}):
                    from prefect import get_client

                    deadline = time.monotonic() + 120
                    while True:   # the runner registers the deployments after its own start-up
                        try:
                            with get_client(sync_client=True) as c:
                                c.read_deployment_by_name(f"{args.pipeline}/avmatch")
                            break
                        except Exception:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.5)

                    def trigger():
                        run = run_deployment(f"{args.pipeline}/avmatch", parameters={"stages": stages}, timeout=3600)
                        if not run.state.is_completed():
                            raise RuntimeError(f"deployment run ended {run.state}")

                    rows.append(measure("deployment run via the API (served by `flows.serve`)", None, project,
                                        args.pipeline, "prefect", len(stages), env, trigger, fresh=fresh))
                    print(f"[bench] {rows[-1]}", flush=True)
            finally:
                stop_process(runner.process)
    finally:
        server.stop()
    headers = {"how": "how", "wall_s": "wall (s)", "stages_s": "in stage functions (s)",
               "outside_s": "outside (s)", "overhead_pct": "overhead (%)",
               "start_latency_s": "start → first stage (s)", "met": "≤ 10 %"}
    rep.add(f"Project `{project.name}`, pipeline `{args.pipeline}`, stages {', '.join(stages)}; "
            "stage time from each stage's MLflow `stage_seconds`; a Prefect server was running for the flow rows.")
    rep.table(rows, list(headers), headers)
    rep.data = {"rows": rows}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
