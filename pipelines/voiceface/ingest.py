"""The voiceface pipeline's `ingest` stage (dvc.yaml: voiceface_ingest)."""

from __future__ import annotations

import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.io import write_json
from pipelines.voiceface.paths import VoicefacePaths

IDENTITY_COLUMNS = ("identity", "gender", "nationality", "split")
TRACK_COLUMNS = ("track", "modality", "identity", "video", "path", "noisy")


class CorpusError(ValueError):
    """The corpus tables break the agreed layout; the message names the file and the rows."""


def _check(identities: pd.DataFrame, tracks: pd.DataFrame, where: str) -> None:
    for df, cols, name in ((identities, IDENTITY_COLUMNS, "identities.parquet"), (tracks, TRACK_COLUMNS, "tracks.parquet")):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise CorpusError(f"{where}/{name}: missing columns {missing} (has {list(df.columns)})")
    problems = []
    if identities["identity"].duplicated().any():
        problems.append(f"duplicate identities {identities.loc[identities['identity'].duplicated(), 'identity'].head(5).tolist()}")
    bad_g = ~identities["gender"].isin(["m", "f"])
    if bad_g.any():
        problems.append(f"gender must be 'm' or 'f': {identities.loc[bad_g, 'identity'].head(5).tolist()}")
    bad_s = ~identities["split"].isin(["train", "valid", "test"])
    if bad_s.any():
        problems.append(f"split must be train/valid/test: {identities.loc[bad_s, ['identity', 'split']].head(5).values.tolist()}")
    if tracks["track"].duplicated().any():
        problems.append(f"duplicate tracks {tracks.loc[tracks['track'].duplicated(), 'track'].head(5).tolist()}")
    bad_m = ~tracks["modality"].isin(["voice", "face"])
    if bad_m.any():
        problems.append(f"modality must be voice/face: {tracks.loc[bad_m, 'track'].head(5).tolist()}")
    unknown = ~tracks["identity"].isin(set(identities["identity"]))
    if unknown.any():
        problems.append(f"tracks of unknown identities: {tracks.loc[unknown, 'track'].head(5).tolist()}")
    if problems:
        raise CorpusError(f"{where}: " + "; ".join(problems))


def ingest(params: Params, paths: VoicefacePaths, tracker: StageTracker) -> dict:
    """Validate the corpus tables, write the metadata cache (tracks with split, gender and nationality), count
    tracks per split, noisy tracks and missing expert vectors, and write the evaluation lists (the corpus's own
    evals/ when it has them, else drawn from the valid and test identities)."""
    from avmatch.voiceface.evals import EvalSizes, make_eval_lists, read_eval_lists, usable_tracks, write_eval_lists
    from avmatch.voiceface.vectors import MISSING_FILE, write_frame

    vp = params.voiceface
    identities = pd.read_parquet(paths.corpus_identities)
    tracks = pd.read_parquet(paths.corpus_tracks)
    if "noisy" not in tracks.columns:
        tracks["noisy"] = False
    _check(identities, tracks, str(paths.corpus))
    identities = identities[list(IDENTITY_COLUMNS)].astype(str)
    meta = tracks.merge(identities, on="identity", how="left")
    write_frame(identities, paths.identities)
    write_frame(meta, paths.tracks)
    simulated = (paths.corpus / "cohort.json").exists() and vp.corpus.source == "simulated"
    experts = [*vp.experts.voice, *vp.experts.face]
    missing_file = paths.corpus_experts / MISSING_FILE
    missing = pd.read_parquet(missing_file) if missing_file.exists() else pd.DataFrame(columns=["track", "expert"])
    summary: dict = {"simulated": simulated}
    for split in ("train", "valid", "test"):
        summary[f"identities_{split}"] = int((identities["split"] == split).sum())
        for m in ("voice", "face"):
            summary[f"{m}_tracks_{split}"] = int(((meta["split"] == split) & (meta["modality"] == m)).sum())
    summary["noisy_tracks"] = int(meta["noisy"].astype(bool).sum())
    used = missing[missing["expert"].isin(experts)]
    summary["missing_vectors"] = int(len(used))
    for e in experts:
        summary[f"missing_{e}"] = int((used["expert"] == e).sum())

    if paths.corpus_evals.exists() and any(paths.corpus_evals.glob("*.parquet")):
        lists = read_eval_lists(paths.corpus_evals)
        summary["eval_lists"] = "corpus"
    else:
        sizes = EvalSizes(**vp.evaluate.sizes)
        uv, uf = usable_tracks(tracks, missing, experts)
        lists = make_eval_lists(identities, tracks, "valid", vp.corpus.seed, sizes, usable_voice=uv, usable_face=uf
                                ).merged(make_eval_lists(identities, tracks, "test", vp.corpus.seed, sizes,
                                                         usable_voice=uv, usable_face=uf))
        summary["eval_lists"] = "sampled"
    if paths.evals.exists():
        for f in paths.evals.glob("*.parquet"):
            f.unlink()
    write_eval_lists(lists, paths.evals)
    summary.update({f"list_{k}": v for k, v in lists.counts().items()})
    write_json(paths.ingest_summary, summary)
    tracker.log_dict(summary, "ingest.json")
    return {k: (int(v) if isinstance(v, bool) else v) for k, v in summary.items() if isinstance(v, (int, float))}
