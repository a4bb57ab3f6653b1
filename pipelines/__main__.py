"""`python -m pipelines NAME`: run one pipeline stage, the command every dvc.yaml stage calls.

    python -m pipelines fingerprint.train                   # one stage with params.yaml
    python -m pipelines fingerprint.train -S fingerprint.train.max_steps=100
    python -m pipelines fingerprint.extract --partition 0 --num-partitions 4
    python -m pipelines --list                              # every stage, in dvc.yaml order

`dvc repro` decides which stages are stale and calls this for each; running it by hand runs the stage
whether or not it is up to date and leaves dvc.lock alone. Exit status: 0 done, 1 the stage failed
(the message names the stage and its failing input), 2 a wrong name, parameter or option.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# FAISS's OpenMP threads busy-wait by default and starve the other work on small machines; this must
# be set before faiss is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _use_workspace_code() -> None:
    """Run the library of the workspace dvc is in (e.g. a `dvc exp run --temp` copy), not the installed one:
    the stage's dvc.yaml dependencies are hashed from this workspace's files."""
    src = Path.cwd() / "src"
    if (src / "avmatch").is_dir() and str(src) not in sys.path:
        sys.path.insert(0, str(src))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?", help="pipeline.stage, e.g. fingerprint.extract (see --list)")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter, e.g. fingerprint.train.max_steps=200 (repeatable)")
    ap.add_argument("--partition", type=int, help="extract only: which partition this process handles")
    ap.add_argument("--num-partitions", type=int, help="extract only: total number of partitions")
    ap.add_argument("--list", action="store_true", help="list every stage, in dvc.yaml order")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    _use_workspace_code()
    from avmatch.core.config import ConfigError, parse_overrides
    from avmatch.core.failures import StageError
    from avmatch.core.progress import setup_logging
    from pipelines.registry import stage_names

    if args.list:
        print("\n".join(stage_names()))
        return 0
    if not args.name:
        ap.error("name a stage (pipeline.stage), or use --list")
    setup_logging(args.verbose)
    from pipelines.runner import run_stage

    options = {}
    if args.partition is not None or args.num_partitions is not None:
        options = {"partition": args.partition or 0, "num_partitions": args.num_partitions or 1}
    try:
        summary = run_stage(args.name, overrides=parse_overrides(args.set), **options)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, KeyError, FileNotFoundError, ValueError) as exc:
        print(f"error: {str(exc).strip(chr(39) + chr(34))}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
