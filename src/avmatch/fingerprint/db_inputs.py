"""What `fingerprint add` is given: files, folders and an id manifest, and the ids files get.

One bad argument must not cost the user the rest: every argument becomes either a file to add or
an (argument, reason) error to report (`avmatch.core.query_inputs`, shared with the queries).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from avmatch.core.query_inputs import expand


@dataclass(frozen=True)
class Source:
    """A reference file to add, with the id its manifest gave it (None: derive one from the name)."""

    path: Path
    ref_id: str | None = None


def read_id_manifest(manifest: Path) -> list[Source]:
    """Sources of a CSV (or Parquet, e.g. a pipeline manifest) with `path` and `id` columns.

    Relative paths are taken from the manifest's folder, so a manifest and its music can move
    together.
    """
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest}: no such manifest file")
    table = pd.read_parquet(manifest) if manifest.suffix == ".parquet" else pd.read_csv(manifest, dtype=str)
    missing = {"path", "id"} - set(table.columns)
    if missing:
        raise ValueError(f"{manifest}: needs columns 'path' and 'id' (missing: {', '.join(sorted(missing))})")
    out = []
    for path, ref_id in zip(table["path"], table["id"]):
        p = Path(str(path)).expanduser()
        out.append(Source(p if p.is_absolute() else manifest.parent / p, str(ref_id).strip() or None))
    return out


def collect_sources(inputs: Iterable[str | Path], manifest: Path | None = None
                    ) -> tuple[list[Source], list[tuple[str, str]]]:
    """(sources, errors) for `add`: each file once (a manifest's id wins), unusable arguments as errors."""
    sources: dict[Path, Source] = {}
    errors: list[tuple[str, str]] = []
    for src in read_id_manifest(manifest) if manifest is not None else []:
        sources.setdefault(src.path.resolve(), Source(src.path.resolve(), src.ref_id))
    for arg in inputs:
        files, reason = expand(arg)
        if reason:
            errors.append((str(arg), reason))
        for f in files:
            sources.setdefault(f.resolve(), Source(f.resolve()))
    return list(sources.values()), errors


def _suffixes(path: Path) -> list[str]:
    """Candidate ids, shortest first: the stem, then with one, two, ... parent folders; the whole
    path with its extension last (two files differing only by extension)."""
    parts = path.with_suffix("").parts[1:] or (path.stem,)
    return ["/".join(parts[-k:]) for k in range(1, len(parts) + 1)] + [str(path)]


def assign_ids(sources: list[Source], taken: dict[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Stable, readable ids for new files: the file stem, or with as many parent folders as make it unique.

    `taken` maps the ids already in the database to their paths. A path already there keeps its id
    (ids never change once given) and a manifest's id is used as given; new files that share a stem
    all get a longer id (not the first one the short id), so the result does not depend on order.
    Returns (path -> id, errors).
    """
    from collections import Counter

    by_path = {p: i for i, p in taken.items()}
    used = dict(taken)
    ids: dict[str, str] = {}
    errors: list[tuple[str, str]] = []
    auto: list[Source] = []
    for src in sorted(sources, key=lambda s: str(s.path)):
        path = str(src.path)
        if src.ref_id is not None:
            owner = used.get(src.ref_id)
            if owner is not None and owner != path:
                errors.append((path, f"id '{src.ref_id}' is already used by {owner}; give this file another id"))
                continue
            ids[path] = src.ref_id
            used[src.ref_id] = path
        elif path in by_path:
            ids[path] = by_path[path]
        else:
            auto.append(src)
    names = {str(src.path): _suffixes(src.path) for src in auto}
    shared = Counter((k, n) for cands in names.values() for k, n in enumerate(cands))
    for path, cands in names.items():
        ids[path] = next((n for k, n in enumerate(cands) if used.get(n, path) == path and shared[k, n] == 1), path)
        used[ids[path]] = path
    return ids, errors
