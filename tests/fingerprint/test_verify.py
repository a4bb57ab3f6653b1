"""Spectral-peak verification of a search's alignment (avmatch.fingerprint.verify) and the decision `verified`:
an excerpt scores high at its true alignment (also off the segment grid, noisy, or played faster), the same
timbre playing other notes scores low, and the database stores each recording's peaks to verify against."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import save_tiny_fingerprint_encoder

from avmatch.fingerprint import degrade
from avmatch.fingerprint.calibration import calibrate_decision
from avmatch.fingerprint.search import Match, decide, decision_score
from avmatch.fingerprint.verify import (
    PeakParams,
    Verifier,
    pack_peaks,
    peak_grid,
    spectral_peaks,
    unpack_peaks,
    verification_score,
)

SR = 8000


def melody(seconds: float, seed: int) -> np.ndarray:
    """One 'instrument' (fixed harmonic recipe and envelope) playing random notes of 0.25 s: the seed
    changes the notes, never the timbre."""
    rng = np.random.default_rng(seed)
    note_n = int(0.25 * SR)
    t = np.arange(note_n) / SR
    env = np.exp(-t * 6.0)
    out = []
    for _ in range(int(np.ceil(seconds / 0.25))):
        f0 = 220.0 * 2 ** (int(rng.integers(0, 24)) / 12)
        out.append(env * sum(0.6 ** k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(5)))
    x = np.concatenate(out)[:int(seconds * SR)]
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def ref():
    p = PeakParams()
    x = melody(30.0, 1)
    f, b = spectral_peaks(x, p)
    return x, peak_grid(f, b, p), p


def score(query: np.ndarray, grid: np.ndarray, offset_s: float, rate: float, p: PeakParams) -> float:
    f, b = spectral_peaks(query, p)
    return verification_score(f, b, grid, offset_s, rate, p)


def test_peaks_are_at_most_the_density_per_second_and_inside_the_band():
    p = PeakParams()
    f, b = spectral_peaks(melody(5.0, 3), p)
    per_block = np.bincount((f / p.frames_per_second).astype(int))
    assert 0 < per_block.max() <= p.peaks_per_second
    lo, hi = p.bin_range
    assert b.min() >= lo and b.max() <= hi
    assert np.all(np.diff(f) >= 0)
    assert spectral_peaks(np.zeros(SR, np.float32), p)[0].size == 0   # silence has no peaks


@pytest.mark.parametrize("length_s,chance", [(1.0, 0.45), (3.0, 0.35), (10.0, 0.3)])
def test_an_excerpt_off_the_segment_grid_scores_high_and_other_notes_in_the_same_timbre_low(ref, length_s, chance):
    """(Short queries match more peaks by chance: the calibrated thresholds fall with length too.)"""
    x, grid, p = ref
    start = 7.3   # the search's offset is on the 0.5 s grid: 7.0 s; the lags cover the 0.3 s
    q = x[int(start * SR):int((start + length_s) * SR)]
    assert score(q, grid, 7.0, 1.0, p) > 0.9
    other = melody(30.0, 2)[int(start * SR):int((start + length_s) * SR)]
    assert score(other, grid, 7.0, 1.0, p) < chance
    noisy = q + np.random.default_rng(0).normal(0, 0.5 * q.std(), len(q)).astype(np.float32)   # ~6 dB SNR
    assert score(noisy, grid, 7.0, 1.0, p) > score(other, grid, 7.0, 1.0, p) + 0.2


def test_a_speed_changed_excerpt_needs_the_rate_search(ref):
    x, grid, p = ref
    q = degrade.change_speed(x, 8 * SR, 5 * SR, 1.03)   # 3 % fast, pitch moving with the speed
    only_search_rate = PeakParams(rate_step=0.0)
    assert score(q, grid, 8.0, 1.0, only_search_rate) < 0.3
    assert score(q, grid, 8.0, 1.0, p) > 0.8
    assert score(q, grid, 8.0, 1.03, only_search_rate) > 0.8   # the search's rate, when it found it, is used


def test_packing_round_trips_and_refuses_what_does_not_fit():
    f = np.array([0, 5, 70000], np.int32)
    b = np.array([10, 256, 1023], np.int16)
    f2, b2 = unpack_peaks(pack_peaks((f, b)))
    assert np.array_equal(f, f2) and np.array_equal(b, b2)
    assert pack_peaks((f, b)).dtype == np.int32
    with pytest.raises(ValueError, match="bits"):
        pack_peaks((np.array([0], np.int32), np.array([1024], np.int16)))


def test_the_decision_verified_uses_the_share_and_refuses_an_unverified_match(ref):
    x, grid, p = ref
    v = Verifier({"r": spectral_peaks(x, p)}, p, hop_s=0.5)
    m = Match("r", offset_segment=14, score=0.9, votes=5, runner_up=0.1)
    with pytest.raises(ValueError, match="verified"):
        decision_score(m, "verified")
    good = v.verify(m, v.query_peaks(x[7 * SR:10 * SR]))
    assert good.verified > 0.6 and decision_score(good, "verified").score == good.verified
    assert decide(good, "verified", 1.0, good.verified + 0.01).item_id is None
    assert decide(good, "verified", 1.0, good.verified - 0.01).item_id == "r"
    with pytest.raises(KeyError):
        v.verify(Match("missing", 0, 0.9, 5), v.query_peaks(x[:SR]))
    nulls = {1.0: [Match("r", 0, 0.99, 3, verified=s) for s in np.linspace(0.0, 0.5, 200)]}
    th = calibrate_decision(nulls, "verified", 1.0, 0.01)   # from the verified shares, not the similarity
    assert 0.49 < th.for_segments(1, 1.0, 0.5) <= 0.5


def test_a_database_with_the_decision_verified_stores_peaks_and_verifies_answers(tmp_path):
    from avmatch.core.hashing import file_hash
    from avmatch.fingerprint.calibration import Thresholds
    from avmatch.fingerprint.database import FingerprintDB
    from avmatch.fingerprint.db_inputs import Source
    from avmatch.fingerprint.encoder_lookup import EncoderChoice
    from avmatch.fingerprint.params import FpSearchParams

    enc = tmp_path / "encoder.pt"
    save_tiny_fingerprint_encoder(enc, seed=0, sr=SR)
    music = [tmp_path / f"rec{i}.wav" for i in range(3)]
    tracks = [melody(12.0, 10 + i) for i in range(3)]
    for f, x in zip(music, tracks):
        sf.write(f, x, SR, subtype="PCM_16")
    query = tmp_path / "q.wav"
    sf.write(query, tracks[1][4 * SR:7 * SR], SR, subtype="PCM_16")
    choice = EncoderChoice(enc, file_hash(enc), Thresholds(0.5), "--threshold",
                           search=FpSearchParams(score="verified"))
    db = FingerprintDB.create(tmp_path / "db", choice)
    report = db.add([Source(f) for f in music], workers=1)
    assert report.recordings == 3
    peaks = sorted((tmp_path / "db" / "peaks").glob("*.npy"))
    assert len(peaks) == 3 and all(np.load(f).dtype == np.int32 and len(np.load(f)) > 100 for f in peaks)
    assert db.info()["bytes"]["peaks"] > 0
    answer = db.searcher().identify(query)
    best = answer.candidates[0]
    assert best.ref_id == "rec1" and best.match and best.score > 0.5
    unknown = tmp_path / "unknown.wav"   # the same timbre, other notes: a candidate, but not verified
    sf.write(unknown, melody(12.0, 99)[4 * SR:7 * SR], SR, subtype="PCM_16")
    other = db.searcher().identify(unknown).candidates[0]
    assert other.score < 0.4 and not other.match
    reopened = FingerprintDB(tmp_path / "db")
    assert reopened.search_params.score == "verified"
    for f in peaks:   # a database that lost its peaks says so instead of answering unverified
        f.unlink()
    with pytest.raises(Exception, match="spectral peaks"):
        reopened.searcher().identify(query)


def test_metrics_of_another_decision_are_refused(tmp_path):
    from avmatch.fingerprint.encoder_lookup import EncoderNotFound, locate_encoder

    proj = tmp_path / "proj"
    (proj / "models/fingerprint").mkdir(parents=True)
    (proj / "metrics").mkdir()
    save_tiny_fingerprint_encoder(proj / "models/fingerprint/encoder.pt", seed=0, sr=SR)
    (proj / "params.yaml").write_text("fingerprint:\n  search: {score: verified}\n")
    (proj / "metrics/fingerprint.json").write_text(json.dumps({"threshold": 0.2, "decision_score": "margin"}))
    with pytest.raises(EncoderNotFound, match="'margin'"):
        locate_encoder(proj / "models/fingerprint/encoder.pt")
    (proj / "metrics/fingerprint.json").write_text(json.dumps({"threshold": 0.2}))   # older than the decision
    with pytest.raises(EncoderNotFound, match="unrecorded"):
        locate_encoder(proj / "models/fingerprint/encoder.pt")
    (proj / "metrics/fingerprint.json").write_text(json.dumps({"threshold": 0.2, "decision_score": "verified"}))
    assert locate_encoder(proj / "models/fingerprint/encoder.pt").search.score == "verified"


def test_the_evaluation_verifies_queries_and_null_queries_alike():
    """evaluate_queries with the decision `verified`: the per-length thresholds come from the null queries'
    verified shares, in-database queries pass, queries whose notes differ (but whose vectors the search
    matches just as well) do not; without the peaks it refuses to run."""
    import pandas as pd

    from avmatch.core.index import SegmentIndex
    from avmatch.fingerprint.params import FpAudioParams, FpEvaluateParams, FpSearchParams
    from pipelines.fingerprint.evaluation import evaluate_queries

    p, rng, dim = PeakParams(), np.random.default_rng(5), 16
    refs = {f"refs/r{k}": melody(20.0, 100 + k) for k in range(3)}
    unit = lambda v: (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    seg_vecs = {k: unit(rng.normal(size=(39, dim))) for k in refs}   # 20 s: 39 segments
    idmap = pd.concat([pd.DataFrame({"item_id": k, "segment": np.arange(39), "start_s": np.arange(39) * 0.5})
                       for k in refs], ignore_index=True)
    index = SegmentIndex.build(np.concatenate(list(seg_vecs.values())), idmap, "flat")
    rows, qvecs, qpeaks = [], {}, {}
    for j in range(60):   # in-db: the reference's audio; "out-of-db": other notes behind the same vectors
        k, start, in_db = f"refs/r{j % 3}", 2 * (j % 8), j % 2 == 0
        audio = refs[k] if in_db else melody(20.0, 500 + j)
        qid = f"queries/q{j:03d}"
        qvecs[qid] = unit(seg_vecs[k][2 * start:2 * start + 5] + rng.normal(0, 0.05, (5, dim)))
        qpeaks[qid] = spectral_peaks(audio[start * SR:(start + 3) * SR], p)
        rows.append({"query_id": qid, "query_path": qid + ".wav", "ref_id": k if in_db else "",
                     "ref_path": k + ".flac" if in_db else "", "offset_s": float(start) if in_db else None,
                     "length_s": 3.0, "degradation": "clean", "in_db": int(in_db), "item_id": qid})
    gt = pd.DataFrame(rows)
    nulls = []
    for j in range(100):   # null queries: vectors the search matches, notes that are not the reference's
        k, start = f"refs/r{j % 3}", j % 15
        vec = unit(seg_vecs[k][2 * start:2 * start + 5] + rng.normal(0, 0.05, (5, dim)))
        nulls.append((3.0, vec, None, spectral_peaks(melody(20.0, 900 + j)[start * SR:(start + 3) * SR], p)))
    sp = FpSearchParams(score="verified", top_k=5, max_candidates=5)
    ev = FpEvaluateParams(validation_fraction=0.2, target_false_match_rate=0.05)
    verifier = Verifier({k: spectral_peaks(x, p) for k, x in refs.items()}, p, hop_s=0.5)
    result = evaluate_queries(index, gt, qvecs, sp, ev, FpAudioParams(), [3.0], None, nulls, None, verifier, qpeaks)
    th = result.thresholds.for_segments(5, 1.0, 0.5)
    assert 0.1 < th < 0.6, th   # the null queries' chance share, not the similarity (~0.99 for all of them)
    assert result.metrics["track_hit_rate"]["3s"] == 1.0
    assert result.metrics["false_match_rate_by_length"]["3s"]["answered"] == 0
    assert result.metrics["decision_score"] == "verified"
    either = evaluate_queries(index, gt, qvecs, FpSearchParams(score="either", top_k=5, max_candidates=5), ev,
                              FpAudioParams(), [3.0], None, [n[:3] for n in nulls])
    assert either.metrics["track_hit_rate"]["3s"] < 0.5   # the vectors alone cannot tell them apart
    with pytest.raises(ValueError, match="spectral peaks"):
        evaluate_queries(index, gt, qvecs, sp, ev, FpAudioParams(), [3.0], None, nulls)
    with pytest.raises(ValueError, match="null query"):
        evaluate_queries(index, gt, qvecs, sp, ev, FpAudioParams(), [3.0], None, [n[:3] for n in nulls], None,
                         verifier, qpeaks)


def test_the_evaluate_stage_gives_the_references_and_queries_peaks_only_for_the_decision_verified(tmp_path):
    import pandas as pd

    from avmatch.core.config import load_params
    from pipelines.fingerprint.evaluate import _verification
    from pipelines.fingerprint.paths import FingerprintPaths

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    paths = FingerprintPaths(root=tmp_path, corpus=tmp_path / "corpus")
    paths.items("refs").parent.mkdir(parents=True)
    tracks = {"refs/a": melody(8.0, 1), "refs/b": melody(8.0, 2)}
    rows = []
    for k, x in tracks.items():
        f = tmp_path / f"{k.replace('/', '_')}.npy"
        np.save(f, (x * 32767).astype(np.int16))
        rows.append({"id": k, "status": "ok", "pcm_file": str(f)})
    pd.DataFrame(rows + [{"id": "refs/bad", "status": "error", "pcm_file": ""}]).to_parquet(paths.items("refs"))
    queries = pd.DataFrame([{"id": "queries/q1", "status": "ok", "pcm_file": rows[1]["pcm_file"]}])
    fp = params.fingerprint
    verified = params.model_copy(update={"fingerprint": fp.model_copy(
        update={"search": fp.search.model_copy(update={"score": "verified"})})})
    verifier, peaks = _verification(verified, paths, queries)
    assert set(peaks) == {"queries/q1"}
    m = verifier.verify(Match("refs/b", 0, 0.9, 5), peaks["queries/q1"])
    assert m.verified > 0.9 and verifier.verify(Match("refs/a", 0, 0.9, 5), peaks["queries/q1"]).verified < 0.4
    either = params.model_copy(update={"fingerprint": fp.model_copy(
        update={"search": fp.search.model_copy(update={"score": "either"})})})
    assert _verification(either, paths, queries) == (None, None)


def test_the_verifier_keeps_a_bounded_number_of_reference_grids_and_scores_alike_after_eviction(ref):
    x, _, p = ref
    peaks = spectral_peaks(x, p)
    loads: list[str] = []

    def load(item_id: str):
        loads.append(item_id)
        return peaks

    v = Verifier(load, p, hop_s=0.5, max_grids=2)
    q = v.query_peaks(x[7 * SR:10 * SR])
    m = Match("a", offset_segment=14, score=0.9, votes=5)
    first = v.verify(m, q).verified
    for item in ("b", "c", "a"):   # "a" was evicted by "b" and "c": loaded again, same score
        again = v.verify(Match(item, offset_segment=14, score=0.9, votes=5), q).verified
        assert again == first
    assert len(v._grids) == 2 and loads == ["a", "b", "c", "a"]
    v.verify(m, q)   # "a" is cached now: no new load
    assert loads == ["a", "b", "c", "a"]
