"""A missing or empty noise folder turns score normalisation off loudly: a warning naming the folder,
and the status the evaluation writes to metrics/copydetect.json."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from avmatch.copydetect.noise_set import normalisation_record, normalisation_status, warn_if_off
from avmatch.core.config import validate_params
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.ingest import ingest
from pipelines.copydetect.paths import CopydetectPaths


def test_status_names_the_missing_folder_relative_to_the_project(tmp_path):
    noise = tmp_path / "data/corpus/noise"
    assert normalisation_status(0.25, noise, 0, tmp_path) == "off: noise folder data/corpus/noise missing"
    noise.mkdir(parents=True)
    assert normalisation_status(0.25, noise, 0, tmp_path) == "off: noise folder data/corpus/noise holds no usable video"
    assert normalisation_status(0.25, noise, 120, tmp_path).startswith("on: beta 0.25 with 120 noise frames")
    assert normalisation_status(0.0, noise, 120, tmp_path) == "off: copydetect.candidates.beta is 0"


def test_warning_only_when_normalisation_was_asked_for(tmp_path, caplog):
    missing = tmp_path / "nowhere"
    with caplog.at_level(logging.WARNING, logger="avmatch.copydetect.noise_set"):
        warn_if_off(0.0, missing, 0)
        assert not caplog.records
        status = warn_if_off(0.5, missing, 0)
    assert status == f"off: noise folder {missing} missing"
    assert len(caplog.records) == 1 and str(missing) in caplog.text and "OFF" in caplog.text


def test_metrics_record_says_whether_normalisation_ran_and_on_how_many_noise_videos(tmp_path, caplog):
    noise = tmp_path / "noise"
    noise.mkdir()
    on = normalisation_record(0.5, noise, 3, 90, tmp_path)
    assert on == {"score_normalisation": "on: beta 0.5 with 90 noise frames from noise", "noise_videos": 3,
                  "noise_frames": 90}
    with caplog.at_level(logging.WARNING, logger="avmatch.copydetect.noise_set"):
        off = normalisation_record(0.5, tmp_path / "gone", 0, 0, tmp_path)
    assert off["score_normalisation"] == "off: noise folder gone missing" and off["noise_videos"] == 0
    assert "gone" in caplog.text


def _paths(tmp_path: Path, **corpus) -> tuple:
    params = validate_params({"copydetect": {"corpus": {"root": str(tmp_path / "corpus"), **corpus},
                                             "candidates": {"beta": 0.25}}}, systems=["copydetect"])
    return params, CopydetectPaths.from_params(params, tmp_path)


def test_ingest_warns_about_a_missing_noise_folder_and_fails_on_a_missing_reference_folder(tmp_path, caplog):
    (tmp_path / "corpus/query").mkdir(parents=True)
    (tmp_path / "corpus/reference").mkdir()
    params, paths = _paths(tmp_path, noise_dir="no_such_noise")
    with caplog.at_level(logging.WARNING, logger="avmatch.copydetect.noise_set"):
        summary = ingest(params, paths, StageTracker(None))
    assert summary["noise_files"] == 0
    assert "corpus/no_such_noise missing" in caplog.text and "OFF" in caplog.text
    params, paths = _paths(tmp_path, ref_dir="no_such_refs")
    with pytest.raises(FileNotFoundError, match="no_such_refs"):
        ingest(params, paths, StageTracker(None))
