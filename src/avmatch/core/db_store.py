"""The safety machinery every user database is built on: one writer at a time, readers that see a
whole version, damage that is named rather than answered around.

A user database (fingerprint, versions, copy detection) is a folder that several commands may touch
at once: two `add`s started together, an `identify` while an `add` runs, an `add` killed half-way.
Rewriting `manifest.parquet` in place lost whichever writer finished first and let a reader see one
writer's manifest beside another's index. Here instead:

- Writers take a lock file in the database folder (`filelock`; the kernel drops it when a writer is
  killed). A second writer says it waits, then waits at most `wait` seconds (`DatabaseBusy`).
- What a reader needs besides the append-only embedding shards (manifest, index codes, a copy of
  db.json) is written into a new folder `snapshots/NNNNNN/`, and published by one `os.replace` of the
  small pointer file `CURRENT`, which names the version and the size of each of its files. A reader
  reads the pointer once and opens that version's files; a writer keeps the previous version when it
  deletes older ones, and a reader whose version vanished under it reads the new pointer again.
- A file the pointer names that is missing or of another size, an unreadable pointer or db.json,
  raise `DamagedDatabase`, naming the file and the repair command.

`fault_point(phase)` is the hook the fault-injection tests use: with `AVMATCH_FAULT=phase` in its
environment, a writer kills itself (SIGKILL, as a power cut or the OOM killer would) at that phase.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

POINTER = "CURRENT"
SNAPSHOTS = "snapshots"
LOCK_FILE = ".writer.lock"
FILES_RECORD = "_files.json"     # inside each snapshot: what the pointer said, for repair to check old versions
FAULT_ENV = "AVMATCH_FAULT"
_VERSION_RE = re.compile(r"^\d{6}$")

T = TypeVar("T")


class DatabaseBusy(RuntimeError):
    """Another writer held the database for longer than the caller would wait."""


class DamagedDatabase(RuntimeError):
    """A file of the database is missing, truncated or unreadable; the message names it and the repair."""

    def __init__(self, path: str | Path, problem: str, repair: str):
        self.path, self.problem, self.repair = Path(path), problem, repair
        super().__init__(f"{path}: {problem}. The database is damaged; repair it with `{repair}`")


def fault_point(phase: str) -> None:
    """Kill this process here when `AVMATCH_FAULT` names `phase` (fault-injection tests only)."""
    if os.environ.get(FAULT_ENV) == phase:
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------------ writers
@contextmanager
def writer_lock(root: str | Path, wait: float | None = None,
                say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the database's writer lock; wait at most `wait` seconds for another writer (None: as long
    as it takes), telling the user through `say` that it waits."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(root / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        limit = "" if wait is None else f" (at most {wait:g} s)"
        (say or log.warning)(f"{root}: another command is writing to this database; waiting for it to finish{limit}")
        try:
            lock.acquire(timeout=-1 if wait is None else max(float(wait), 0.0))
        except Timeout:
            raise DatabaseBusy(f"{root}: another command was still writing to this database after {wait:g} s "
                               f"(lock file {root / LOCK_FILE}); nothing was changed. Run again when it has "
                               f"finished, or give a longer --wait") from None
    try:
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------- snapshots
@dataclass(frozen=True)
class Snapshot:
    """One published version: its folder and the size of each file in it (relative names)."""

    folder: Path
    version: int
    files: dict[str, int] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.folder / name


def read_json(path: Path, repair: str) -> dict:
    """A JSON file of the database; a missing or unparsable one is `DamagedDatabase` naming it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DamagedDatabase(path, "is missing", repair) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedDatabase(path, f"is not valid JSON ({exc})", repair) from None
    if not isinstance(data, dict):
        raise DamagedDatabase(path, "does not hold a JSON object", repair)
    return data


def read_table(path: Path, read: Callable[[Path], T], repair: str) -> T:
    """A table file of the database (Parquet, CSV) read by `read`; a missing or unreadable one is
    `DamagedDatabase` naming it. Arrow, pandas and the caller's own checks each raise their own error
    type on a damaged file, so any error counts: a half-read table would give answers that look real."""
    try:
        return read(path)
    except FileNotFoundError:
        raise DamagedDatabase(path, "is missing", repair) from None
    except Exception as exc:
        raise DamagedDatabase(path, f"cannot be read ({type(exc).__name__}: {exc})", repair) from None


