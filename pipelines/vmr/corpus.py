"""The vmr pipeline's `corpus` stage (dvc.yaml: vmr_corpus)."""

from __future__ import annotations

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.vmr.paths import VmrPaths


def corpus(params: Params, paths: VmrPaths, tracker: StageTracker) -> dict:
    """Build the offline music-video corpus: real music edited to real footage (docs/datasets.md)."""
    from avmatch.vmr.corpus import build_vmr_corpus

    info = build_vmr_corpus(params.vmr.corpus, paths.corpus)
    tracker.log_dict(info, "corpus.json")
    return {k: v for k, v in info.items() if isinstance(v, (int, float))}
