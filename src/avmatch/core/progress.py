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
