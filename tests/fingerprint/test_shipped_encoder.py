"""The encoder the package ships: what `pipelines.ship` accepts, and that commands find it by default.

A shipped encoder is only worth its lineage: the ship step must refuse files that dvc.lock does not
record, and the lookup must prefer it to a project nobody named, but not to the project `$AVMATCH_ROOT`
names or to `--model`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import save_tiny_fingerprint_encoder

import avmatch.core.model_lookup as model_lookup
from avmatch.fingerprint.encoder_lookup import ENCODER_REL, locate_encoder
from pipelines.ship import ShipError, ship

SHIPPED = model_lookup.SHIPPED_ROOT / "fingerprint"


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def _project(root: Path, threshold: float) -> Path:
    """A project whose dvc.lock records its encoder and its evaluation, in git with a DVC experiment ref."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text("fingerprint:\n  search: {score: margin}\n  index: {type: flat}\n")
    (root / "metrics").mkdir()
    save_tiny_fingerprint_encoder(root / ENCODER_REL, seed=3)
    (root / "metrics/fingerprint.json").write_text(json.dumps({"threshold": threshold}))
    enc, met = _md5(root / ENCODER_REL), _md5(root / "metrics/fingerprint.json")
    lock = {"schema": "2.0", "stages": {
        "fingerprint_train": {"cmd": "python -m pipelines fingerprint.train",
                              "outs": [{"path": ENCODER_REL.as_posix(), "md5": enc}]},
        "fingerprint_evaluate": {"cmd": "python -m pipelines fingerprint.evaluate",
                                 "deps": [{"path": ENCODER_REL.as_posix(), "md5": enc}],
                                 "outs": [{"path": "metrics/fingerprint.json", "md5": met}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "run"]):
        subprocess.run(["git", "-C", str(root), *cmd], check=True)
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q",
                    "--allow-empty", "-m", "exp"], check=True)
    exp = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "-C", str(root), "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/fp-large", exp], check=True)
    return root


def test_ship_copies_the_run_with_its_lineage(tmp_path):
    src = _project(tmp_path / "proj", 0.3)
    dest = ship("fingerprint", src, "fp-large", tmp_path / "shipped")
    lineage = json.loads((dest / "lineage.json").read_text())
    assert lineage["encoder_md5"] == _md5(dest / ENCODER_REL) == _md5(src / ENCODER_REL)
    assert lineage["dvc_experiment"]["name"] == "fp-large"
    assert lineage["dvc_experiment"]["ref"].endswith("/fp-large")
    assert lineage["dvc_lock"]["fingerprint_train"]["outs"][0]["md5"] == lineage["encoder_md5"]
    assert json.loads((dest / "metrics/fingerprint.json").read_text())["threshold"] == 0.3
    assert (dest / "params.yaml").read_text() == (src / "params.yaml").read_text()


def test_ship_refuses_what_dvc_lock_does_not_record(tmp_path):
    src = _project(tmp_path / "proj", 0.3)
    save_tiny_fingerprint_encoder(src / ENCODER_REL, seed=4)   # changed after the run
    with pytest.raises(ShipError, match="not the file dvc.lock records"):
        ship("fingerprint", src, None, tmp_path / "shipped")
    assert not (tmp_path / "shipped").exists()
    src2 = _project(tmp_path / "proj2", 0.3)
    with pytest.raises(ShipError, match="no DVC experiment named"):
        ship("fingerprint", src2, "nope", tmp_path / "shipped")


def test_the_shipped_encoder_is_the_default_unless_a_project_is_named(tmp_path, monkeypatch):
    src = _project(tmp_path / "proj", 0.3)
    ship("fingerprint", src, "fp-large", tmp_path / "shipped")
    monkeypatch.setattr(model_lookup, "SHIPPED_ROOT", tmp_path / "shipped")
    named = _project(tmp_path / "named", 0.2)
    save_tiny_fingerprint_encoder(named / ENCODER_REL, seed=5)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv("AVMATCH_ROOT", raising=False)
    choice = locate_encoder()
    assert choice.path == (tmp_path / "shipped/fingerprint" / ENCODER_REL).resolve()
    assert choice.thresholds.default == 0.3 and not choice.warnings
    monkeypatch.setenv("AVMATCH_ROOT", str(named))
    assert locate_encoder().path == (named / ENCODER_REL).resolve()
    assert locate_encoder(named / ENCODER_REL).thresholds.default == 0.2


@pytest.mark.skipif(not (SHIPPED / "lineage.json").exists(), reason="no encoder shipped with this checkout")
def test_the_shipped_fingerprint_encoder_is_intact_and_found(tmp_path, monkeypatch):
    """The real shipped files: the encoder is the one its lineage names, its params validate, and a
    command run outside any project (no $AVMATCH_ROOT) uses it with its evaluated thresholds."""
    from avmatch.core.config import load_params
    from avmatch.fingerprint.model import load_encoder

    lineage = json.loads((SHIPPED / "lineage.json").read_text())
    assert _md5(SHIPPED / lineage["encoder"]) == lineage["encoder_md5"]
    assert lineage["dvc_lock"]["fingerprint_train"]["outs"]
    load_params(SHIPPED / "params.yaml")
    load_encoder(SHIPPED / lineage["encoder"], "cpu")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AVMATCH_ROOT", raising=False)
    choice = locate_encoder()
    assert choice.path == (SHIPPED / ENCODER_REL).resolve()
    metrics = json.loads((SHIPPED / "metrics/fingerprint.json").read_text())
    assert choice.thresholds.default == pytest.approx(metrics["threshold"])
