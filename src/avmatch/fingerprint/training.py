"""Contrastive training of the NAFP fingerprint encoder for a fixed number of steps, with checkpoints and resume.

Data: on-the-fly pairs from in-memory 8 kHz tracks. Anchor = a clean `segment_s` window at a random
position of a random track (tracks drawn in proportion to their length; near-silent windows are
skipped; two windows of one batch never overlap in time on the same track, so no true match is
used as a negative). Positive = the window at the same position moved by U(-max_offset_s, +max_offset_s),
then degraded with `avmatch.fingerprint.degrade` (room reverb on the window plus its preceding context, background
noise at a random SNR, band limit, gain), each with its probability. All other items of the batch are
the negatives (NT-Xent, or triplet loss with semi-hard mining).

Batches are produced by an IterableDataset in `num_workers` DataLoader worker processes so augmentation
overlaps the model step; `num_workers: 0` makes them in the main process. The batch for step s is drawn
from a generator seeded by (seed, s) and worker w of n makes the steps w, w + n, ... which the loader
hands back in order, so the sequence of batches is the same with any number of workers, however the
operating system schedules them, and after a resume.

`max_steps` is the stopping rule and the schedule (linear warm-up, then cosine decay to 0 at max_steps)
is a function of the step alone (`avmatch.core.training`), so a busy machine trains the same model as a
quiet one, only later. `max_minutes` (optional) is a safety stop: reaching it saves the checkpoint and
raises `TimeLimitReached`.

Checkpoints (`checkpoint_dir/last.pt`, every `checkpoint_every` steps and at the end, written to a
temporary name then renamed) hold only tensors and primitive containers and are read with
`torch.load(weights_only=True)`. A run resumes from `last.pt` when its `config_hash` (model, front
end, audio, training params that change the result, seed, and a digest of the training data) matches;
otherwise it starts fresh and says why. The safety limit is not part of that hash: raising or clearing it
must resume, not restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from avmatch.core.config import CommonParams
from avmatch.core.device import (
    available_cores,
    resolve_device,
    seed_everything,
    set_threads,
)
from avmatch.core.losses import nt_xent, triplet_semi_hard
from avmatch.core.training import (
    SafetyTimer,
    TimeLimitReached,
    step_rng,
    warmup_cosine,
)
from avmatch.fingerprint import degrade
from avmatch.fingerprint.logmel import frame_segments, segment_samples
from avmatch.fingerprint.model import (
    FingerprintEncoder,
    autocast_context,
    embed_segments,
    load_encoder,
    save_encoder,
)
from avmatch.fingerprint.params import (
    FpAudioParams,
    FpAugmentParams,
    FpModelParams,
    FpTrainParams,
    LogMelParams,
)

__all__ = ["TrainResult", "train_fingerprinter", "config_hash", "PairStream", "ValidationSet",
           "embed_segments", "save_encoder", "load_encoder", "CHECKPOINT_NAME"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "avmatch-fp-ckpt-v2"  # v2: step-driven schedule and per-step batch seeds
SILENCE_RMS = 10 ** (-50 / 20)  # windows quieter than -50 dBFS RMS are not used as anchors
REVERB_CONTEXT_S = 0.3  # audio before a positive that the room's reverb tail carries into it
LOG_EVERY = 25


@dataclass
class TrainResult:
    model: FingerprintEncoder
    steps: int
    seconds: float  # cumulative training wall-clock time over all resumed runs
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_step: int | None = None  # None when the run started fresh


# ---------------------------------------------------------------- data
def _as_tracks(audio: list[np.ndarray], min_len: int) -> list[np.ndarray]:
    out = []
    for a in audio:
        a = np.asarray(a, dtype=np.float32).reshape(-1)
        if len(a) < min_len:
            a = np.pad(a, (0, min_len - len(a)))
        out.append(a)
    return out


def reverb_noise(track: np.ndarray, start: int, seg_len: int, aug: FpAugmentParams, sample_rate: int,
                 noises: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """track[start : start + seg_len] (the caller has applied the offset) with room reverb and background
    noise, each with its probability. Reverb is applied to the window plus up to 0.3 s of preceding
    audio so the tail of earlier notes is present, as in a real room."""
    ctx = min(start, int(0.3 * sample_rate))
    x = track[start - ctx : start + seg_len]
    if rng.random() < aug.reverb_prob:
        rir = degrade.simulate_rir(sample_rate, float(rng.uniform(*aug.rt60_s)), rng)
        x = degrade.apply_rir(x, rir)
    x = x[ctx:]
    if noises and rng.random() < aug.noise_prob:
        x = degrade.mix_at_snr(x, noises[int(rng.integers(len(noises)))], float(rng.uniform(*aug.snr_db)), rng)
    return np.asarray(x, dtype=np.float32)


def rate_changed_sources(tracks: list[np.ndarray], windows: list[tuple[int, int]], seg_len: int, ctx: int,
                         aug: FpAugmentParams, rng: np.random.Generator, group: int = 8) -> list[np.ndarray]:
    """For each (track, start) window, `ctx + seg_len` samples ending where the positive ends: `ctx` of
    preceding audio (for the room's reverb tail) then the positive's source. With probability
    `speed_prob` the source is played faster or slower with its pitch (a turntable or tape), with
    `stretch_prob` at the same pitch (time compression), each by up to `max_speed_change`.

    Time-stretched windows are processed in groups of `group` sharing one rate: the phase vocoder is
    vectorised over rows, and one call per window would cost more than the model step it feeds.
    """
    n = ctx + seg_len
    u = rng.random(len(windows))
    rates = 1.0 + rng.uniform(-aug.max_speed_change, aug.max_speed_change, len(windows))
    speed = u < aug.speed_prob
    stretch = (u >= aug.speed_prob) & (u < aug.speed_prob + aug.stretch_prob)
    out: list[np.ndarray] = []
    for i, (ti, start) in enumerate(windows):
        if speed[i]:
            out.append(degrade.change_speed(tracks[ti], start - int(round(ctx * rates[i])), n, float(rates[i])))
        else:
            out.append(_excerpt(tracks[ti], start - ctx, n))
    idx = np.flatnonzero(stretch)
    for g in range(0, len(idx), group):
        members = idx[g : g + group]
        rate = float(rates[members[0]])
        m = int(round(n * rate))
        src = np.stack([_excerpt(tracks[windows[i][0]], windows[i][1] - int(round(ctx * rate)), m) for i in members])
        stretched = degrade.time_stretch(src, rate)
        for k, i in enumerate(members):
            out[i] = _excerpt(stretched[k], 0, n)
    return out


def _excerpt(x: np.ndarray, start: int, n: int) -> np.ndarray:
    """x[start : start + n], zero-padded where it runs past either end."""
    y = np.zeros(n, np.float32)
    a, b = max(start, 0), min(start + n, len(x))
    if b > a:
        y[a - start : b - start] = x[a:b]
    return y


def bandlimit_gain(x: np.ndarray, aug: FpAugmentParams, sample_rate: int, rng: np.random.Generator,
                   group: int = 8) -> np.ndarray:
    """Band limit (probability `bandlimit_prob`, pass band ~U(200-500) .. U(2500-3800) Hz) then gain, on a
    [N, L] batch in place. Rows are band-limited in groups of `group` sharing one filter: designing the
    Butterworth filter costs ~5 ms, far more than running it."""
    sel = np.flatnonzero(rng.random(len(x)) < aug.bandlimit_prob)
    rng.shuffle(sel)
    for g in range(0, len(sel), group):
        idx = np.sort(sel[g : g + group])
        x[idx] = degrade.bandlimit(x[idx], sample_rate, float(rng.uniform(200.0, 500.0)),
                                   float(rng.uniform(2500.0, 3800.0)))
    for i in range(len(x)):
        peak = float(np.abs(x[i]).max())
        row = x[i] / peak if peak > 1.0 else x[i]  # a real chain limits the mixture before the gain stage
        x[i] = degrade.change_gain(row, float(rng.uniform(*aug.gain_db)))
    return x


class PairStream(IterableDataset):
    """Endless stream of (anchors [B, seg_len], positives [B, seg_len]) float32 batches."""

    def __init__(self, tracks: list[np.ndarray], noises: list[np.ndarray], sample_rate: int, segment_s: float,
                 aug: FpAugmentParams, batch_size: int, seed: int, start_step: int = 0,
                 groups: list[str | None] | None = None, same_timbre_fraction: float = 0.0):
        """`groups[i]`: the instrument (any label) of track i, None when unknown. With `same_timbre_fraction`
        > 0, that share of each batch is pairs of windows from two different tracks of one label (a label
        drawn uniformly among those with two or more tracks): hard negatives in one timbre."""
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.seg_len, _ = segment_samples(sample_rate, segment_s, segment_s)
        self.max_off = int(round(aug.max_offset_s * sample_rate))
        self.ctx = int(REVERB_CONTEXT_S * sample_rate)
        self.tracks = _as_tracks(tracks, self.seg_len + 2 * self.max_off + 1)
        self.noises = [np.asarray(n, dtype=np.float32).reshape(-1) for n in noises if len(n) > 0]
        self.aug, self.batch_size, self.seed, self.start_step = aug, int(batch_size), int(seed), int(start_step)
        lengths = np.array([len(t) - self.seg_len - 2 * self.max_off for t in self.tracks], dtype=np.float64)
        self.p_track = lengths / lengths.sum()
        self.same_timbre = int(round(float(same_timbre_fraction) * self.batch_size))
        self.timbre_groups: list[np.ndarray] = []
        if self.same_timbre:
            if groups is None or len(groups) != len(self.tracks):
                raise ValueError("same_timbre_fraction > 0 needs one instrument label per training track")
            by: dict[str, list[int]] = {}
            for i, g in enumerate(groups):
                if g is not None and g == g and str(g) != "":   # None / NaN / "": no label
                    by.setdefault(str(g), []).append(i)
            self.timbre_groups = [np.array(v) for _, v in sorted(by.items()) if len(v) >= 2]
            if not self.timbre_groups:
                raise ValueError("same_timbre_fraction > 0 but no instrument has two or more training tracks")

    def _window(self, rng: np.random.Generator, taken: list[tuple[int, int]], track: int | None = None
                ) -> tuple[int, int]:
        ti, start = 0, 0
        for _ in range(30):
            ti = int(rng.choice(len(self.tracks), p=self.p_track)) if track is None else track
            start = int(rng.integers(self.max_off, len(self.tracks[ti]) - self.seg_len - self.max_off + 1))
            if any(t == ti and abs(s - start) < self.seg_len + self.max_off for t, s in taken):
                continue
            if degrade.rms(self.tracks[ti][start : start + self.seg_len]) >= SILENCE_RMS:
                break
        return ti, start

    def make_batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        anchors = np.empty((self.batch_size, self.seg_len), dtype=np.float32)
        positives = np.empty_like(anchors)
        taken: list[tuple[int, int]] = []
        windows = []
        chosen: list[int | None] = []
        while len(chosen) < self.same_timbre:  # pairs of tracks sharing an instrument first
            members = self.timbre_groups[int(rng.integers(len(self.timbre_groups)))]
            chosen += [int(t) for t in rng.choice(members, 2, replace=False)]
        chosen = chosen[: self.same_timbre] + [None] * (self.batch_size - min(self.same_timbre, self.batch_size))
        for i in range(self.batch_size):
            ti, start = self._window(rng, taken, chosen[i])
            taken.append((ti, start))
            anchors[i] = self.tracks[ti][start : start + self.seg_len]
            windows.append((ti, start + int(rng.integers(-self.max_off, self.max_off + 1))))
        sources = rate_changed_sources(self.tracks, windows, self.seg_len, self.ctx, self.aug, rng)
        for i, src in enumerate(sources):
            positives[i] = reverb_noise(src, self.ctx, self.seg_len, self.aug, self.sample_rate, self.noises, rng)
        bandlimit_gain(positives, self.aug, self.sample_rate, rng)
        return torch.from_numpy(anchors), torch.from_numpy(positives)

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of optimiser step `step` (0-based): a function of (seed, step) only."""
        return self.make_batch(step_rng(self.seed, step))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # DataLoader gives task i to worker i % n and returns results in task order, so worker w making
        # the steps start + w, start + w + n, ... yields the batches of start, start + 1, ... in order
        info = get_worker_info()
        wid, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        step = self.start_step + wid
        while True:
            yield self.batch_at(step)
            step += n_workers


# ---------------------------------------------------------------- validation
class ValidationSet:
    """Cheap retrieval proxy: degraded 1 s queries at random positions vs the clean segment pool.

    Pool = all `hop_s`-spaced clean segments of the validation tracks (up to `max_pool`). Each query is
    cut at a random position and degraded like a product query (background noise from `noises` at
    0-10 dB SNR always, reverb and band limit each with probability 0.5, gain), and counts as a
    top-1 hit when its nearest pool segment is the one whose start is closest to the query's start
    (`top1`), or any segment of the same track within one hop of it (`top1_near`).
    """

    def __init__(self, tracks: list[np.ndarray], noises: list[np.ndarray], audio: FpAudioParams, aug: FpAugmentParams,
                 n_queries: int = 500, max_pool: int = 4000, seed: int = 0):
        sr = audio.sample_rate
        seg_len, hop = segment_samples(sr, audio.segment_s, audio.hop_s)
        rng = np.random.default_rng([seed, 991])
        pools, owner, index = [], [], []
        for ti, t in enumerate(_as_tracks(tracks, seg_len)):
            segs = frame_segments(t, sr, audio.segment_s, audio.hop_s)
            room = max_pool - sum(len(p) for p in pools)
            if room <= 0:
                break
            segs = segs[:room]
            pools.append(segs)
            owner += [ti] * len(segs)
            index += list(range(len(segs)))
        self.pool = torch.cat(pools)
        self.owner, self.index = np.array(owner), np.array(index)
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in pools])])
        # fixed query-like degradation, independent of the training augmentation settings
        aug_q = FpAugmentParams(noise_prob=1.0 if noises else 0.0, snr_db=(0.0, 10.0), reverb_prob=0.5,
                                rt60_s=aug.rt60_s, bandlimit_prob=0.5, max_offset_s=0.0, gain_db=aug.gain_db)
        queries, truth = [], []
        for _ in range(n_queries):
            pi = int(rng.integers(len(self.pool)))
            ti, k = int(self.owner[pi]), int(self.index[pi])
            track = np.asarray(tracks[ti], dtype=np.float32)
            if len(track) < seg_len:
                track = np.pad(track, (0, seg_len - len(track)))
            lo, hi = max(0, k * hop - hop // 2), min(len(track) - seg_len, k * hop + hop // 2)
            start = int(rng.integers(lo, hi + 1)) if hi > lo else lo
            nearest = min(int(round(start / hop)), len(pools[ti]) - 1)
            queries.append(reverb_noise(track, start, seg_len, aug_q, sr, noises, rng))
            truth.append(offsets[ti] + nearest)
        self.queries = torch.from_numpy(bandlimit_gain(np.stack(queries), aug_q, sr, rng))
        self.truth = np.array(truth)

    def evaluate(self, model: FingerprintEncoder, device: torch.device, batch_size: int = 256) -> dict[str, float]:
        was_training = model.training
        pool = embed_segments(model, self.pool, batch_size, device)
        q = embed_segments(model, self.queries, batch_size, device)
        model.train(was_training)
        best = np.argmax(q @ pool.T, axis=1)
        near = (self.owner[best] == self.owner[self.truth]) & (np.abs(self.index[best] - self.index[self.truth]) <= 1)
        return {"val_top1": float(np.mean(best == self.truth)), "val_top1_near": float(np.mean(near))}


# ---------------------------------------------------------------- config hash / checkpoints
def _data_digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a, dtype=np.float32).reshape(-1)
        h.update(str(len(a)).encode())
        h.update(np.ascontiguousarray(a[:: max(1, len(a) // 4096)]).tobytes())
    return h.hexdigest()[:16]


def config_hash(train: FpTrainParams, model: FpModelParams, logmel: LogMelParams, audio: FpAudioParams, seed: int,
                train_audio: list[np.ndarray] | None = None, noise_audio: list[np.ndarray] | None = None,
                train_groups: list[str | None] | None = None) -> str:
    """Hash of everything that changes the trained weights (not the checkpoint/validation cadence, the
    number of workers or the safety time limit). Same-timbre batches and their labels count only when
    used, so runs without them keep the hashes (and checkpoints) they had before the option existed."""
    skip = {"checkpoint_every", "validate_every", "num_workers", "max_minutes"}
    if not train.same_timbre_fraction:
        skip.add("same_timbre_fraction")
    tr = json.loads(train.model_dump_json(exclude=skip))
    blob = {
        "train": tr, "model": json.loads(model.model_dump_json()), "logmel": json.loads(logmel.model_dump_json()),
        "audio": json.loads(audio.model_dump_json()), "seed": int(seed),
        "train_data": _data_digest(train_audio) if train_audio is not None else None,
        "noise_data": _data_digest(noise_audio) if noise_audio is not None else None,
        "format": CHECKPOINT_FORMAT,
    }
    if train.same_timbre_fraction:
        blob["train_groups"] = [None if g is None or g != g else str(g) for g in (train_groups or [])]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, want_hash: str) -> tuple[dict[str, Any] | None, str]:
    if not path.exists():
        return None, f"no checkpoint at {path}"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / foreign file: never fatal, training starts over
        return None, f"checkpoint {path} unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        return None, f"checkpoint {path} has an unknown format"
    if ckpt.get("config_hash") != want_hash:
        return None, (f"checkpoint {path} was made with other parameters or data "
                      f"(config_hash {ckpt.get('config_hash')} != {want_hash})")
    return ckpt, "ok"


# ---------------------------------------------------------------- training
def train_fingerprinter(
    train_audio: list[np.ndarray],
    noise_audio: list[np.ndarray],
    *,
    checkpoint_dir: str | os.PathLike,
    train_params: FpTrainParams | None = None,
    model_params: FpModelParams | None = None,
    logmel_params: LogMelParams | None = None,
    audio_params: FpAudioParams | None = None,
    common_params: CommonParams | None = None,
    log: Callable[[dict[str, Any], int], None] | None = None,
    val_audio: list[np.ndarray] | None = None,
    val_noise: list[np.ndarray] | None = None,
    train_groups: list[str | None] | None = None,
) -> TrainResult:
    """Train (or resume training) the fingerprint encoder; see the module docstring.

    train_audio / noise_audio / val_audio: mono float32 arrays at `audio_params.sample_rate`.
    val_noise: noise for the validation queries (default: noise_audio; pass held-out recordings for an
    honest number). train_groups: the instrument of each training track (None: unknown), needed when
    `train_params.same_timbre_fraction` > 0. `log(metrics, step)` gets {loss, lr, elapsed_s, steps_per_s} every 25 steps and
    {val_top1, val_top1_near} at validations.

    Raises TimeLimitReached, after saving the checkpoint, when `train_params.max_minutes` runs out
    before `max_steps`.
    """
    tp = train_params or FpTrainParams()
    mp = model_params or FpModelParams()
    lp = logmel_params or LogMelParams()
    ap = audio_params or FpAudioParams()
    cp = common_params or CommonParams()
    if not train_audio:
        raise ValueError("train_audio is empty: no tracks to train the fingerprinter on")
    if tp.augment.noise_prob > 0 and not any(len(n) for n in noise_audio):
        raise ValueError("noise_audio is empty but augment.noise_prob > 0: give background-noise recordings "
                         "or set fingerprint.train.augment.noise_prob to 0")
    timer = SafetyTimer(tp.max_minutes)
    ckpt_dir = Path(checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    device = resolve_device(cp.device)
    if tp.threads:
        set_threads(tp.threads)
    elif cp.num_threads == 0 and device.type == "cpu" and tp.num_workers > 0:
        # leave the workers their cores: oversubscribed OpenMP threads spin and halve the step rate
        set_threads(max(1, available_cores() - tp.num_workers))
    else:
        set_threads(cp.num_threads)
    seed_everything(cp.seed)
    use_amp = device.type == "cuda"
    warmup = max(1, min(100, tp.max_steps // 20))
    chash = config_hash(tp, mp, lp, ap, cp.seed, train_audio, noise_audio, train_groups)

    model = FingerprintEncoder.from_params(mp, lp, ap).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    step, prev_elapsed, history, resumed_from = 0, 0.0, [], None
    # the loss summed since the last log line, kept in checkpoints so that a resumed run logs the same
    # mean losses as an uninterrupted one
    running = {"loss": 0.0, "n": 0}
    ckpt, why = _load_checkpoint(ckpt_path, chash)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if use_amp and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        step, prev_elapsed = int(ckpt["step"]), float(ckpt["elapsed_s"])
        history = list(ckpt.get("history", []))
        running.update(ckpt.get("running_loss", {}))
        resumed_from = step
        logger.info("resuming fingerprint training from %s at step %d (%.0f s done)", ckpt_path, step, prev_elapsed)
    elif ckpt_path.exists():
        logger.warning("starting fingerprint training fresh: %s", why)

    def elapsed() -> float:  # reported only: nothing that shapes the weights reads the clock
        return prev_elapsed + timer.elapsed_s()

    def save_ckpt() -> None:
        _atomic_save({
            "format": CHECKPOINT_FORMAT, "config_hash": chash, "step": step, "elapsed_s": elapsed(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": {"kind": "warmup_cosine_by_step", "base_lr": tp.lr, "warmup_steps": warmup,
                          "max_steps": tp.max_steps},
            "scaler": scaler.state_dict() if use_amp else {},
            "rng": {"torch": torch.get_rng_state(), "data_seed": [cp.seed, step]},
            "history": history, "running_loss": dict(running),
        }, ckpt_path)

    def emit(metrics: dict[str, Any]) -> None:
        rec = {"step": step, "loss": None, "val_top1": None, "lr": None, "elapsed_s": round(elapsed(), 2)}
        rec.update(metrics)
        history.append(rec)
        if log is not None:
            log({k: v for k, v in rec.items() if v is not None and k != "step"}, step)

    val = None
    if val_audio:
        val = ValidationSet(val_audio, val_noise if val_noise else noise_audio, ap, tp.augment, seed=cp.seed)

    def validate() -> None:
        res = val.evaluate(model, device)  # type: ignore[union-attr]
        emit(res)
        logger.info("step %d: val_top1 %.3f (near %.3f)", step, res["val_top1"], res["val_top1_near"])

    def done() -> bool:
        return step >= tp.max_steps

    if not done():
        stream = PairStream(train_audio, noise_audio, ap.sample_rate, ap.segment_s, tp.augment, tp.batch_size,
                            seed=cp.seed, start_step=step, groups=train_groups,
                            same_timbre_fraction=tp.same_timbre_fraction)
        loader = DataLoader(stream, batch_size=None, num_workers=tp.num_workers, pin_memory=use_amp,
                            prefetch_factor=2 if tp.num_workers > 0 else None,
                            persistent_workers=False)
        batches = iter(loader)
        loss_fn = (lambda a, p: nt_xent(a, p, tp.temperature)) if tp.loss == "ntxent" else \
            (lambda a, p: triplet_semi_hard(a, p, tp.triplet_margin))
        model.train()
        t_last, s_last = time.monotonic(), step
        try:
            while not done():
                if timer.expired():
                    break
                lr = tp.lr * warmup_cosine(step, tp.max_steps, warmup)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                anchors, positives = next(batches)
                x = torch.cat([anchors, positives]).to(device, non_blocking=True)
                with autocast_context(device):
                    z = model(x)
                    loss = loss_fn(z[: len(anchors)].float(), z[len(anchors):].float())
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                step += 1
                running["loss"] += float(loss.detach())
                running["n"] += 1
                if step % LOG_EVERY == 0 or done():
                    now = time.monotonic()
                    emit({"loss": running["loss"] / running["n"], "lr": lr,
                          "steps_per_s": (step - s_last) / max(now - t_last, 1e-9)})
                    running.update(loss=0.0, n=0)
                    t_last, s_last = now, step
                if step % tp.checkpoint_every == 0 and not done():
                    save_ckpt()
                if val is not None and step % tp.validate_every == 0 and not done():
                    validate()
        finally:
            del batches, loader  # stop the workers
        if not done():
            save_ckpt()
            raise TimeLimitReached(system="fingerprint", steps=step, max_steps=tp.max_steps,
                                   max_minutes=float(tp.max_minutes), checkpoint=ckpt_path)
        if val is not None:
            validate()
        save_ckpt()
    model.eval()
    return TrainResult(model=model, steps=step, seconds=elapsed(), history=history, resumed_from_step=resumed_from)
