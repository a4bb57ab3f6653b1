"""Signal degradations shared by the corpus builders and on-the-fly training augmentation.

One implementation serves both so that the distortions the encoder is trained to ignore are the
same kind the evaluation queries carry (but drawn from different noise recordings and seeds).
All functions take and return float32 mono numpy arrays and never modify their input.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add a random excerpt of `noise` (looped if short) at the given signal-to-noise ratio."""
    n = len(clean)
    if len(noise) == 0:
        raise ValueError("noise recording is empty")
    if len(noise) < n:
        noise = np.tile(noise, int(np.ceil(n / len(noise))) + 1)
    start = int(rng.integers(0, len(noise) - n + 1))
    excerpt = noise[start : start + n].astype(np.float32)
    gain = rms(clean) / (rms(excerpt) * 10.0 ** (snr_db / 20.0))
    return (clean + gain * excerpt).astype(np.float32)


def simulate_rir(sample_rate: int, rt60_s: float, rng: np.random.Generator, length_s: float | None = None,
                 drr_db: float | None = None) -> np.ndarray:
    """A synthetic room impulse response: direct path, sparse early reflections, exponential tail.

    No measured impulse responses ship with any package here, so rooms are simulated with the
    standard exponentially-decaying-noise model (decay set by RT60) plus a few early echoes. The
    direct-to-reverberant ratio is drawn from the range of real rooms (-3..8 dB, unless given):
    without it a long tail would bury the direct sound far below anything a microphone hears.
    """
    length_s = length_s if length_s is not None else min(1.2 * rt60_s + 0.05, 1.5)
    n = max(int(length_s * sample_rate), 8)
    t = np.arange(n) / sample_rate
    decay = np.exp(-6.9078 * t / max(rt60_s, 1e-3))  # -60 dB at rt60
    tail = rng.standard_normal(n) * decay
    pre_delay = int(rng.uniform(0.002, 0.012) * sample_rate)
    tail[: pre_delay + 1] = 0.0
    for _ in range(int(rng.integers(3, 8))):
        k = int(rng.uniform(0.003, 0.05) * sample_rate)
        if k < n:
            tail[k] += rng.uniform(-0.5, 0.5) * 3.0 * decay[k]
    drr = rng.uniform(-3.0, 8.0) if drr_db is None else drr_db
    tail *= np.sqrt(10.0 ** (-drr / 10.0) / (np.sum(tail**2) + 1e-12))
    rir = tail
    rir[0] = 1.0
    return (rir / np.sqrt(np.sum(rir**2))).astype(np.float32)


