"""Shared reporting for the benchmark scripts: machine facts, Markdown tables, docs/benchmarks.md sections.

Every benchmark prints a Markdown table and (full runs only, by default) replaces its own results block
in docs/benchmarks.md. A results block lives between two HTML comments,

    <!-- results:NAME -->
    ...
    <!-- /results:NAME -->

so a rerun replaces the previous numbers instead of piling them up; if the markers are missing, a new
section is appended at the end of the file. The block records the exact command line, the date, the
machine (nproc, CPU model, torch / FAISS threads, load average at the start) and the git commit, so a
number can always be traced back to how it was made.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"


# ---------------------------------------------------------------- environment
def quiet_env(verbose: bool = False, quick: bool = False) -> None:
    """Call before importing avmatch: no tqdm bars (they would interleave with the tables).

    Quick runs also hide the library's warnings (e.g. IVF-PQ shrinking nlist for a tiny training set),
    which are expected there; full runs keep them, as they tell how the numbers were made.
    """
    if quick:
        # smoke runs happen on busy machines: OpenMP threads (torch's and FAISS's libgomp) that spin while
        # waiting make tiny runs many times slower there and steal CPU from others. Full runs keep the
        # default policy, as production does.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")
        if quick:
            import logging

            logging.getLogger("avmatch").setLevel(logging.ERROR)
    os.environ.setdefault("MPLBACKEND", "Agg")


def set_threads(n: int) -> int:
    """Pin torch intra-op threads and FAISS OpenMP threads to `n` (0 = every core this process may use)."""
    if n <= 0:
        n = available_cores()
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass
    return n


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit() -> str:
    from avmatch.core.tracking import git_commit as commit_of

    return commit_of(ROOT)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": available_cores(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_threads"] = faiss.omp_get_max_threads()
    except ImportError:  # pragma: no cover
        pass
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        pass
    try:
        info["mem_total_gb"] = round(int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                                              if line.startswith("MemTotal"))) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return info


def command_line() -> str:
    """How this script was started, relative to the project root when possible."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    return " ".join(shlex.quote(a) for a in ["python", str(script), *sys.argv[1:]])


