"""Progress bars that stay readable in logs.

In a terminal tqdm redraws in place; under DVC, Prefect or CI (no TTY) it would print one line per
update, so updates are throttled there to one line every few seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    interactive = sys.stderr.isatty()
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, dynamic_ncols=True,
                     mininterval=0.2 if interactive else 5.0, file=sys.stderr))


NOISY_LOGGERS = ("faiss.loader", "alembic", "mlflow", "urllib3", "numba", "matplotlib", "PIL", "httpx")


def setup_logging(verbose: bool = False) -> None:
    """Timestamped log lines on stderr for commands and stages; the libraries that chatter at INFO are
    kept to warnings, so a stage's own progress stays readable."""
    import logging

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
