"""The Qmax baseline with the settings params.yaml gives it finds versions where the method is known to work.

Audio built in the test (no corpus needed): chord progressions played by two synthetic instruments (a
decaying, bright one and a sustained, hollow one with odd harmonics), the second version in another key
and tempo, plus unrelated progressions in the same scale as distractors. Every chord of every piece comes
from the same diatonic triads, so only the order of chords (the alignment) tells versions apart, and the
key change needs the optimal transposition index: with `oti: false` MAP falls to ~0.1 (measured), so
settings that break the method fail this test.
"""

from __future__ import annotations

import numpy as np
import pytest

from avmatch.core.config import load_params
from avmatch.core.paths import project_root

SR_SCALE = [0, 2, 4, 5, 7, 9, 11]


def _progression(rng: np.random.Generator, n: int) -> list[int]:
    deg = [0]
    for _ in range(n - 1):
        deg.append((deg[-1] + int(rng.choice([1, 2, 3, 4, 5, -1, -2]))) % 7)
    return deg


def _chord(degree: int, key: int) -> list[int]:
    """MIDI pitches of the triad on a scale degree: bass, three voices, the fifth an octave up."""
    third = [SR_SCALE[(degree + i) % 7] + 12 * ((degree + i) // 7) for i in (0, 2, 4)]
    return [48 + key + third[0] - 12] + [60 + key + x for x in third] + [72 + key + third[2]]


def _wavetable(timbre: int, size: int = 2048) -> np.ndarray:
    phase = np.arange(size) / size
    harmonics = range(1, 9) if timbre == 0 else range(1, 12, 2)
    return sum((h ** -1.0 if timbre == 0 else h ** -1.5) * np.sin(2 * np.pi * h * phase) for h in harmonics)


def _render(prog: list[int], key: int, beat_s: float, timbre: int, sr: int) -> np.ndarray:
    table = _wavetable(timbre)
    n = int(beat_s * sr)
    t = np.arange(n) / sr
    env = np.exp(-t * (3.0 if timbre == 0 else 0.5)) * np.minimum(1.0, t / 0.01)
    out = []
    for d in prog:
        x = np.zeros(n)
        for m in _chord(d, key):
            f = 440.0 * 2 ** ((m - 69) / 12)
            x += np.interp((f * t) % 1.0 * len(table), np.arange(len(table)), table, period=len(table))
        out.append(x * env)
    y = np.concatenate(out)
    return (0.9 * y / np.abs(y).max()).astype(np.float32)


@pytest.fixture(scope="module")
def collection():
    """(HPCP of each track with the configured settings, clique labels): 5 two-version families + 4
    distractors, ~12 s each."""
    from avmatch.versions.qmax_baseline import hpcp

    hp = load_params(project_root() / "params.yaml").versions.baseline.hpcp
    sr = hp.sample_rate
    rng = np.random.default_rng(0)
    audio, labels = [], []
    for fam in range(5):
        prog = _progression(rng, 14)
        audio.append(_render(prog, 0, 0.9, 0, sr))
        audio.append(_render(prog, int(rng.integers(2, 6)), 0.75, 1, sr))
        labels += [f"f{fam}", f"f{fam}"]
    for d in range(4):
        audio.append(_render(_progression(rng, 14), int(rng.integers(0, 6)), 0.8, d % 2, sr))
        labels.append(f"d{d}")
    return [hpcp(a, sr, hp.frame_size, hp.hop_size, hp.pool) for a in audio], labels


def _track_map(chroma, labels, settings) -> float:
    from avmatch.versions.qmax_baseline import QmaxScorer
    from pipelines.versions.evaluation import evaluate_track_distances

    scorer = QmaxScorer(settings)
    n = len(chroma)
    dist = np.full((n, n), np.inf)
    for i in range(n):
        for j in range(n):
            if i != j:
                dist[i, j] = scorer.distance(chroma[i], chroma[j])
    return evaluate_track_distances(dist, labels, 0, 0)["metrics"]["MAP"]


def test_configured_qmax_finds_versions_across_key_tempo_and_instrument(collection):
    from avmatch.versions.qmax_baseline import QmaxSettings

    bp = load_params(project_root() / "params.yaml").versions.baseline
    q = bp.qmax
    settings = QmaxSettings(q.frame_stack, q.binarize_percentile, q.oti, q.dis_onset, q.dis_extension,
                            q.alignment, q.distance)
    chroma, labels = collection
    assert _track_map(chroma, labels, settings) >= 0.9   # measured 1.0 (random ranking: ~0.3)


def test_without_key_alignment_the_same_set_fails(collection):
    """The check above can fail: the same set without OTI (versions in other keys) scores far lower."""
    from avmatch.versions.qmax_baseline import QmaxSettings

    chroma, labels = collection
    assert _track_map(chroma, labels, QmaxSettings(oti=False)) < 0.5   # measured ~0.1


def test_pool_frames_averages_blocks_and_keeps_the_tail():
    from avmatch.versions.qmax_baseline import pool_frames

    x = np.arange(10 * 12, dtype=np.float32).reshape(10, 12)
    p = pool_frames(x, 4)
    assert p.shape == (3, 12)
    np.testing.assert_allclose(p[0], x[:4].mean(0))
    np.testing.assert_allclose(p[2], np.concatenate([x[8:], x[9:], x[9:]]).mean(0))
    assert pool_frames(x, 1) is not None and pool_frames(x, 1).shape == x.shape


def test_too_short_or_unalignable_pairs_are_infinitely_far():
    from avmatch.versions.qmax_baseline import QmaxScorer

    s = QmaxScorer()
    rng = np.random.default_rng(1)
    assert s.distance(rng.random((5, 12)), rng.random((50, 12))) == float("inf")
    assert np.isfinite(s.distance(rng.random((40, 12)), rng.random((50, 12))))


def test_configured_coarse_qmax_first_stage_keeps_the_versions_in_its_top_candidates(collection):
    """The re-ranker's training-free first stage (params.yaml's versions.rerank.coarse) on the same tracks: every
    query's version within its top 3 of 13, and re-ranking that top 3 with the configured Qmax reaches the full
    Qmax's level, at 3 full alignments per query instead of 13."""
    from avmatch.versions.rerank import rerank_distances
    from pipelines.versions.evaluation import evaluate_track_distances
    from pipelines.versions.qmax_collections import qmax_scorer
    from pipelines.versions.rerank import _first_stages

    params = load_params(project_root() / "params.yaml")
    params = params.model_copy(update={"versions": params.versions.model_copy(update={
        "rerank": params.versions.rerank.model_copy(update={"first_stages": ["qmax_coarse"]})})})
    chroma, labels = collection
    firsts = _first_stages(params, None, chroma, list(range(10)))   # the 10 family members are the queries
    coarse, _ = firsts["qmax_coarse"]
    for q in range(10):
        partner = q + 1 if q % 2 == 0 else q - 1
        assert partner in np.argsort(coarse[q])[:3], (q, np.argsort(coarse[q])[:5])
    full = qmax_scorer(params)
    rd = rerank_distances(coarse, 3, lambda q, j: full.distance(chroma[q], chroma[j]), rows=range(10))
    assert evaluate_track_distances(rd, labels, 0, 0)["metrics"]["MAP"] >= 0.9


def test_encoder_mixed_first_stage_is_between_its_two_parts(collection):
    """encoder_qmax_coarse: the encoder's and the coarse Qmax's z-scored distances mixed by first_mix (1: the
    coarse ranking, 0: the encoder's), with the time per query of both."""
    import pandas as pd

    from avmatch.versions.rerank import zscore_rows
    from avmatch.versions.retrieval import Collection
    from pipelines.versions.rerank import _first_stages

    chroma, labels = collection
    n = len(chroma)
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(2 * n, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"t{i:02d}" for i in range(n)]                  # sorted, as Collection orders its tracks
    meta = pd.DataFrame({"item_id": np.repeat(ids, 2), "segment": np.tile([0, 1], n)})
    coll = Collection.from_rows(meta, vecs)
    base = load_params(project_root() / "params.yaml")

    def firsts(mix):
        rp = base.versions.rerank.model_copy(update={"first_stages": ["encoder", "qmax_coarse", "encoder_qmax_coarse"],
                                                     "first_mix": mix})
        p = base.model_copy(update={"versions": base.versions.model_copy(update={"rerank": rp})})
        return _first_stages(p, coll, chroma, list(range(n)))

    f = firsts(0.8)
    assert list(f) == ["encoder", "qmax_coarse", "encoder_qmax_coarse"]
    want = 0.2 * zscore_rows(f["encoder"][0]) + 0.8 * zscore_rows(f["qmax_coarse"][0])
    np.testing.assert_allclose(f["encoder_qmax_coarse"][0], want)
    assert f["encoder_qmax_coarse"][1] >= f["qmax_coarse"][1] > 0
    for mix, part in ((1.0, "qmax_coarse"), (0.0, "encoder")):
        g = firsts(mix)
        for q in range(n):
            assert list(np.argsort(g["encoder_qmax_coarse"][0][q], kind="stable")) == \
                list(np.argsort(g[part][0][q], kind="stable"))
