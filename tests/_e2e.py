"""Helpers of the end-to-end tests: a temporary git+DVC copy of the project, commands run in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env(repo: Path) -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}:{e['PATH']}"
    e.pop("MLFLOW_TRACKING_URI", None)
    e.pop("AVMATCH_ROOT", None)
    e["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    e["MPLBACKEND"] = "Agg"
    return e


def run(cmd: list[str], repo: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=repo, env=env(repo), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}")
    return p


def set_param(params: dict, dotted: str, value) -> None:
    node = params
    *head, last = dotted.split(".")
    for k in head:
        node = node[k]
    node[last] = value


def project_copy(repo: Path, overrides: dict) -> Path:
    """Copy the project's tracked and untracked-not-ignored files (no data or outputs) to `repo`, apply
    parameter overrides, make it a git repository with one commit."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file() and not f.startswith(("data/", "models/", "metrics/", "plots/", "results/")):
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / f)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for k, v in overrides.items():
        set_param(params, k, v)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=repo, check=True)
    return repo
