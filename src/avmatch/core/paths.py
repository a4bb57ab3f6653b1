"""Where the project lives: the folder holding params.yaml, found from the working directory."""

from __future__ import annotations

import os
import re
from pathlib import Path


def project_root(start: str | Path | None = None) -> Path:
    """`$AVMATCH_ROOT`, else the nearest ancestor of `start` (or cwd) that has params.yaml."""
    env = os.environ.get("AVMATCH_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "params.yaml").exists():
            return d
    return here


def origin_repo(root: Path) -> Path:
    """The user's repository even inside `dvc exp run --temp`, which runs in <repo>/.dvc/tmp/exps/<tmp>.

    Stores that must outlive an experiment (MLflow) are resolved against this, so a temporary
    workspace does not swallow the run history.
    """
    m = re.match(r"^(.*?)/\.dvc/tmp/exps/", root.as_posix() + "/")
    return Path(m.group(1)) if m else root
