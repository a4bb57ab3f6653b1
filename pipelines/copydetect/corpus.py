"""The copydetect pipeline's `corpus` stage (dvc.yaml: copydetect_corpus)."""

from __future__ import annotations

from avmatch.core.config import Params
from avmatch.core.manifest import scan_media
from avmatch.core.tracking import StageTracker
from pipelines.copydetect.paths import SETS, CopydetectPaths
from pipelines.io import write_json

# what the corpus stage writes for a dataset outside the project (DVC's output of the stage)
DATASET_LISTING = "dataset_listing.json"


def dataset_listing(paths: CopydetectPaths) -> dict:
    """The dataset's folders, every media file's name, size and modification time, and the ground truth's
    hash. Written as the corpus stage's output when the data lives outside the project, so that DVC (and the
    Prefect flow, which runs DVC) has an output to record and re-runs ingest when a file is added, removed or
    replaced there; a dataset in `data/copydetect/corpus` itself gets the same file beside its folders."""
    from avmatch.core.hashing import file_hash

    sets = {}
    for name in SETS:
        folder = paths.set_dir(name)
        files = scan_media(folder) if folder.is_dir() else []
        sets[name] = [[f.relative_to(folder).as_posix(), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return {"root": str(paths.corpus), "folders": {n: str(paths.set_dir(n)) for n in SETS},
            "ground_truth": str(paths.ground_truth), "ground_truth_hash": file_hash(paths.ground_truth),
            "sets": sets}


def corpus(params: Params, paths: CopydetectPaths, tracker: StageTracker) -> dict:
    """Build the offline corpus (real footage, transformed copies, exact ground truth), or with
    `copydetect.corpus.source: vsc22` check the VSC22 folder at `root` (docs/datasets.md)."""
    cp = params.copydetect.corpus
    if cp.source == "vsc22":
        missing = [str(p) for p in (paths.set_dir("queries"), paths.set_dir("refs"), paths.ground_truth) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"VSC22 layout incomplete under {paths.corpus}: missing {', '.join(missing)}")
        listing = dataset_listing(paths)
        write_json(paths.data / "corpus" / DATASET_LISTING, listing)
        return {name: len(files) for name, files in listing["sets"].items()}
    from avmatch.copydetect.corpus import build_copydetect_corpus

    info = build_copydetect_corpus(cp, paths.corpus)
    tracker.log_dict(info, "corpus.json")
    return {k: v for k, v in info.items() if isinstance(v, (int, float))}
