"""Model selection that holds on unseen music: cross-validation with whole recordings held out.

The corpus's validation split is one recording (30 clips at demo size): a setting that suits that
recording's tempo and timbre can look best there and worse everywhere else. Holding out whole
recordings of train + val in turn (every clip of a recording in one fold, folds balanced by clip count)
asks the question the test pool asks, unseen music and footage that was edited to it, on every
recording the project may train on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def recording_folds(pieces: Sequence[str], k: int) -> np.ndarray:
    """Fold (0..k-1) of each row: recordings dealt largest first to the fold with the fewest rows so far
    (ties: the lower fold; equal sizes: by name), so the assignment is deterministic and no recording is
    split across folds."""
    counts = Counter(pieces)
    if k < 2 or len(counts) < k:
        raise ValueError(f"need at least {max(k, 2)} recordings for {k} folds, got {len(counts)}")
    load = [0] * k
    fold_of = {}
    for piece in sorted(counts, key=lambda p: (-counts[p], p)):
        f = int(np.argmin(load))
        fold_of[piece] = f
        load[f] += counts[piece]
    return np.array([fold_of[p] for p in pieces], np.int64)
