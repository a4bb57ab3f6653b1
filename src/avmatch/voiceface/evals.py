"""The voice–face evaluation lists: sampled once from the held-out identities, stored as Parquet, scored by
`metrics.evaluate`.

Why fixed lists: every number EFT (ICME 2023) reports is a score over lists drawn once and shipped with the
data (dataset/evals/*.pkl), so two models are compared on the same pairs. We sample the same kinds of lists
from our own corpus with a seed, and read EFT's released pickles (only when asked to, see `read_eval_lists`).

The lists (names = EFT's file names without the extension):

- ``valid_verification``, ``test_verification`` (U), ``test_verification_g`` (negatives of the same gender),
  ``test_verification_n`` (same nationality), ``test_verification_gn`` (both): columns voice, face, label
  (1 = the voice and the face belong to the same identity, 0 = different identities; half of each).
- ``test_matching`` / ``test_matching_g``: name1, voice1, face1, name2, voice2, face2 (a 1:2 matching trial:
  is face1 closer to voice1 than face2, and voice1 closer to face1 than voice2); identity 2 is any other
  identity / one of the same gender.
- ``test_retrieval``: group, voice, face, name — mAP is computed within each group, then averaged.
- ``test_matching_1N``: item, position, voice, face — position 0 is the true match; one item holds the voices
  and faces of N distinct identities (N <= 10), and the 1:n scores use the first n positions (n = 2..N).

EFT's repository does not contain the code that drew its lists (utils/sample_util.py only has uniform random
pickers), so the sampling rules below are ours, written to the protocol the lists encode:

- only identities of the requested split are used, so the lists are disjoint from the other splits;
- a track is drawn uniformly from the identity's tracks of that modality (voice and face independently);
  tracks labelled ``noisy`` stay in (label noise is part of the data); when ``usable_voice`` /
  ``usable_face`` sets are given, tracks outside them (no vector from any expert) are left out;
- in the constrained verification lists both positives and negatives are drawn from the identities that have
  at least one partner under the constraint, so the two classes come from the same identities;
- every list has its own random stream derived from (seed, list name): changing the size of one list does
  not change another, and the same seed gives the same lists whatever the row order of the inputs.
"""

from __future__ import annotations

import io
import logging
import pickle
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

VERIFICATION = ("valid_verification", "test_verification", "test_verification_g", "test_verification_n",
                "test_verification_gn")
MATCHING = ("test_matching", "test_matching_g")
RETRIEVAL = "test_retrieval"
MATCHING_1N = "test_matching_1N"
ALL_LISTS = (*VERIFICATION, *MATCHING, RETRIEVAL, MATCHING_1N)

COLUMNS: dict[str, tuple[str, ...]] = {
    **{n: ("voice", "face", "label") for n in VERIFICATION},
    **{n: ("name1", "voice1", "face1", "name2", "voice2", "face2") for n in MATCHING},
    RETRIEVAL: ("group", "voice", "face", "name"),
    MATCHING_1N: ("item", "position", "voice", "face"),
}
_INT_COLUMNS = {"label", "group", "item", "position"}
# which identity attributes a constrained verification list holds fixed between the two identities
_CONSTRAINT = {"": (), "_g": ("gender",), "_n": ("nationality",), "_gn": ("gender", "nationality")}


class EvalListError(ValueError):
    """An evaluation list file is unreadable or malformed; the message names the file."""


@dataclass(frozen=True)
class EvalSizes:
    """How many entries each list gets. Verification lists are half positives, half negatives."""

    verification: int = 1000          # pairs per test verification list (U, G, N, GN)
    valid_verification: int = 1000    # pairs in valid_verification
    matching: int = 1000              # triplets per 1:2 matching list
    retrieval_groups: int = 10        # groups in test_retrieval (mAP is averaged over them)
    retrieval_group_size: int = 50    # identities per group (capped by the identities available)
    retrieval_per_identity: int = 1   # (voice, face) entries per identity in a group
    matching_1n: int = 1000           # 1:N items
    gallery: int = 10                 # N: identities per 1:N item (2..10)

    def __post_init__(self) -> None:
        for k in ("verification", "valid_verification", "matching", "retrieval_groups", "matching_1n"):
            if getattr(self, k) < 0:
                raise ValueError(f"EvalSizes.{k} must be >= 0, got {getattr(self, k)}")
        if self.retrieval_group_size < 2 or self.retrieval_per_identity < 1:
            raise ValueError("EvalSizes.retrieval_group_size must be >= 2 and retrieval_per_identity >= 1")
        if not 2 <= self.gallery <= 10:
            raise ValueError(f"EvalSizes.gallery (N of 1:N matching) must be in 2..10, got {self.gallery}")


