"""The voiceface pipeline's `corpus` stage (dvc.yaml: voiceface_corpus)."""

from __future__ import annotations

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.voiceface.paths import VoicefacePaths


def corpus(params: Params, paths: VoicefacePaths, tracker: StageTracker) -> dict:
    """Draw the SIMULATED cohort of expert embeddings (there is no paired voice-face data on this machine), or,
    with corpus.source = folder, check that the corpus folder holds its tables (made by `avmatch voiceface
    import`) and change nothing."""
    cp = params.voiceface.corpus
    if cp.source == "folder":
        missing = [p.name for p in (paths.corpus_identities, paths.corpus_tracks) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{paths.corpus}: corpus.source is 'folder' but {missing} are missing; import a "
                                    "VoxCeleb-style folder first (avmatch voiceface import ...)")
        return {"simulated": 0}
    from avmatch.voiceface.cohort import build_cohort

    info = build_cohort(cp, paths.corpus)
    tracker.log_dict(info, "corpus.json")
    return {"simulated": 1, **{k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}
