"""Import the NAFP / NMFP neural-audio-fingerprint dataset (mimbres/neural-audio-fp, FMA-based) as a
fingerprint corpus: the dataset's audio is linked into the corpus layout of `avmatch.fingerprint.corpus`
and degraded queries with exact ground truth are synthesized by the same code as the demo corpus.

Dataset (16-bit 8 kHz mono wav) -> corpus::

    music/test-query-db-500-30s/db/**      -> refs/<sub_folders>_<name>.wav          required
    music/test-dummy-db-100k-full/**       -> refs/dummy_<sub_folders>_<name>.wav    first `max_dummy_refs`
    music/train-10k-30s/**                 -> train/<sub_folders>_<name>.wav          optional (minus held-out)
    aug/bg/tr/**                           -> noise/train/<sub_folders>_<name>.wav    optional
    aug/bg/ts/**                           -> noise/test/<sub_folders>_<name>.wav     required

Sub-folders are kept in the file names (joined with `_`), so ids (`refs/000_000134`) stay unique and
trace back to the dataset file. Files are hard-linked (no extra space); where that is impossible
(dataset on another filesystem) they are copied. Not symlinks: the manifest resolves a path before
making its id, and a symlink out of the corpus would lose the `refs/...` id the ground truth uses.

Queries: the dataset's own pre-made queries (test-query-db-500-30s/query) are not used; like the demo
corpus, `fingerprint.make_queries` cuts excerpts of the 500 test references (never of the dummy
references, which are distractors only) at every `query_lengths_s`, degrades each one (test noise from
aug/bg/ts at an SNR, simulated room, phone band + codec, gain, clean) and writes ground_truth.csv and
query_params.csv. Out-of-database queries come from a few seeded training tracks that are held out: they
are *not* linked into train/, so the encoder never sees them (`size` sets how many: tiny 2, demo 10,
large 40; and the queries per length: 8 / 100 / 500 unless `queries_per_length` is set). Queries are
written at 8 kHz, the dataset's rate. val-query-db-500-30s and aug/ir are not used (the train stage
holds out its own validation tracks; reverb queries use simulated rooms).

Built in `<out_root>.tmp` and renamed at the end, like the demo corpus.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

from avmatch.core.audio import AUDIO_EXTENSIONS
from avmatch.core.corpus_build import stage_timer, swap_in
from avmatch.core.device import available_cores
from avmatch.fingerprint.corpus import (
    SIZES,
    Track,
    _measure,
    load_noises,
    make_queries,
    write_query_tables,
)
from avmatch.fingerprint.params import FpCorpusParams

log = logging.getLogger(__name__)

NAFP_SR = 8000  # the dataset's sample rate; queries are written at it

TEST_DB = "music/test-query-db-500-30s/db"
DUMMY_DB = "music/test-dummy-db-100k-full"
TRAIN = "music/train-10k-30s"
BG_TRAIN = "aug/bg/tr"
BG_TEST = "aug/bg/ts"
REQUIRED = {TEST_DB: "the 500 test tracks, used as the reference database",
            BG_TEST: "test background noise, mixed into the 'noise' queries"}

LAYOUT = """neural-audio-fp-dataset/
  music/test-query-db-500-30s/db/...  500 test tracks = reference database     (required)
  music/test-dummy-db-100k-full/...   dummy tracks, extra references          (optional, max_dummy_refs)
  music/train-10k-30s/...             training tracks                         (optional)
  aug/bg/tr/...                       background noise for training           (optional)
  aug/bg/ts/...                       background noise for test queries       (required)"""


class NafpLayoutError(FileNotFoundError):
    """The dataset folder does not have the NAFP layout; the message names the missing path."""


def find_dataset_root(path: Path) -> Path:
    """`path` itself, or its `neural-audio-fp-dataset` sub-folder when `path` is the folder holding it."""
    path = Path(path).expanduser()
    if not (path / "music").is_dir() and (path / "neural-audio-fp-dataset" / "music").is_dir():
        return path / "neural-audio-fp-dataset"
    return path


def _audio_files(folder: Path) -> list[Path]:
    """Audio files under `folder` (recursive, sorted; hidden files such as macOS `._x.wav` skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _flat_name(path: Path, base: Path, prefix: str = "") -> str:
    """`000/000134.wav` -> `000_000134.wav` (characters outside [A-Za-z0-9._-] become '-')."""
    rel = path.relative_to(base)
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "-", p) for p in rel.with_suffix("").parts]
    return prefix + "_".join(parts) + rel.suffix.lower()


