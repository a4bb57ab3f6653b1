"""A SIMULATED VoxCeleb1-like cohort of expert embeddings (not real data).

There is no paired voice-face dataset on this machine, so the demo corpus is drawn: identities with a gender
and a nationality, several videos per identity, a few clips per video (one voice track and one face track per
clip), and for every track the vectors of several "experts" -- as EFT (ICME 2023) describes each VoxCeleb1
track with pretrained networks' embeddings. Numbers measured on it say how the METHOD behaves on data with
this structure, never how it does on VoxCeleb.

How a track's expert vectors are made (all parameters in params.yaml `voiceface.corpus.simulator`):

1. Identity latent, per modality m in {voice, face}:
       z(i, m) = [ attributes(i) | shared(i) | private(i, m) ]
   - attributes(i) = gender_scale/2 * (+u_g for "m", -u_g for "f") + nationality_scale * u_nat(i), in
     `attribute_dim` dimensions (u_g, u_nat random unit vectors, one per nationality): gender and nationality
     are visible in both face and voice and carry much of what the two share -- which is why verification
     constrained to the same gender (G), nationality (N) or both (GN) is harder than unconstrained (U), as on
     VoxCeleb.
   - shared(i) ~ N(0, shared_scale^2), `shared_dim` dims: identity information both modalities show.
   - private(i, m) ~ N(0, private_scale^2), `private_dim` dims, drawn separately per modality: consistent
     within a modality (tracks of one person's voice cluster) but useless across modalities.
2. Track latent: z(i, m) + video offset (per video and modality, std `video_nuisance`: session, camera,
   microphone) + track noise (std `track_nuisance`).
3. Noisy tracks: a fraction `noisy_fraction` of the tracks of the modalities in `noisy_modalities` (default
   face only, like VoxCeleb's imperfect face tracks) are drawn from ANOTHER identity of the same split (its
   identity latent; the video offset stays); tracks.parquet marks them noisy=True, the label stays wrong.
4. Expert e of modality m: a fixed random two-layer tanh MLP (seeded by the cohort seed and the expert's
   name) applied to a random subset of `expert_coverage` of the latent dimensions, with output size
   `experts[e]`, plus output noise (`expert_noise` times the output's std, times a per-expert factor in
   [0.7, 1.3]). Each expert sees different dimensions with different noise, so experts complement each other
   (the premise of fusing them), and none is a linear copy of the latent. `expert_profiles` gives an expert its
   own coverage, noise (then without the random factor) and missing rate: real experts are of unequal quality
   (a network trained for identity carries more of it than a generic image or action network) and fail on
   different tracks (a face-recognition network needs a detected, aligned face).
5. Low-quality tracks (`degraded_fraction` per modality, default none): on a share of the tracks (a profile,
   blurred or tiny face; a noisy or overlapped voice) every expert of that modality sees its input scaled by
   1 - `sensitivity` (per expert profile; a face-recognition network needs a frontal, aligned face and loses
   more than a scene or action network) while its output noise keeps the level of its normal output, so its
   vector is weaker and less reliable on exactly those tracks. Which expert to trust then varies per track.
6. Missing experts: each (track, expert) vector is left out with probability `missing_fraction` (or the
   expert's profile's `missing`; a track keeps at least one expert); experts/missing.parquet lists every one
   with the reason.

Attribute proportions follow VoxCeleb1's metadata (vox1_meta.csv: 1251 identities, 690 male = 55.2 %):
`NATIONALITIES` below is VoxCeleb1's nationality distribution as we remember it from vox1_meta.csv (USA
~64 %, UK ~17 %, then Canada, Australia, India, ...), rounded; the long tail of ~30 countries with a few
identities each is lumped into "Other". The counts are allotted exactly (largest remainder) over the whole
cohort, then shuffled, so a small cohort still has these proportions. Splits have the sizes of
`COHORT_SIZES` (full = EFT's 901 / 100 / 250 identities); splits are disjoint in identities.

Everything is deterministic in (params, seed): the same params give byte-identical Parquet files.

Track ids follow EFT's file names: voice "Name/ytid/00001.wav", face "Name/1.6/ytid/1".
"""

from __future__ import annotations

import json
import string
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avmatch.voiceface.params import COHORT_SIZES, VfCorpusParams
from avmatch.voiceface.vectors import MISSING_FILE, write_frame, write_vectors

