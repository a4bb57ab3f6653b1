"""dvc.yaml's deps and params are exactly what each stage runs and reads (pipelines/deps.py), and the
static import closure they come from holds every module a stage really loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipelines import deps

ROOT = Path(__file__).resolve().parents[2]


def test_every_stage_lists_exactly_the_code_it_runs():
    problems = deps.check(ROOT)
    assert problems == [], "dvc.yaml is off (fix: python -m pipelines.deps --write):\n" + "\n".join(problems)


def test_closure_holds_the_stage_module_the_runner_and_no_other_system():
    code = deps.stage_code("fingerprint_evaluate", ROOT)
    for f in ("pipelines/fingerprint/evaluate.py", "pipelines/fingerprint/evaluation.py", "pipelines/runner.py",
              "pipelines/__main__.py", "src/avmatch/core/config.py", "src/avmatch/fingerprint/params.py",
              "src/avmatch/fingerprint/search.py", "src/avmatch/core/index.py"):
        assert f in code, f
    assert "pipelines/fingerprint/train.py" not in code          # another stage's module
    assert not [c for c in code if "/versions/" in c or "/copydetect/" in c]
    assert "pipelines/fingerprint/evaluation.py" not in deps.stage_code("fingerprint_train", ROOT)


def _project_copy(tmp_path: Path, *edits: tuple[str, str, str]) -> Path:
    """src/ and pipelines/ linked, dvc.yaml copied with `(stage, old line, new lines)` edits: what `check` reads."""
    for d in ("src", "pipelines"):
        (tmp_path / d).symlink_to(ROOT / d)
    lines = (ROOT / "dvc.yaml").read_text().splitlines(keepends=True)
    for stage, old, new in edits:
        start = lines.index(f"  {stage}:\n")
        i = lines.index(old, start)
        lines[i:i + 1] = [new] if new else []
    (tmp_path / "dvc.yaml").write_text("".join(lines))
    assert yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    return tmp_path


def test_a_removed_dependency_fails_naming_stage_and_file(tmp_path):
    root = _project_copy(tmp_path, ("fingerprint_evaluate", "      - pipelines/fingerprint/evaluation.py\n", ""))
    assert deps.check(root) == ["fingerprint_evaluate: missing dependency pipelines/fingerprint/evaluation.py "
                                "(the stage imports it)"]


def test_a_foreign_or_needless_dependency_fails(tmp_path):
    problems = deps.check(_project_copy(
        tmp_path,
        ("fingerprint_train", "      - pipelines/runner.py\n", "      - pipelines/runner.py\n      - src/avmatch/versions/model.py\n"),
        ("copydetect_train", "      - pipelines/runner.py\n", "      - pipelines/runner.py\n      - src/avmatch/core\n")))
    assert "fingerprint_train: dependency src/avmatch/versions/model.py belongs to another system" in problems
    assert "fingerprint_train: dependency src/avmatch/versions/model.py is not code the stage runs" in problems
    assert "copydetect_train: dependency src/avmatch/core is not code the stage runs" in problems
    assert len(problems) == 3


def test_params_read_but_not_listed_and_listed_but_not_read_fail(tmp_path):
    problems = deps.check(_project_copy(tmp_path, ("fingerprint_index", "      - fingerprint.index\n",
                                                   "      - fingerprint.train.lr\n")))
    assert problems == ["fingerprint_index: reads params 'fingerprint.index' but dvc.yaml lists no such params entry",
                        "fingerprint_index: lists params 'fingerprint.train.lr' that its code never reads"]


def test_write_restores_what_the_check_wants(tmp_path):
    root = _project_copy(tmp_path, ("versions_extract", "      - src/avmatch/core/shards.py\n", ""),
                         ("versions_extract", "      - pipelines/versions/extract.py\n", ""),
                         ("versions_extract", "    params:\n", "    params:\n      - versions.train.lr\n"))
    assert deps.check(root)
    assert deps.write(root) == ["versions_extract"]
    assert deps.check(root) == []


RUNTIME = r"""
import importlib, json, sys
sys.path.insert(0, sys.argv[1] + "/src"); sys.path.insert(0, sys.argv[1])
from pipelines.registry import pipeline_spec, stage_order
importlib.import_module("pipelines.__main__"); importlib.import_module("pipelines.runner")
pipeline = sys.argv[2]
from avmatch.core.config import load_params
load_params(sys.argv[1] + "/params.yaml", systems=[pipeline])
spec = pipeline_spec(pipeline)
for stage in stage_order(pipeline):
    spec.stage_function(stage)
files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)
                and m.__file__.startswith((sys.argv[1] + "/src/", sys.argv[1] + "/pipelines/"))})
print(json.dumps(files))
"""


def test_static_closure_covers_every_module_a_pipeline_loads():
    """Import each pipeline's runner, params and stage modules for real: every project module loaded is in the
    union of its stages' static closures, and no module of another system is loaded."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    for pipeline in deps.systems(ROOT):
        out = subprocess.run([sys.executable, "-c", RUNTIME, str(ROOT), pipeline], capture_output=True, text=True,
                             env=env, timeout=300, check=True).stdout
        loaded = {str(Path(f).relative_to(ROOT)) for f in json.loads(out)}
        static = set().union(*(deps.stage_code(f"{pipeline}_{s}", ROOT)
                               for s in [n.split("_", 1)[1] for n in deps.pipeline_stages(ROOT)
                                         if n.startswith(pipeline + "_")]))
        assert loaded <= static, f"{pipeline}: loaded but not in any stage's closure: {sorted(loaded - static)}"
        assert not [f for f in loaded if deps.owner(f, ROOT) not in (None, pipeline)], pipeline
