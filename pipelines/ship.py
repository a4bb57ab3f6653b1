"""Ship a pipeline run's encoder with the package, as the default that user commands load.

    python -m pipelines.ship fingerprint --from /path/to/project --experiment fingerprint-large

Why a separate step: the encoder a user gets may need a longer training than a 2-core `make demo`
affords (the `large` configuration, run as a DVC experiment). Shipping copies that run's encoder, the
evaluation that chose its thresholds and the params it was trained with into
`src/avmatch/shipped/<system>/` (laid out as a small project, so the lookup that finds a project's
encoder finds it too), and writes lineage.json: the DVC experiment and its commit, the train and
evaluate stages' dvc.lock records, and the MLflow registry version of that very file. Nothing is
shipped unless dvc.lock says the pipeline produced these exact files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from avmatch.core.config import ConfigError, load_params, read_yaml
from avmatch.core.model_lookup import SHIPPED_ROOT
from avmatch.core.tracking import dvc_lock_entry, dvc_lock_records_file, model_name, tracking_uri
from pipelines.registry import pipeline_spec

ROOT = Path(__file__).resolve().parents[1]


class ShipError(RuntimeError):
    """The run cannot be shipped; the message says which check failed."""


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def _experiment(root: Path, name: str) -> dict:
    """The DVC experiment `name` of the project at `root`: its git ref, commit and baseline commit."""
    refs = [line.split() for line in _git(root, "for-each-ref", "--format=%(refname) %(objectname)",
                                          "refs/exps").splitlines() if line.strip()]
    hits = [(ref, sha) for ref, sha in refs if ref.rsplit("/", 1)[-1] == name]
    if not hits:
        raise ShipError(f"{root}: no DVC experiment named {name!r} (`dvc exp list` shows the names)")
    ref, sha = hits[-1]
    return {"name": name, "ref": ref, "commit": sha, "baseline_commit": _git(root, "rev-parse", f"{sha}^")}


def _registry_version(root: Path, system: str, file_md5: str) -> dict | None:
    """The newest MLflow registry version of `system`'s encoder whose file is `file_md5`."""
    from mlflow.tracking import MlflowClient

    params = load_params(root / "params.yaml")
    name = model_name(params.common, system)
    uri = tracking_uri(params.common, root)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return None   # no store: nothing was registered (and opening one would create it)
    client = MlflowClient(uri)
    try:
        versions = [v for v in client.search_model_versions(f"name='{name}'") if v.tags.get("file_md5") == file_md5]
    except Exception:   # a store without a registry table: nothing was registered
        return None
    if not versions:
        return None
    v = max(versions, key=lambda v: int(v.version))
    return {"name": name, "version": str(v.version), "run_id": v.run_id, "source": v.source,
            "tracking_uri": uri, "tags": dict(v.tags)}


