"""Runs with overrides are DVC experiments in temporary workspaces, isolated from the project's workspace.

    dvc exp run --temp -n <name> -S key=value ... <pipeline>_<stage> ...      (what a run amounts to)

A Prefect run with overrides (the deployment's form, `python -m flows.<pipeline> -S ...`) must not
overwrite the models and metrics that `dvc repro` made in the workspace, and must show in `dvc exp show`
with its params and metrics. DVC's temporary experiment workspaces do exactly that; this module drives
DVC's own steps for one (the steps DVC's queue workers take, `dvc.repo.experiments.queue.tasks.run_exp`):

1. **set up** (under the workspace's run lock, a few seconds): DVC stashes the workspace with the
   overrides applied to params.yaml as a new experiment, pops that entry and clones it into
   `.dvc/tmp/exps/standalone/tmp*`; the workspace's git state and params.yaml are back as they were
   when this returns. Then the outputs DVC cannot restore from its cache are put in the temporary
   workspace (see below).
2. **run** `dvc exp exec-run` in a process of its own (not under the lock): DVC checks out the cached
   outputs, reproduces the targets (unchanged stages are skipped) and commits the experiment. Stages
   log to the workspace's MLflow store (`MLFLOW_TRACKING_URI`, resolved here) and carry the experiment's
   name (DVC sets `DVC_EXP_NAME` for each stage; the runner tags it `dvc_experiment`).
3. **collect** the experiment's git ref into the workspace's repository (`refs/exps/...`: what `dvc exp
   show`, `dvc exp apply` read) and remove the temporary workspace.

Why not `repo.experiments.run(tmp_dir=True)`: its temp-dir queue shares one stash with every other run
of the workspace and pops "the first" entry, so two overlapping runs could each take the other's entry
(or find none); here an experiment pops its own entry while holding the lock, and only that part and the
copy of inputs are serialised.

**What DVC can restore in a temporary workspace.** Only what git tracks and what is in DVC's cache. In
this project dvc.lock, the metrics and plots are usually untracked (run outputs stay out of git), and the
large rebuildable data (`cache: false` outs: corpus, manifest, decoded audio, checkpoints) is never in the
cache, so in a bare temp workspace every upstream stage would look deleted and run again. So the set-up
step puts dvc.lock and every `cache: false` out of the stages involved into the temp workspace:
hard links for plain outs (DVC deletes a plain out before its stage runs, so the workspace's copy cannot
be written through the link) and real copies for `persist: true` outs (kept and updated in place when
their stage runs). This is DVC's own `--copy-paths` (`-C`) with links where they are safe; caching
those outs instead would keep a second copy of the corpus and decoded audio in `.dvc/cache` for good
and still copy them into every temporary workspace (checkout copies: the cache link type is `copy`).
Cached outs (models, shards, indexes, results) are restored by DVC's checkout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock
from prefect import task

from flows.dvc_run import RUN_LOCK, stage_graph

log = logging.getLogger(__name__)

RAN = re.compile(r"^Running stage '([^']+)'")
# up to date, or restored from DVC's run cache (the same deps and params ran before)
SKIPPED = re.compile(r"^Stage '([^']+)' (?:didn't change, skipping|is cached - skipping run)")


def hydra_value(value: Any) -> str:
    """A value as `dvc exp run -S key=value` (Hydra's override grammar) reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    import yaml

    if re.fullmatch(r"[A-Za-z_][\w\-./]*", text) and yaml.safe_load(text) == text:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def set_params(overrides: dict[str, Any]) -> list[str]:
    """`key=value` items for DVC's `-S`, sorted (the order does not matter to DVC)."""
    return [f"{k}={hydra_value(v)}" for k, v in sorted(overrides.items())]


def experiment_name(pipeline: str, overrides: dict[str, Any], now: datetime | None = None) -> str:
    """`<pipeline>-<6 hex of the overrides>-<UTC time>`, e.g. `fingerprint-3fa2c1-20261202-113402`: the
    same overrides give the same middle part, so runs of one setting sort together in `dvc exp show`."""
    digest = hashlib.md5(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return f"{pipeline}-{digest}-{stamp}"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _put(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True, symlinks=True,
                        copy_function=_link_or_copy if link else shutil.copy2)
    elif link:
        if dst.exists():
            dst.unlink()
        _link_or_copy(str(src), str(dst))
    else:
        shutil.copy2(src, dst)


def uncached_inputs(repo: Any, stages: list[str]) -> list[tuple[str, bool]]:
    """(path, copy) of every `cache: false` out of these stages that exists in the workspace, plus dvc.lock:
    what a temporary workspace cannot restore from DVC's cache. `copy`: the file is written in place in the
    temporary workspace (dvc.lock; `persist: true` outs), so it must not be a link to the workspace's."""
    root = Path(repo.root_dir)
    wanted = set(stages)
    # (path, copy): dvc.lock is rewritten in place by DVC, so it is copied, never linked
    out: list[tuple[str, bool]] = [("dvc.lock", True)] if (root / "dvc.lock").exists() else []
    for stage in repo.index.stages:
        if getattr(stage, "addressing", None) not in wanted:
            continue
        for o in stage.outs:
            rel = Path(o.fs_path).relative_to(root).as_posix()
            if not o.use_cache and (root / rel).exists():
                out.append((rel, bool(o.persist)))
    return out


def prepare_experiment(root: str, targets: list[str], overrides: dict[str, Any], name: str,
                       needed: list[str]) -> dict[str, Any]:
    """Step 1 (under the run lock): stash the experiment, take its own entry, set up its temp workspace."""
    from dvc.repo import Repo
    from dvc.repo.experiments.executor.local import TempDirExecutor
    from dvc.repo.experiments.queue.base import BaseStashQueue
    from dvc.utils.cli_parse import to_path_overrides

    lock = Path(root) / RUN_LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with FileLock(str(lock)), Repo(root) as repo:
        queue = repo.experiments.tempdir_queue
        entry = repo.experiments.queue_one(queue, targets=targets, params=to_path_overrides(set_params(overrides)),
                                           name=name)
        executor = BaseStashQueue.init_executor(repo.experiments, entry, TempDirExecutor,
                                                wdir=queue._standalone_tmp_dir)
        infofile = queue.get_infofile_path(entry.stash_rev)
        executor.info.dump_json(infofile)
        # init_executor also writes the executor's info where DVC's queue workers keep theirs
        leftover = repo.experiments.celery_queue.get_infofile_path(entry.stash_rev)
        tmp = Path(executor.root_dir)
        placed = uncached_inputs(repo, needed)
        for rel, copy in placed:
            _put(Path(root) / rel, tmp / rel, link=not copy)
    return {"infofile": infofile, "leftover": leftover, "tmp_dir": str(tmp), "stash_rev": entry.stash_rev,
            "placed": [p for p, _ in placed], "setup_seconds": round(time.perf_counter() - t0, 2)}


def execute_experiment(root: str, infofile: str, env: dict[str, str]) -> dict[str, Any]:
    """Step 2: `dvc exp exec-run` in its own process; returns the stages it ran and skipped, and its log."""
    dvc = Path(sys.executable).parent / "dvc"
    cmd = [str(dvc) if dvc.exists() else "dvc", "exp", "exec-run", "--infofile", infofile]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ran, skipped, lines = [], [], []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        if m := RAN.match(line):
            ran.append(m.group(1))
            print(line)
        elif m := SKIPPED.match(line):
            skipped.append(m.group(1))
            print(line)
        elif line.startswith(("ERROR", "error:", "Traceback")):
            print(line)
    code = proc.wait()
    return {"returncode": code, "ran": ran, "skipped": skipped, "log": lines,
            "seconds": round(time.perf_counter() - t0, 2)}


def collect_experiment(root: str, infofile: str, leftovers: tuple[str, ...] = ()) -> str | None:
    """Step 3: bring the experiment's ref into the workspace's repository; remove the temp workspace.
    Returns the experiment's commit, None when it failed."""
    from dvc.repo import Repo
    from dvc.repo.experiments.executor.base import ExecutorInfo
    from dvc.repo.experiments.executor.local import TempDirExecutor
    from dvc.repo.experiments.queue.base import BaseStashQueue

    info = ExecutorInfo.load_json(infofile)
    executor = TempDirExecutor.from_info(info)
    try:
        result = info.result
        if result is None or not result.exp_hash or result.ref_info is None:
            return None
        with Repo(root) as repo:
            revs = BaseStashQueue.collect_executor(repo.experiments, executor, result)
        return next(iter(revs), None)
    finally:
        executor.cleanup(infofile)
        for f in (infofile, *leftovers):   # the experiment's own info folders (named by its stash commit)
            shutil.rmtree(Path(f).parent, ignore_errors=True)


def experiment_env(root: str, tracking: str | None) -> dict[str, str]:
    """The environment of the experiment's process: the workspace's MLflow store, runs tagged prefect,
    and no AVMATCH_ROOT (a stage must find its project in the temporary workspace it runs in)."""
    env = dict(os.environ)
    env.pop("AVMATCH_ROOT", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["AVMATCH_ORCHESTRATOR"] = "prefect"
    if tracking:
        env["MLFLOW_TRACKING_URI"] = tracking
    return env


def stage_summaries(tracking: str | None, experiment: str, mlflow_experiment: str) -> dict[str, dict]:
    """Per stage that ran in the experiment, the metrics its MLflow run logged (its summary)."""
    if not tracking:
        return {}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(mlflow_experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], f"tags.dvc_experiment = '{experiment}'")
    return {r.data.tags.get("dvc_stage", ""): dict(r.data.metrics) for r in runs}


@task(name="dvc experiment", task_run_name="dvc exp {name}", log_prints=True)
def experiment_task(pipeline: str, overrides: dict[str, Any], stages: list[str] | None, root: str, name: str,
                    tracking: str | None, mlflow_experiment: str | None) -> dict[str, dict]:
    """One DVC experiment: set up (serialised), run, collect. Returns per stage of the pipeline whether it
    ran in the experiment (else DVC restored it) and, for those that ran, their MLflow summaries."""
    graph = stage_graph(pipeline, root)
    prefix = f"{pipeline}_"
    mine = [s for s in graph if s.startswith(prefix)]
    targets = [f"{prefix}{s}" for s in stages] if stages else mine
    unknown = sorted(set(targets) - set(mine))
    if unknown:
        raise ValueError(f"unknown {pipeline} stage(s) {[u[len(prefix):] for u in unknown]}; "
                         f"known: {[m[len(prefix):] for m in mine]}")
    t0 = time.perf_counter()
    setup = prepare_experiment(root, targets, overrides, name, list(graph))
    print(f"experiment {name}: temporary workspace {setup['tmp_dir']} ready in {setup['setup_seconds']} s "
          f"({len(setup['placed'])} uncached paths linked or copied)")
    try:
        run = execute_experiment(root, setup["infofile"], experiment_env(root, tracking))
    finally:
        rev = collect_experiment(root, setup["infofile"], (setup["leftover"],))
    if run["returncode"] != 0 or rev is None:
        tail = "\n".join(run["log"][-40:])
        raise RuntimeError(f"DVC experiment {name} failed (exit {run['returncode']}):\n{tail}")
    summaries = stage_summaries(tracking, name, mlflow_experiment) if mlflow_experiment else {}
    wall = round(time.perf_counter() - t0, 2)
    results: dict[str, dict] = {}
    for stage in graph:
        short = stage[len(prefix):] if stage.startswith(prefix) else stage
        if stage in run["ran"] or stage in run["skipped"]:
            results[short] = {**summaries.get(stage, {}), "ran": stage in run["ran"], "experiment": name,
                              "exp_rev": rev}
    print(f"experiment {name} ({rev[:7]}): ran {run['ran'] or 'nothing'}; restored {run['skipped']}; {wall} s")
    return results