SIMULATED_LABEL = "simulated expert embeddings (not real data)"
MALE_FRACTION = 0.552  # VoxCeleb1: 690 of 1251 identities
# VoxCeleb1 nationalities (vox1_meta.csv), fractions of the 1251 identities, rounded; "Other" = the long tail
NATIONALITIES: dict[str, float] = {
    "USA": 0.638,
    "UK": 0.173,
    "Canada": 0.043,
    "Australia": 0.030,
    "India": 0.021,
    "Norway": 0.016,
    "Germany": 0.015,
    "Ireland": 0.014,
    "Italy": 0.008,
    "Mexico": 0.008,
    "Sweden": 0.007,
    "New Zealand": 0.007,
    "Other": 0.020,
}
SPLITS = ("train", "valid", "test")
_ID_CHARS = string.ascii_letters + string.digits + "-_"


@dataclass
class Cohort:
    """The drawn cohort: metadata tables, expert vectors (track order = rows of tracks of that modality),
    missing (track, expert) rows and a summary."""

    identities: pd.DataFrame
    tracks: pd.DataFrame
    vectors: dict[str, tuple[list[str], np.ndarray]]
    missing: pd.DataFrame
    info: dict[str, Any]
    # modality -> (track ids, [n, latent_dim] track latents before the experts, latent slice both modalities
    # share): what an oracle would see (tests, tuning); never written
    latents: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)
    shared_slice: slice = field(default_factory=lambda: slice(0))


def exact_counts(fractions: dict[str, float], n: int) -> dict[str, int]:
    """Largest-remainder allotment of n items to the categories (sums to n, each within 1 of n * fraction)."""
    total = sum(fractions.values())
    raw = {k: n * v / total for k, v in fractions.items()}
    counts = {k: int(np.floor(r)) for k, r in raw.items()}
    rest = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), k))[:rest]:
        counts[k] += 1
    return counts


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**63, *stream])


def _draw_identities(sizes: tuple[int, int, int], seed: int) -> pd.DataFrame:
    n = sum(sizes)
    rng = _rng(seed, 1)
    n_male = int(round(MALE_FRACTION * n))
    gender = np.array(["m"] * n_male + ["f"] * (n - n_male))
    nat = np.array([k for k, c in exact_counts(NATIONALITIES, n).items() for _ in range(c)])
    gender, nat = gender[rng.permutation(n)], nat[rng.permutation(n)]
    split = np.array([s for s, c in zip(SPLITS, sizes) for _ in range(c)])[rng.permutation(n)]
    names = [f"Sim_Person_{i + 1:04d}" for i in range(n)]
    return pd.DataFrame({"identity": names, "gender": gender, "nationality": nat, "split": split})


