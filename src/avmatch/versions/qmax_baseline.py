"""Classical cover-song baseline: Essentia HPCP chroma, OTI-binarised chroma cross-similarity, Qmax.

The method of Serra et al. (2009) as Essentia ships it: 12-bin HPCP per frame, a binary
cross-recurrence matrix from the optimal transposition index (OTI binary similarity), then Smith-Waterman-like local alignment (Qmax); the distance is the maximum alignment score
normalised by the reference length (asymmetric). No training, so it is the reference point a
learnt encoder must beat; it costs one alignment per track pair (quadratic in collection size).
"""

from __future__ import annotations

import numpy as np


def hpcp(audio: np.ndarray, sample_rate: int, frame_size: int = 4096, hop_size: int = 2048) -> np.ndarray:
    """[frames, 12] HPCP chroma (Essentia's standard chain: window, spectrum, peaks, HPCP)."""
    import essentia.standard as es

    window = es.Windowing(type="blackmanharris62")
    spectrum = es.Spectrum()
    peaks = es.SpectralPeaks(sampleRate=sample_rate, orderBy="magnitude", magnitudeThreshold=1e-5,
                             minFrequency=40, maxFrequency=min(5000, sample_rate // 2 - 1), maxPeaks=100)
    h = es.HPCP(size=12, sampleRate=sample_rate, referenceFrequency=440, harmonics=8, bandPreset=True,
                minFrequency=40, maxFrequency=min(5000, sample_rate // 2 - 1), weightType="cosine",
                nonLinear=False, windowSize=1.0, normalized="unitMax")
    out = []
    for frame in es.FrameGenerator(np.asarray(audio, np.float32), frameSize=frame_size, hopSize=hop_size,
                                   startFromZero=True):
        f, m = peaks(spectrum(window(frame)))
        out.append(h(f, m))
    return np.asarray(out, np.float32) if out else np.zeros((0, 12), np.float32)


class QmaxScorer:
    """Distance between two chroma sequences (lower = more likely versions)."""

    def __init__(self, frame_stack: int = 9):
        import essentia.standard as es

        # otiBinary: Serra et al.'s OTI-based binary similarity. (The Euclidean-percentile binarisation,
        # `oti=True` with stacked frames, returned all-zero matrices across tracks in essentia 2.1b6.)
        self.csm = es.ChromaCrossSimilarity(frameStackSize=frame_stack, frameStackStride=1, oti=False, otiBinary=True)
        self.qmax = es.CoverSongSimilarity(disOnset=0.5, disExtension=0.5, alignmentType="serra09",
                                           distanceType="asymmetric")
        self.min_frames = frame_stack + 1

    def distance(self, query: np.ndarray, reference: np.ndarray) -> float:
        if len(query) < self.min_frames or len(reference) < self.min_frames:
            return float("inf")
        sim = self.csm(query, reference)
        _, dist = self.qmax(sim)
        return float(dist)
