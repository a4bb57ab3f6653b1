"""The fingerprint demo corpus: build the tiny size for real and check its ground truth.

One build per module (~15-20 s cold, apt downloads included), plus one rebuild into the same root
for determinism and idempotency.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from avmatch.core import debian, music21_render
from avmatch.core.audio import decode_audio
from avmatch.fingerprint import degrade
from avmatch.fingerprint.corpus import (
    GT_COLUMNS,
    QUERY_SR,
    build_fingerprint_corpus,
    read_ground_truth,
)
from avmatch.fingerprint.params import FpCorpusParams

SR = 22050
SEED = 11


def _require_renderer() -> None:
    try:
        music21_render.find_fluidsynth()
        music21_render.find_soundfont()
    except music21_render.RenderError as exc:
        if os.environ.get("CI"):
            raise  # CI must have the system packages (scripts/system-packages.txt)
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    _require_renderer()
    root = tmp_path_factory.mktemp("fp") / "corpus"
    summary = build_fingerprint_corpus(FpCorpusParams(size="tiny", seed=SEED), root)
    return root, summary


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "corpus.json"}


def _ncc_lags(q: np.ndarray, x: np.ndarray, a: int, max_lag: int) -> tuple[int, float]:
    """Normalised cross-correlation of q against x[a+lag : a+lag+len(q)] for |lag| <= max_lag: best lag and value."""
    lo, hi = max(0, a - max_lag), min(len(x), a + len(q) + max_lag)
    seg = x[lo:hi].astype(np.float64)
    ncc = _ncc_valid(seg, q)
    k = int(np.argmax(ncc))
    return k + lo - a, float(ncc[k])


def _spectrogram_corr(a: np.ndarray, b: np.ndarray, n_fft: int = 2048) -> float:
    """Correlation of the log-magnitude spectrograms of two equally long signals."""
    from scipy import signal

    _, _, sa = signal.stft(a, nperseg=n_fft)
    _, _, sb = signal.stft(b, nperseg=n_fft)
    return float(np.corrcoef(np.log1p(100 * np.abs(sa)).ravel(), np.log1p(100 * np.abs(sb)).ravel())[0, 1])


def _ncc_valid(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of q at every position inside x (FFT + running energy)."""
    from scipy import signal

    x = x.astype(np.float64)
    q = q.astype(np.float64)
    num = signal.correlate(x, q, mode="valid", method="fft")
    c = np.concatenate([[0.0], np.cumsum(x**2)])
    energy = c[len(q):] - c[: len(c) - len(q)]
    return num / (np.sqrt(np.maximum(energy, 0.0) * np.sum(q**2)) + 1e-12)


# ---------------------------------------------------------------- layout and tables
def test_layout_and_summary(tiny):
    root, summary = tiny
    for d in ("refs", "train", "noise/train", "noise/test", "queries"):
        assert (root / d).is_dir(), d
    assert not root.with_name(root.name + ".tmp").exists()
    on_disk = json.loads((root / "corpus.json").read_text())
    assert on_disk == summary
    assert summary["size"] == "tiny" and summary["seed"] == SEED
    assert summary["n_refs"] == 8 and summary["n_train"] == 6
    assert 0.05 < summary["ref_hours"] < 0.1  # 8 x ~30 s
    assert summary["n_queries_in_db"] == 40 and summary["n_queries_oov"] == 4
    assert summary["n_queries"] == 44
    assert "music21" in summary["sources"]
    assert summary["build_seconds"] < 60
    assert summary["n_noise_train"] >= 1 and summary["n_noise_test"] >= 1
    train_noise = {p.name for p in (root / "noise/train").iterdir()}
    test_noise = {p.name for p in (root / "noise/test").iterdir()}
    sonic = {n for n in train_noise | test_noise if n.startswith("sonicpi_")}
    assert not (sonic & train_noise & test_noise), "a Sonic Pi recording is in both noise splits"


