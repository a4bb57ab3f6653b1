"""The manifest: one Parquet row per media item, built by reading every file's header once.

Rows for unreadable files are kept with `status="error"` and a reason instead of stopping the run,
so a report can list them and the rest of the collection still flows downstream. A previous
manifest acts as a metadata cache: a file whose path, size and mtime are unchanged is not reopened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from avmatch.core.audio import MEDIA_EXTENSIONS, MediaError, probe_audio
from avmatch.core.hashing import file_hash
from avmatch.core.progress import progress

MANIFEST_COLUMNS = [
    "id", "path", "ext", "size_bytes", "mtime_ns", "content_hash", "duration_s", "sample_rate",
    "channels", "codec", "split", "label", "status", "error",
]


def scan_media(root: str | Path, recursive: bool = True) -> list[Path]:
    """Media files under `root` by extension, sorted for a stable order; a single file is allowed."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or directory")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)


def item_id_for(path: Path, base: Path | None) -> str:
    """Readable, stable id: the path relative to `base` without extension (posix separators)."""
    try:
        rel = path.resolve().relative_to(base.resolve()) if base else Path(path.name)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def _audio_probe(path: Path) -> dict:
    info = probe_audio(path)
    return {"duration_s": info.duration_s, "sample_rate": info.sample_rate, "channels": info.channels,
            "codec": info.codec}


def _row_for(path: Path, item_id: str, split: str, label: str, probe: Callable[[Path], dict] = _audio_probe) -> dict:
    row = {c: None for c in MANIFEST_COLUMNS}
    row.update(id=item_id, path=str(path), ext=path.suffix.lower(), split=split, label=label,
               status="ok", error="")
    try:
        st = path.stat()
        row.update(size_bytes=int(st.st_size), mtime_ns=int(st.st_mtime_ns))
        if path.suffix.lower() not in MEDIA_EXTENSIONS:
            raise MediaError(path, f"unsupported extension '{path.suffix}' (allowed: {', '.join(sorted(MEDIA_EXTENSIONS))})")
        row.update(probe(path))
        row["content_hash"] = file_hash(path)
    except MediaError as exc:
        row.update(status="error", error=exc.reason)
    except OSError as exc:
        row.update(status="error", error=f"cannot read file ({exc.strerror or exc})")
    return row


def build_manifest(
    files: Iterable[str | Path],
    base: str | Path | None = None,
    split: str = "",
    label: str = "",
    previous: pd.DataFrame | None = None,
    desc: str = "ingest",
    probe: Callable[[Path], dict] | None = None,
) -> pd.DataFrame:
    """Probe each file once (or reuse `previous` rows whose path, size and mtime match).

    `probe(path) -> dict of columns` reads a file's header (default: audio; videos pass
    `avmatch.core.video.manifest_probe`); keys beyond MANIFEST_COLUMNS become extra columns.
    """
    base_p = Path(base) if base is not None else None
    cache: dict[str, dict] = {}
    if previous is not None and len(previous):
        cache = {r["path"]: r for r in previous.to_dict("records")}
    rows = []
    files = list(files)
    for path in progress(files, desc=desc, total=len(files), unit="file"):
        path = Path(path)
        item_id = item_id_for(path, base_p)
        old = cache.get(str(path))
        if old is not None and old.get("status") == "ok":
            try:
                st = path.stat()
                if old["size_bytes"] == st.st_size and old["mtime_ns"] == st.st_mtime_ns:
                    rows.append({**old, "id": item_id, "split": split or old["split"], "label": label or old["label"]})
                    continue
            except OSError:
                pass
        rows.append(_row_for(path, item_id, split, label, probe or _audio_probe))
    extra = sorted({k for r in rows for k in r} - set(MANIFEST_COLUMNS))
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + extra)
    dupes = df["id"].duplicated(keep="first")
    if dupes.any():
        df.loc[dupes, ["status", "error"]] = ["error", "duplicate id (same path without extension); renamed copy ignored"]
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    """Atomic write: a killed run never leaves a half manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def read_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest not found (run the ingest stage first)")
    return pd.read_parquet(path)
