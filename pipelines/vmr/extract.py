"""The vmr pipeline's `extract` stage (dvc.yaml: vmr_extract)."""

from __future__ import annotations

import os

import numpy as np

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.vmr.paths import VmrPaths
from pipelines.vmr.shared import aligned_pairs


def extract(params: Params, paths: VmrPaths, tracker: StageTracker) -> dict:
    """Shared-space embeddings of the validation and test videos and music (one npz per split, rows paired):
    one mean vector per item, and every window of every item (what a pair is scored by, see evaluate)."""
    import torch

    from avmatch.vmr.model import embed_item_windows, embed_items, load_encoder

    model = load_encoder(paths.encoder)
    families = (model.video_families, model.music_families)
    summary = {}
    with torch.no_grad():
        for split in ("val", "test"):
            pairs, videos, music = aligned_pairs(paths, split, families)
            v = embed_items(model.video, videos, model.window)
            m = embed_items(model.music, music, model.window)
            windows = {}
            for side, branch, items in (("video", model.video, videos), ("music", model.music, music)):
                vecs, owner, starts = embed_item_windows(branch, items, model.window)
                windows.update({f"{side}_windows": vecs, f"{side}_window_item": owner, f"{side}_window_start": starts})
            out = paths.embeddings(split)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, video_ids=np.asarray(pairs["video_id"], str), music_ids=np.asarray(pairs["music_id"], str),
                     video=v, music=m, **windows)
            os.replace(tmp, out)
            summary[f"{split}_pairs"] = len(pairs)
    return summary
