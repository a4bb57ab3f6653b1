"""The fingerprint pipeline's `corpus` stage (dvc.yaml: fingerprint_corpus)."""

from __future__ import annotations

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.fingerprint.paths import FingerprintPaths


def corpus(params: Params, paths: FingerprintPaths, tracker: StageTracker) -> dict:
    """Build the offline demo corpus (references, training music, noise, degraded queries, ground truth),
    or with `fingerprint.corpus.source: nafp` link the NAFP dataset at `dataset_root` into the same layout
    and synthesize its queries (docs/datasets.md)."""
    cp = params.fingerprint.corpus
    if cp.source == "nafp":
        from pathlib import Path

        from avmatch.fingerprint.nafp import import_nafp_corpus

        dataset = Path(cp.dataset_root).expanduser()
        dataset = dataset if dataset.is_absolute() else paths.root / dataset
        info = import_nafp_corpus(dataset, paths.corpus, cp, cp.max_dummy_refs)
    else:
        from avmatch.fingerprint.corpus import build_fingerprint_corpus

        info = build_fingerprint_corpus(cp, paths.corpus)
    tracker.log_dict(info, "corpus.json")
    return {k: v for k, v in info.items() if isinstance(v, (int, float))}
