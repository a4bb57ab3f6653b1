"""The voiceface pipeline's `experts` stage (dvc.yaml: voiceface_experts)."""

from __future__ import annotations

import shutil

import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.voiceface.paths import VoicefacePaths


def experts(params: Params, paths: VoicefacePaths, tracker: StageTracker) -> dict:
    """The expert vectors of every track: copied and checked from the simulated cohort, or computed from the
    media with the real experts (avmatch.voiceface.experts; resumable, every failure recorded in missing.parquet)."""
    from avmatch.voiceface.vectors import MISSING_FILE, read_vectors, write_frame

    vp = params.voiceface
    wanted = [*vp.experts.voice, *vp.experts.face]
    tracks = pd.read_parquet(paths.tracks)
    out = paths.experts
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    if vp.corpus.source == "simulated":
        for f in out.glob("*.parquet"):
            if f.stem not in wanted and f.name != MISSING_FILE:
                f.unlink()
        known = {m: set(tracks.loc[tracks["modality"] == m, "track"]) for m in ("voice", "face")}
        for e in wanted:
            src = paths.corpus_experts / f"{e}.parquet"
            if not src.exists():
                raise FileNotFoundError(f"{src}: the simulated cohort has no expert {e}")
            names, mat = read_vectors(src)
            modality = "voice" if e.startswith("v_") else "face"
            stray = set(names) - known[modality]
            if stray:
                raise ValueError(f"{src}: {len(stray)} tracks not in tracks.parquet, e.g. {sorted(stray)[:3]}")
            shutil.copyfile(src, out / f"{e}.parquet")
            summary[f"{e}_vectors"] = len(names)
            summary[f"{e}_dim"] = int(mat.shape[1])
        missing = pd.read_parquet(paths.corpus_experts / MISSING_FILE)
        write_frame(missing[missing["expert"].isin(wanted)].reset_index(drop=True), out / MISSING_FILE)
    else:
        from avmatch.voiceface.experts import extract_experts

        res = extract_experts(tracks, wanted, out, options=vp.experts.options, root=paths.corpus)
        tracker.log_dict(res, "experts.json")
        for e, r in res.get("experts", {}).items():
            summary.update({f"{e}_{k}": v for k, v in r.items() if isinstance(v, (int, float))})
        summary["load_errors"] = len(res.get("load_errors", {}))
        missing = pd.read_parquet(out / MISSING_FILE) if (out / MISSING_FILE).exists() else pd.DataFrame()
    summary["missing_vectors"] = int(len(missing))
    return summary