def _write_json(path: Path, data: dict) -> None:
    """Write under a temporary name, flush to disk, rename: the file is the old one or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(data, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, data: dict) -> None:
    """A small JSON file (db.json, settings) replaced atomically."""
    _write_json(Path(path), data)


class SnapshotStore:
    """The published versions of one database folder.

    `legacy` names the files an older database kept at the top of its folder: such a database (no
    pointer yet) is read as version 0 and its next write publishes version 1.
    """

    def __init__(self, root: str | Path, repair: str, legacy: tuple[str, ...] = ()):
        self.root = Path(root)
        self.repair = repair
        self.legacy = legacy

    @property
    def pointer(self) -> Path:
        return self.root / POINTER

    def current(self, check: bool = True) -> Snapshot | None:
        """The published version (checked: every file present, of its recorded size), None if none yet."""
        try:
            text = self.pointer.read_text()
        except FileNotFoundError:
            if self.legacy and all((self.root / n).exists() for n in self.legacy):
                return Snapshot(self.root, 0, {})
            if (self.root / SNAPSHOTS).is_dir() and any(self._versions()):
                raise DamagedDatabase(self.pointer, "is missing", self.repair) from None
            return None
        try:
            ptr = json.loads(text)
            snap = Snapshot(self.root / SNAPSHOTS / f"{int(ptr['version']):06d}", int(ptr["version"]),
                            {str(k): int(v) for k, v in ptr["files"].items()})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DamagedDatabase(self.pointer, f"is not a valid version pointer ({exc})", self.repair) from None
        if check:
            self.check(snap)
        return snap

    def check(self, snap: Snapshot) -> None:
        """Every file the version names is there with its recorded size (truncation, deletion)."""
        for name, size in snap.files.items():
            path = snap.path(name)
            try:
                found = path.stat().st_size
            except FileNotFoundError:
                raise DamagedDatabase(path, "is missing", self.repair) from None
            if found != size:
                raise DamagedDatabase(path, f"has {found} bytes where {size} were written (truncated or "
                                      f"overwritten)", self.repair)

    def read(self, load: Callable[[Snapshot | None], T], attempts: int = 5) -> T:
        """`load(version)` on one published version. When its files vanish while being read (two writers
        published since, and the older one's cleanup removed it) the new version is read instead."""
        for attempt in range(attempts):
            before = self._pointer_text()
            snap = None
            try:
                snap = self.current()
                return load(snap)
            except (FileNotFoundError, DamagedDatabase):
                if attempt + 1 == attempts or self._pointer_text() == before:
                    if snap is not None:
                        self.check(snap)     # a vanished file of this version: name it
                    raise
        raise AssertionError("unreachable")

    def _pointer_text(self) -> str:
        try:
            return self.pointer.read_text()
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------ writing (under writer_lock)
    def _versions(self) -> list[int]:
        folder = self.root / SNAPSHOTS
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if _VERSION_RE.match(p.name))

    @contextmanager
    def publish(self) -> Iterator[Path]:
        """A staging folder to write the next version's files into; when the block ends they are
        checked in, then published by replacing the pointer. Only call under `writer_lock`."""
        version = max([0, *self._versions()]) + 1
        staging = self.root / SNAPSHOTS / f".{version:06d}.tmp-{os.getpid()}"
        for stale in (self.root / SNAPSHOTS).glob(".*.tmp-*") if (self.root / SNAPSHOTS).is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)    # a killed writer's (the lock says none is running)
        staging.mkdir(parents=True)
        try:
            yield staging
            files = {p.relative_to(staging).as_posix(): p.stat().st_size
                     for p in sorted(staging.rglob("*")) if p.is_file()}
            _write_json(staging / FILES_RECORD, {"version": version, "files": files})
            _fsync_tree(staging)
            final = self.root / SNAPSHOTS / f"{version:06d}"
            os.replace(staging, final)
            fault_point("save")
            before = self.published_version()
            _write_json(self.pointer, {"version": version, "files": files})
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fault_point("published")
        self.collect_garbage(keep={version, before})

    def published_version(self) -> int | None:
        """The version number the pointer names (unchecked), None when there is none or it is unreadable."""
        try:
            return int(json.loads(self.pointer.read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def collect_garbage(self, keep: set[int | None]) -> list[int]:
        """Delete every version but `keep`: the one just published and the one published before it,
        which a reader may still be opening (versions a killed writer never published go too).
        Returns the versions deleted."""
        keep_set = set(keep) | {self.published_version()}
        gone = [v for v in self._versions() if v not in keep_set]
        for v in gone:
            shutil.rmtree(self.root / SNAPSHOTS / f"{v:06d}", ignore_errors=True)
        return gone

    def intact_versions(self) -> list[Snapshot]:
        """Versions whose recorded files are all present and whole, newest first (for repair)."""
        out = []
        for v in reversed(self._versions()):
            folder = self.root / SNAPSHOTS / f"{v:06d}"
            try:
                rec = json.loads((folder / FILES_RECORD).read_text())
                snap = Snapshot(folder, v, {str(k): int(s) for k, s in rec["files"].items()})
                self.check(snap)
            except (OSError, ValueError, KeyError, TypeError, DamagedDatabase):
                continue
            out.append(snap)
        return out


def _fsync_tree(folder: Path) -> None:
    """Flush a version's files to disk before the pointer names them (a power cut, not only a kill)."""
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
