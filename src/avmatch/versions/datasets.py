"""Adapters: the metadata of public version-identification datasets -> the pipeline's tracks.csv.

Both write the table the builtin corpus writes (id, path, clique, split, source, title, ...), so
ingest, features, training and evaluation run unchanged; the audio stays where it is (absolute paths).
Audio the metadata lists but the folder lacks becomes a row anyway: ingest records it as a bad file
("cannot read file"), so a partial download is visible, not silently smaller.

* **SHS100K** (`list` file: tab-separated clique id, version id, title, performer, url[, ...]; optional
  `SHS100K-TRAIN` / `-VAL` / `-TEST` files of "clique<TAB>version" lines next to it give the splits).
  Audio: `<audio_root>/<clique>_<version>.<ext>` or `<clique>-<version>.<ext>` (any audio extension).
* **Discogs-VI(-YT)** (JSON lines, one clique per line: `clique_id` and `versions`, each version with
  `version_id`, `title`/`track_title`, `artist`/`artists` and a YouTube id under `youtube_id`,
  `youtube_ids` or `videos[].youtube_id`). Audio: `<audio_root>/<id[:2]>/<id>.<ext>` (the layout of the
  dataset's download script) or `<audio_root>/<id>.<ext>`.

Without split files, cliques are split (seeded, clique-disjoint) 80 / 10 / 10 into train / val / test.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from avmatch.core.audio import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from avmatch.versions.corpus import write_tracks_csv


class DatasetLayoutError(ValueError):
    """The metadata file is missing or not in the expected format (the message says what was expected)."""


def _find_audio(candidates: list[Path]) -> Path:
    """The first existing file among `candidates` with any audio/video extension; else the first candidate
    with .mp3 (ingest reports it as missing)."""
    for stem in candidates:
        for ext in sorted(AUDIO_EXTENSIONS | VIDEO_EXTENSIONS):
            p = stem.with_name(stem.name + ext)
            if p.exists():
                return p
    return candidates[0].with_name(candidates[0].name + ".mp3")


def _assign_splits(cliques: list[str], seed: int) -> dict[str, str]:
    uniq = sorted(set(cliques))
    order = np.random.default_rng([seed, 17]).permutation(len(uniq))
    n = len(uniq)
    out = {}
    for rank, i in enumerate(order):
        out[uniq[i]] = "test" if rank < max(1, n // 10) else "val" if rank < max(2, n // 5) else "train"
    return out


def read_shs100k(metadata: Path, audio_root: Path, seed: int = 0) -> list[dict]:
    if not metadata.is_file():
        raise DatasetLayoutError(f"{metadata}: SHS100K metadata file not found (the 'list' file of the dataset)")
    rows = []
    with open(metadata, newline="", encoding="utf-8", errors="replace") as fh:
        for n, rec in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not rec or not rec[0].strip():
                continue
            if len(rec) < 2:
                raise DatasetLayoutError(f"{metadata}:{n}: expected tab-separated clique, version, title, performer, "
                                         f"url; got {rec!r}")
            clique, version = rec[0].strip(), rec[1].strip()
            if n == 1 and not clique.isdigit():
                continue  # a header line
            audio = _find_audio([audio_root / f"{clique}_{version}", audio_root / f"{clique}-{version}"])
            rows.append({"id": f"shs/{clique}_{version}", "path": str(audio), "clique": f"shs{clique}",
                         "title": rec[2] if len(rec) > 2 else "", "instrument": "",
                         "piece": rec[3] if len(rec) > 3 else "", "variation": rec[4] if len(rec) > 4 else "",
                         "source": "shs100k"})
    splits = {}
    for name, split in (("SHS100K-TRAIN", "train"), ("SHS100K-VAL", "val"), ("SHS100K-TEST", "test")):
        f = metadata.parent / name
        if f.exists():
            for line in f.read_text().split("\n"):
                parts = line.split()
                if len(parts) >= 2:
                    splits[f"shs/{parts[0]}_{parts[1]}"] = split
    fallback = _assign_splits([r["clique"] for r in rows], seed)
    for r in rows:
        r["split"] = splits.get(r["id"], fallback[r["clique"]] if not splits else "")
    return [r for r in rows if r["split"]]


def _youtube_ids(version: dict) -> list[str]:
    ids = []
    if version.get("youtube_id"):
        ids.append(version["youtube_id"])
    ids += list(version.get("youtube_ids") or [])
    ids += [v.get("youtube_id") for v in version.get("videos") or [] if isinstance(v, dict) and v.get("youtube_id")]
    return [str(i) for i in ids if i]


def read_discogs_vi(metadata: Path, audio_root: Path, seed: int = 0) -> list[dict]:
    if not metadata.is_file():
        raise DatasetLayoutError(f"{metadata}: Discogs-VI metadata file not found (the dataset's .jsonl of cliques)")
    rows = []
    with open(metadata, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                clique = json.loads(line)
                cid, versions = str(clique["clique_id"]), clique["versions"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetLayoutError(f"{metadata}:{n}: expected one JSON object per line with 'clique_id' and "
                                         f"'versions' ({type(exc).__name__}: {exc})") from None
            for v in versions:
                vid = str(v.get("version_id", ""))
                artists = v.get("artists") or v.get("artist") or ""
                if isinstance(artists, list):
                    artists = ", ".join(a.get("name", "") if isinstance(a, dict) else str(a) for a in artists)
                for yt in _youtube_ids(v)[:1]:
                    audio = _find_audio([audio_root / yt[:2] / yt, audio_root / yt])
                    rows.append({"id": f"discogs/{yt}", "path": str(audio), "clique": f"dvi{cid}",
                                 "title": v.get("title") or v.get("track_title") or "", "piece": str(artists),
                                 "variation": vid, "instrument": "", "source": "discogs_vi"})
    fallback = _assign_splits([r["clique"] for r in rows], seed)
    for r in rows:
        r["split"] = fallback[r["clique"]]
    return rows


def import_version_dataset(kind: str, metadata: Path, audio_root: Path, root: Path, seed: int = 0) -> dict:
    """Write `<root>/tracks.csv` (+ corpus.json) for a dataset's metadata; returns the summary."""
    t0 = time.time()
    readers = {"shs100k": read_shs100k, "discogs_vi": read_discogs_vi}
    if kind not in readers:
        raise DatasetLayoutError(f"unknown dataset '{kind}': {', '.join(readers)}")
    rows = readers[kind](Path(metadata), Path(audio_root), seed)
    if not rows:
        raise DatasetLayoutError(f"{metadata}: no versions found")
    root.mkdir(parents=True, exist_ok=True)
    write_tracks_csv(root / "tracks.csv", rows)
    missing = sum(not Path(r["path"]).exists() for r in rows)
    summary = {"source": kind, "n_tracks": len(rows), "cliques": len({r["clique"] for r in rows}),
               "missing_audio": missing, **{f"{s}_tracks": sum(r["split"] == s for r in rows)
                                            for s in ("train", "val", "test")},
               "build_seconds": round(time.time() - t0, 2)}
    (root / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
