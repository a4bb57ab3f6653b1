"""Does a ranking match tunes or renderings? The top-1 result's instrument and soundfont against the query's.

Shared by the evaluate and re-rank stages (and the unseen-renderings benchmark): a version encoder that keys on
timbre puts the query's own instrument first far more often than chance.
"""

from __future__ import annotations

from pipelines.versions.paths import VersionsPaths


def track_attributes(paths: VersionsPaths) -> dict[str, dict[str, str]]:
    """{track id: {"instrument": ..., "soundfont": ...}} from tracks.csv (empty strings when a column is absent,
    as in an imported dataset's table written before the soundfont column)."""
    from avmatch.versions.corpus import read_tracks_csv

    if not paths.tracks_csv.exists():
        return {}
    return {r["id"]: {"instrument": r.get("instrument") or "", "soundfont": r.get("soundfont") or ""}
            for r in read_tracks_csv(paths.tracks_csv)}


def rendering_shares(result: dict, track_ids: list[str], attrs: dict[str, dict[str, str]]) -> dict[str, float]:
    """Top-1 same-instrument and same-soundfont rates of a collection's track queries, with chance levels
    (`avmatch.versions.metrics.top1_shares`); only for attributes the tracks have."""
    import numpy as np

    from avmatch.versions.metrics import top1_shares

    c = np.asarray(result["cliques"], dtype=object)
    queries = (c[:, None] == c[None]).sum(1) > 1
    out: dict[str, float] = {}
    for key in ("instrument", "soundfont"):
        values = [attrs.get(t, {}).get(key, "") for t in track_ids]
        if any(values):
            sh = top1_shares(result["dist"], queries, values)
            out[f"top1_same_{key}"], out[f"top1_same_{key}_chance"] = sh["rate"], sh["chance"]
    return out