@dataclass
class EvalLists:
    """The lists by name (see the module docstring for names and columns); `sources[name]` says where a list
    came from (a file path, or 'sampled'), so that an error about an entry can name its file."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.frames

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.frames[name]

    def names(self) -> list[str]:
        return [n for n in ALL_LISTS if n in self.frames]

    def source(self, name: str) -> str:
        return self.sources.get(name, "sampled")

    def tracks(self, modality: str) -> set[str]:
        """Every voice (or face) track some list names: what has to be embedded before `evaluate`."""
        if modality not in ("voice", "face"):
            raise ValueError(f"modality must be 'voice' or 'face', got {modality!r}")
        out: set[str] = set()
        for df in self.frames.values():
            for c in df.columns:
                if c.rstrip("12") == modality:
                    out.update(df[c].astype(str))
        return out

    def counts(self) -> dict[str, int]:
        """Entries per list (rows; items for 1:N, groups for retrieval), for logs and reports."""
        out = {}
        for name in self.names():
            df = self.frames[name]
            out[name] = int(df["item"].nunique() if name == MATCHING_1N else
                            df["group"].nunique() if name == RETRIEVAL else len(df))
        return out

    def merged(self, other: EvalLists) -> EvalLists:
        """These lists plus `other`'s (other wins on a name clash): the valid and test lists are drawn apart."""
        return EvalLists({**self.frames, **other.frames}, {**self.sources, **other.sources})


# ----------------------------------------------------------------------------------------------- sampling

def usable_tracks(tracks: pd.DataFrame, missing: pd.DataFrame, experts: Iterable[str]) -> tuple[set[str], set[str]]:
    """(voice, face) tracks that have a vector from at least one of `experts` of their modality, from the
    corpus tables tracks.parquet and experts/missing.parquet: what `make_eval_lists` may use."""
    experts = list(experts)
    out = []
    for modality, prefix in (("voice", "v_"), ("face", "f_")):
        mine = [e for e in experts if e.startswith(prefix)]
        ts = set(tracks.loc[tracks["modality"] == modality, "track"].astype(str))
        if mine:
            miss = missing[missing["expert"].astype(str).isin(mine)]
            n_missing = miss.drop_duplicates(["track", "expert"]).groupby("track").size()
            ts -= set(n_missing[n_missing >= len(mine)].index.astype(str))
        out.append(ts)
    return out[0], out[1]


class _Pool:
    """The identities of one split with their usable voice and face tracks, in a canonical order."""

    def __init__(self, identities: pd.DataFrame, tracks: pd.DataFrame, split: str,
                 usable_voice: set[str] | None, usable_face: set[str] | None):
        for col in ("identity", "gender", "nationality", "split"):
            if col not in identities.columns:
                raise ValueError(f"identities table lacks column {col!r}")
        for col in ("track", "modality", "identity"):
            if col not in tracks.columns:
                raise ValueError(f"tracks table lacks column {col!r}")
        ids = identities[identities["split"].astype(str) == split].sort_values("identity")
        self.attrs = {str(r.identity): {"gender": str(r.gender), "nationality": str(r.nationality)}
                      for r in ids.itertuples()}
        tr = tracks[tracks["identity"].astype(str).isin(self.attrs)]
        self.voices: dict[str, list[str]] = {}
        self.faces: dict[str, list[str]] = {}
        for modality, usable, dest in (("voice", usable_voice, self.voices), ("face", usable_face, self.faces)):
            sub = tr[tr["modality"] == modality]
            for ident, grp in sub.groupby(sub["identity"].astype(str), sort=True):
                names = sorted(set(grp["track"].astype(str)))
                if usable is not None:
                    names = [t for t in names if t in usable]
                if names:
                    dest[ident] = names
        self.ids = [i for i in self.attrs if i in self.voices and i in self.faces]
        if len(self.ids) < 2:
            raise ValueError(f"split {split!r} has {len(self.ids)} identities with both a usable voice and a "
                             "usable face track; evaluation lists need at least 2")

    def key(self, ident: str, attrs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(self.attrs[ident][a] for a in attrs)

    def partners(self, attrs: tuple[str, ...]) -> dict[str, list[str]]:
        """identity -> the other identities that share `attrs` with it (only identities that have one)."""
        by_key: dict[tuple, list[str]] = {}
        for i in self.ids:
            by_key.setdefault(self.key(i, attrs), []).append(i)
        out = {i: [j for j in by_key[self.key(i, attrs)] if j != i] for i in self.ids}
        return {i: p for i, p in out.items() if p}


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _verification(pool: _Pool, n: int, attrs: tuple[str, ...], rng: np.random.Generator, name: str) -> pd.DataFrame:
    partners = pool.partners(attrs)
    if not partners:
        raise ValueError(f"{name}: no two identities share {'/'.join(attrs)}; cannot draw constrained negatives")
    eligible = sorted(partners)
    rows = []
    for k in range(n):
        a = _pick(rng, eligible)
        if k < n // 2:
            rows.append((_pick(rng, pool.voices[a]), _pick(rng, pool.faces[a]), 1))
        else:
            b = _pick(rng, partners[a])
            rows.append((_pick(rng, pool.voices[a]), _pick(rng, pool.faces[b]), 0))
    df = pd.DataFrame(rows, columns=list(COLUMNS[name]))
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True) if len(df) else df


