"""The project files each stage runs, derived from its imports: what its dvc.yaml `deps` must list.

A stage runs `python -m pipelines <pipeline>.<stage>`: the entry point, the runner, the pipeline's spec,
the stage's own module and the system's params section module, plus every project module those import,
transitively (imports inside functions included, since a stage imports much of its code lazily). The
closure is read statically from the source, so it is the same on any machine and needs no import of
torch or faiss. `dvc.yaml` lists exactly these files: editing one makes that stage (and only the
stages that run it) stale.

    python -m pipelines.deps                # check dvc.yaml; exit 1 naming each stage and file that is off
    python -m pipelines.deps --write        # rewrite every stage's code deps and params lists in dvc.yaml
    python -m pipelines.deps fingerprint_train     # print one stage's code closure

The test `tests/pipelines/test_stage_deps.py` runs the check, so a dependency that goes missing or
belongs to another system fails CI with the stage and the file named.
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {"avmatch": Path("src/avmatch"), "pipelines": Path("pipelines")}
CODE_PREFIXES = ("src/", "pipelines/")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The project file (relative to root) of a dotted module name, or None for a third-party module."""
    return _module_file(module, Path(root))


@functools.lru_cache(maxsize=None)
def _module_file(module: str, root: Path) -> Path | None:
    # cached per process: a check asks for the same few hundred names ~15,000 times
    top, _, rest = module.partition(".")
    if top not in PACKAGE_DIRS:
        return None
    base = PACKAGE_DIRS[top] / Path(*rest.split(".")) if rest else PACKAGE_DIRS[top]
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def _package_of(module: str, file: Path) -> str:
    return module if file.name == "__init__.py" else module.rpartition(".")[0]