# ---------------------------------------------------------------- formatting
def fmt(x: Any, digits: int = 3) -> str:
    """Readable number: 3 significant digits, thousands kept whole, None/NaN as an em dash."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}".replace(",", " ")
    if isinstance(x, float):
        if x != x:  # NaN
            return "—"
        ax = abs(x)
        if ax >= 1000:
            return f"{x:,.0f}".replace(",", " ")
        if ax == 0:
            return "0"
        return f"{x:.{digits}g}" if ax >= 0.001 else f"{x:.2e}"
    return str(x)


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
             headers: dict[str, str] | None = None) -> str:
    """A GitHub Markdown table of `rows` (dicts); `columns` picks and orders keys, `headers` renames them."""
    if not rows:
        return "_(no rows)_"
    columns = list(columns or rows[0].keys())
    headers = headers or {}
    head = [headers.get(c, c) for c in columns]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**not met**")


def machine_line(info: dict[str, Any]) -> str:
    parts = [f"nproc {info.get('nproc')}", f"CPU {info.get('cpu_model')}"]
    if "torch_threads" in info:
        parts.append(f"torch {info.get('torch')} threads {info['torch_threads']}")
    if "faiss_threads" in info:
        parts.append(f"FAISS {info.get('faiss')} threads {info['faiss_threads']}")
    if "mem_total_gb" in info:
        parts.append(f"RAM {info['mem_total_gb']} GB")
    if "loadavg_1m" in info:
        parts.append(f"load average at start {info['loadavg_1m']}")
    return ", ".join(parts)


# ---------------------------------------------------------------- the report of one run
class Report:
    """Collects a benchmark's tables and writes them to stdout and (optionally) to docs/benchmarks.md."""

    def __init__(self, name: str, title: str, args: argparse.Namespace):
        self.name = name
        self.title = title
        self.args = args
        self.started = _dt.datetime.now().astimezone()
        self.t0 = time.perf_counter()
        self.machine = machine_info()  # load average sampled before the benchmark runs
        self.command = command_line()
        self.parts: list[str] = []
        self.data: dict[str, Any] = {}

    def refresh_machine(self) -> None:
        """Re-read thread counts after the script set them (keeps the start load average)."""
        load = self.machine.get("loadavg_1m")
        self.machine = machine_info()
        if load is not None:
            self.machine["loadavg_1m"] = load

    def add(self, markdown: str) -> None:
        self.parts.append(markdown.strip())

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
              headers: dict[str, str] | None = None, caption: str | None = None) -> None:
        text = md_table(rows, columns, headers)
        self.add((f"{caption}\n\n" if caption else "") + text)

    def markdown(self) -> str:
        elapsed = time.perf_counter() - self.t0
        head = [
            f"Run {self.started:%Y-%m-%d %H:%M %Z} ({elapsed:.0f} s), commit {git_commit()}"
            + (" — **quick smoke run, not a measurement**" if getattr(self.args, "quick", False) else ""),
            "",
            f"Command: `{self.command}`",
            "",
            f"Machine: {machine_line(self.machine)}",
        ]
        return "\n".join(head) + "\n\n" + "\n\n".join(self.parts)

    def finish(self) -> str:
        """Print the report; write docs/benchmarks.md and the JSON file when asked. Returns the Markdown."""
        text = self.markdown()
        print(f"\n### {self.title}\n\n{text}\n", flush=True)
        doc = doc_target(self.args)
        if doc is not None:
            update_section(doc, self.name, self.title, text)
            print(f"[bench] results written to {doc} (section '{self.name}')", flush=True)
        elif getattr(self.args, "quick", False):
            print("[bench] quick run: docs/benchmarks.md left unchanged (pass --doc PATH to write anyway)", flush=True)
        if getattr(self.args, "json", None):
            path = Path(self.args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"name": self.name, "command": self.command, "date": self.started.isoformat(),
                                        "machine": self.machine, "quick": bool(getattr(self.args, "quick", False)),
                                        "results": self.data}, indent=2, default=str))
            print(f"[bench] raw results written to {path}", flush=True)
        return text


# ---------------------------------------------------------------- command line and docs file
def add_common_args(parser: argparse.ArgumentParser, threads: bool = True) -> None:
    g = parser.add_argument_group("common options")
    g.add_argument("--quick", action="store_true",
                   help="tiny smoke run (a few seconds) that checks the script works; its numbers mean nothing "
                        "and docs/benchmarks.md is not touched unless --doc is given")
    g.add_argument("--doc", metavar="PATH", default=None,
                   help=f"Markdown file whose results section to replace (default: {DOC.relative_to(ROOT)} "
                        "for full runs, nothing for --quick runs)")
    g.add_argument("--no-doc", action="store_true", help="only print the results, never write the docs file")
    g.add_argument("--json", metavar="PATH", default=None, help="also write the raw numbers as JSON to PATH")
    if threads:
        g.add_argument("--threads", type=int, default=2,
                       help="torch intra-op and FAISS OpenMP threads (default 2, the target machine's cores; "
                            "0 = every core this process may use)")
    g.add_argument("--verbose", action="store_true", help="keep the library's progress bars and log messages")


def doc_target(args: argparse.Namespace) -> Path | None:
    if getattr(args, "no_doc", False):
        return None
    if getattr(args, "doc", None):
        return Path(args.doc)
    return None if getattr(args, "quick", False) else DOC


def update_section(doc: Path, name: str, title: str, body: str) -> None:
    """Replace the block between the results markers of `name` in `doc` (append a section if missing)."""
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n{block}\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)


# ---------------------------------------------------------------- small statistics helpers
def percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def timed(fn, *a, **kw) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t0, out
