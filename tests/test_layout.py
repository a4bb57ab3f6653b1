"""The house rules of the layout: the library imports no stage, task or flow; a system package imports the
core, never another system; the core imports no system."""

from __future__ import annotations

import ast
from pathlib import Path

from pipelines.deps import systems

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "src" / "avmatch"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_the_library_imports_no_stage_task_or_flow():
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in LIB.rglob("*.py") for m in _imports(p)
           if m.split(".")[0] in ("pipelines", "tasks", "flows")]
    assert bad == []


def test_systems_import_the_core_never_each_other():
    names = systems(ROOT)
    assert {"fingerprint", "copydetect", "versions"} <= set(names)
    bad = []
    for p in LIB.rglob("*.py"):
        rel = p.relative_to(LIB).parts
        owner = rel[0] if len(rel) > 1 else None
        if owner is None:   # avmatch/cli.py and avmatch/runs_cli.py compose the systems' commands
            continue
        for m in _imports(p):
            parts = m.split(".")
            if parts[0] == "avmatch" and len(parts) > 1 and parts[1] in names and parts[1] != owner:
                bad.append(f"{p.relative_to(ROOT)} imports {m}")
    assert bad == []


def test_every_system_package_has_its_params_and_its_pipeline():
    for name in systems(ROOT):
        assert (LIB / name / "params.py").exists()
        assert (ROOT / "pipelines" / name / "spec.py").exists(), f"pipelines/{name}/spec.py"
        assert (ROOT / "flows" / f"{name}.py").exists(), f"flows/{name}.py"


def test_test_modules_have_unique_names():
    """The test folders are not packages, so pytest imports each test file by its bare name: two files
    named alike (tests/vmr/test_x.py and tests/voiceface/test_x.py) break collection of the whole suite."""
    from collections import Counter

    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert [n for n, k in names.items() if k > 1] == []