def _video_ids(rng: np.random.Generator, n: int) -> list[str]:
    seen: set[str] = set()
    out = []
    while len(out) < n:
        v = "".join(rng.choice(list(_ID_CHARS), 11))
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def _expert_view(name: str, in_dim: int, out_dim: int, coverage: float, seed: int):
    """The fixed random nonlinear view of one expert: (dims it sees, W1, b1, W2, noise factor)."""
    rng = _rng(seed, 7, zlib.crc32(name.encode()))
    k = max(1, int(round(coverage * in_dim)))
    dims = np.sort(rng.choice(in_dim, k, replace=False))
    hidden = max(64, out_dim // 2)
    w1 = rng.normal(0, 1 / np.sqrt(k), (k, hidden)) * 0.8
    b1 = rng.normal(0, 0.1, hidden)
    w2 = rng.normal(0, 1 / np.sqrt(hidden), (hidden, out_dim))
    factor = float(rng.uniform(0.7, 1.3))
    return dims, w1, b1, w2, factor


def expert_quality(sp: Any, name: str) -> tuple[float, float | None, float]:
    """(coverage, noise or None for the common noise times the expert's random factor, missing rate) of one
    simulated expert: its `expert_profiles` entry where set, else the common settings."""
    prof = sp.expert_profiles.get(name)
    cov = prof.coverage if prof is not None and prof.coverage is not None else sp.expert_coverage
    noise = prof.noise if prof is not None else None
    missing = prof.missing if prof is not None and prof.missing is not None else sp.missing_fraction
    return float(cov), (None if noise is None else float(noise)), float(missing)


def expert_sensitivity(sp: Any, name: str) -> float:
    """The share of its input signal an expert loses on a low-quality track (profile, else the common one)."""
    prof = sp.expert_profiles.get(name)
    return float(prof.sensitivity if prof is not None and prof.sensitivity is not None else sp.degraded_sensitivity)


def simulate_cohort(cp: VfCorpusParams) -> Cohort:
    """Draw the cohort of `cp` (size, seed, simulator); see the module docstring for the model."""
    sp = cp.simulator
    sizes = COHORT_SIZES[cp.size]
    seed = cp.seed
    ids = _draw_identities(sizes, seed)
    n_id = len(ids)
    a, s, p = sp.attribute_dim, sp.shared_dim, sp.private_dim
    latent_dim = a + s + p

    rng = _rng(seed, 2)
    u_g = rng.normal(size=a)
    u_g /= np.linalg.norm(u_g)
    nats = sorted(NATIONALITIES)
    u_nat = rng.normal(size=(len(nats), a))
    u_nat /= np.linalg.norm(u_nat, axis=1, keepdims=True)
    nat_index = {k: i for i, k in enumerate(nats)}
    sign = np.where(ids["gender"].to_numpy() == "m", 1.0, -1.0)
    attr = (sp.gender_scale / 2) * sign[:, None] * u_g + sp.nationality_scale * u_nat[
        [nat_index[k] for k in ids["nationality"]]]
    shared = rng.normal(0, sp.shared_scale, (n_id, s))
    private = {m: rng.normal(0, sp.private_scale, (n_id, p)) for m in ("voice", "face")}
    latent = {m: np.concatenate([attr, shared, private[m]], 1) for m in ("voice", "face")}

    # videos and clips: one voice and one face track per clip
    rng = _rng(seed, 3)
    n_videos = rng.integers(sp.videos_per_identity[0], sp.videos_per_identity[1] + 1, n_id)
    vids = _video_ids(rng, int(n_videos.sum()))
    rows: list[dict] = []
    v_at = 0
    for i in range(n_id):
        name = ids["identity"].iat[i]
        for _ in range(int(n_videos[i])):
            ytid = vids[v_at]
            v_at += 1
            clips = int(rng.integers(sp.clips_per_video[0], sp.clips_per_video[1] + 1))
            for c in range(1, clips + 1):
                rows.append({"track": f"{name}/{ytid}/{c:05d}.wav", "modality": "voice", "identity": name,
                             "video": ytid, "path": "", "noisy": False, "_id": i, "_video": v_at - 1})
                rows.append({"track": f"{name}/1.6/{ytid}/{c}", "modality": "face", "identity": name,
                             "video": ytid, "path": "", "noisy": False, "_id": i, "_video": v_at - 1})
    tracks = pd.DataFrame(rows)

    # noisy tracks: the content comes from another identity of the same split
    rng = _rng(seed, 4)
    split_of = ids["split"].to_numpy()
    by_split = {sp_: np.flatnonzero(split_of == sp_) for sp_ in SPLITS}
    source = tracks["_id"].to_numpy().copy()
    for m in sp.noisy_modalities:
        idx = np.flatnonzero(tracks["modality"].to_numpy() == m)
        k = int(round(sp.noisy_fraction * len(idx)))
        chosen = np.sort(rng.choice(idx, k, replace=False)) if k else np.zeros(0, int)
        for t in chosen:
            own = source[t]
            pool = by_split[split_of[own]]
            other = pool[pool != own]
            if len(other):
                source[t] = int(rng.choice(other))
    tracks["noisy"] = source != tracks["_id"].to_numpy()

    # track latents
    rng = _rng(seed, 5)
    n_vid_total = int(n_videos.sum())
    z_tracks = {}
    for m in ("voice", "face"):
        sel = np.flatnonzero(tracks["modality"].to_numpy() == m)
        offsets = rng.normal(0, sp.video_nuisance, (n_vid_total, latent_dim))
        z = latent[m][source[sel]] + offsets[tracks["_video"].to_numpy()[sel]]
        z = z + rng.normal(0, sp.track_nuisance, z.shape)
        z_tracks[m] = (sel, z)

    # expert views, missing vectors
    vectors: dict[str, tuple[list[str], np.ndarray]] = {}
    missing_rows: list[dict] = []
    experts = dict(sp.experts)
    by_modality = {m: [e for e in experts if e.startswith("v_" if m == "voice" else "f_")] for m in ("voice", "face")}
    rng_missing = _rng(seed, 6)
    degraded_count = {}
    for m in ("voice", "face"):
        sel, z = z_tracks[m]
        names = tracks["track"].to_numpy()[sel]
        # low-quality tracks (own stream: a cohort without them draws exactly what it drew before)
        degraded = _rng(seed, 9, zlib.crc32(m.encode())).random(len(sel)) < sp.degraded_fraction.get(m, 0.0)
        degraded_count[m] = int(degraded.sum())
        es = by_modality[m]
        quality = {e: expert_quality(sp, e) for e in es}
        absent = rng_missing.random((len(sel), len(es))) < np.array([quality[e][2] for e in es])
        all_gone = absent.all(1)
        if all_gone.any():  # keep one expert per track
            keep = rng_missing.integers(0, len(es), int(all_gone.sum()))
            absent[np.flatnonzero(all_gone), keep] = False
        for j, e in enumerate(es):
            coverage, noise, _ = quality[e]
            dims, w1, b1, w2, factor = _expert_view(e, latent_dim, experts[e], coverage, seed)
            out = np.tanh(z[:, dims] @ w1 + b1) @ w2
            noise_std = float(out.std())  # the expert's noise level is set by its normal (full-signal) output
            if degraded.any():  # the input signal weakens, the expert's own noise does not
                kept = 1.0 - expert_sensitivity(sp, e)
                out[degraded] = np.tanh(kept * z[degraded][:, dims] @ w1 + b1) @ w2
            noise_rng = _rng(seed, 8, zlib.crc32(e.encode()))
            rel = sp.expert_noise * factor if noise is None else noise
            out = out + noise_rng.normal(0, rel * noise_std, out.shape)
            keep_rows = ~absent[:, j]
            vectors[e] = ([str(t) for t in names[keep_rows]], out[keep_rows].astype(np.float32))
            missing_rows += [{"track": str(t), "expert": e, "reason": "simulated: expert output unavailable"}
                             for t in names[~keep_rows]]
    missing = pd.DataFrame(missing_rows, columns=["track", "expert", "reason"])
    tracks = tracks.drop(columns=["_id", "_video"])
    info = {
        "corpus": SIMULATED_LABEL, "size": cp.size, "seed": seed,
        **{f"identities_{s_}": int((ids["split"] == s_).sum()) for s_ in SPLITS},
        "videos": n_vid_total,
        "voice_tracks": int((tracks["modality"] == "voice").sum()),
        "face_tracks": int((tracks["modality"] == "face").sum()),
        "noisy_tracks": int(tracks["noisy"].sum()),
        "missing_vectors": len(missing),
        **({f"degraded_{m}_tracks": n for m, n in degraded_count.items()} if sp.degraded_fraction else {}),
        "male_fraction": float((ids["gender"] == "m").mean()),
        "experts": experts,
        **({"expert_profiles": {e: dict(zip(("coverage", "noise", "missing"), expert_quality(sp, e)))
                                for e in sorted(sp.expert_profiles)}} if sp.expert_profiles else {}),
    }
    latents_out = {m: ([str(t) for t in tracks["track"].to_numpy()[sel]], z) for m, (sel, z) in z_tracks.items()}
    return Cohort(ids, tracks, vectors, missing, info, latents_out, slice(0, a + s))


def write_cohort(cohort: Cohort, root: Path) -> dict[str, Any]:
    """The agreed corpus layout: identities.parquet, tracks.parquet, experts/<e>.parquet, experts/missing.parquet,
    plus cohort.json (the summary, with the "simulated" label)."""
    root = Path(root)
    write_frame(cohort.identities, root / "identities.parquet")
    write_frame(cohort.tracks, root / "tracks.parquet")
    for e, (tracks, mat) in cohort.vectors.items():
        write_vectors(root / "experts" / f"{e}.parquet", tracks, mat)
    write_frame(cohort.missing, root / "experts" / MISSING_FILE)
    (root / "cohort.json").write_text(json.dumps(cohort.info, indent=2, sort_keys=True) + "\n")
    return cohort.info


def build_cohort(cp: VfCorpusParams, root: Path) -> dict[str, Any]:
    """Draw and write the simulated cohort (the corpus stage). Stale expert files of a previous run go."""
    root = Path(root)
    cohort = simulate_cohort(cp)
    if (root / "experts").exists():
        for f in (root / "experts").glob("*.parquet"):
            if f.stem not in cohort.vectors and f.name != MISSING_FILE:
                f.unlink()
    return write_cohort(cohort, root)
