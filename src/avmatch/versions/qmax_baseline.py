"""Classical cover-song baseline: Essentia HPCP chroma, chroma cross-similarity, Qmax alignment.

The method of Serra et al. (2009) as Essentia's cover-song tutorial runs it (essentia.upf.edu,
tutorial_similarity_cover): `hpcpgram` (12-bin HPCP; audio at 32 kHz, frame 4096, hop 2048,
Blackman-Harris window, 100-4000 Hz), `ChromaCrossSimilarity` (9 frames stacked, OTI transposition of
the reference to the query's key, binarised at the 9.5th percentile of each row and column) and
`CoverSongSimilarity` (serra09 Smith-Waterman constraints, disruption onset/extension penalties 0.5,
asymmetric distance: the best alignment score normalised by the reference's length). On top of the
tutorial, consecutive HPCP frames may be averaged (`pool`): 4 frames (~0.26 s) make the alignment 16x
cheaper (the setting of the issue-18 report that measured MAP 0.74 on the demo test set).

No training, so it is the reference point a learnt encoder must beat; it costs one alignment per track
pair (quadratic in collection size), which is also why the re-ranker (`rerank.py`) only aligns a
query with its top candidates.

Why an earlier version of this stage scored MAP 0.18 on the demo test set: it used the `otiBinary`
similarity (a pair of frames is similar when its best transposition is 0 or 1 semitone) on single frames
of an HPCP with 8 harmonics from 40 Hz. `otiBinary` sets ~22 % of the cells of two demo tracks' matrix,
the tutorial's percentile binarisation ~6 %: in so dense a matrix any two chorales in related keys find
long runs of matches (the likely cause; the two changes were not measured apart). Its comment that `oti=True` with stacked frames gave all-zero matrices does not
reproduce with essentia 2.1b6-dev (5.7 % of cells set with the old HPCP as well). Frames whose chroma is
not finite (one would make every percentile threshold NaN, hence an all-zero matrix) are zeroed anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def pool_frames(chroma: np.ndarray, n: int) -> np.ndarray:
    """Average every `n` consecutive frames ([frames, bins] -> [ceil(frames / n), bins]); n = 1 is a no-op."""
    chroma = np.asarray(chroma, np.float32)
    if n <= 1 or len(chroma) == 0:
        return chroma
    pad = (-len(chroma)) % n
    full = np.concatenate([chroma, np.repeat(chroma[-1:], pad, 0)]) if pad else chroma
    return full.reshape(-1, n, chroma.shape[1]).mean(1)


def hpcp(audio: np.ndarray, sample_rate: int = 32000, frame_size: int = 4096, hop_size: int = 2048,
         pool: int = 1) -> np.ndarray:
    """[frames, 12] HPCP chroma of mono audio with Essentia's `hpcpgram` (the cover-song tutorial's front
    end, its default peak and HPCP settings), then `pool` consecutive frames averaged."""
    from essentia.pytools.spectral import hpcpgram

    audio = np.ascontiguousarray(audio, np.float32)
    if len(audio) < frame_size:
        return np.zeros((0, 12), np.float32)
    g = np.asarray(hpcpgram(audio, sampleRate=sample_rate, frameSize=frame_size, hopSize=hop_size), np.float32)
    return pool_frames(np.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0), pool)


@dataclass(frozen=True)
class QmaxSettings:
    """ChromaCrossSimilarity + CoverSongSimilarity parameters (defaults: Essentia's tutorial)."""

    frame_stack: int = 9
    binarize_percentile: float = 0.095
    oti: bool = True
    dis_onset: float = 0.5
    dis_extension: float = 0.5
    alignment: str = "serra09"
    distance: str = "asymmetric"


class QmaxScorer:
    """Distance between two chroma sequences (lower = more likely versions of each other)."""

    def __init__(self, settings: QmaxSettings | None = None):
        import essentia.standard as es

        s = settings or QmaxSettings()
        self.settings = s
        self.csm = es.ChromaCrossSimilarity(frameStackSize=s.frame_stack, frameStackStride=1,
                                            binarizePercentile=s.binarize_percentile, oti=s.oti)
        self.qmax = es.CoverSongSimilarity(disOnset=s.dis_onset, disExtension=s.dis_extension,
                                           alignmentType=s.alignment, distanceType=s.distance)
        # ChromaCrossSimilarity stacks frames [i, i + stack) for i < frames - stack: it needs stack + 1 frames
        self.min_frames = s.frame_stack + 1

    def similarity_matrix(self, query: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The binary cross-similarity matrix [query stacks, reference stacks]."""
        return np.asarray(self.csm(np.ascontiguousarray(query, np.float32),
                                   np.ascontiguousarray(reference, np.float32)), np.float32)

    def distance(self, query: np.ndarray, reference: np.ndarray) -> float:
        """Qmax distance; +inf when either sequence is too short to stack or nothing aligns at all."""
        if len(query) < self.min_frames or len(reference) < self.min_frames:
            return float("inf")
        return self._align(self.similarity_matrix(query, reference))

    def distances(self, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        """(a queries b, b queries a) from one cross-similarity matrix: the matrix of (b, a) is the transpose
        of (a, b)'s (the OTI of b to a is minus that of a to b, and the percentile binarisation treats rows
        and columns alike; identical on the demo's test tracks), so an all-pairs evaluation computes each
        pair's matrix once and aligns it both ways. The alignment stays asymmetric."""
        if len(a) < self.min_frames or len(b) < self.min_frames:
            return float("inf"), float("inf")
        sim = self.similarity_matrix(a, b)
        return self._align(sim), self._align(np.ascontiguousarray(sim.T))

    def _align(self, sim: np.ndarray) -> float:
        if not sim.any():
            return float("inf")
        _, dist = self.qmax(sim)
        return float(dist) if np.isfinite(dist) else float("inf")
