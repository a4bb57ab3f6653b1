"""The vmr pipeline's `index` stage (dvc.yaml: vmr_index)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.vmr.paths import VmrPaths


def index(params: Params, paths: VmrPaths, tracker: StageTracker) -> dict:
    """FAISS index (inner product on unit vectors) of the test music: the pool the videos are searched in."""
    from avmatch.core.index import SegmentIndex

    with np.load(paths.embeddings("test")) as d:
        ids, vectors = [str(x) for x in d["music_ids"]], d["music"]
    rows = pd.DataFrame({"item_id": ids, "segment": 0, "start_s": 0.0})
    seg = SegmentIndex.build(vectors, rows, "flat")
    seg.save(paths.index)
    return {"indexed_music": len(ids), "dim": int(vectors.shape[1]) if len(ids) else 0}
