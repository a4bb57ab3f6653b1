"""The vmr pipeline's `index` stage (dvc.yaml: vmr_index)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.vmr.paths import VmrPaths


def index(params: Params, paths: VmrPaths, tracker: StageTracker) -> dict:
    """FAISS index (inner product on unit vectors) of the test music's windows, one segment per window as in
    a user's music database: the pool the videos' windows are searched in."""
    from avmatch.core.index import SegmentIndex

    with np.load(paths.embeddings("test")) as d:
        ids, vectors, owner, starts = ([str(x) for x in d["music_ids"]], d["music_windows"], d["music_window_item"],
                                       d["music_window_start"])
    rows = pd.DataFrame({"item_id": np.asarray(ids, dtype=object)[owner] if len(ids) else [],
                         "segment": pd.Series(owner).groupby(owner).cumcount().to_numpy(), "start_s": starts.astype(float)})
    seg = SegmentIndex.build(vectors, rows, "flat")
    seg.save(paths.index)
    return {"indexed_music": len(ids), "indexed_windows": len(owner), "dim": int(vectors.shape[1]) if len(ids) else 0}
