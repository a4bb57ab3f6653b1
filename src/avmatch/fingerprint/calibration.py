"""The no-match decision, calibrated per query length.

The score that says "this excerpt is in the database" (the winner's margin over the best other
track) grows with query length for music that is NOT in the database too: a 10 s excerpt of unknown
music finds more chance support than a 1 s one. One threshold for all lengths therefore lets through
too many false matches on long queries or rejects too many true ones on short queries. Here each
calibrated length gets its own threshold, chosen so that at most `target_fmr` of out-of-database
queries of that length are answered; a query is held to the threshold of the shortest calibrated
length with at least as many segments as it has (the pipeline's evaluation and the user database
apply the same rule).

The decision (fingerprint.search.score) tests one score, the `margin` or the plain `similarity`, or
`either`: a query is answered when its margin OR its similarity passes that score's own per-length
threshold. The margin is the better evidence for one-segment queries, the similarity for 2-3 s ones
(docs/benchmarks.md, issue 16); each of the two is calibrated for half the target, so the union's
false-match rate stays within it (Bonferroni).

The thresholds are set on *null queries*: excerpts of music that is not in the database (the
pipeline's training music), degraded like real queries. They can be cut in any number, so a 1 %
false-match rate is estimated from hundreds of queries per length, not from the handful of
out-of-database validation queries a corpus has.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from avmatch.fingerprint import degrade
from avmatch.fingerprint.search import (
    Match,
    decide,
    decision_score,
    threshold_for_false_match_rate,
)

NULL_DEGRADATIONS = ("clean", "gain", "noise", "reverb", "speed", "stretch")


# keys the per-length thresholds are read from ({"1s": 0.05, "10s": 0.27, ...})
BY_LENGTH_KEYS = ("thresholds_by_length", "threshold_by_length")
# prefix of the keys of the second score's thresholds (the similarity's, for the decision `either`)
SIMILARITY_PREFIX = "similarity_"


def segments_in(seconds: float, segment_s: float, hop_s: float) -> int:
    """Segments a query of `seconds` is cut into (as `frame_segments` cuts it; at least one)."""
    return max(1, int(math.floor((seconds - segment_s) / hop_s + 1e-6)) + 1)


@dataclass(frozen=True)
class Thresholds:
    """The no-match threshold: one number, or one per evaluated query length.

    The no-match score of music that is not in the database grows with query length, so an
    evaluation may calibrate one threshold per length. A query is held to the threshold of the
    shortest evaluated length that has at least as many segments as it has: never a lower threshold
    than its own length was calibrated for (false matches stay within the evaluated rate), and
    codec padding (a "3 s" query decoding to 3.02 s) does not move it to the next length.

    `similarity` holds the similarity's own thresholds for the decision `either` (these, the margin's);
    without it `either` tests the margin alone (as a database built with one `--threshold` does).
    """

    default: float
    by_length: tuple[tuple[float, float], ...] = ()   # (query length in s, threshold), by length
    similarity: Thresholds | None = None

    def for_segments(self, n_segments: int, segment_s: float, hop_s: float) -> float:
        for length, value in self.by_length:
            if segments_in(length, segment_s, hop_s) >= n_segments:
                return value
        return self.by_length[-1][1] if self.by_length else self.default

    def fits(self, mode: str, source: str = "") -> bool:
        """Whether these thresholds serve the decision `mode`: `either` needs the similarity's too,
        unless one `--threshold` (the margin alone, documented in `identify --help`) was given."""
        return mode != "either" or self.similarity is not None or source == "--threshold"

    def decide(self, match: Match, mode: str, runner_up_weight: float, n_segments: int, segment_s: float,
               hop_s: float) -> Match:
        """`match` (as searched: its score the similarity) scored for `mode` and turned into a no-match
        unless it passes the thresholds of a query of `n_segments` segments."""
        sim = self.similarity.for_segments(n_segments, segment_s, hop_s) if self.similarity else None
        return decide(match, mode, runner_up_weight, self.for_segments(n_segments, segment_s, hop_s), sim)

    def describe(self) -> str:
        if not self.by_length:
            text = f"{self.default:.4f}"
        else:
            text = "by query length: " + ", ".join(f"{v:.4f} at {length:g} s" for length, v in self.by_length)
        return text + (f"; or similarity {self.similarity.describe()}" if self.similarity else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": self.default}
        if self.by_length:
            out["thresholds_by_length"] = {f"{length:g}s": v for length, v in self.by_length}
        if self.similarity is not None:
            out.update({SIMILARITY_PREFIX + k: v for k, v in self.similarity.to_json().items()})
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Thresholds:
        """From db.json or an evaluation's metrics file: `threshold` and/or the per-length map (without
        `threshold`, the longest length's value serves queries longer than every evaluated length), and
        the same under `similarity_` keys when the decision is `either`."""
        first = cls._from_keys(data)
        second = {k[len(SIMILARITY_PREFIX):]: v for k, v in data.items() if k.startswith(SIMILARITY_PREFIX)}
        return replace(first, similarity=cls._from_keys(second)) if second else first

    @classmethod
    def _from_keys(cls, data: dict[str, Any]) -> Thresholds:
        by_length = next((data[k] for k in BY_LENGTH_KEYS if isinstance(data.get(k), dict)), {})
        if "threshold" not in data and not by_length:
            raise KeyError("threshold")
        pairs = []
        for key, value in by_length.items():
            if isinstance(value, dict):   # {"threshold": t, ...} per length
                value = value.get("threshold")
            if value is None:
                continue
            pairs.append((float(str(key).strip().rstrip("s")), float(value)))
        pairs.sort()
        default = float(data["threshold"]) if "threshold" in data else pairs[-1][1]
        return cls(default, tuple(pairs))


def calibrate(null_scores: Mapping[float, Sequence[float]], target_fmr: float) -> Thresholds:
    """Per length, the lowest threshold that answers at most `target_fmr` of that length's null queries.

    Null queries with no candidate at all count with score -inf (never answered). Each length is
    calibrated on its own: how the null scores move with length depends on the score (the margin grows
    with length, the plain similarity falls), so no order between lengths is imposed.
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
    return Thresholds(out[-1], tuple(zip(lengths, out)))


