"""A VSC22-layout dataset outside the project: the corpus stage writes its listing as the stage's output, so
DVC (and the Prefect flow, which runs DVC) records it and re-runs ingest when the dataset changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from avmatch.core.config import validate_params
from avmatch.core.tracking import StageTracker
from avmatch.core.video import encode_video
from pipelines.copydetect.corpus import DATASET_LISTING, corpus
from pipelines.copydetect.paths import CopydetectPaths


def _video(path: Path, shift: int) -> None:
    frame = skdata.astronaut()[::4, ::4]  # a real photo, 128 x 128
    encode_video(path, (np.roll(frame, shift + 4 * k, axis=1) for k in range(4)), fps=2.0)


def _dataset(root: Path) -> Path:
    for folder, stem, shift in (("query", "Q100001", 0), ("reference", "R100001", 8), ("reference", "R100002", 30)):
        _video(root / folder / f"{stem}.mp4", shift)
    (root / "gt.csv").write_text("query_id,ref_id,query_start,query_end,ref_start,ref_end\n"
                                 "Q100001,R100001,0.0,2.0,0.0,2.0\n")
    return root


def _run(project: Path, dataset: Path) -> dict:
    params = validate_params({"copydetect": {"corpus": {"source": "vsc22", "root": str(dataset), "query_dir": "query",
                                                        "ref_dir": "reference", "ground_truth": "gt.csv"}}},
                             systems=["copydetect"])
    summary = corpus(params, CopydetectPaths.from_params(params, project), StageTracker(None))
    return summary | json.loads((project / "data/copydetect/corpus" / DATASET_LISTING).read_text())


def test_external_dataset_listing_is_the_stage_output_and_follows_the_dataset(tmp_path):
    dataset = _dataset(tmp_path / "vsc")
    project = tmp_path / "project"
    first = _run(project, dataset)
    assert (first["queries"], first["refs"], first["noise"]) == (1, 2, 0)
    assert [f[0] for f in first["sets"]["refs"]] == ["R100001.mp4", "R100002.mp4"]
    assert first["root"] == str(dataset) and not (dataset / DATASET_LISTING).exists()
    assert _run(project, dataset)["sets"] == first["sets"]          # unchanged dataset: the same listing

    _video(dataset / "reference/R100002.mp4", 60)                   # a replaced reference
    os.utime(dataset / "reference/R100002.mp4", ns=(1, 1))
    assert _run(project, dataset)["sets"]["refs"] != first["sets"]["refs"]
    (dataset / "gt.csv").write_text((dataset / "gt.csv").read_text() + "Q100001,R100002,0.0,1.0,0.0,1.0\n")
    assert _run(project, dataset)["ground_truth_hash"] != first["ground_truth_hash"]


def test_incomplete_external_dataset_names_what_is_missing(tmp_path):
    dataset = _dataset(tmp_path / "vsc")
    (dataset / "gt.csv").unlink()
    with pytest.raises(FileNotFoundError, match="gt.csv"):
        _run(tmp_path / "project", dataset)
