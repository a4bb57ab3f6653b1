"""The voiceface pipeline's `experts` stage (dvc.yaml: voiceface_experts)."""

from __future__ import annotations

import shutil

import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.voiceface.paths import VoicefacePaths


def experts(params: Params, paths: VoicefacePaths, tracker: StageTracker) -> dict:
    """The expert vectors of every track: copied and checked when the corpus folder already holds them (the
    simulated cohort, or EFT's released features imported with `avmatch corpus import voiceface`), else computed
    from the media with the real experts (avmatch.voiceface.experts; resumable, every failure recorded in
    missing.parquet)."""
    from avmatch.voiceface.vectors import MISSING_FILE, read_vectors, write_frame

    vp = params.voiceface
    wanted = [*vp.experts.voice, *vp.experts.face]
    tracks = pd.read_parquet(paths.tracks)
    out = paths.experts
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    given = [e for e in wanted if (paths.corpus_experts / f"{e}.parquet").exists()]
    if given and len(given) != len(wanted):
        raise FileNotFoundError(f"{paths.corpus_experts}: holds vectors of {given} but not of "
                                f"{sorted(set(wanted) - set(given))}; use the experts it has (voiceface.experts) or "
                                "remove its experts/ folder to compute every expert from the media")
    if vp.corpus.source == "simulated" or given:
        for f in out.glob("*.parquet"):
            if f.stem not in wanted and f.name != MISSING_FILE:
                f.unlink()
        known = {m: set(tracks.loc[tracks["modality"] == m, "track"]) for m in ("voice", "face")}
        for e in wanted:
            src = paths.corpus_experts / f"{e}.parquet"
            if not src.exists():
                raise FileNotFoundError(f"{src}: the corpus has no vectors of expert {e}")
            names, mat = read_vectors(src)
            modality = "voice" if e.startswith("v_") else "face"
            stray = set(names) - known[modality]
            if stray:
                raise ValueError(f"{src}: {len(stray)} tracks not in tracks.parquet, e.g. {sorted(stray)[:3]}")
            shutil.copyfile(src, out / f"{e}.parquet")
            summary[f"{e}_vectors"] = len(names)
            summary[f"{e}_dim"] = int(mat.shape[1])
        missing_file = paths.corpus_experts / MISSING_FILE
        missing = (pd.read_parquet(missing_file) if missing_file.exists()
                   else pd.DataFrame({"track": [], "expert": [], "reason": []}, dtype=str))
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
