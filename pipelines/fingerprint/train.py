"""The fingerprint pipeline's `train` stage (dvc.yaml: fingerprint_train)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest
from avmatch.core.pcm_cache import load_pcm
from avmatch.core.tracking import StageTracker
from pipelines.fingerprint.paths import FingerprintPaths
from pipelines.io import write_csv, write_json


def _load_set_audio(paths: FingerprintPaths, name: str) -> tuple[pd.DataFrame, list[np.ndarray]]:
    items = read_manifest(paths.items(name))
    items = items[items["status"] == "ok"].reset_index(drop=True)
    return items, [load_pcm(p) for p in items["pcm_file"]]


def track_instruments(paths: FingerprintPaths, items: pd.DataFrame) -> list[str | None]:
    """The instrument of each item (the corpus's tracks.csv, by id); None for recorded music or a corpus
    without instrument labels. What `fingerprint.train.same_timbre_fraction` groups training tracks by."""
    table = paths.corpus / "tracks.csv"
    if not table.exists():
        return [None] * len(items)
    tracks = pd.read_csv(table, dtype=str, keep_default_na=False)
    inst = dict(zip(tracks["id"], tracks.get("instrument", pd.Series([""] * len(tracks)))))
    return [inst.get(i) or None for i in items["id"]]


def split_train_val(audio: list[np.ndarray], seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training tracks, validation tracks): a seeded tenth of the tracks (none with 3 or fewer) is held out
    for the validation curve; benchmarks that retrain a variant use the same split."""
    order = np.random.default_rng(seed).permutation(len(audio))
    n_val = max(1, len(audio) // 10) if len(audio) > 3 else 0
    return [audio[i] for i in order[n_val:]], [audio[i] for i in order[:n_val]]


def train(params: Params, paths: FingerprintPaths, tracker: StageTracker) -> dict:
    """Contrastive training of the fingerprint encoder with on-the-fly degradations; resumable."""
    from avmatch.fingerprint.hubness import embed_background
    from avmatch.fingerprint.model import save_encoder
    from avmatch.fingerprint.training import train_fingerprinter

    fp = params.fingerprint
    items, audio = _load_set_audio(paths, "train")
    if not audio:
        raise RuntimeError(f"no usable training audio in {paths.set_dir('train')} (see {paths.bad_files})")
    _, noise = _load_set_audio(paths, "noise_train")
    train_audio, val_audio = split_train_val(audio, params.common.seed)
    train_groups = None
    if fp.train.same_timbre_fraction > 0:   # the same permutation as the audio's (seed and length only)
        train_groups, _ = split_train_val(track_instruments(paths, items), params.common.seed)

    def on_log(metrics: dict, step: int) -> None:
        tracker.log_metrics(metrics, step=step)

    result = train_fingerprinter(
        train_audio, noise, train_params=fp.train, model_params=fp.model, logmel_params=fp.logmel,
        audio_params=fp.audio, common_params=params.common, checkpoint_dir=paths.checkpoints, log=on_log,
        val_audio=val_audio or None, train_groups=train_groups)
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    model = result.model.eval()
    background = embed_background(
        model, audio, noise, excerpts=fp.train.background_excerpts, length_s=fp.train.background_length_s,
        audio=fp.audio, max_speed_change=fp.corpus.max_speed_change, batch_size=fp.extract.batch_size,
        seed=params.common.seed, device=next(model.parameters()).device)
    save_encoder(model, paths.encoder, {"model": fp.model.model_dump(), "logmel": fp.logmel.model_dump(),
                                        "audio": fp.audio.model_dump()}, background=background)
    history = pd.DataFrame(result.history)
    write_csv(paths.plots / "train_history.csv", history)
    def last(key: str) -> float:
        values = [h[key] for h in result.history if h.get(key) is not None]
        return float(values[-1]) if values else float("nan")

    summary = {"steps": result.steps, "max_steps": fp.train.max_steps, "train_seconds": result.seconds,
               "resumed_from_step": result.resumed_from_step if result.resumed_from_step is not None else -1,
               "final_loss": last("loss"), "val_top1": last("val_top1")}
    write_json(paths.metrics / "fingerprint_train.json", summary)
    tracker.log_artifact(paths.plots / "train_history.csv", "plots")
    return summary