def test_ground_truth_table(tiny):
    root, _ = tiny
    with open(root / "ground_truth.csv", newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == GT_COLUMNS
    rows = read_ground_truth(root)
    assert len(rows) == 44
    assert len({r["query_id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["query_path"].startswith("queries/") and not Path(r["query_path"]).is_absolute()
        assert (root / r["query_path"]).is_file()
        assert Path(r["query_path"]).with_suffix("").as_posix() == r["query_id"]
        if r["in_db"]:
            assert r["ref_path"].startswith("refs/") and (root / r["ref_path"]).is_file()
            assert Path(r["ref_path"]).with_suffix("").as_posix() == r["ref_id"]
            assert r["offset_s"] is not None and r["offset_s"] >= 0
        else:
            assert r["ref_id"] == "" and r["ref_path"] == ""
        if r["degradation"] == "noise":
            assert 0.0 <= r["snr_db"] <= 10.0
        else:
            assert r["snr_db"] is None
        ext = Path(r["query_path"]).suffix
        assert ext in ((".mp3", ".m4a", ".opus") if r["degradation"] == "phone_codec" else (".wav",))
    in_db = [r for r in rows if r["in_db"]]
    # balanced: every length 8 times, every degradation as often as the 40 queries allow (5 or 6 of 7)
    assert set(Counter(r["length_s"] for r in in_db).values()) == {8}
    per_degradation = Counter(r["degradation"] for r in in_db)
    assert set(per_degradation) == set(FpCorpusParams().degradations) and set(per_degradation.values()) <= {5, 6}
    assert {r["length_s"] for r in rows} == {1.0, 2.0, 3.0, 5.0, 10.0}


def test_ids_safe_and_splits_disjoint(tiny):
    root, summary = tiny
    with open(root / "tracks.csv", newline="") as fh:
        tracks = list(csv.DictReader(fh))
    assert len(tracks) == 14
    for t in tracks:
        assert re.fullmatch(r"(refs|train)/[a-z0-9][a-z0-9_-]*", t["id"]), t["id"]
        assert Path(t["path"]).with_suffix("").as_posix() == t["id"]
        assert (root / t["path"]).is_file()
    pieces = {s: {p for t in tracks if t["split"] == s for p in t["pieces"].split(";")} for s in ("ref", "train")}
    assert pieces["ref"] and pieces["train"]
    assert not pieces["ref"] & pieces["train"], "a score is both a reference and training audio"
    names = {Path(t["path"]).stem for t in tracks}
    assert not names & set(summary["oov_sources"]), "an out-of-database source is in the corpus"
    assert len(summary["oov_sources"]) >= 1


def test_rendered_references_are_real_audio(tiny):
    root, _ = tiny
    with open(root / "tracks.csv", newline="") as fh:
        tracks = {t["id"]: t for t in csv.DictReader(fh)}
    refs = sorted((root / "refs").glob("*.flac"))
    assert len(refs) == 8
    heads = []
    for p in refs:
        x = decode_audio(p, SR)
        dur = len(x) / SR
        assert abs(dur - float(tracks[f"refs/{p.stem}"]["duration_s"])) < 0.01
        assert 25.0 < dur < 40.0
        assert degrade.rms(x) > 0.01, f"{p.name} is (nearly) silent"
        heads.append(x[: 5 * SR])
    # different pieces differ: no two references share their opening
    for i in range(len(heads)):
        for j in range(i + 1, len(heads)):
            a, b = heads[i], heads[j]
            c = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
            assert abs(c) < 0.5, (refs[i].name, refs[j].name, c)


# ---------------------------------------------------------------- queries against the references
def test_queries_decode_with_their_length_inside_the_reference(tiny):
    root, _ = tiny
    durations: dict[str, float] = {}
    for r in read_ground_truth(root):
        q = decode_audio(root / r["query_path"], SR)
        assert abs(len(q) / SR - r["length_s"]) <= 0.05, (r["query_id"], len(q) / SR, r["length_s"])
        assert degrade.rms(q) > 1e-3
        if r["in_db"]:
            if r["ref_path"] not in durations:
                durations[r["ref_path"]] = len(decode_audio(root / r["ref_path"], SR)) / SR
            assert r["offset_s"] + r["length_s"] <= durations[r["ref_path"]] + 1e-3


def test_clean_and_gain_queries_sit_at_their_offset(tiny):
    """A wrong offset (even by 1 ms) fails this: the excerpt must match the reference sample-exactly."""
    root, _ = tiny
    params = {r["query_id"]: json.loads(r["params"]) for r in csv.DictReader(open(root / "query_params.csv"))}
    checked = Counter()
    for r in read_ground_truth(root):
        if not r["in_db"] or r["degradation"] not in ("clean", "gain"):
            continue
        if r["degradation"] == "gain" and params[r["query_id"]]["clipped_fraction"] > 0.01:
            continue
        q = decode_audio(root / r["query_path"], SR)
        x = decode_audio(root / r["ref_path"], SR)
        a = int(round(r["offset_s"] * SR))
        lag, ncc = _ncc_lags(q, x, a, int(0.5 * SR))
        assert lag == 0, (r["query_id"], lag)
        assert ncc > 0.99, (r["query_id"], ncc)
        checked[r["degradation"]] += 1
    assert checked["clean"] >= 5 and checked["gain"] >= 3


def test_noisy_and_codec_queries_align_with_their_reference(tiny):
    root, _ = tiny
    aligned, total = Counter(), Counter()
    for r in read_ground_truth(root):
        if not r["in_db"] or r["degradation"] not in ("noise", "phone_codec"):
            continue
        q = decode_audio(root / r["query_path"], SR)
        x = decode_audio(root / r["ref_path"], SR)
        if r["degradation"] == "phone_codec":
            x = degrade.bandlimit(x, SR, 300.0, 3400.0)
        lag, _ = _ncc_lags(q, x, int(round(r["offset_s"] * SR)), int(0.5 * SR))
        total[r["degradation"]] += 1
        aligned[r["degradation"]] += abs(lag) <= 4  # codec resampling may shift by a fraction of a ms
    for d in ("noise", "phone_codec"):
        assert total[d] >= 5
        assert aligned[d] >= total[d] - 2, (d, aligned[d], total[d])


def test_speed_and_tempo_changed_queries_follow_their_reference(tiny):
    """A speed query is its reference played at its rate from the offset (pitch moves); a stretch query has
    the same pitch as the reference and reads its audio at the rate."""
    root, _ = tiny
    params = {r["query_id"]: json.loads(r["params"]) for r in csv.DictReader(open(root / "query_params.csv"))}
    seen = Counter()
    for r in read_ground_truth(root):
        if not r["in_db"] or r["degradation"] not in ("speed", "stretch"):
            continue
        rate = params[r["query_id"]]["rate"]
        assert 0.005 <= abs(rate - 1.0) <= 0.03 + 1e-9
        q = decode_audio(root / r["query_path"], QUERY_SR)
        x = decode_audio(root / r["ref_path"], QUERY_SR)
        assert len(q) == int(round(r["length_s"] * QUERY_SR))
        a = int(round(r["offset_s"] * QUERY_SR))
        if r["degradation"] == "speed":
            expect = degrade.change_speed(x, a, len(q), rate)     # (the stored reference is 16-bit FLAC)
            assert np.corrcoef(q, expect)[0, 1] > 0.95, r["query_id"]
            plain = x[a:a + len(q)]
            assert np.corrcoef(q, plain)[0, 1] < 0.9     # it is not simply the excerpt
        else:
            # a phase vocoder's phases drift with any difference in its input (the reference is stored as
            # 16-bit FLAC), so compare what is heard: the magnitude spectrogram, frame by frame
            expect = degrade.time_stretch(x[a:a + int(round(len(q) * rate))], rate)[:len(q)]
            assert _spectrogram_corr(q, expect) > 0.95, r["query_id"]
            if r["length_s"] >= 5:   # long enough for the rate to misalign the unstretched excerpt
                assert _spectrogram_corr(q, x[a:a + len(q)]) < _spectrogram_corr(q, expect), r["query_id"]
        seen[r["degradation"]] += 1
    assert seen["speed"] >= 4 and seen["stretch"] >= 4


def test_out_of_database_queries_do_not_come_from_references(tiny):
    root, _ = tiny
    rows = read_ground_truth(root)
    oov = [r for r in rows if not r["in_db"]]
    assert len(oov) == 4
    refs = {p: decode_audio(root / p, SR) for p in {r["ref_path"] for r in rows if r["in_db"]}}
    for r in oov:
        if r["degradation"] not in ("clean", "gain"):
            continue
        q = decode_audio(root / r["query_path"], SR)[: SR]
        for x in refs.values():
            assert _ncc_valid(x, q).max() < 0.9


# ---------------------------------------------------------------- determinism, idempotency
def test_rebuild_is_identical_and_replaces_the_root(tiny):
    root, summary = tiny
    before = _tree_digest(root)
    gt_before = (root / "ground_truth.csv").read_bytes()
    (root / "stray.txt").write_text("left from an older corpus")
    again = build_fingerprint_corpus(FpCorpusParams(size="tiny", seed=SEED), root)
    assert not (root / "stray.txt").exists()
    assert not root.with_name(root.name + ".tmp").exists() and not root.with_name(root.name + ".old").exists()
    assert (root / "ground_truth.csv").read_bytes() == gt_before
    assert _tree_digest(root) == before  # same audio, same queries, byte for byte
    volatile = ("build_seconds", "stage_seconds")
    assert {k: v for k, v in again.items() if k not in volatile} == {k: v for k, v in summary.items() if k not in volatile}


# ---------------------------------------------------------------- pieces
@pytest.mark.parametrize("codec", ["mp3", "aac", "opus"])
def test_codec_roundtrip_keeps_length_and_alignment(codec):
    rng = np.random.default_rng(0)
    sr = 8000
    t = np.arange(3 * sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t * (1 + 0.3 * t)) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
    y = degrade.codec_roundtrip(x, sr, codec, 24000)
    assert y.shape == x.shape and y.dtype == np.float32
    lag, ncc = _ncc_lags(y[sr // 2: 2 * sr], x, sr // 2, 40)
    assert abs(lag) <= 2 and ncc > 0.8, (lag, ncc)
    assert degrade.codec_extension(codec) in (".mp3", ".m4a", ".opus")


def test_missing_renderer_says_what_to_install(monkeypatch):
    monkeypatch.delenv("AVMATCH_FLUIDSYNTH", raising=False)
    monkeypatch.setattr(music21_render.shutil, "which", lambda name: None)
    with pytest.raises(music21_render.RenderError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        music21_render.find_fluidsynth()


def test_debian_unavailable_is_a_warning_not_a_crash(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    assert debian.try_fetch_package("no-such-package-avmatch", tmp_path) is None
    assert "apt-get not found" in caplog.text
