"""The two voice experts: Resemblyzer's speaker encoder and MFCC statistics over the voiced frames.

Both decode the track to 16 kHz mono (`media.load_speech`; a video's soundtrack), bring it to one
loudness and keep only what WebRTC's voice activity detector calls speech. A track with less speech
than `min_speech_s` has no vector (`ExpertUnavailable("no speech: ...")`): an embedding of silence or
noise would be a confident vector about nobody.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np

from avmatch.voiceface.experts.base import ExpertLoadError, ExpertUnavailable, unit
from avmatch.voiceface.experts.media import SAMPLE_RATE, load_speech

VAD_WINDOW = 480          # 30 ms at 16 kHz, one WebRTC VAD decision
TARGET_DBFS = -30.0       # Resemblyzer's loudness target
_ENCODERS: dict[str, object] = {}
_LOCK = threading.Lock()


def _quiet_import_resemblyzer():
    with warnings.catch_warnings():       # webrtcvad imports pkg_resources, which warns
        warnings.simplefilter("ignore")
        import resemblyzer
    return resemblyzer


def _loudness_normalised(wav: np.ndarray, path: Path, min_s: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    if rms < 1e-5:
        raise ExpertUnavailable(f"no speech: 0.00 s voiced < {min_s:g} s (the audio is silent)")
    return (wav * (10 ** (TARGET_DBFS / 20) / rms)).astype(np.float32)


def vad_flags(wav: np.ndarray, mode: int = 3) -> np.ndarray:
    """One WebRTC VAD decision (bool) per 30 ms window of 16 kHz audio."""
    _quiet_import_resemblyzer()
    import webrtcvad

    n = len(wav) // VAD_WINDOW
    pcm = (np.clip(wav[: n * VAD_WINDOW], -1, 1) * 32767).astype("<i2").tobytes()
    vad = webrtcvad.Vad(mode)
    return np.array([vad.is_speech(pcm[i * 2 * VAD_WINDOW:(i + 1) * 2 * VAD_WINDOW], SAMPLE_RATE)
                     for i in range(n)], dtype=bool)


def speech_check(wav: np.ndarray, min_speech_s: float, vad_mode: int = 3, min_energy_std_db: float = 1.0) -> np.ndarray:
    """WebRTC VAD flags of the (loudness-normalised) track, after checking it holds speech: at least
    `min_speech_s` of voiced windows, and a voiced level that moves (the standard deviation of the
    windows' energy at least `min_energy_std_db` dB: speech rises and falls with its syllables, while a
    steady tone or hum, which WebRTC's VAD lets through, stays within a fraction of a dB)."""
    flags = vad_flags(wav, vad_mode)
    voiced_s = float(flags.sum() * VAD_WINDOW / SAMPLE_RATE)
    if voiced_s < min_speech_s:
        raise ExpertUnavailable(f"no speech: {voiced_s:.2f} s voiced < {min_speech_s:g} s")
    windows = wav[: len(flags) * VAD_WINDOW].reshape(-1, VAD_WINDOW)[flags].astype(np.float64)
    spread = float(np.std(10 * np.log10(np.mean(windows ** 2, axis=1) + 1e-10)))
    if spread < min_energy_std_db:
        raise ExpertUnavailable(f"no speech: a steady sound (level varies {spread:.2f} dB < {min_energy_std_db:g} dB), "
                                f"not a voice")
    return flags


class ResemblyzerVoice:
    """v_resemblyzer: Resemblyzer's GE2E speaker encoder (3-layer LSTM on 40 log-mel bands, 256-d unit
    vector; the weights ship inside the pip wheel). Its own preprocessing (volume normalisation and
    VAD-based trimming of long silences) is applied, then the utterance embedding (mean of partial
    embeddings over 1.6 s windows) is the vector."""

    name, modality, dim = "v_resemblyzer", "voice", 256

    def __init__(self, min_speech_s: float = 1.0, max_seconds: float | None = 120.0, weights: str | None = None,
                 min_energy_std_db: float = 1.0):
        self.min_speech_s, self.max_seconds = float(min_speech_s), max_seconds
        self.min_energy_std_db = float(min_energy_std_db)
        try:
            resemblyzer = _quiet_import_resemblyzer()
        except ImportError as exc:
            raise ExpertLoadError(self.name, f"the package resemblyzer cannot be imported ({exc})") from None
        path = Path(weights) if weights else Path(resemblyzer.__file__).parent / "pretrained.pt"
        if not path.is_file():
            raise ExpertLoadError(self.name, f"model file {path} is missing (it comes with the package "
                                             f"resemblyzer; or set the expert option weights)")
        with _LOCK:
            if str(path) not in _ENCODERS:
                try:
                    _ENCODERS[str(path)] = resemblyzer.VoiceEncoder("cpu", verbose=False, weights_fpath=path)
                except Exception as exc:   # torch.load raises many kinds on a damaged file
                    raise ExpertLoadError(self.name, f"model file {path} cannot be read "
                                                     f"({type(exc).__name__}: {exc})") from None
        self.encoder = _ENCODERS[str(path)]
        self._preprocess = resemblyzer.preprocess_wav

    def embed(self, path: Path) -> np.ndarray:
        wav = _loudness_normalised(load_speech(path, self.max_seconds), Path(path), self.min_speech_s)
        speech_check(wav, self.min_speech_s, 3, self.min_energy_std_db)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wav = self._preprocess(wav, source_sr=None)
            voiced = float(vad_flags(wav).sum() * VAD_WINDOW / SAMPLE_RATE) if len(wav) else 0.0
        if voiced < self.min_speech_s:
            raise ExpertUnavailable(f"no speech: {voiced:.2f} s voiced < {self.min_speech_s:g} s")
        return unit(self.encoder.embed_utterance(wav))


class MfccVoice:
    """v_mfcc: the mean and standard deviation of 40 MFCCs (c1..c40 of `n_mels` log-mel bands,
    25 ms windows, 10 ms hop; c0, the loudness, left out) and of their deltas, over the frames
    WebRTC's VAD calls speech; 160 numbers, unit length. No training, fully deterministic: a classical
    speaker description that fails differently from a neural encoder."""

    name, modality = "v_mfcc", "voice"

    def __init__(self, n_mfcc: int = 40, n_mels: int = 64, min_speech_s: float = 1.0,
                 max_seconds: float | None = 120.0, vad_mode: int = 3, min_energy_std_db: float = 1.0):
        try:
            import librosa  # noqa: F401
        except ImportError as exc:
            raise ExpertLoadError(self.name, f"the package librosa cannot be imported ({exc})") from None
        self.n_mfcc, self.n_mels, self.vad_mode = int(n_mfcc), int(n_mels), int(vad_mode)
        self.min_speech_s, self.max_seconds = float(min_speech_s), max_seconds
        self.min_energy_std_db = float(min_energy_std_db)
        self.dim = 4 * self.n_mfcc

    def embed(self, path: Path) -> np.ndarray:
        import librosa

        wav = _loudness_normalised(load_speech(path, self.max_seconds), Path(path), self.min_speech_s)
        flags = speech_check(wav, self.min_speech_s, self.vad_mode, self.min_energy_std_db)
        mfcc = librosa.feature.mfcc(y=wav, sr=SAMPLE_RATE, n_mfcc=self.n_mfcc + 1, n_fft=512, win_length=400,
                                    hop_length=160, n_mels=self.n_mels, center=False)[1:]
        delta = librosa.feature.delta(mfcc, width=9, mode="nearest")
        frame_window = np.minimum(np.arange(mfcc.shape[1]) * 160 // VAD_WINDOW, len(flags) - 1)
        keep = flags[frame_window]
        m, d = mfcc[:, keep], delta[:, keep]
        return unit(np.concatenate([m.mean(1), m.std(1), d.mean(1), d.std(1)]))
