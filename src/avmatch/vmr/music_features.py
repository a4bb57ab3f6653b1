"""Per-second music features with librosa: what a music video's picture can follow.

The editing of a music video follows the music at a few time scales: cuts fall on beats and bars
(tempo, beat phase), motion follows loudness and onsets (rhythm), and grading follows the timbre and
mode (bright or dark sound, major or minor). The features below are those cues, one row per second of
music, grouped in families so that an ablation can leave a family out:

- `timbre`   13 MFCC means, log RMS energy, log spectral centroid, and the log RMS profile within the
             second (SUBSTEPS bins, minus the second's mean)
- `chroma`   12 chroma means and a major-minor score of the whole clip (Krumhansl-Kessler key profiles)
- `contrast` 7 spectral contrast bands
- `rhythm`   onset strength mean / max / std, tempo, beats in the second, beat phase (sin, cos) at the
             second's start, pulse clarity (height of the onset autocorrelation at the beat period), and the
             onset strength profile within the second (SUBSTEPS bins)

`analyse_music` is also what the corpus builder edits to (beats, tempo, energy, centroid, mode): the
rule that makes the corpus is documented in `avmatch.vmr.editing`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUBSTEPS = 8   # sub-second profile bins per second (where in the second the onsets fall)
FAMILY_SIZES = {"timbre": 15 + SUBSTEPS, "chroma": 13, "contrast": 7, "rhythm": 8 + SUBSTEPS}

# Krumhansl-Kessler key profiles (C major, C minor)
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass
class MusicAnalysis:
    """Frame-level analysis of one clip (frames at sr / hop per second)."""

    sr: int
    hop: int
    duration_s: float
    tempo: float                 # beats per minute (0 when no beat was found)
    beat_times: np.ndarray       # seconds
    onset: np.ndarray            # onset strength per frame
    rms: np.ndarray              # RMS per frame
    centroid: np.ndarray         # spectral centroid (Hz) per frame
    chroma: np.ndarray           # [12, frames]
    mode: float                  # > 0 major, < 0 minor (correlation difference of the best keys)

    @property
    def frame_rate(self) -> float:
        return self.sr / self.hop

    def at(self, curve: np.ndarray, t: np.ndarray | float) -> np.ndarray:
        """The frame-level `curve` read at times `t` (seconds), nearest frame."""
        idx = np.clip(np.round(np.asarray(t) * self.frame_rate).astype(int), 0, len(curve) - 1)
        return curve[idx]


def mode_score(chroma_mean: np.ndarray) -> float:
    """Best major-key correlation minus best minor-key correlation over the 12 transpositions."""
    c = np.asarray(chroma_mean, np.float64)
    if not np.isfinite(c).all() or c.std() < 1e-9:
        return 0.0
    best = []
    for prof in (_MAJOR, _MINOR):
        best.append(max(float(np.corrcoef(c, np.roll(prof, k))[0, 1]) for k in range(12)))
    return best[0] - best[1]


def _spectrum(y: np.ndarray, sr: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude STFT (n_fft 1024) and its mel power spectrogram, computed once and shared by every feature."""
    import librosa

    mag = np.abs(librosa.stft(np.asarray(y, np.float32), n_fft=1024, hop_length=hop))
    mel = librosa.feature.melspectrogram(S=mag ** 2, sr=sr, n_mels=64)
    return mag, mel


def analyse_music(y: np.ndarray, sr: int, hop: int = 256, spectrum: tuple | None = None) -> MusicAnalysis:
    """Beat tracking, onset strength, energy, centroid and chroma of mono float audio `y`."""
    import librosa

    mag, mel = spectrum if spectrum is not None else _spectrum(y, sr, hop)
    onset = librosa.onset.onset_strength(S=librosa.power_to_db(mel), sr=sr, hop_length=hop)
    tempo, beats = librosa.beat.beat_track(onset_envelope=onset, sr=sr, hop_length=hop)
    tempo = float(np.atleast_1d(tempo)[0]) if len(beats) else 0.0
    rms = librosa.feature.rms(S=mag, frame_length=1024, hop_length=hop)[0]
    centroid = librosa.feature.spectral_centroid(S=mag, sr=sr, n_fft=1024, hop_length=hop)[0]
    chroma = librosa.feature.chroma_stft(S=mag ** 2, sr=sr, n_fft=1024, hop_length=hop)
    n = min(len(onset), len(rms), len(centroid), chroma.shape[1])
    return MusicAnalysis(sr, hop, len(y) / sr, tempo, librosa.frames_to_time(beats, sr=sr, hop_length=hop),
                         onset[:n], rms[:n], centroid[:n], chroma[:, :n], mode_score(chroma[:, :n].mean(1)))


