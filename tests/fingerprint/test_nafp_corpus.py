"""Importing the NAFP dataset: a small fake dataset in the real NAFP layout, made of real audio (the tiny
demo corpus's FluidSynth renderings and noise, re-written as 8 kHz 16-bit wav), imported as a corpus.

One tiny demo build (~15 s) and two imports (~2 s each) per module.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avmatch.core import music21_render
from avmatch.core.audio import decode_audio
from avmatch.core.config import ConfigError, validate_params
from avmatch.core.manifest import item_id_for
from avmatch.fingerprint import degrade
from avmatch.fingerprint.corpus import (
    GT_COLUMNS,
    build_fingerprint_corpus,
    read_ground_truth,
)
from avmatch.fingerprint.nafp import NafpLayoutError, import_nafp_corpus
from avmatch.fingerprint.params import FpCorpusParams

SR = 8000
SEED = 5


def _require_renderer() -> None:
    try:
        music21_render.find_fluidsynth()
        music21_render.find_soundfont()
    except music21_render.RenderError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


def _wav8k(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, decode_audio(src, SR), SR, subtype="PCM_16", format="WAV")


def _params(ds: Path, **kw) -> FpCorpusParams:
    return FpCorpusParams(size="tiny", seed=SEED, queries_per_length=4, source="nafp", dataset_root=str(ds), **kw)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """neural-audio-fp-dataset/ with 8 test-db tracks (the same file names in two sub-folders), 6 training
    tracks, 2 dummy tracks, background noise tr/ts and a pre-made query folder that must be ignored."""
    _require_renderer()
    base = tmp_path_factory.mktemp("nafp")
    demo = base / "demo"
    build_fingerprint_corpus(FpCorpusParams(size="tiny", seed=SEED, queries_per_length=1,
                                            degradations=["clean"], oov_fraction=0.0), demo)
    ds = base / "neural-audio-fp-dataset"
    refs = sorted((demo / "refs").iterdir())
    train = sorted((demo / "train").iterdir())
    assert len(refs) == 8 and len(train) == 6
    for i, f in enumerate(refs):  # db/000/000001.wav ... and db/001/000001.wav ...: same names, other folder
        _wav8k(f, ds / "music/test-query-db-500-30s/db" / f"{i % 2:03d}" / f"{100 + i // 2:06d}.wav")
    for i, f in enumerate(train):
        _wav8k(f, ds / "music/train-10k-30s" / f"{i % 3:03d}" / f"{200 + i:06d}.wav")
    for i, f in enumerate(train[:2]):
        _wav8k(f, ds / "music/test-dummy-db-100k-full/fma_full/000" / f"{300 + i:06d}.wav")
    _wav8k(refs[0], ds / "music/test-query-db-500-30s/query/000/000100.wav")
    for split in ("train", "test"):
        for f in sorted((demo / "noise" / split).iterdir()):
            _wav8k(f, ds / "aug/bg" / ("tr" if split == "train" else "ts") / "sub" / f"{f.stem}.wav")
    return ds


@pytest.fixture(scope="module")
def corpus(dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("out") / "corpus"
    summary = import_nafp_corpus(dataset, root, _params(dataset), max_dummy_refs=1)
    return root, summary


def test_layout_links_and_ids(dataset, corpus):
    root, summary = corpus
    for d in ("refs", "train", "noise/train", "noise/test", "queries"):
        assert (root / d).is_dir(), d
    assert not root.with_name(root.name + ".tmp").exists()
    assert json.loads((root / "corpus.json").read_text()) == summary
    refs = sorted(p.name for p in (root / "refs").iterdir())
    assert len(refs) == 9 and summary["n_refs"] == 9 and summary["n_refs_dummy"] == 1  # 8 + max_dummy_refs
    assert "000_000100.wav" in refs and "001_000100.wav" in refs  # sub-folders keep same-named files apart
    assert "dummy_fma_full_000_000300.wav" in refs
    assert summary["n_train"] == 4 and summary["n_train_held_out"] == 2  # tiny: 2 held out for OOV queries
    train = {p.name for p in (root / "train").iterdir()}
    held = {Path(s).relative_to("music/train-10k-30s") for s in summary["oov_sources"]}
    assert len(held) == 2 and not {"_".join(h.with_suffix(".wav").parts) for h in held} & train
    assert summary["n_noise_train"] == len(list((dataset / "aug/bg/tr").rglob("*.wav"))) >= 1
    assert summary["n_noise_test"] == len(list((dataset / "aug/bg/ts").rglob("*.wav"))) >= 1
    # linked, not copied (same filesystem), and the pipeline's manifest gives the ids the ground truth uses
    src = dataset / "music/test-query-db-500-30s/db/001/000100.wav"
    assert os.path.samefile(src, root / "refs/001_000100.wav")
    assert summary["linked"] == {"hardlink": 9 + 4 + summary["n_noise_train"] + summary["n_noise_test"], "copy": 0}
    assert item_id_for(root / "refs/001_000100.wav", root) == "refs/001_000100"
    with open(root / "tracks.csv", newline="") as fh:
        tracks = {t["id"]: t for t in csv.DictReader(fh)}
    assert tracks["refs/001_000100"]["original"] == "music/test-query-db-500-30s/db/001/000100.wav"


def test_ground_truth_points_at_real_files_and_offsets_fit(corpus):
    root, summary = corpus
    with open(root / "ground_truth.csv", newline="") as fh:
        assert next(csv.reader(fh)) == GT_COLUMNS
    rows = read_ground_truth(root)
    in_db = [r for r in rows if r["in_db"]]
    assert len(in_db) == 20 and summary["n_queries_oov"] == len(rows) - 20 >= 1  # 4 per length x 5 lengths
    per_degradation = Counter(r["degradation"] for r in in_db)    # 20 queries over 7 degradations: 2 to 4 each
    assert sum(per_degradation.values()) == 20 and max(per_degradation.values()) - min(per_degradation.values()) <= 2
    durations: dict[str, float] = {}
    for r in rows:
        q = root / r["query_path"]
        assert q.is_file() and r["query_path"].startswith("queries/")
        assert abs(len(decode_audio(q, SR)) / SR - r["length_s"]) <= 0.05
        if r["in_db"]:
            assert (root / r["ref_path"]).is_file() and Path(r["ref_path"]).with_suffix("").as_posix() == r["ref_id"]
            assert not Path(r["ref_path"]).name.startswith("dummy_"), "queries come from the test db only"
            if r["ref_path"] not in durations:
                durations[r["ref_path"]] = len(decode_audio(root / r["ref_path"], SR)) / SR
            assert 0 <= r["offset_s"] and r["offset_s"] + r["length_s"] <= durations[r["ref_path"]] + 1e-3
        else:
            assert r["ref_id"] == "" and r["offset_s"] is None
    params = {r["query_id"]: json.loads(r["params"]) for r in csv.DictReader(open(root / "query_params.csv"))}
    for r in rows:
        p = params[r["query_id"]]
        if r["degradation"] == "noise":
            assert p["noise"].startswith("noise/test/")
        if not r["in_db"]:
            assert p["oov_source"].startswith("music/train-10k-30s/")


def test_clean_queries_sit_at_their_offset(corpus):
    from scipy import signal

    root, _ = corpus
    checked = 0
    for r in read_ground_truth(root):
        if not r["in_db"] or r["degradation"] != "clean":
            continue
        q = decode_audio(root / r["query_path"], SR).astype(np.float64)
        x = decode_audio(root / r["ref_path"], SR).astype(np.float64)
        a = int(round(r["offset_s"] * SR))
        lo, hi = max(0, a - SR // 2), min(len(x), a + len(q) + SR // 2)
        seg = x[lo:hi]
        num = signal.correlate(seg, q, mode="valid", method="fft")
        c = np.concatenate([[0.0], np.cumsum(seg**2)])
        ncc = num / (np.sqrt((c[len(q):] - c[:len(c) - len(q)]) * np.sum(q**2)) + 1e-12)
        k = int(np.argmax(ncc))
        assert k + lo - a == 0 and ncc[k] > 0.99, (r["query_id"], k + lo - a, ncc[k])
        assert degrade.rms(q) > 1e-3
        checked += 1
    assert checked == 4


def test_reimport_is_identical(dataset, corpus, tmp_path):
    root, _ = corpus
    again = tmp_path / "again"
    import_nafp_corpus(dataset, again, _params(dataset), max_dummy_refs=1)
    assert (again / "ground_truth.csv").read_bytes() == (root / "ground_truth.csv").read_bytes()
    assert (again / "query_params.csv").read_bytes() == (root / "query_params.csv").read_bytes()


def test_bad_layout_names_the_missing_folder(dataset, tmp_path):
    import shutil

    (tmp_path / "empty").mkdir()
    with pytest.raises(NafpLayoutError, match=r"music/test-query-db-500-30s/db is missing.*expected the layout"):
        import_nafp_corpus(tmp_path / "empty", tmp_path / "out", _params(tmp_path / "empty"))
    partial = tmp_path / "partial"
    shutil.copytree(dataset / "music/test-query-db-500-30s/db", partial / "music/test-query-db-500-30s/db")
    with pytest.raises(NafpLayoutError, match=r"aug/bg/ts is missing: it should hold test background noise"):
        import_nafp_corpus(partial, tmp_path / "out", _params(partial))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_nafp_source_needs_dataset_root():
    with pytest.raises(ConfigError, match=r"fingerprint\.corpus\.dataset_root"):
        validate_params({"fingerprint": {"corpus": {"source": "nafp"}}})
    ok = validate_params({"fingerprint": {"corpus": {"source": "nafp", "dataset_root": "/data/nafp"}}})
    assert ok.fingerprint.corpus.max_dummy_refs == 0
