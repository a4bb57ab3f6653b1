"""Several processes on one SQLite store (MLflow's `mlflow.db`): stages of two runs meet there.

SQLite lets one writer in at a time; the others get "database is locked" once their busy timeout
runs out, and a store that two processes create at once can see both run the schema migrations.
So: the first process to open a store does it alone (a lock file beside the database), switches it
to write-ahead logging (readers then never block the writer, and the mode stays with the file), and
calls that still meet a lock are retried with backoff rather than failing a stage that ran for hours.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCKED = ("database is locked", "database table is locked", "database is busy")


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///...` URI (None for other stores and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def is_locked(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) is SQLite's lock contention, worth retrying."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(t in str(exc).lower() for t in LOCKED):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_locked(call: Callable[[], T], attempts: int = 6, first_delay_s: float = 0.5, what: str = "") -> T:
    """`call()`, retried with jittered exponential backoff while SQLite reports lock contention."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if not is_locked(exc) or attempt + 1 == attempts:
                raise
            delay = first_delay_s * 2 ** attempt * (0.5 + random.random())
            log.warning("%s: the SQLite store is locked by another process; retrying in %.1f s", what or "tracking",
                        delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextmanager
def store_setup_lock(uri: str, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold a lock beside a SQLite store while opening it (creation, migrations), and set WAL on it."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout_s):
        enable_wal(path)
        yield


def enable_wal(path: Path) -> None:
    """Write-ahead logging on a SQLite file (kept by the file; a no-op when already set)."""
    con = sqlite3.connect(path, timeout=60)
    try:
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()
