"""The versions pipeline's `ingest` stage (dvc.yaml: versions_ingest)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from avmatch.core.config import Params
from avmatch.core.manifest import build_manifest, read_manifest, write_manifest
from avmatch.core.tracking import StageTracker
from pipelines.versions.paths import VersionsPaths


def _tracks_table(paths: VersionsPaths) -> pd.DataFrame:
    from avmatch.versions.corpus import read_tracks_csv

    if not paths.tracks_csv.exists():
        raise FileNotFoundError(f"{paths.tracks_csv}: no tracks table (run the corpus stage)")
    t = pd.DataFrame(read_tracks_csv(paths.tracks_csv))
    t["file"] = [str(Path(p) if Path(p).is_absolute() else paths.corpus / p) for p in t["path"]]
    return t


def ingest(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Metadata cache: every listed file probed once (unchanged files reuse their row); missing or
    unreadable files become rows with status=error and the reason. Split and clique come from tracks.csv."""
    tracks = _tracks_table(paths)
    previous = read_manifest(paths.manifest) if paths.manifest.exists() else None
    df = build_manifest([Path(f) for f in tracks["file"]], base=paths.corpus, previous=previous, desc="ingest versions")
    df["id"] = tracks["id"].to_numpy()  # ids from the table (the adapters' files may live outside the corpus)
    df["split"] = tracks["split"].to_numpy()
    df["label"] = tracks["clique"].to_numpy()
    df["source"] = tracks["source"].to_numpy()
    write_manifest(df, paths.manifest)
    return {"files": len(df), "errors": int((df["status"] != "ok").sum()),
            **{f"{s}_files": int((df["split"] == s).sum()) for s in ("train", "val", "test")}}
