"""The copydetect pipeline's `train` stage (dvc.yaml: copydetect_train)."""

from __future__ import annotations

import logging

import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.paths import CopydetectPaths
from pipelines.copydetect.shared import load_set_frames
from pipelines.io import write_csv, write_json

log = logging.getLogger(__name__)


def train(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Self-supervised contrastive training of the frame descriptor on the reference frames (and, with
    `train_on_noise`, the noise-set frames)."""
    from avmatch.copydetect.model import save_frame_encoder
    from avmatch.copydetect.training import train_frame_encoder

    cd = params.copydetect
    _, videos, _ = load_set_frames(paths, "refs")
    if not videos:
        raise RuntimeError(f"no usable reference video in {paths.set_dir('refs')} (see {paths.bad_files})")
    n_refs, noise_videos = len(videos), []
    if cd.train.train_on_noise:
        # asked for, so never dropped without a word: the summary records how many noise videos were used
        noise_videos = load_set_frames(paths, "noise")[1] if paths.items("noise").exists() else []
        if not noise_videos:
            log.warning("copydetect.train.train_on_noise is set but the noise set (%s) has no usable video: "
                        "training on the %d reference videos only", paths.set_dir("noise"), n_refs)
        videos = videos + noise_videos
    result = train_frame_encoder(videos, train_params=cd.train, model_params=cd.model, seed=params.common.seed,
                                 device=params.common.device, checkpoint_dir=paths.checkpoints,
                                 log_fn=lambda m, step: tracker.log_metrics(m, step=step))
    save_frame_encoder(result.model, paths.encoder, {"frames": cd.frames.model_dump()})
    write_csv(paths.plots / "train_history.csv", pd.DataFrame(result.history))
    summary = {"steps": result.steps, "max_steps": cd.train.max_steps, "train_seconds": result.seconds,
               "resumed_from_step": -1 if result.resumed_from_step is None else result.resumed_from_step,
               "final_loss": float(result.history[-1]["loss"]) if result.history else float("nan"),
               "train_frames": int(sum(len(v) for v in videos)), "train_ref_videos": n_refs,
               "train_noise_videos": len(noise_videos)}
    write_json(paths.metrics / "copydetect_train.json", summary)
    tracker.log_artifact(paths.plots / "train_history.csv", "plots")
    return summary