def apply_rir(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with an impulse response, keep the original length and loudness."""
    y = signal.fftconvolve(x, rir)[: len(x)]
    return (y * (rms(x) / rms(y))).astype(np.float32)


def bandlimit(x: np.ndarray, sample_rate: int, low_hz: float, high_hz: float, order: int = 4) -> np.ndarray:
    """Band-pass (telephone-style when 300-3400 Hz); the upper edge is clipped below Nyquist."""
    nyq = sample_rate / 2.0
    high = min(high_hz, nyq * 0.98)
    low = max(low_hz, 1.0)
    sos = signal.butter(order, [low / nyq, high / nyq], btype="bandpass", output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)


def change_gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    return np.clip(x * 10.0 ** (gain_db / 20.0), -1.0, 1.0).astype(np.float32)


def time_offset(x: np.ndarray, shift: int) -> np.ndarray:
    """Shift by `shift` samples (positive delays), padding with zeros, same length."""
    if shift == 0:
        return x.copy()
    y = np.zeros_like(x)
    if shift > 0:
        y[shift:] = x[: len(x) - shift]
    else:
        y[:shift] = x[-shift:]
    return y


# ---------------------------------------------------------------- speed and tempo
def change_speed(source: np.ndarray, start: int, n: int, rate: float) -> np.ndarray:
    """`n` samples of `source` played `rate` times as fast from sample `start`: a turntable, tape or
    broadcast speed-up, pitch moving with the speed (rate 1.02 = 2 % faster and ~1/3 semitone higher).

    Reads about `n * rate` source samples (beyond the ends of `source` is silence). FFT resampling of
    the window plus a margin on both sides (which absorbs the wrap-around of the FFT), band-limited,
    so speeding up does not fold high partials back as aliases.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    margin = 256
    lo = int(start) - margin
    need = int(np.ceil(n * rate)) + 2 * margin
    seg = np.zeros(need, np.float64)
    a, b = max(lo, 0), min(lo + need, len(source))
    if b > a:
        seg[a - lo : b - lo] = source[a:b]
    m_out = max(int(round(need / rate)), n + 1)
    y = signal.resample(seg, m_out)
    off = int(round(margin / rate))
    return y[off : off + n].astype(np.float32)


def time_stretch(x: np.ndarray, rate: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Play `x` `rate` times as fast without changing its pitch (phase vocoder): the output has
    `round(len(x) / rate)` samples. What a DJ's tempo control or a broadcaster's time compression does.
    `x` may be a [B, L] batch of equal-length rows (one rate for all, vectorised over rows).

    Magnitudes are interpolated between analysis frames and phases advanced by each bin's measured
    instantaneous frequency, the standard phase vocoder; 512-point frames (64 ms at 8 kHz) keep the
    transients of music acceptably sharp at the few-percent rates it is used for here.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    x = np.asarray(x, dtype=np.float32)
    batch = x.ndim == 2
    xb = x if batch else x[None, :]
    n_out = int(round(xb.shape[1] / rate))
    if abs(rate - 1.0) < 1e-9 or xb.shape[1] < n_fft:
        out = np.stack([change_speed(r, 0, n_out, xb.shape[1] / max(n_out, 1)) for r in xb])
        return out if batch else out[0]
    window = np.hanning(n_fft + 1)[:-1]
    pad = np.pad(xb.astype(np.float64), ((0, 0), (n_fft // 2, n_fft // 2 + n_fft)))
    n_frames = 1 + (pad.shape[1] - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(pad, n_fft, axis=1)[:, ::hop][:, :n_frames] * window
    spec = np.fft.rfft(frames, axis=2)                      # [B, frames, bins]
    steps = np.arange(0, n_frames - 1, rate)
    expected = 2 * np.pi * hop * np.arange(spec.shape[2]) / n_fft
    mag, ang = np.abs(spec), np.angle(spec)
    i = steps.astype(np.int64)
    a = (steps - i)[None, :, None]
    mags = (1 - a) * mag[:, i] + a * mag[:, i + 1]
    dphi = ang[:, i + 1] - ang[:, i] - expected
    dphi -= 2 * np.pi * np.round(dphi / (2 * np.pi))
    phase = ang[:, :1] + np.concatenate([np.zeros_like(dphi[:, :1]), np.cumsum(expected + dphi, axis=1)[:, :-1]], 1)
    frames_out = np.fft.irfft(mags * np.exp(1j * phase), n=n_fft, axis=2) * window
    length = len(steps) * hop + n_fft
    y = np.zeros((xb.shape[0], length))
    norm = np.zeros(length)
    for k in range(len(steps)):
        y[:, k * hop : k * hop + n_fft] += frames_out[:, k]
        norm[k * hop : k * hop + n_fft] += window**2
    y = y / np.maximum(norm, 1e-3)
    y = y[:, n_fft // 2 : n_fft // 2 + n_out]
    if y.shape[1] < n_out:
        y = np.pad(y, ((0, 0), (0, n_out - y.shape[1])))
    scale = np.sqrt(np.mean(np.square(xb, dtype=np.float64), 1) + 1e-12) / np.sqrt(np.mean(y**2, 1) + 1e-12)
    out = (y * scale[:, None]).astype(np.float32)
    return out if batch else out[0]


# ---------------------------------------------------------------- lossy codecs
# codec name -> (PyAV encoder, container format, file extension, sample rates the encoder accepts)
CODECS: dict[str, tuple[str, str, str, tuple[int, ...]]] = {
    "mp3": ("libmp3lame", "mp3", ".mp3", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "aac": ("aac", "ipod", ".m4a", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "opus": ("libopus", "ogg", ".opus", (8000, 12000, 16000, 24000, 48000)),
}


def codec_extension(codec: str) -> str:
    """File extension (with dot) of the container `write_codec` uses for `codec`."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    return CODECS[codec][2]


def write_codec(path, x: np.ndarray, sample_rate: int, codec: str, bitrate: int) -> None:
    """Encode mono float audio with a lossy codec (mp3 / aac / opus) at `bitrate` bit/s into `path`.

    The container is the codec's usual one (.mp3, .m4a, .opus = Ogg); `sample_rate` must be one the
    encoder accepts (8000 works for all three, as on a phone line). Decoders trim the encoder delay
    (LAME/Xing tag, MP4 edit list, Ogg pre-skip), so the decoded audio starts where `x` starts.
    """
    import av

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    encoder, fmt, _ext, rates = CODECS[codec]
    if sample_rate not in rates:
        raise ValueError(f"{codec} cannot encode at {sample_rate} Hz; use one of {rates}")
    x = np.ascontiguousarray(np.clip(x, -1.0, 1.0), dtype=np.float32)
    # bitexact: no random Ogg serial numbers or version strings, so a rebuild gives identical bytes
    with av.open(str(path), "w", format=fmt, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(encoder, rate=sample_rate, layout="mono")
        stream.bit_rate = int(bitrate)
        frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def codec_roundtrip(x: np.ndarray, sample_rate: int, codec: str, bitrate: int) -> np.ndarray:
    """Encode with a lossy codec and decode back: same length and rate as `x` (codec sample rate =
    `sample_rate` if the encoder accepts it, else the audio is resampled around the codec)."""
    import tempfile
    from pathlib import Path

    from avmatch.core.audio import decode_audio

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    rates = CODECS[codec][3]
    codec_sr = sample_rate if sample_rate in rates else min(rates, key=lambda r: (r < sample_rate, abs(r - sample_rate)))
    y = x.astype(np.float32)
    if codec_sr != sample_rate:
        g = np.gcd(codec_sr, sample_rate)
        y = signal.resample_poly(y, codec_sr // g, sample_rate // g).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="avmatch-codec-") as tmp:
        path = Path(tmp) / f"x{codec_extension(codec)}"
        write_codec(path, y, codec_sr, codec, bitrate)
        out = decode_audio(path, sample_rate)
    n = len(x)
    if len(out) >= n:
        return out[:n].astype(np.float32)
    return np.concatenate([out, np.zeros(n - len(out), np.float32)])
