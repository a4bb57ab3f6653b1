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
