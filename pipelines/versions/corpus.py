"""The versions pipeline's `corpus` stage (dvc.yaml: versions_corpus)."""

from __future__ import annotations

from pathlib import Path

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.versions.paths import VersionsPaths


def corpus(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Build the offline corpus (chorale families + folk-tune versions), or with source shs100k / discogs_vi
    turn that dataset's metadata into the same tracks.csv (docs/datasets.md)."""
    cp = params.versions.corpus
    if cp.source == "builtin":
        from avmatch.versions.corpus import build_versions_corpus

        info = build_versions_corpus(cp.size, cp.seed, paths.corpus, cp.folk_tunes, cp.folk_versions,
                                     cp.chorale_versions, cp.reharm_versions, tuple(cp.train_soundfonts),
                                     tuple(cp.unseen_soundfonts), cp.unseen_val)
    else:
        from avmatch.versions.datasets import import_version_dataset

        def resolve(p: str) -> Path:
            q = Path(p).expanduser()
            return q if q.is_absolute() else paths.root / q

        info = import_version_dataset(cp.source, resolve(cp.metadata), resolve(cp.audio_root), paths.corpus, cp.seed)
    tracker.log_dict(info, "corpus.json")
    return {k: v for k, v in info.items() if isinstance(v, (int, float))}