class _Linker:
    """Hard-link, or copy where hard links are impossible; counts both."""

    def __init__(self) -> None:
        self.counts = Counter()

    def __call__(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not self.counts["copy"]:
            try:
                os.link(src, dst)
                self.counts["hardlink"] += 1
                return
            except OSError as exc:
                log.warning("cannot hard-link the dataset into the corpus (%s): copying the files instead", exc)
        shutil.copyfile(src, dst)
        self.counts["copy"] += 1


def _link_all(files: list[Path], base: Path, folder: Path, link: _Linker, prefix: str = "",
              taken: set[str] | None = None) -> list[Path]:
    taken = set() if taken is None else taken
    out = []
    for f in files:
        target = folder / _flat_name(f, base, prefix)
        key = target.with_suffix("").as_posix()
        if key in taken:
            raise RuntimeError(f"{f}: its corpus name {target.name} is already taken (two dataset files map to "
                               "the same id)")
        taken.add(key)
        link(f, target)
        out.append(target)
    return out


def import_nafp_corpus(dataset_root: Path, out_root: Path, params: FpCorpusParams,
                       max_dummy_refs: int | None = None) -> dict:
    """Link the NAFP dataset at `dataset_root` into a fingerprint corpus at `out_root` and synthesize
    its queries (see the module docstring); returns the content of corpus.json.

    `max_dummy_refs`: dummy-db tracks added to the references (first ones in path order); None takes
    params.max_dummy_refs. Raises NafpLayoutError naming the path when a required folder is missing.
    """
    t0 = time.time()
    ds = find_dataset_root(Path(dataset_root)).resolve()
    out_root = Path(out_root).resolve()
    seed = int(params.seed)
    spec = SIZES[params.size]
    n_dummy = params.max_dummy_refs if max_dummy_refs is None else int(max_dummy_refs)
    workers = available_cores()

    # 1. what the dataset has --------------------------------------------------------------------
    if not ds.is_dir():
        raise NafpLayoutError(f"{ds}: no such dataset folder (fingerprint.corpus.dataset_root); expected the "
                              f"NAFP layout:\n{LAYOUT}")
    found: dict[str, list[Path]] = {}
    for rel, what in REQUIRED.items():
        files = _audio_files(ds / rel)
        if not files:
            state = "has no audio files" if (ds / rel).is_dir() else "is missing"
            raise NafpLayoutError(f"{ds / rel} {state}: it should hold {what}. {ds} does not look like the NAFP "
                                  f"dataset; expected the layout:\n{LAYOUT}")
        found[rel] = files
    for rel in (TRAIN, BG_TRAIN):
        found[rel] = _audio_files(ds / rel)
        if not found[rel]:
            log.warning("%s: missing or empty (optional)%s", ds / rel,
                        "; the train stage needs training audio" if rel == TRAIN else "")
    dummy: list[Path] = []
    if n_dummy:
        dummy = _audio_files(ds / DUMMY_DB)[:n_dummy]
        if len(dummy) < n_dummy:
            log.warning("%s: %d dummy tracks asked for, %d found", ds / DUMMY_DB, n_dummy, len(dummy))

    # held-out training tracks for out-of-database queries (seeded; never linked into train/)
    train_files = found[TRAIN]
    n_hold = min(spec.oov_n, len(train_files) // 2) if params.oov_fraction > 0 else 0
    order = np.random.default_rng([seed, 83]).permutation(len(train_files))
    held = sorted(train_files[int(i)] for i in order[:n_hold])
    held_set = set(held)
    train_files = [f for f in train_files if f not in held_set]

    # 2. link into <out_root>.tmp -------------------------------------------------------------------
    tmp = out_root.with_name(out_root.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    stages: dict[str, float] = {}
    stage = stage_timer(stages, log)

    link = _Linker()
    ref_ids: set[str] = set()
    ref_paths = _link_all(found[TEST_DB], ds / TEST_DB, tmp / "refs", link, taken=ref_ids)
    dummy_paths = _link_all(dummy, ds / DUMMY_DB, tmp / "refs", link, prefix="dummy_", taken=ref_ids)
    train_paths = _link_all(train_files, ds / TRAIN, tmp / "train", link)
    noise_train = _link_all(found[BG_TRAIN], ds / BG_TRAIN, tmp / "noise" / "train", link)
    noise_test = _link_all(found[BG_TEST], ds / BG_TEST, tmp / "noise" / "test", link)
    (tmp / "queries").mkdir()
    stage("link")

    original = {p: f for p, f in zip(ref_paths + dummy_paths + train_paths,
                                     found[TEST_DB] + dummy + train_files)}
    refs = [Track(id=p.relative_to(tmp).with_suffix("").as_posix(), path=p, split="ref", source="nafp:test-db",
                  name=p.stem, info={"original": original[p].relative_to(ds).as_posix()}) for p in ref_paths]
    oov = [Track(id="", path=f, split="oov", source="nafp:train", name=f.relative_to(ds).as_posix()) for f in held]
    _measure(refs + oov, workers)
    stage("measure")

    # 3. queries (the demo corpus's query maker) ---------------------------------------------------
    noises = load_noises(noise_test, tmp, NAFP_SR)
    stage("noise")
    gt_rows, meta_rows = make_queries(tmp, refs, oov, noises, params, seed, workers, sr=NAFP_SR)
    write_query_tables(tmp, gt_rows, meta_rows)
    stage("queries")

    # 4. tables and summary -------------------------------------------------------------------------
    durations = {t.path: t.duration_s for t in refs}
    with open(tmp / "tracks.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "path", "split", "source", "original", "duration_s"],
                           lineterminator="\n")
        w.writeheader()
        for p, split, source in ([(p, "ref", "nafp:test-db") for p in ref_paths]
                                 + [(p, "ref", "nafp:dummy-db") for p in dummy_paths]
                                 + [(p, "train", "nafp:train") for p in train_paths]):
            w.writerow({"id": p.relative_to(tmp).with_suffix("").as_posix(), "path": p.relative_to(tmp).as_posix(),
                        "split": split, "source": source, "original": original[p].relative_to(ds).as_posix(),
                        "duration_s": f"{durations[p]:.3f}" if p in durations else ""})
    in_db = [r for r in gt_rows if r["in_db"] == "1"]
    summary = {
        "source": "nafp", "dataset_root": str(ds), "size": params.size, "seed": seed,
        "n_refs": len(ref_paths) + len(dummy_paths), "n_refs_test": len(ref_paths), "n_refs_dummy": len(dummy_paths),
        "test_ref_hours": round(sum(t.duration_s for t in refs) / 3600, 4),
        "n_train": len(train_paths), "n_train_held_out": len(held),
        "n_queries": len(gt_rows), "n_queries_in_db": len(in_db), "n_queries_oov": len(gt_rows) - len(in_db),
        "queries_by_length": dict(sorted(Counter(r["length_s"] for r in gt_rows).items(), key=lambda kv: float(kv[0]))),
        "queries_by_degradation": dict(sorted(Counter(r["degradation"] for r in gt_rows).items())),
        "n_noise_train": len(noise_train), "n_noise_test": len(noise_test),
        "sample_rate": NAFP_SR, "oov_sources": [t.name for t in oov],
        "linked": {"hardlink": link.counts["hardlink"], "copy": link.counts["copy"]},
        "dataset_folders": {rel: (ds / rel).is_dir() for rel in (TEST_DB, DUMMY_DB, TRAIN, BG_TRAIN, BG_TEST)},
        "params": params.model_dump(mode="json"),
        "stage_seconds": stages,
        "build_seconds": round(time.time() - t0, 1),
    }
    (tmp / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")

    # 5. swap in atomically ---------------------------------------------------------------------------
    swap_in(tmp, out_root)
    log.info("NAFP corpus %s: %d refs (%d dummy), %d train, %d queries in %.0f s", out_root, summary["n_refs"],
             summary["n_refs_dummy"], summary["n_train"], summary["n_queries"], summary["build_seconds"])
    return summary
