"""The copydetect pipeline's `ingest` stage (dvc.yaml: copydetect_ingest)."""

from __future__ import annotations

from avmatch.core.config import Params
from avmatch.core.manifest import (
    build_manifest,
    read_manifest,
    scan_media,
    write_manifest,
)
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.paths import SETS, CopydetectPaths


def ingest(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Manifest per set (the metadata cache): each video's header read once, bad files kept as rows.
    A missing query or reference folder is an error; a missing noise folder is a warning that says
    score normalisation is off (the evaluation records it in metrics/copydetect.json)."""
    from avmatch.core.video import manifest_probe

    from avmatch.copydetect.noise_set import warn_if_off

    summary = {}
    for name in SETS:
        folder = paths.set_dir(name)
        if not folder.exists() and name != "noise":
            raise FileNotFoundError(f"{folder}: the {name} folder does not exist (copydetect.corpus.root and "
                                    f"{'query_dir' if name == 'queries' else 'ref_dir'} in params.yaml)")
        if not folder.exists():   # the noise set is optional, but never silently: say normalisation is off
            warn_if_off(params.copydetect.candidates.beta, folder, 0, paths.root)
        files = scan_media(folder) if folder.exists() else []
        previous = read_manifest(paths.manifest(name)) if paths.manifest(name).exists() else None
        df = build_manifest(files, base=folder, split=name, previous=previous, desc=f"ingest {name}",
                            probe=manifest_probe)
        write_manifest(df, paths.manifest(name))
        summary[f"{name}_files"] = len(df)
        summary[f"{name}_errors"] = int((df["status"] != "ok").sum())
    return summary
