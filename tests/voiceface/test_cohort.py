"""The simulated cohort: VoxCeleb1 proportions, disjoint splits, determinism, noisy tracks, missing experts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avmatch.core.config import ConfigError, validate_params
from avmatch.voiceface.cohort import MALE_FRACTION, NATIONALITIES, build_cohort, exact_counts, simulate_cohort
from avmatch.voiceface.params import COHORT_SIZES, VfCorpusParams, VfSimulatorParams
from avmatch.voiceface.vectors import read_vectors


@pytest.fixture(scope="module")
def tiny():
    return simulate_cohort(VfCorpusParams(size="tiny", seed=3))


def test_exact_counts_sum_and_rounding():
    c = exact_counts(NATIONALITIES, 1251)
    assert sum(c.values()) == 1251
    for k, v in c.items():
        assert abs(v - 1251 * NATIONALITIES[k] / sum(NATIONALITIES.values())) < 1


def test_attribute_proportions_follow_voxceleb1():
    c = simulate_cohort(VfCorpusParams(size="demo", seed=1))
    ids = c.identities
    assert len(ids) == sum(COHORT_SIZES["demo"])
    assert abs((ids["gender"] == "m").mean() - MALE_FRACTION) < 0.01
    share = ids["nationality"].value_counts(normalize=True)
    assert share.index[0] == "USA" and share.index[1] == "UK"
    for nat in ("USA", "UK", "Canada"):
        assert abs(share[nat] - NATIONALITIES[nat]) < 0.01, (nat, share[nat])
    # attributes are independent of the split: every split has both genders and mostly US identities
    for _, g in ids.groupby("split"):
        assert set(g["gender"]) == {"m", "f"}
        assert (g["nationality"] == "USA").mean() > 0.4


def test_splits_are_disjoint_and_sized(tiny):
    ids, tracks = tiny.identities, tiny.tracks
    sizes = ids["split"].value_counts().to_dict()
    assert (sizes["train"], sizes["valid"], sizes["test"]) == COHORT_SIZES["tiny"]
    assert ids["identity"].is_unique and tracks["track"].is_unique
    split_of = ids.set_index("identity")["split"]
    # every video belongs to one identity, hence to one split
    assert (tracks.groupby("video")["identity"].nunique() == 1).all()
    assert set(tracks["identity"]) <= set(split_of.index)
    # one voice and one face track per clip
    counts = tracks.groupby(["video", "modality"]).size().unstack()
    assert (counts["voice"] == counts["face"]).all()


def test_deterministic_by_seed(tmp_path):
    cp = VfCorpusParams(size="tiny", seed=7)
    a = build_cohort(cp, tmp_path / "a")
    b = build_cohort(cp, tmp_path / "b")
    assert a == b
    for f in ("identities.parquet", "tracks.parquet", "experts/f_sim_swin.parquet", "experts/missing.parquet"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    other = simulate_cohort(VfCorpusParams(size="tiny", seed=8))
    assert not other.identities.equals(pd.read_parquet(tmp_path / "a" / "identities.parquet"))


def test_noisy_fraction_and_noisy_tracks_show_another_identity(tiny):
    t = tiny.tracks
    face = t[t["modality"] == "face"]
    assert abs(face["noisy"].mean() - 0.1) < 0.01
    assert not t.loc[t["modality"] == "voice", "noisy"].any()   # default: only face tracks are noisy
    # a noisy face track's latent is another identity's: it is farther from its own identity's mean
    names, z = tiny.latents["face"]
    z = z[:, tiny.shared_slice]
    ident = t.set_index("track").loc[names, "identity"].to_numpy()
    noisy = t.set_index("track").loc[names, "noisy"].to_numpy()
    clean_mean = {k: z[(ident == k) & ~noisy].mean(0) for k in set(ident)}
    d = np.array([np.linalg.norm(z[i] - clean_mean[ident[i]]) for i in range(len(names))])
    assert d[noisy].mean() > 1.5 * d[~noisy].mean()


def test_noise_free_cohort_has_no_noisy_tracks():
    c = simulate_cohort(VfCorpusParams(size="tiny", simulator=VfSimulatorParams(noisy_fraction=0.0)))
    assert not c.tracks["noisy"].any()


def test_missing_experts_are_listed_and_absent(tmp_path, tiny):
    info = build_cohort(VfCorpusParams(size="tiny", seed=3), tmp_path)
    missing = pd.read_parquet(tmp_path / "experts" / "missing.parquet")
    assert info["missing_vectors"] == len(missing) > 0
    assert set(missing.columns) >= {"track", "expert", "reason"}
    t = tiny.tracks
    n_tracks = {"v": (t["modality"] == "voice").sum(), "f": (t["modality"] == "face").sum()}
    for e, dim in VfSimulatorParams().experts.items():
        names, mat = read_vectors(tmp_path / "experts" / f"{e}.parquet")
        assert mat.shape[1] == dim
        gone = set(missing.loc[missing["expert"] == e, "track"])
        assert not gone & set(names)
        assert len(names) + len(gone) == n_tracks[e[0]]
        assert abs(len(gone) / n_tracks[e[0]] - 0.05) < 0.03
    # a track keeps at least one expert of its modality
    per_track = missing.groupby("track")["expert"].nunique()
    n_experts = {"v": 2, "f": 4}
    for track, n in per_track.items():
        modality = "v" if track.endswith(".wav") else "f"
        assert n < n_experts[modality]


def test_experts_are_different_views():
    c = simulate_cohort(VfCorpusParams(size="tiny"))
    a = c.vectors["f_sim_r2plus1d"][1][:50]
    b = c.vectors["f_sim_inception"][1][:50]
    assert a.shape == b.shape
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.5


def test_expert_profiles_set_each_experts_quality_and_missing_rate():
    """A profile changes only its expert: the missing rate follows it, a noisier expert tells identities apart
    less well (ratio of between-identity to total variance of its vectors), and the other experts are the
    same vectors as without profiles."""
    base = VfSimulatorParams()
    prof = VfSimulatorParams(expert_profiles={
        "f_sim_inception": {"coverage": 0.7, "noise": 0.1, "missing": 0.3},
        "f_sim_mobilenet": {"coverage": 0.4, "noise": 2.0}})
    plain = simulate_cohort(VfCorpusParams(size="tiny", seed=2, simulator=base))
    c = simulate_cohort(VfCorpusParams(size="tiny", seed=2, simulator=prof))
    n_face = int((c.tracks["modality"] == "face").sum())
    gone = c.missing.groupby("expert").size()
    assert abs(gone["f_sim_inception"] / n_face - 0.3) < 0.06
    assert abs(gone["f_sim_mobilenet"] / n_face - 0.05) < 0.04     # no missing in its profile: the common rate
    assert c.info["expert_profiles"]["f_sim_mobilenet"] == {"coverage": 0.4, "noise": 2.0, "missing": 0.05}

    def identity_share(cohort, expert):
        tracks, mat = cohort.vectors[expert]
        who = pd.Series(tracks).str.split("/").str[0].to_numpy()
        means = pd.DataFrame(mat).groupby(who).transform("mean").to_numpy()
        return float(((means - mat.mean(0)) ** 2).sum() / ((mat - mat.mean(0)) ** 2).sum())

    assert identity_share(c, "f_sim_inception") > identity_share(c, "f_sim_mobilenet") + 0.1
    a, b = (dict(zip(*x.vectors["f_sim_swin"])) for x in (c, plain))
    both = sorted(set(a) & set(b))
    assert len(both) > 0.9 * len(b) and all(np.array_equal(a[t], b[t]) for t in both)
    with pytest.raises(ConfigError, match="expert_profiles"):
        validate_params({"voiceface": {"corpus": {"simulator": {"expert_profiles": {"f_nope": {"noise": 1}}}}}},
                        systems=["voiceface"])


def test_degraded_tracks_weaken_the_sensitive_experts_on_those_tracks_only():
    """Low-quality tracks: about the asked share of one modality's tracks change, the other modality and the
    other tracks are the vectors of the cohort without them, and a sensitive expert's vector moves more than a
    robust one's on the same tracks."""
    sim = VfSimulatorParams(degraded_fraction={"face": 0.5}, expert_profiles={
        "f_sim_inception": {"sensitivity": 0.9, "missing": 0.0}, "f_sim_swin": {"sensitivity": 0.1, "missing": 0.0}})
    base = VfSimulatorParams(expert_profiles={"f_sim_inception": {"missing": 0.0}, "f_sim_swin": {"missing": 0.0}})
    plain = simulate_cohort(VfCorpusParams(size="tiny", seed=2, simulator=base))
    c = simulate_cohort(VfCorpusParams(size="tiny", seed=2, simulator=sim))
    n_face = int((c.tracks["modality"] == "face").sum())
    assert c.info["degraded_face_tracks"] == pytest.approx(0.5 * n_face, abs=0.1 * n_face)
    assert c.info["degraded_voice_tracks"] == 0

    def moved(expert):
        (ta, a), (tb, b) = c.vectors[expert], plain.vectors[expert]
        assert ta == tb
        return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1).mean()

    inc, swin = moved("f_sim_inception"), moved("f_sim_swin")
    changed = inc > 1e-6
    assert changed.sum() == c.info["degraded_face_tracks"] and np.array_equal(changed, swin > 1e-6)
    assert np.median(inc[changed]) > 3 * np.median(swin[changed])
    for e in ("v_sim_ecapa", "v_sim_resemblyzer"):
        assert np.array_equal(c.vectors[e][1], plain.vectors[e][1])
    with pytest.raises(ConfigError, match="degraded_fraction"):
        validate_params({"voiceface": {"corpus": {"simulator": {"degraded_fraction": {"face": 1.0}}}}},
                        systems=["voiceface"])


def test_params_errors_name_the_key():
    with pytest.raises(ConfigError, match="voiceface.corpus.size"):
        validate_params({"voiceface": {"corpus": {"size": "huge"}}}, systems=["voiceface"])
    with pytest.raises(ConfigError, match="unknown key 'voiceface.train.max_step'"):
        validate_params({"voiceface": {"train": {"max_step": 3}}}, systems=["voiceface"])
    with pytest.raises(ConfigError, match="not simulated"):
        validate_params({"voiceface": {"experts": {"voice": ["v_resemblyzer"]}}}, systems=["voiceface"])
    with pytest.raises(ConfigError, match="big_batch"):
        validate_params({"voiceface": {"train": {"batch_size": 64, "big_batch": 32}}}, systems=["voiceface"])
