from pathlib import Path

import pytest
import yaml

from avmatch.core.config import (
    ConfigError,
    apply_overrides,
    load_params,
    validate_params,
)

ROOT = Path(__file__).resolve().parents[2]


def test_project_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.fingerprint.audio.sample_rate == 8000
    assert params.fingerprint.audio.segment_s == 1.0 and params.fingerprint.audio.hop_s == 0.5


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"fingerprint": {"train": {"batch_sise": 64}}}))
    with pytest.raises(ConfigError) as err:
        load_params(p)
    assert "fingerprint.train.batch_sise" in str(err.value)
    assert "unknown key" in str(err.value)


def test_bad_value_names_key_value_and_rule():
    with pytest.raises(ConfigError) as err:
        validate_params({"fingerprint": {"index": {"type": "hnsw"}}})
    msg = str(err.value)
    assert "fingerprint.index.type" in msg and "'hnsw'" in msg and "flat" in msg and "ivfpq" in msg


def test_cross_field_rule():
    with pytest.raises(ConfigError, match="f_min"):
        validate_params({"fingerprint": {"logmel": {"f_min": 5000, "f_max": 4000}}})


def test_overrides_apply_like_dvc_set():
    raw = {"fingerprint": {"train": {"max_steps": 10}}}
    out = apply_overrides(raw, {"fingerprint.train.max_steps": 5, "common.seed": 3})
    assert raw["fingerprint"]["train"]["max_steps"] == 10
    p = validate_params(out)
    assert p.fingerprint.train.max_steps == 5 and p.common.seed == 3


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="no such parameter file"):
        load_params(tmp_path / "nope.yaml")
