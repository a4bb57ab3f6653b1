"""The copy-detection encoder the package ships: `copydetect add` finds it from any folder, but never
in place of the project `$AVMATCH_ROOT` names or of `--model`; the real shipped files are the ones their
lineage names (how `pipelines.ship` checks a run is tested in tests/fingerprint/test_shipped_encoder.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import avmatch.core.model_lookup as model_lookup
from avmatch.copydetect.db_build import ENCODER_REL, locate_default_encoder

SHIPPED = model_lookup.SHIPPED_ROOT / "copydetect"


def _project(root: Path, content: bytes) -> Path:
    (root / ENCODER_REL).parent.mkdir(parents=True)
    (root / "params.yaml").write_text("copydetect: {}\n")
    (root / ENCODER_REL).write_bytes(content)
    return root


def test_the_shipped_encoder_is_the_default_unless_a_project_or_model_is_named(tmp_path, monkeypatch):
    shipped = _project(tmp_path / "shipped" / "copydetect", b"shipped")
    named = _project(tmp_path / "named", b"named")
    around = _project(tmp_path / "around", b"around")     # a project around the working directory
    monkeypatch.setattr(model_lookup, "SHIPPED_ROOT", tmp_path / "shipped")
    monkeypatch.chdir(around)
    monkeypatch.delenv("AVMATCH_ROOT", raising=False)
    assert locate_default_encoder() == shipped / ENCODER_REL
    monkeypatch.setenv("AVMATCH_ROOT", str(named))
    assert locate_default_encoder().resolve() == (named / ENCODER_REL).resolve()
    assert locate_default_encoder(Path("models/copydetect/encoder.pt")) == (around / ENCODER_REL).resolve()
    # nothing shipped: the project around the working directory, as before
    monkeypatch.delenv("AVMATCH_ROOT")
    monkeypatch.setattr(model_lookup, "SHIPPED_ROOT", tmp_path / "nothing_shipped")
    assert locate_default_encoder().resolve() == (around / ENCODER_REL).resolve()


@pytest.mark.skipif(not (SHIPPED / "lineage.json").exists(), reason="no copy-detection encoder shipped")
def test_the_shipped_copydetect_encoder_is_intact_and_found(tmp_path, monkeypatch):
    from avmatch.copydetect.model import load_frame_encoder
    from avmatch.core.config import load_params

    lineage = json.loads((SHIPPED / "lineage.json").read_text())
    assert hashlib.md5((SHIPPED / lineage["encoder"]).read_bytes()).hexdigest() == lineage["encoder_md5"]
    assert lineage["dvc_lock"]["copydetect_train"]["outs"] and lineage["mlflow_registry"]
    load_params(SHIPPED / "params.yaml")
    load_frame_encoder(SHIPPED / lineage["encoder"], "cpu")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AVMATCH_ROOT", raising=False)
    assert locate_default_encoder() == SHIPPED / ENCODER_REL
    # a new database with the shipped encoder can be built with the shipped descriptor: a whitened one needs its
    # fit shipped beside the encoder (a descriptor section older than the options describes the plain one)
    from avmatch.copydetect.db_build import _project_settings, whitening_for
    from avmatch.copydetect.descriptor import DescriptorSpec

    whitening_for(SHIPPED / ENCODER_REL, DescriptorSpec.from_record(_project_settings(SHIPPED)["descriptor"]))


def _locked_run(root: Path, extract_read: str) -> Path:
    """A project whose dvc.lock says: train made the encoder folder, extract read `extract_read` (an md5 of
    that folder) and made descriptors, evaluate read the descriptors (not the encoder) and made the metrics."""
    import subprocess

    import yaml

    _project(root, b"weights")
    (root / "metrics").mkdir()
    (root / "metrics/copydetect.json").write_text(json.dumps({"descriptor_uap": 0.5}))
    enc = hashlib.md5((root / ENCODER_REL).read_bytes()).hexdigest()
    met = hashlib.md5((root / "metrics/copydetect.json").read_bytes()).hexdigest()
    lock = {"schema": "2.0", "stages": {
        "copydetect_train": {"outs": [{"path": ENCODER_REL.as_posix(), "md5": enc}]},
        "copydetect_extract": {"deps": [{"path": ENCODER_REL.as_posix(), "md5": extract_read}],
                               "outs": [{"path": "data/copydetect/descriptors", "md5": "d1.dir"}]},
        "copydetect_evaluate": {"deps": [{"path": "data/copydetect/descriptors", "md5": "d1.dir"}],
                                "outs": [{"path": "metrics/copydetect.json", "md5": met}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "run"]):
        subprocess.run(["git", "-C", str(root), *cmd], check=True)
    return root


def test_ship_follows_the_lock_from_the_evaluation_back_to_the_encoder(tmp_path):
    """Copy detection's evaluate stage reads the descriptors extract made with the encoder: shipping accepts
    that chain, and refuses it when extract read another encoder than the one shipped."""
    from pipelines.ship import ShipError, ship

    good = _locked_run(tmp_path / "good", hashlib.md5(b"weights").hexdigest())
    fit = good / "data/copydetect/descriptors/whitening.npz"     # the extract stage's whitening, shipped with it
    fit.parent.mkdir(parents=True)
    fit.write_bytes(b"fit")
    dest = ship("copydetect", good, None, tmp_path / "shipped")
    assert (dest / ENCODER_REL).read_bytes() == b"weights"
    assert (dest / "data/copydetect/descriptors/whitening.npz").read_bytes() == b"fit"
    assert json.loads((dest / "lineage.json").read_text())["extra_files"] == {
        "data/copydetect/descriptors/whitening.npz": hashlib.md5(b"fit").hexdigest()}
    assert json.loads((dest / "lineage.json").read_text())["dvc_lock"]["copydetect_evaluate"]
    stale = _locked_run(tmp_path / "stale", hashlib.md5(b"older weights").hexdigest())
    with pytest.raises(ShipError, match="did not evaluate this encoder"):
        ship("copydetect", stale, None, tmp_path / "shipped2")
    assert not (tmp_path / "shipped2").exists()
