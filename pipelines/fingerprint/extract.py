"""The fingerprint pipeline's `extract` stage (dvc.yaml: fingerprint_extract)."""

from __future__ import annotations

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest
from avmatch.core.tracking import StageTracker
from pipelines.fingerprint.paths import FingerprintPaths


def _model_and_device(params: Params, paths: FingerprintPaths):
    from avmatch.core.device import resolve_device
    from avmatch.core.hashing import file_hash
    from avmatch.fingerprint.model import load_encoder

    if not paths.encoder.exists():
        raise FileNotFoundError(f"{paths.encoder}: no trained encoder (run the train stage first)")
    device = resolve_device(params.common.device)
    return load_encoder(paths.encoder, device), device, file_hash(paths.encoder)


def extract(params: Params, paths: FingerprintPaths, tracker: StageTracker, partition: int | None = None,
            num_partitions: int | None = None) -> dict:
    """Embed references and queries into Parquet shards (resumable, incremental, partitionable).

    With `partition` given, only that partition of `num_partitions` (one Dask task, or one machine);
    without (the dvc.yaml command), every partition in turn, then the export: after a Dask run of the
    partitions this finds them done, and the stage's outputs are complete for DVC to record."""
    from avmatch.core.export import export_nmfp
    from avmatch.core.shards import ShardStore
    from avmatch.fingerprint.embedding import extract_items

    fp = params.fingerprint
    num_partitions = num_partitions or fp.extract.num_partitions
    whole = partition is None
    parts = range(num_partitions) if whole else [partition]
    if not whole and not 0 <= partition < num_partitions:
        raise ValueError(f"--partition {partition} is outside 0..{num_partitions - 1}")
    model, device, model_hash = _model_and_device(params, paths)
    summary: dict = {}
    for name in ("refs", "queries"):
        items = read_manifest(paths.items(name))
        store = ShardStore(paths.shards(name), fp.model.dim, model_hash, reset_on_mismatch=True)
        for part in parts:
            rep = extract_items(model, items, store, fp.audio, device, fp.extract.batch_size, fp.extract.shard_items,
                                part, num_partitions, desc=f"extract {name}")
            for k, v in rep.as_dict().items():
                if isinstance(v, dict):
                    for kk, vv in v.items():
                        summary[f"{name}_{k}_{kk}"] = _add(summary.get(f"{name}_{k}_{kk}"), vv)
                elif k == "x_realtime":   # a rate: the last partition's (all of it when there is one)
                    summary[f"{name}_{k}"] = v
                else:
                    summary[f"{name}_{k}"] = _add(summary.get(f"{name}_{k}"), v)
    if whole:
        refs = read_manifest(paths.items("refs"))
        current = dict(zip(refs["id"], refs["content_hash"]))
        meta, vectors = ShardStore(paths.shards("refs"), fp.model.dim, model_hash).read(current)
        export_nmfp(meta, vectors, paths.export, dict(zip(refs["id"], refs["path"])))
    return summary


def _add(total, value):
    """Sum a count over partitions (a first value, or a non-number, is kept as it is)."""
    if isinstance(total, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return total + value
    return value