def _reads_upstream(source: Path, entry: dict, held: set) -> bool:
    """Whether the dvc.lock record `entry` read one of `held` ((path, md5) outs), itself or through the
    outs of the locked stages it depends on: copy detection evaluates the descriptors its extract stage
    made with the encoder, not the encoder file."""
    stages = ((read_yaml((source / "dvc.lock").read_text()) or {}).get("stages") or {}).values()
    made_by = {(o.get("path"), o.get("md5")): st for st in stages for o in st.get("outs", [])}
    todo, seen = [entry], set()
    while todo:
        deps = {(d.get("path"), d.get("md5")) for d in todo.pop().get("deps", [])}
        if deps & held:
            return True
        for dep in deps - seen:
            seen.add(dep)
            if dep in made_by:
                todo.append(made_by[dep])
    return False


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def ship(system: str, source: Path, experiment: str | None, dest_root: Path = SHIPPED_ROOT, note: str = "") -> Path:
    """Copy `source`'s encoder, metrics and params to `dest_root/system` with its lineage; the folder."""
    spec = pipeline_spec(system)
    params = load_params(source / "params.yaml")
    paths = spec.paths(params, source)
    encoder = Path(getattr(paths, spec.model_attr))
    metrics = source / "metrics" / f"{system}.json"
    for f in (encoder, metrics):
        if not f.exists():
            raise ShipError(f"{f}: missing (run the pipeline there first)")
    train = dvc_lock_entry(source, f"{system}_{spec.train_stage}")
    evaluate = dvc_lock_entry(source, f"{system}_{spec.register_after}")
    if train is None or evaluate is None:
        raise ShipError(f"{source}/dvc.lock has no {system}_{spec.train_stage} / {system}_{spec.register_after} "
                        "record: ship what `dvc repro` or `dvc exp run` produced")
    enc_md5 = _md5(encoder)
    if not dvc_lock_records_file(source, train, encoder, enc_md5):
        raise ShipError(f"{encoder} is not the file dvc.lock records for {system}_{spec.train_stage} "
                        "(changed since the run?)")
    rel_enc = encoder.resolve().relative_to(source.resolve()).as_posix()
    # the train stage's out that holds the encoder (the file, or its folder), as the evaluation read it
    held = {(o.get("path"), o.get("md5")) for o in train.get("outs", [])
            if o.get("path") == rel_enc or rel_enc.startswith(str(o.get("path", "")).rstrip("/") + "/")}
    if not held or not _reads_upstream(source, evaluate, held):
        raise ShipError(f"{system}_{spec.register_after} in dvc.lock did not evaluate this encoder")
    if not dvc_lock_records_file(source, evaluate, metrics, _md5(metrics)):
        raise ShipError(f"{metrics} is not the file dvc.lock records for {system}_{spec.register_after}")
    exp = _experiment(source, experiment) if experiment else None
    registry = _registry_version(source, system, enc_md5)

    dest = dest_root / system
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / encoder.parent.relative_to(source)).mkdir(parents=True)
    (tmp / "metrics").mkdir()
    shutil.copy2(encoder, tmp / rel_enc)
    shutil.copy2(metrics, tmp / "metrics" / metrics.name)
    shutil.copy2(source / "params.yaml", tmp / "params.yaml")
    # what a user database needs beside the encoder: copy detection's whitening when its descriptor is whitened
    extras = {}
    for f in (getattr(paths, "whitening", None),):
        if f is not None and Path(f).exists():
            rel = Path(f).resolve().relative_to(source.resolve()).as_posix()
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, tmp / rel)
            extras[rel] = _md5(Path(f))
    lineage = {
        "system": system, "encoder": rel_enc, "encoder_md5": enc_md5, "metrics": f"metrics/{metrics.name}",
        "shipped_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dvc_experiment": exp, "git_commit": exp["commit"] if exp else _git(source, "rev-parse", "HEAD"),
        "dvc_lock": {f"{system}_{spec.train_stage}": train, f"{system}_{spec.register_after}": evaluate},
        "mlflow_registry": registry,
        "extra_files": extras,
        # the train stage's own summary (steps, and resumed_from_step when it resumed a checkpoint)
        "train_metrics": _read_json(source / "metrics" / f"{system}_{spec.train_stage}.json"),
        "note": note,
        "reproduce": (f"git checkout {exp['baseline_commit']} && dvc exp apply {exp['name']} "
                      f"(or dvc exp run with the params in params.yaml) && dvc repro {system}_{spec.register_after}"
                      if exp else f"git checkout <git_commit> && dvc repro {system}_{spec.register_after}"),
    }
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=1, default=str) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("system", help="pipeline whose encoder to ship (fingerprint, copydetect)")
    ap.add_argument("--from", dest="source", type=Path, default=ROOT, help="project that ran it (default: this one)")
    ap.add_argument("--experiment", help="the DVC experiment that produced it (recorded in lineage.json)")
    ap.add_argument("--note", default="", help="anything a reader of lineage.json should know about the run")
    args = ap.parse_args(argv)
    try:
        dest = ship(args.system, args.source.resolve(), args.experiment, note=args.note)
    except (ShipError, ConfigError, KeyError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"shipped {args.system} encoder to {dest} (lineage: {dest / 'lineage.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
