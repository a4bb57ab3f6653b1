"""The edit rule: how the corpus builder cuts real footage to a piece of music, as music videos are made.

Given the music's analysis (`avmatch.vmr.music_features.analyse_music`: beats, tempo, onset strength,
RMS energy, spectral centroid, mode) the picture follows it at three time scales:

1. **Cuts on beats and bars.** A shot starts at t = 0 and ends on a beat: 2 beats later when the energy
   at its start is high (e > 0.6), 4 beats (a bar) when it is medium (e > 0.3), 8 beats (two bars) when
   quiet; without a detectable beat, every 2 s. Energy e = (RMS in dBFS + 45) / 35, clipped to [0, 1],
   smoothed over 1 s: loud passages cut fast, quiet ones linger.
2. **Motion follows tempo and onsets.** Photos are panned (a random direction per shot) and zoomed
   (in or out) at a speed (0.2 + 1.8 onset(t)) x tempo / 120, onset normalised by the clip's maximum;
   videos play at a rate 0.5 + e(t). Every beat flashes the picture brighter by 0.3 x its onset
   strength, decaying with a 0.12 s time constant.
3. **Grading and footage follow the sound's character.** Brightness gain 0.7 + 0.6 c(t), with c(t) the
   log spectral centroid mapped from [400 Hz, 4 kHz] to [0, 1] (1 s smoothing); major-mode music is
   saturated (x1.35) and warm, minor-mode music desaturated (x0.55) and cool. Each shot's footage is
   drawn near the quantile of the clip's mean c among the split's footage sorted by brightness (bright
   sound, bright pictures), with a spread of an eighth of the pool, never the previous shot's unit.

So the video carries the music's beat grid (cut times), energy envelope (cut rate, motion), onsets
(flashes), timbre (brightness) and mode (saturation, tint), each blurred by real footage with its own
colours and motion: learnable, but not a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avmatch.vmr.music_features import MusicAnalysis


@dataclass
class Shot:
    start_s: float
    end_s: float
    unit: int            # index into the split's footage list
    direction: tuple[float, float]
    zoom: float          # +1 zoom in, -1 zoom out
    offset: float        # photos: start position in [0, 1]; videos: start time fraction


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or len(x) == 0:
        return x
    k = np.ones(n) / n
    return np.convolve(np.pad(x, (n // 2, n - 1 - n // 2), mode="edge"), k, mode="valid")


def energy_curve(a: MusicAnalysis) -> np.ndarray:
    """Energy in [0, 1] per analysis frame (rule 1)."""
    db = 20 * np.log10(a.rms + 1e-6)
    return _smooth(np.clip((db + 45.0) / 35.0, 0.0, 1.0), int(round(a.frame_rate)))


def brightness_curve(a: MusicAnalysis) -> np.ndarray:
    """Log spectral centroid mapped to [0, 1] per analysis frame (rule 3)."""
    c = (np.log2(np.maximum(a.centroid, 1.0)) - np.log2(400.0)) / (np.log2(4000.0) - np.log2(400.0))
    return _smooth(np.clip(c, 0.0, 1.0), int(round(a.frame_rate)))


def plan_shots(a: MusicAnalysis, unit_brightness: list[float], rng: np.random.Generator) -> list[Shot]:
    """Cut points and footage per shot (rules 1 and 3)."""
    energy = energy_curve(a)
    order = np.argsort(unit_brightness, kind="stable")
    n = len(order)
    target = float(brightness_curve(a).mean()) * (n - 1)
    beats = np.asarray(a.beat_times, np.float64)
    shots: list[Shot] = []
    t, prev = 0.0, -1
    while t < a.duration_s - 1e-6:
        e = float(a.at(energy, t))
        if len(beats) >= 2:
            k = 2 if e > 0.6 else (4 if e > 0.3 else 8)
            ahead = beats[beats > t + 0.25]
            end = float(ahead[k - 1]) if len(ahead) >= k else a.duration_s
        else:
            end = t + 2.0
        end = min(end, a.duration_s)
        pick = int(np.clip(round(target + rng.normal(0, n / 8)), 0, n - 1))
        unit = int(order[pick])
        if unit == prev and n > 1:
            unit = int(order[pick - 1 if pick > 0 else pick + 1])
        ang = rng.uniform(0, 2 * np.pi)
        shots.append(Shot(t, end, unit, (float(np.cos(ang)), float(np.sin(ang))), float(rng.choice([-1.0, 1.0])),
                          float(rng.uniform())))
        prev, t = unit, end
    return shots


def _grade(img: np.ndarray, gain: float, sat: float, tint: np.ndarray, flash: float) -> np.ndarray:
    x = img.astype(np.float32) * gain
    grey = x.mean(-1, keepdims=True)
    x = grey + (x - grey) * sat
    x = x * tint + flash * 255.0
    return np.clip(x, 0, 255).astype(np.uint8)


def render_video(a: MusicAnalysis, shots: list[Shot], footage: list, width: int, height: int,
                 fps: float) -> np.ndarray:
    """Frames [n, height, width, 3] of the music video (rules 2 and 3); `footage[i].frames` holds unit i
    at (2 width, 2 height)."""
    from PIL import Image

    n = int(round(a.duration_s * fps))
    energy, bright = energy_curve(a), brightness_curve(a)
    onset = a.onset / (a.onset.max() + 1e-9)
    tempo_factor = (a.tempo if a.tempo > 0 else 100.0) / 120.0
    sat = 1.35 if a.mode > 0 else 0.55
    tint = np.array([1.06, 1.0, 0.94] if a.mode > 0 else [0.94, 1.0, 1.08], np.float32)
    beats = np.asarray(a.beat_times)
    out = np.empty((n, height, width, 3), np.uint8)
    for shot in shots:
        f0, f1 = int(round(shot.start_s * fps)), min(n, int(round(shot.end_s * fps)))
        src = footage[shot.unit].frames
        big_h, big_w = src.shape[1], src.shape[2]
        pos = np.array([shot.offset, 1.0 - shot.offset]) * [big_w - width, big_h - height]
        zoom = 0.75
        vidx = shot.offset * max(0, len(src) - (f1 - f0) * 1.5)
        for i in range(f0, f1):
            t = i / fps
            speed = (0.2 + 1.8 * float(a.at(onset, t))) * tempo_factor
            e = float(a.at(energy, t))
            if len(src) == 1:   # photo: pan and zoom
                pos = pos + np.array(shot.direction) * speed * 24.0 / fps * 2
                zoom = float(np.clip(zoom + shot.zoom * speed * 0.08 / fps, 0.5, 1.0))
                cw, ch = 2 * width * zoom, 2 * height * zoom
                x = float(np.mod(pos[0], 2 * max(1.0, big_w - cw)))
                y = float(np.mod(pos[1], 2 * max(1.0, big_h - ch)))
                x = x if x <= big_w - cw else 2 * (big_w - cw) - x   # bounce off the edges
                y = y if y <= big_h - ch else 2 * (big_h - ch) - y
                x, y = float(np.clip(x, 0, big_w - cw)), float(np.clip(y, 0, big_h - ch))
                frame = np.asarray(Image.fromarray(src[0]).resize((width, height), Image.BILINEAR,
                                                                  box=(x, y, x + cw, y + ch)))
            else:               # video: playback rate follows the energy
                vidx += 0.5 + e
                k = int(vidx) % len(src)
                frame = np.asarray(Image.fromarray(src[k]).resize((width, height), Image.BILINEAR))
            last = beats[beats <= t]
            flash = 0.0
            if len(last):
                flash = 0.3 * float(a.at(onset, last[-1])) * float(np.exp(-(t - last[-1]) / 0.12))
            out[i] = _grade(frame, 0.7 + 0.6 * float(a.at(bright, t)), sat, tint, flash)
    return out
