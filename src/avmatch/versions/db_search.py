"""Answer many version queries against one database in one process.

The encoder and the database are loaded once (`Searcher`): a query then costs its decoding, CQT and
embedding plus a few milliseconds of search, where a process per query paid seconds of start-up
each time. Each query's distance to every track is computed exactly (FAISS candidate recall only
for a ranked top-N on collections above `faiss_above_tracks`), so the same numbers feed the ranked
rows and the query x collection distance matrix. A query that is itself in the database (same
content hash: the same bytes, wherever the file lies; or the same resolved path) is left out of its
ranked rows, as version-identification evaluations (CLEWS, Da-TACOS) leave out the query; the matrix
keeps every column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avmatch.core.audio import MediaError
from avmatch.core.hashing import file_hash
from avmatch.versions.database import _tracks_and_vectors, repair_command
from avmatch.versions.db_encoder import Embedder, TooShort, database_encoder
from avmatch.versions.retrieval import Collection, candidate_tracks
from avmatch.versions.segment_pairs import track_distances

COLUMNS = ["query_file", "rank", "track_id", "distance", "query_segment_s", "track_segment_s", "path"]
TRACK_CHUNK = 1024     # tracks compared at once: bounds the [segments x segments x tracks] memory


@dataclass
class Answer:
    """One query's result: ranked rows (the query itself left out) and its distance to every track."""

    query_file: str
    rows: list[dict] = field(default_factory=list)
    distances: np.ndarray | None = None     # [tracks] in `Searcher.track_ids` order; None: not all computed
    error: str = ""


class Searcher:
    """A database loaded once (encoder, segment embeddings, track list) for any number of queries."""

    def __init__(self, db: Path, reduction: str = "bpwr-3", faiss_above_tracks: int = 5000,
                 n_candidates: int = 200):
        encoder, _ = database_encoder(db, repair_command(db))
        self.emb = Embedder.load(encoder)
        self.encoder = encoder
        ok, segs, vecs = _tracks_and_vectors(db, self.emb)
        if len(vecs) == 0:
            raise ValueError(f"{db}: the database holds no tracks (use `avmatch versions add`)")
        coll = Collection.from_rows(segs, vecs)
        self.coll, self.reduction = coll, reduction
        self.faiss_above_tracks, self.n_candidates = faiss_above_tracks, n_candidates
        self.track_ids = list(coll.track_ids)
        self.padded, self.mask = coll.padded()
        order = np.argsort(coll.track_of_row, kind="stable")      # the pad order of `padded`
        self.seg_start = self._per_track(order, segs["start_s"].to_numpy())
        self.seg_end = self._per_track(order, segs["end_s"].to_numpy())
        path_of = dict(zip(ok["id"], ok["path"]))
        hash_of = dict(zip(ok["id"], ok["content_hash"]))
        self.paths = [str(path_of.get(t, "")) for t in self.track_ids]
        self._by_hash: dict[str, list[int]] = {}
        self._by_path: dict[str, list[int]] = {}
        for t, tid in enumerate(self.track_ids):
            self._by_hash.setdefault(str(hash_of.get(tid, "")), []).append(t)
            if self.paths[t]:
                self._by_path.setdefault(str(Path(self.paths[t]).resolve()), []).append(t)

    def _per_track(self, order: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
        out: list[list[float]] = [[] for _ in self.track_ids]
        for row in order:
            out[self.coll.track_of_row[row]].append(float(values[row]))
        return [np.asarray(v) for v in out]

    def itself(self, path: Path) -> set[int]:
        """The tracks that are the query file itself: same content hash or same resolved path."""
        return set(self._by_hash.get(file_hash(path), [])) | set(self._by_path.get(str(path.resolve()), []))

    def _distances(self, qv: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(track distances [C], best segment pair [C, 2]) of one query against candidate tracks."""
        q = torch.from_numpy(qv)[None]
        qm = torch.ones(1, len(qv), dtype=torch.bool)
        dist, best = [], []
        for i in range(0, len(cand), TRACK_CHUNK):
            c = torch.from_numpy(cand[i:i + TRACK_CHUNK])
            d, b = track_distances(q, qm, self.padded[c], self.mask[c], self.reduction)
            dist.append(d[0])
            best.append(b[0])
        return np.concatenate(dist), np.concatenate(best)

    def answer(self, path: str | Path, top: int | None = 10, keep_self: bool = False,
               every_track: bool = False) -> Answer:
        """Ranked tracks for one file (`top` None: every track); `every_track` computes the distance to
        every track even when FAISS recall would do for the top N (for the distance matrix). An
        unusable file is an Answer with `error` (the reason), never an exception, so one bad query does
        not stop the others."""
        path = Path(path)
        try:
            qv, qs, qe = self.emb.embed_file(path)
            own = set() if keep_self else self.itself(path)
        except MediaError as exc:
            return Answer(str(path), error=exc.reason)
        except TooShort as exc:
            return Answer(str(path), error=str(exc))
        except OSError as exc:
            return Answer(str(path), error=f"cannot read file ({exc.strerror or exc})")
        n = len(self.track_ids)
        if top is not None and not every_track and n > self.faiss_above_tracks:
            cand = candidate_tracks(self.coll, qv, max(self.n_candidates, top + len(own)))
        else:
            cand = np.arange(n)
        dist, best = self._distances(qv, cand)
        full = dist if len(cand) == n else None
        order = [j for j in np.argsort(dist, kind="stable") if int(cand[j]) not in own]
        rows = []
        for rank, j in enumerate(order[:top] if top is not None else order, 1):
            t = int(cand[j])
            qi, ri = best[j]
            rows.append({"rank": rank, "track_id": self.track_ids[t], "path": self.paths[t],
                         "distance": float(dist[j]), "query_start_s": float(qs[qi]), "query_end_s": float(qe[qi]),
                         "track_start_s": float(self.seg_start[t][ri]), "track_end_s": float(self.seg_end[t][ri])})
        return Answer(str(path), rows, full)


def csv_row(query_file: str, r: dict) -> list:
    """One `COLUMNS` row; the distance in full precision (repr of the float), so no ties are made up."""
    return [query_file, r["rank"], r["track_id"], repr(r["distance"]),
            f"{r['query_start_s']:.1f}-{r['query_end_s']:.1f}", f"{r['track_start_s']:.1f}-{r['track_end_s']:.1f}",
            r["path"]]


def write_matrix(out: Path, queries: list[str], distances: np.ndarray, track_ids: list[str],
                 paths: list[str]) -> None:
    """The query x collection distance matrix: `.npz` (arrays `distances` [queries, tracks] float32,
    `queries`, `track_ids`, `paths`) or `.csv` (a `query_file` column, then one column per track id)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".npz":
        with open(tmp, "wb") as fh:
            np.savez(fh, distances=np.asarray(distances, np.float32).reshape(len(queries), len(track_ids)),
                     queries=np.asarray(queries, dtype=str), track_ids=np.asarray(track_ids, dtype=str),
                     paths=np.asarray(paths, dtype=str))
    else:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["query_file", *track_ids])
            for q, row in zip(queries, distances):
                w.writerow([q, *(repr(float(x)) for x in row)])
    tmp.replace(out)
