"""The copydetect pipeline's `corpus` stage (dvc.yaml: copydetect_corpus)."""

from __future__ import annotations

from avmatch.core.config import Params
from avmatch.core.manifest import scan_media
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.paths import CopydetectPaths


def corpus(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Build the offline corpus (real footage, transformed copies, exact ground truth), or with
    `copydetect.corpus.source: vsc22` check the VSC22 folder at `root` (docs/datasets.md)."""
    cp = params.copydetect.corpus
    if cp.source == "vsc22":
        missing = [str(p) for p in (paths.set_dir("queries"), paths.set_dir("refs"), paths.ground_truth) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"VSC22 layout incomplete under {paths.corpus}: missing {', '.join(missing)}")
        return {"queries": len(scan_media(paths.set_dir("queries"))), "refs": len(scan_media(paths.set_dir("refs")))}
    from avmatch.copydetect.corpus import build_copydetect_corpus

    info = build_copydetect_corpus(cp, paths.corpus)
    tracker.log_dict(info, "corpus.json")
    return {k: v for k, v in info.items() if isinstance(v, (int, float))}