def _matching(pool: _Pool, n: int, attrs: tuple[str, ...], rng: np.random.Generator, name: str) -> pd.DataFrame:
    partners = pool.partners(attrs)
    if not partners:
        raise ValueError(f"{name}: no two identities share {'/'.join(attrs)}")
    eligible = sorted(partners)
    rows = []
    for _ in range(n):
        a = _pick(rng, eligible)
        b = _pick(rng, partners[a])
        rows.append((a, _pick(rng, pool.voices[a]), _pick(rng, pool.faces[a]),
                     b, _pick(rng, pool.voices[b]), _pick(rng, pool.faces[b])))
    return pd.DataFrame(rows, columns=list(COLUMNS[name]))


def _draw(rng: np.random.Generator, items: list[str], k: int) -> list[str]:
    idx = rng.choice(len(items), size=k, replace=len(items) < k)
    return [items[int(i)] for i in idx]


def _retrieval(pool: _Pool, sizes: EvalSizes, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    m = min(sizes.retrieval_group_size, len(pool.ids))
    for g in range(sizes.retrieval_groups):
        for i in rng.choice(len(pool.ids), size=m, replace=False):
            ident = pool.ids[int(i)]
            k = sizes.retrieval_per_identity
            for v, f in zip(_draw(rng, pool.voices[ident], k), _draw(rng, pool.faces[ident], k)):
                rows.append((g, v, f, ident))
    return pd.DataFrame(rows, columns=list(COLUMNS[RETRIEVAL]))


def _matching_1n(pool: _Pool, sizes: EvalSizes, rng: np.random.Generator) -> pd.DataFrame:
    if len(pool.ids) < sizes.gallery:
        raise ValueError(f"{MATCHING_1N}: N={sizes.gallery} needs {sizes.gallery} identities, the split has "
                         f"{len(pool.ids)}")
    rows = []
    for item in range(sizes.matching_1n):
        for pos, i in enumerate(rng.choice(len(pool.ids), size=sizes.gallery, replace=False)):
            ident = pool.ids[int(i)]
            rows.append((item, pos, _pick(rng, pool.voices[ident]), _pick(rng, pool.faces[ident])))
    return pd.DataFrame(rows, columns=list(COLUMNS[MATCHING_1N]))


def make_eval_lists(identities: pd.DataFrame, tracks: pd.DataFrame, split: str, seed: int, sizes: EvalSizes,
                    *, usable_voice: Iterable[str] | None = None,
                    usable_face: Iterable[str] | None = None) -> EvalLists:
    """Draw the lists of one split: 'valid' gives valid_verification (EFT selects models on its AUC), 'test'
    gives all the test lists. Deterministic for a seed (see the module docstring for the rules)."""
    if split in ("val", "valid"):
        split_name, wanted = "valid", ("valid_verification",)
    elif split == "test":
        split_name, wanted = "test", tuple(n for n in ALL_LISTS if n.startswith("test_"))
    else:
        raise ValueError(f"evaluation lists are drawn for 'valid' or 'test', not {split!r}")
    pool = _Pool(identities, tracks, split_name,
                 None if usable_voice is None else set(usable_voice),
                 None if usable_face is None else set(usable_face))
    frames: dict[str, pd.DataFrame] = {}
    for name in wanted:
        rng = _rng(seed, name)
        if name in VERIFICATION:
            n = sizes.valid_verification if name == "valid_verification" else sizes.verification
            suffix = name[len("test_verification"):] if name.startswith("test_") else ""
            frames[name] = _verification(pool, n, _CONSTRAINT[suffix], rng, name)
        elif name in MATCHING:
            frames[name] = _matching(pool, sizes.matching, _CONSTRAINT[name[len("test_matching"):]], rng, name)
        elif name == RETRIEVAL:
            frames[name] = _retrieval(pool, sizes, rng)
        else:
            frames[name] = _matching_1n(pool, sizes, rng)
    return EvalLists(frames, {n: f"sampled from split {split_name!r} with seed {seed}" for n in frames})


# ---------------------------------------------------------------------------------------------- reading

def _normalise(df: pd.DataFrame, name: str, where: str) -> pd.DataFrame:
    missing = [c for c in COLUMNS[name] if c not in df.columns]
    if missing:
        raise EvalListError(f"{where}: list {name} lacks columns {missing} (has {list(df.columns)})")
    df = df[list(COLUMNS[name])].copy()
    for c in df.columns:
        if c in _INT_COLUMNS:
            try:
                df[c] = df[c].astype(np.int64)
            except (TypeError, ValueError) as exc:
                raise EvalListError(f"{where}: column {c} of {name} is not integer: {exc}") from None
        else:
            df[c] = df[c].astype(str)
    if "label" in df.columns and not df["label"].isin([0, 1]).all():
        raise EvalListError(f"{where}: labels of {name} must be 0 or 1")
    return df.reset_index(drop=True)


def write_eval_lists(lists: EvalLists, folder: Path | str) -> list[Path]:
    """Write each list as <folder>/<name>.parquet (atomically: a crash leaves no half-written list)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in lists.names():
        path = folder / f"{name}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        _normalise(lists[name], name, str(path)).to_parquet(tmp, index=False)
        tmp.replace(path)
        out.append(path)
    return out


class _EftUnpickler(pickle.Unpickler):
    """Loads EFT's pickles (lists, dicts, sets, strings, numbers, numpy arrays) and refuses any other class,
    which narrows — it does not remove — what a hostile pickle can do."""

    _ALLOWED = {
        ("builtins", n) for n in ("set", "frozenset", "list", "dict", "tuple", "str", "int", "float", "bool",
                                  "complex", "bytes", "bytearray", "slice", "range")
    } | {("collections", "OrderedDict"), ("collections", "defaultdict"), ("_codecs", "encode")} | {
        (m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for n in ("_reconstruct", "scalar")
    } | {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
         ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an EFT pickle")


def load_eft_pickle(path: Path | str) -> object:
    """Read one of EFT's pickles. Callers must have the user's consent (allow_pickle): unpickling runs code."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return _EftUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise EvalListError(f"{path}: not a readable EFT pickle: {type(exc).__name__}: {exc}") from None


def pickle_warning(path: Path | str) -> None:
    log.warning("reading pickle %s: unpickling can execute code; it is read only because you passed "
                "--allow-pickle / allow_pickle=True and named this path (only numpy/builtin types are accepted)",
                path)


def _from_eft(obj: object, name: str, path: Path) -> pd.DataFrame:
    if not isinstance(obj, dict):
        raise EvalListError(f"{path}: expected a dict, got {type(obj).__name__}")
    key = "list" if name in VERIFICATION else "retrieval_lists" if name == RETRIEVAL else "match_list"
    if key not in obj:
        raise EvalListError(f"{path}: EFT {name} pickle has no {key!r} entry (keys: {sorted(map(str, obj))})")
    entries = obj[key]
    try:
        if name == RETRIEVAL:
            rows = [(g, v, f, n) for g, group in enumerate(entries) for v, f, n in group]
        elif name == MATCHING_1N:
            rows = []
            for item, (voices, faces) in enumerate(entries):
                if len(voices) != len(faces):
                    raise EvalListError(f"{path}: 1:N item {item} has {len(voices)} voices, {len(faces)} faces")
                rows += [(item, p, v, f) for p, (v, f) in enumerate(zip(voices, faces))]
        else:
            rows = [tuple(e) for e in entries]
        df = pd.DataFrame(rows, columns=list(COLUMNS[name]))
    except (TypeError, ValueError) as exc:
        raise EvalListError(f"{path}: unexpected entry shape in {name}: {exc}") from None
    return _normalise(df, name, str(path))


def read_eval_lists(folder: Path | str, *, allow_pickle: bool = False) -> EvalLists:
    """Read the lists of a folder: our <name>.parquet files, or — only with allow_pickle=True — EFT's released
    <name>.pkl files (dataset/evals/). A Parquet file wins over a pickle of the same name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: evaluation list folder does not exist")
    frames, sources, refused = {}, {}, []
    for name in ALL_LISTS:
        pq, pk = folder / f"{name}.parquet", folder / f"{name}.pkl"
        if pq.exists():
            try:
                df = pd.read_parquet(pq)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
                raise EvalListError(f"{pq}: unreadable Parquet: {exc}") from None
            frames[name], sources[name] = _normalise(df, name, str(pq)), str(pq)
        elif pk.exists():
            if not allow_pickle:
                refused.append(pk)
                continue
            pickle_warning(pk)
            frames[name], sources[name] = _from_eft(load_eft_pickle(pk), name, pk), str(pk)
    if refused and not frames:
        raise EvalListError(f"{folder}: only pickled lists ({', '.join(p.name for p in refused)}); pickles can "
                            "execute code, so they are read only with allow_pickle=True / --allow-pickle")
    if refused:
        log.warning("%s: skipped pickled lists %s (pass allow_pickle to read them)", folder,
                    ", ".join(p.name for p in refused))
    if not frames:
        raise FileNotFoundError(f"{folder}: no evaluation lists (expected files like test_verification.parquet)")
    return EvalLists(frames, sources)