def _tree(file: Path) -> ast.Module:
    """A source file's syntax tree, parsed once per process and modification time (a check reads each
    module once for every stage that imports it)."""
    return _parse_at(file.resolve(), file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _parse_at(file: Path, mtime_ns: int) -> ast.Module:
    return ast.parse(file.read_text(), filename=str(file))


def imported_modules(module: str, root: Path = ROOT) -> set[str]:
    """Project modules `module` imports anywhere in its body (plus literal importlib.import_module names)."""
    file = module_file(module, root)
    if file is None:
        return set()
    path = (root / file).resolve()
    found = _names_imported(path, path.stat().st_mtime_ns, _package_of(module, file))
    return {m for m in found if module_file(m, root) is not None}


@functools.lru_cache(maxsize=None)
def _names_imported(path: Path, mtime_ns: int, package: str) -> frozenset[str]:
    """Every dotted name a source file imports (once per file and modification time: a check walks each
    module's tree once for every stage that imports it otherwise)."""
    tree = _parse_at(path, mtime_ns)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return frozenset(found)


def import_closure(seeds: list[str], root: Path = ROOT) -> set[Path]:
    """Files of `seeds` and of every project module they import, transitively, with their packages' __init__."""
    seen: set[str] = set()
    todo = list(seeds)
    while todo:
        mod = todo.pop()
        if mod in seen or module_file(mod, root) is None:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b
        todo += sorted(imported_modules(mod, root))
    return {module_file(m, root) for m in seen}  # type: ignore[misc]


def stage_seeds(pipeline: str, stage: str) -> list[str]:
    """What `python -m pipelines <pipeline>.<stage>` imports by name (the rest follows from their imports)."""
    return ["pipelines.__main__", "pipelines.runner", f"pipelines.{pipeline}.spec", f"pipelines.{pipeline}.{stage}",
            f"avmatch.{pipeline}.params"]


def stage_code(dvc_stage: str, root: Path = ROOT) -> list[str]:
    """Sorted project files (posix, relative to root) that a dvc.yaml stage `<pipeline>_<stage>` runs."""
    pipeline, _, stage = dvc_stage.partition("_")
    return sorted(p.as_posix() for p in import_closure(stage_seeds(pipeline, stage), root))


def systems(root: Path = ROOT) -> list[str]:
    return sorted(p.parent.name for p in (root / "src" / "avmatch").glob("*/params.py"))


def owner(path: str, root: Path = ROOT) -> str | None:
    """The system a code path belongs to (None for the core and the shared stage layer)."""
    m = re.match(r"^(?:src/avmatch|pipelines)/([^/]+)(?:/|$)", path)
    return m.group(1) if m and m.group(1) in systems(root) else None


# ---------------------------------------------------------------- params read by a stage
def _functions(file: Path, root: Path) -> tuple[dict[str, ast.AST], dict[str, str]]:
    """Top-level functions of a file, and the names it imports from other project modules (name -> module)."""
    tree = _tree(root / file)
    funcs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and module_file(node.module, root):
            imported.update({(a.asname or a.name): node.module for a in node.names})
    return funcs, imported


def stage_params_read(pipeline: str, stage: str, root: Path = ROOT) -> set[str]:
    """Dotted keys of params.yaml the stage reads: in the stage function and every function of its pipeline
    package it calls, transitively, following what each call passes for which parameter.

    A key counts when read as `params.<section>.<key>...` or through a name bound to part of `params`
    (an assignment, or a parameter a caller passed it to). `common` counts only for seed and device (the
    rest changes no result). A part of params handed to library code counts as read whole: what the
    library reads of it is not followed, so the check is exact about the stage layer, not beyond it.
    """
    read: set[str] = set()
    seen: set[tuple[str, str, str]] = set()
    todo: list[tuple[str, str, dict[str, list[str]]]] = [(f"pipelines.{pipeline}.{stage}", stage, {"params": []})]
    while todo:
        module, name, bound = todo.pop()
        key = (module, name, repr(sorted(bound.items())))
        if key in seen or not module.startswith(f"pipelines.{pipeline}."):
            continue
        seen.add(key)
        file = module_file(module, root)
        if file is None or file.name in ("paths.py", "spec.py"):  # they only say where files live
            continue
        funcs, imported = _functions(file, root)
        if name not in funcs:
            continue
        fn = funcs[name]
        alias = dict(bound)
        bound_values: set[int] = set()  # `fp = params.fingerprint` binds a name; it reads nothing yet
        for node in ast.walk(fn):  # names bound to part of params by assignment
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                tgt, val = node.targets[0], node.value
                pairs = (list(zip(tgt.elts, val.elts)) if isinstance(tgt, ast.Tuple) and isinstance(val, ast.Tuple)
                         else [(tgt, val)])
                for target, value in pairs:
                    chain = _chain(value, alias)
                    if isinstance(target, ast.Name) and chain is not None:
                        alias[target.id] = chain
                        bound_values.add(id(value))
        inner = {id(n.value) for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
        passed: set[int] = set()
        for node in ast.walk(fn):  # calls into the package: bind the callee's parameters
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            target = ((module, node.func.id) if node.func.id in funcs else
                      (imported[node.func.id], node.func.id) if node.func.id in imported else None)
            if target is None or not target[0].startswith(f"pipelines.{pipeline}."):
                continue
            tfile = module_file(target[0], root)
            tfuncs = _functions(tfile, root)[0] if tfile else {}
            if target[1] not in tfuncs:
                continue
            names = [a.arg for a in tfuncs[target[1]].args.args]
            sub = {}
            for i, arg in enumerate(node.args):
                chain = _chain(arg, alias)
                if chain is not None and i < len(names):
                    sub[names[i]] = chain
                    passed.add(id(arg))
            for kw in node.keywords:
                chain = _chain(kw.value, alias)
                if chain is not None and kw.arg:
                    sub[kw.arg] = chain
                    passed.add(id(kw.value))
            todo.append((target[0], target[1], sub))
        for node in ast.walk(fn):
            if not isinstance(node, (ast.Attribute, ast.Name)) or id(node) in inner or id(node) in passed \
                    or id(node) in bound_values:
                continue
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                continue
            chain = _chain(node, alias)
            if chain and (chain[0] != "common" or (len(chain) >= 2 and chain[1] in ("seed", "device"))):
                read.add(".".join(c for c in chain if c not in PYDANTIC_METHODS))
    return _outermost(read)


def paths_params_read(pipeline: str, root: Path = ROOT) -> set[str]:
    """Keys the pipeline's paths class reads (where the corpus and its folders are): a stage may list them."""
    file = root / "pipelines" / pipeline / "paths.py"
    if not file.exists():
        return set()
    read = set()
    for node in ast.walk(ast.parse(file.read_text())):
        chain = _chain(node, {"params": []}) if isinstance(node, ast.Attribute) else None
        if chain and len(chain) >= 2:
            read.add(".".join(chain))
    return _outermost(read)


PYDANTIC_METHODS = {"model_dump", "model_dump_json", "model_copy"}


def _outermost(keys: set[str]) -> set[str]:
    """Drop keys inside another read key (reading `a.b` whole covers `a.b.c`)."""
    return {k for k in keys if not any(k.startswith(o + ".") for o in keys)}


def _chain(node: ast.AST, alias: dict[str, list[str]]) -> list[str] | None:
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    if node.id in alias:
        return alias[node.id] + attrs[::-1]
    return None


def _covered(key: str, entries: list[str]) -> bool:
    """A read of `key` is covered by an entry that is `key` or a section holding it."""
    return any(key == e or key.startswith(e + ".") for e in entries)


def _read(entry: str, reads: list[str]) -> bool:
    """An entry is read when some read is inside it or reads a section holding it."""
    return any(r == entry or r.startswith(entry + ".") or entry.startswith(r + ".") for r in reads)


# ---------------------------------------------------------------- the check
@dataclass
class StageReport:
    stage: str
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    params_missing: list[str] = field(default_factory=list)
    params_unread: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = [f"{self.stage}: missing dependency {p} (the stage imports it)" for p in self.missing]
        out += [f"{self.stage}: dependency {p} is not code the stage runs" for p in self.extra]
        out += [f"{self.stage}: dependency {p} belongs to another system" for p in self.foreign]
        out += [f"{self.stage}: reads params '{k}' but dvc.yaml lists no such params entry" for k in self.params_missing]
        out += [f"{self.stage}: lists params '{k}' that its code never reads" for k in self.params_unread]
        return out


def _params_entries(stage: dict) -> list[str]:
    out = []
    for p in stage.get("params", []) or []:
        out += list(p) if isinstance(p, dict) else [p]
    return [str(e) for e in out]


def _dep_paths(stage: dict) -> list[str]:
    return [str(d) for d in stage.get("deps", []) or []]


def check_stage(name: str, stage: dict, root: Path = ROOT) -> StageReport:
    pipeline, _, _ = name.partition("_")
    rep = StageReport(name)
    code = set(stage_code(name, root))
    deps = [d.rstrip("/") for d in _dep_paths(stage) if d.startswith(CODE_PREFIXES)]
    for d in deps:
        if owner(d, root) not in (None, pipeline):
            rep.foreign.append(d)
        files = ({d} if (root / d).is_file() else {p.relative_to(root).as_posix() for p in (root / d).rglob("*.py")})
        if not files or not files <= code:
            rep.extra.append(d)
    covered = {c for c in code if any(c == d or c.startswith(d + "/") for d in deps)}
    rep.missing = sorted(code - covered)
    rep.foreign += sorted(c for c in code if owner(c, root) not in (None, pipeline))
    read = _collapse(stage_params_read(pipeline, name.partition("_")[2], root))
    entries = _params_entries(stage)
    rep.params_missing = sorted(k for k in read if not _covered(k, entries))
    located = sorted(read | paths_params_read(pipeline, root))
    rep.params_unread = sorted(e for e in entries if not _read(e, located))
    return rep


def pipeline_stages(root: Path = ROOT) -> dict[str, dict]:
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    return {n: s for n, s in stages.items() if str(s.get("cmd", "")).startswith("python -m pipelines ")}


def check(root: Path = ROOT) -> list[str]:
    """Every problem with dvc.yaml's deps and params, one readable line each (empty: all exact)."""
    problems = []
    for name, stage in pipeline_stages(root).items():
        expected = f"python -m pipelines {name.replace('_', '.', 1)}"
        if stage["cmd"].strip() != expected:
            problems.append(f"{name}: cmd is '{stage['cmd']}', expected '{expected}'")
        problems += check_stage(name, stage, root).problems()
    return problems


def expected_params(name: str, stage: dict, root: Path = ROOT) -> list[str]:
    """The params entries a stage should list: what its code reads, plus the listed keys its paths read."""
    pipeline, _, short = name.partition("_")
    located = paths_params_read(pipeline, root)
    kept = {e for e in _params_entries(stage) if _read(e, sorted(located))}
    return sorted(_collapse(_outermost(stage_params_read(pipeline, short, root) | kept)))


def _collapse(keys: set[str]) -> set[str]:
    """Name a section once when every one of its keys is read (`fingerprint.index`, not its 8 keys)."""
    import importlib

    def fields(dotted: str) -> list[str] | None:
        section, *path = dotted.split(".")
        try:
            model = importlib.import_module(f"avmatch.{section}.params").SECTION
        except ImportError:
            return None
        for part in path:
            ann = model.model_fields[part].annotation if part in model.model_fields else None
            if not (isinstance(ann, type) and hasattr(ann, "model_fields")):
                return None
            model = ann
        return list(model.model_fields)

    changed = True
    while changed:
        changed = False
        parents = {k.rpartition(".")[0] for k in keys if "." in k}
        for parent in sorted(parents, key=len, reverse=True):
            names = fields(parent)
            if names and all(f"{parent}.{n}" in keys for n in names):
                keys = {k for k in keys if not k.startswith(parent + ".")} | {parent}
                changed = True
                break
    return keys


def write(root: Path = ROOT) -> list[str]:
    """Rewrite the code entries (src/..., pipelines/...) of every pipeline stage's deps, and its params
    list, in dvc.yaml, keeping data entries, comments and everything else; returns the stages changed."""
    path = root / "dvc.yaml"
    lines = path.read_text().splitlines(keepends=True)
    stages = pipeline_stages(root)
    out, changed, i, current = [], [], 0, None
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^  ([A-Za-z0-9_]+):\s*$", line)
        if m:
            current = m.group(1)
        if current in stages and re.match(r"^    deps:\s*$", line):
            out.append(line)
            i += 1
            data, old = [], []
            while i < len(lines) and re.match(r"^      - ", lines[i]):
                entry = lines[i].strip()[2:].strip()
                (old if entry.startswith(CODE_PREFIXES) else data).append(lines[i])
                i += 1
            code = stage_code(current, root)
            new = [f"      - {c}\n" for c in code]
            if [o.strip() for o in old] != [n.strip() for n in new]:
                changed.append(current)
            out += data + new
            wanted = expected_params(current, stages[current], root)
            old_params: list[str] = []
            if i < len(lines) and re.match(r"^    params:\s*$", lines[i]):
                i += 1
                while i < len(lines) and re.match(r"^      - ", lines[i]):
                    old_params.append(lines[i].strip()[2:].strip())
                    i += 1
            if wanted:
                out += ["    params:\n"] + [f"      - {k}\n" for k in wanted]
            if old_params != wanted and current not in changed:
                changed.append(current)
            continue
        out.append(line)
        i += 1
    path.write_text("".join(out))
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.deps", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", nargs="?", help="print the code closure of this dvc.yaml stage")
    ap.add_argument("--write", action="store_true", help="rewrite the code deps of every stage in dvc.yaml")
    args = ap.parse_args(argv)
    if args.stage:
        print("\n".join(stage_code(args.stage)))
        return 0
    if args.write:
        changed = write()
        print(f"dvc.yaml: deps or params rewritten for {len(changed)} stage(s){': ' + ', '.join(changed) if changed else ''}")
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); `python -m pipelines.deps --write` rewrites the code deps and params "
              "of every stage in dvc.yaml", file=sys.stderr)
        return 1
    print("dvc.yaml: every stage's deps are exactly the code it runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
