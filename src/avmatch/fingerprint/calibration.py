"""The no-match decision, calibrated per query length.

The score that says "this excerpt is in the database" (the winner's margin over the best other
track) grows with query length for music that is NOT in the database too: a 10 s excerpt of unknown
music finds more chance support than a 1 s one. One threshold for all lengths therefore lets through
too many false matches on long queries or rejects too many true ones on short queries. Here each
calibrated length gets its own threshold, chosen so that at most `target_fmr` of out-of-database
queries of that length are answered; a query of another length uses the threshold interpolated
in log-length between its neighbours (clamped at the ends).

The thresholds are set on *null queries*: excerpts of music that is not in the database (the
pipeline's training music), degraded like real queries. They can be cut in any number, so a 1 %
false-match rate is estimated from hundreds of queries per length, not from the handful of
out-of-database validation queries a corpus has.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from avmatch.fingerprint import degrade
from avmatch.fingerprint.metrics import length_key
from avmatch.fingerprint.search import threshold_for_false_match_rate

NULL_DEGRADATIONS = ("clean", "gain", "noise", "reverb", "speed", "stretch")


@dataclass(frozen=True)
class LengthThresholds:
    """No-match thresholds per query length, for one target false-match rate."""

    lengths_s: tuple[float, ...]
    thresholds: tuple[float, ...]
    target_fmr: float

    def __post_init__(self) -> None:
        if not self.lengths_s or len(self.lengths_s) != len(self.thresholds):
            raise ValueError(f"need one threshold per length, got {self.lengths_s} and {self.thresholds}")
        if list(self.lengths_s) != sorted(self.lengths_s) or min(self.lengths_s) <= 0:
            raise ValueError(f"lengths must be positive and increasing, got {self.lengths_s}")

    def at(self, length_s: float) -> float:
        """The threshold for a query of `length_s` seconds (log-length interpolation, clamped)."""
        x = math.log(max(float(length_s), 1e-3))
        xs = [math.log(v) for v in self.lengths_s]
        return float(np.interp(x, xs, self.thresholds))

    def to_json(self) -> dict[str, float]:
        return {length_key(v): float(t) for v, t in zip(self.lengths_s, self.thresholds)}

    @classmethod
    def from_json(cls, data: Mapping[str, float], target_fmr: float) -> "LengthThresholds":
        """From `{"1s": t1, "3s": t3, ...}` (the `thresholds_by_length` of metrics/fingerprint.json)."""
        pairs = sorted((float(k.rstrip("s")), float(v)) for k, v in data.items())
        return cls(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), float(target_fmr))

    @classmethod
    def constant(cls, threshold: float, target_fmr: float = float("nan")) -> "LengthThresholds":
        """One threshold for every length (what a database made before per-length calibration uses)."""
        return cls((1.0,), (float(threshold),), target_fmr)


def calibrate(null_scores: Mapping[float, Sequence[float]], target_fmr: float) -> LengthThresholds:
    """Per length, the lowest threshold that answers at most `target_fmr` of that length's null queries.

    Null queries with no candidate at all count with score -inf (never answered). Thresholds are made
    non-decreasing with length: a longer query never gets a lower bar than a shorter one, which keeps
    the interpolation between calibrated lengths conservative where the estimates are noisy.
    """
    lengths = sorted(float(v) for v in null_scores)
    if not lengths:
        raise ValueError("no null queries to calibrate on")
    out = []
    for v in lengths:
        scores = np.asarray(null_scores[v], np.float64)
        if len(scores) == 0:
            raise ValueError(f"no null queries of length {v} s")
        t = threshold_for_false_match_rate([], [], scores, target_fmr)
        out.append(float(max(t, -1.0)))
    out = list(np.maximum.accumulate(out))
    return LengthThresholds(tuple(lengths), tuple(out), float(target_fmr))


def null_excerpts(tracks: Sequence[np.ndarray], noises: Sequence[np.ndarray], lengths_s: Sequence[float],
                  per_length: int, sample_rate: int, seed: int, max_speed_change: float = 0.03,
                  snr_db: tuple[float, float] = (0.0, 10.0)) -> list[tuple[float, np.ndarray]]:
    """`per_length` excerpts of each length cut at random from `tracks` (music that is not in the
    database), each with one degradation of `NULL_DEGRADATIONS` in turn, as (length_s, audio) pairs.

    The degradations are those of the evaluation queries (noise from `noises` at `snr_db`, simulated
    rooms, gain, speed and tempo changes), so that the null distribution is that of real unknown
    queries; deterministic in `seed`.
    """
    usable = [np.asarray(t, np.float32) for t in tracks if len(t) > 0]
    if not usable:
        raise ValueError("no music to cut null queries from")
    rng = np.random.default_rng([seed, 4021])
    out: list[tuple[float, np.ndarray]] = []
    for length in lengths_s:
        n = int(round(float(length) * sample_rate))
        for j in range(per_length):
            kind = NULL_DEGRADATIONS[j % len(NULL_DEGRADATIONS)]
            if kind == "noise" and not noises:
                kind = "clean"
            track = usable[int(rng.integers(len(usable)))]
            rate = 1.0 + float(rng.choice([-1.0, 1.0]) * rng.uniform(0.005, max_speed_change))
            need = int(math.ceil(n * max(rate, 1.0)))
            start = int(rng.integers(0, max(1, len(track) - need)))
            x = track[start:start + n]
            if len(x) < n:
                x = np.pad(x, (0, n - len(x)))
            if kind == "gain":
                x = degrade.change_gain(x, float(rng.choice([-1.0, 1.0]) * rng.uniform(3.0, 12.0)))
            elif kind == "noise":
                x = degrade.mix_at_snr(x, noises[int(rng.integers(len(noises)))], float(rng.uniform(*snr_db)), rng)
            elif kind == "reverb":
                x = degrade.apply_rir(x, degrade.simulate_rir(sample_rate, float(rng.uniform(0.3, 1.0)), rng))
            elif kind == "speed":
                x = degrade.change_speed(track, start, n, rate)
            elif kind == "stretch":
                y = degrade.time_stretch(track[start:start + int(round(n * rate))], rate)[:n]
                x = np.pad(y, (0, n - len(y)))
            out.append((float(length), np.asarray(x, np.float32)))
    return out