def _per_second(curve: np.ndarray, frame_rate: float, seconds: int, fn=np.mean) -> np.ndarray:
    """`fn` of a [d, frames] (or [frames]) curve over each whole second -> [seconds, d]."""
    c = np.atleast_2d(curve)
    out = np.zeros((seconds, c.shape[0]), np.float32)
    for s in range(seconds):
        a, b = int(round(s * frame_rate)), int(round((s + 1) * frame_rate))
        seg = c[:, a:max(b, a + 1)]
        if seg.shape[1]:
            out[s] = fn(seg, axis=1)
    return out


def _profile(curve: np.ndarray, frame_rate: float, seconds: int, bins: int = SUBSTEPS) -> np.ndarray:
    """Mean of a frame-level curve in each of `bins` equal parts of every second -> [seconds, bins]."""
    out = np.zeros((seconds, bins), np.float32)
    for s in range(seconds):
        edges = np.round((s + np.arange(bins + 1) / bins) * frame_rate).astype(int)
        for k in range(bins):
            seg = curve[edges[k]:max(edges[k + 1], edges[k] + 1)]
            out[s, k] = seg.mean() if len(seg) else 0.0
    return out


def beat_phase(beat_times: np.ndarray, t: np.ndarray, tempo: float) -> np.ndarray:
    """Phase in [0, 1) of times `t` within the beat grid (0 on a beat); 0 without beats."""
    t = np.asarray(t, np.float64)
    if len(beat_times) == 0 or tempo <= 0:
        return np.zeros_like(t)
    period = 60.0 / tempo
    last = np.searchsorted(beat_times, t, side="right") - 1
    ref = np.where(last >= 0, beat_times[np.clip(last, 0, None)], beat_times[0])
    return np.mod((t - ref) / period, 1.0)


def pulse_clarity(onset: np.ndarray, frame_rate: float, tempo: float) -> float:
    """Normalised autocorrelation of the onset envelope at the beat period (how clear the beat is)."""
    if tempo <= 0 or len(onset) < 4:
        return 0.0
    x = onset - onset.mean()
    lag = int(round(60.0 / tempo * frame_rate))
    if lag <= 0 or lag >= len(x) or not np.any(x):
        return 0.0
    return float(np.dot(x[:-lag], x[lag:]) / (np.dot(x, x) + 1e-9))


def music_per_second(y: np.ndarray, sr: int, hop: int = 256, n_mfcc: int = 13) -> dict[str, np.ndarray]:
    """The four feature families of the module docstring, each [seconds, d] float32."""
    import librosa

    mag, mel = _spectrum(y, sr, hop)
    a = analyse_music(y, sr, hop, (mag, mel))
    seconds = int(len(y) // sr)
    fr = a.frame_rate
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=n_mfcc)[:, : len(a.rms)]
    contrast = librosa.feature.spectral_contrast(S=mag, sr=sr, n_fft=1024, hop_length=hop)[:, : len(a.rms)]
    log_rms = np.log(a.rms + 1e-5)
    log_cent = np.log(a.centroid + 1.0)
    rms_ps = _per_second(log_rms, fr, seconds)
    timbre = np.concatenate([_per_second(mfcc, fr, seconds) / 100.0, rms_ps, _per_second(log_cent, fr, seconds),
                             _profile(log_rms, fr, seconds) - rms_ps], 1)
    chroma = np.concatenate([_per_second(a.chroma, fr, seconds), np.full((seconds, 1), a.mode, np.float32)], 1)
    contrast_ps = _per_second(contrast, fr, seconds) / 10.0
    starts = np.arange(seconds, dtype=np.float64)
    phase = beat_phase(a.beat_times, starts, a.tempo)
    beats_in = np.histogram(a.beat_times, bins=np.arange(seconds + 1))[0] if seconds else np.zeros(0)
    rhythm = np.stack([
        _per_second(a.onset, fr, seconds)[:, 0], _per_second(a.onset, fr, seconds, np.max)[:, 0],
        _per_second(a.onset, fr, seconds, np.std)[:, 0], np.full(seconds, a.tempo / 120.0), beats_in.astype(np.float32),
        np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase),
        np.full(seconds, pulse_clarity(a.onset, fr, a.tempo))], 1).astype(np.float32)
    rhythm = np.concatenate([rhythm, _profile(a.onset, fr, seconds)], 1).astype(np.float32)
    return {"timbre": timbre.astype(np.float32), "chroma": chroma.astype(np.float32),
            "contrast": contrast_ps.astype(np.float32), "rhythm": rhythm}


def warm_librosa_kernels(sample_rate: int = 16000) -> None:
    """Run the music analysis once on a few seconds of noise, in this process, before starting workers:
    numba compiles librosa's kernels and writes them to its on-disk cache once, and the workers then load
    them. Two fresh workers compiling the same kernels at once race on that cache; one was seen to load a
    half-written kernel and crash (segmentation fault in librosa's tuning estimate, in a fresh environment,
    2026-12-02)."""
    noise = (0.1 * np.random.default_rng(0).standard_normal(4 * sample_rate)).astype(np.float32)
    analyse_music(noise, sample_rate)
    music_per_second(noise, sample_rate, 256)