def calibrate_decision(null_matches: Mapping[float, Sequence[Match]], mode: str, runner_up_weight: float,
                       target_fmr: float) -> Thresholds:
    """`calibrate` for the decision `mode` on the null queries' matches (as searched, score = similarity).

    `either` calibrates the margin and the similarity each for `target_fmr / 2`: a null query answered
    by the union passed at least one of them, so at most `target_fmr` of them are (Bonferroni)."""
    def scores(score: str) -> dict[float, list[float]]:
        return {v: [null_score(decision_score(m, score, runner_up_weight)) for m in ms] for v, ms in null_matches.items()}

    if mode == "either":
        return replace(calibrate(scores("margin"), target_fmr / 2),
                       similarity=calibrate(scores("similarity"), target_fmr / 2))
    return calibrate(scores(mode), target_fmr)


def null_score(match: Match) -> float:
    """A query's decision score; a query with no candidate at all is never answered (-inf)."""
    return float(match.score) if match.item_id is not None else float("-inf")


def null_excerpts(tracks: Sequence[np.ndarray], noises: Sequence[np.ndarray], lengths_s: Sequence[float],
                  per_length: int, sample_rate: int, seed: int, max_speed_change: float = 0.03,
                  snr_db: tuple[float, float] = (0.0, 10.0)) -> list[tuple[float, np.ndarray]]:
    """`per_length` excerpts of each length cut at random from `tracks` (music that is not in the
    database), each with one degradation of `NULL_DEGRADATIONS` in turn, as (length_s, audio) pairs.

    The degradations are those of the evaluation queries (noise from `noises` at `snr_db`, simulated
    rooms, gain, speed and tempo changes), so that the null distribution is that of real unknown
    queries; deterministic in `seed`.
    """
    return [(length, x) for length, x, _ in null_excerpts_from(tracks, noises, lengths_s, per_length, sample_rate,
                                                                seed, max_speed_change, snr_db)]


def null_excerpts_from(tracks: Sequence[np.ndarray], noises: Sequence[np.ndarray], lengths_s: Sequence[float],
                       per_length: int, sample_rate: int, seed: int, max_speed_change: float = 0.03,
                       snr_db: tuple[float, float] = (0.0, 10.0)) -> list[tuple[float, np.ndarray, int]]:
    """`null_excerpts` with the position in `tracks` of each excerpt's source: (length_s, audio, track).

    The source matters when the excerpts are cut from the references themselves (leave-one-out null
    queries): each is searched with its own recording left out, so it stands for unknown music of the
    database's own kind.
    """
    usable = [(k, np.asarray(t, np.float32)) for k, t in enumerate(tracks) if len(t) > 0]
    if not usable:
        raise ValueError("no music to cut null queries from")
    rng = np.random.default_rng([seed, 4021])
    out: list[tuple[float, np.ndarray, int]] = []
    for length in lengths_s:
        n = int(round(float(length) * sample_rate))
        for j in range(per_length):
            kind = NULL_DEGRADATIONS[j % len(NULL_DEGRADATIONS)]
            if kind == "noise" and not noises:
                kind = "clean"
            source, track = usable[int(rng.integers(len(usable)))]
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
            out.append((float(length), np.asarray(x, np.float32), source))
    return out
