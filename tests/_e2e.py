"""Helpers shared by the end-to-end test modules: a temporary git+DVC copy of this project with
parameter overrides, and subprocess runners with a clean environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(repo: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("AVMATCH_ROOT", None)
    env.pop("AVMATCH_ORCHESTRATOR", None)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["MPLBACKEND"] = "Agg"
    return env


def _run(cmd: list[str], repo: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}")
    return p


def _set(params: dict, dotted: str, value) -> None:
    node = params
    *head, last = dotted.split(".")
    for k in head:
        node = node[k]
    node[last] = value


def make_repo(repo: Path, overrides: dict) -> Path:
    """Copy the project's tracked and new files (no data or results) into `repo`, apply the params
    overrides and make it a git repository with one commit."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file() and not f.startswith(("data/", "models/", "metrics/", "plots/", "results/")):
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / f)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for k, v in overrides.items():
        _set(params, k, v)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=repo, check=True)
    return repo
