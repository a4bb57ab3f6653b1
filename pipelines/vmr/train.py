"""The vmr pipeline's `train` stage (dvc.yaml: vmr_train)."""

from __future__ import annotations

import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.io import write_csv, write_json
from pipelines.vmr.paths import VmrPaths
from pipelines.vmr.shared import aligned_pairs, used_families


def train(params: Params, paths: VmrPaths, tracker: StageTracker) -> dict:
    """Train the two-branch encoder on the training pairs (validation recall logged along the way)."""
    from avmatch.vmr.model import save_encoder
    from avmatch.vmr.training import train_encoder

    vp = params.vmr
    families = used_families(params)
    _, videos, music = aligned_pairs(paths, "train", families)
    _, val_v, val_m = aligned_pairs(paths, "val", families)
    result = train_encoder(videos, music, train_params=vp.train, model_params=vp.model, window=vp.features.window_s,
                           families=families, seed=params.common.seed, checkpoint_dir=paths.checkpoints,
                           val=(val_v, val_m), log_fn=lambda m, step: tracker.log_metrics(m, step=step))
    save_encoder(result.model, paths.encoder, {"frames": vp.frames.model_dump(), "audio": vp.audio.model_dump(),
                                               "hop": vp.features.hop})
    write_csv(paths.plots / "train_history.csv", pd.DataFrame(result.history))
    last_val = [h for h in result.history if "val_v2m_r10" in h]
    summary = {"steps": result.steps, "max_steps": vp.train.max_steps, "train_seconds": result.seconds,
               "train_pairs": len(videos), "val_pairs": len(val_v),
               "resumed_from_step": -1 if result.resumed_from_step is None else result.resumed_from_step,
               "final_loss": float(result.history[-1]["loss"]) if result.history else float("nan"),
               **({"val_v2m_r10": last_val[-1]["val_v2m_r10"]} if last_val else {})}
    write_json(paths.metrics / "vmr_train.json", summary)
    tracker.log_artifact(paths.plots / "train_history.csv", "plots")
    return summary
