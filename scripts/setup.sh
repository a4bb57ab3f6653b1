#!/usr/bin/env bash
# Sets up a machine for avmatch: system packages (apt, when root), the .venv with pinned Python
# dependencies, and the DVC repo. Safe to rerun: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# ---- system packages ---------------------------------------------------------------------------
pkgs=$(grep -v '^\s*#' scripts/system-packages.txt | xargs)
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    say "installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing >/dev/null; }
  else
    say "missing system packages:$missing"
    say "as a non-root user run:  sudo apt-get install --no-install-recommends$missing"
    say "(or use conda: conda env create -f environment.yml)"
    exit 1
  fi
fi

# The demo corpus fetches recorded music and noise with `apt-get download` (no install): that needs
# apt's package lists, which a fresh machine or container may not have yet.
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null && ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  say "fetching apt package lists (needed to download the demo's Debian music and noise packages)"
  apt-get update -q >/dev/null || say "apt-get update failed: the demo corpus will use music21 scores and synthetic noise only"
fi

# ---- python environment --------------------------------------------------------------------------
UV_VERSION=0.13.9
pip_conf() { .venv/bin/python -m pip config get "global.$1" 2>/dev/null || true; }
install_with_uv() {
  .venv/bin/python -m pip install -q "uv==$UV_VERSION" >/dev/null 2>&1 || return 1
  local args=(--python .venv/bin/python --no-deps --index-strategy unsafe-best-match --compile-bytecode -q)
  local x cert
  for x in ${PIP_FIND_LINKS:-$(pip_conf find-links)}; do args+=(--find-links "$x"); done
  x=${PIP_INDEX_URL:-$(pip_conf index-url)}
  [ -z "$x" ] || args+=(--index-url "$x")
  for x in ${PIP_EXTRA_INDEX_URL:-$(pip_conf extra-index-url)}; do args+=(--extra-index-url "$x"); done
  cert=${PIP_CERT:-$(pip_conf cert)}
  local env=()
  [ -z "$cert" ] || env+=("SSL_CERT_FILE=$cert")
  env "${env[@]}" .venv/bin/uv pip install "${args[@]}" -r requirements/lock.txt || return 1
  # the project itself, editable: uv builds it in its cached build environment (pip set one up each time, ~10 s)
  env "${env[@]}" .venv/bin/uv pip install "${args[@]}" -e . || return 1
}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { say "avmatch needs Python 3.11 (found $("$PY" --version)); set PYTHON=/path/to/python3.11"; exit 1; }
stamp=".venv/.installed-$(cat pyproject.toml requirements/lock.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || { say "creating .venv"; "$PY" -m venv .venv; }
  say "installing pinned Python dependencies into .venv (first time: ~1-5 min)"
  # uv installs the locked set ~2x faster than pip (parallel unpacking, no resolver: the lock is complete) and,
  # like pip, compiles the bytecode at install time (where PYTHONDONTWRITEBYTECODE is set, nothing else would:
  # without it every stage process pays ~4 s more of imports);
  # it does not read pip's configuration, so the machine's pip indexes, wheel folders and CA are passed on.
  # Any failure falls back to pip.
  if ! install_with_uv; then
    say "uv could not install the lock; installing with pip"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q -c requirements/lock.txt -e '.[all]' 2>&1 \
      | grep -v -e '^WARNING: Location' -e 'is ignored: it is neither' || true
  fi
  .venv/bin/python -c 'import avmatch, torch, faiss, av, mlflow, prefect, dvc' \
    || { say "the Python install failed; see the pip output above"; exit 1; }
  rm -f .venv/.installed-*
  touch "$stamp"
else
  say ".venv is up to date"
fi
say "ready"
