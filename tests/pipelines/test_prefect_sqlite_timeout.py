"""Prefect's temporary servers share one SQLite file: the flows give its connections 60 s, not 10 s,
to wait for another run's write before "database is locked" (flows/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys


def _timeout_seen_by_prefect(env: dict[str, str]) -> str:
    code = ("import flows.pipeline\nfrom prefect.settings import get_current_settings\n"
            "print(get_current_settings().server.database.timeout)")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=True).stdout.strip()


def test_flows_raise_prefects_sqlite_timeout_unless_the_user_set_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_DATABASE_TIMEOUT")
           and k != "PREFECT_API_DATABASE_TIMEOUT"}
    assert _timeout_seen_by_prefect(env) == "60.0"
    assert _timeout_seen_by_prefect({**env, "PREFECT_SERVER_DATABASE_TIMEOUT": "5"}) == "5.0"


def test_servers_started_by_the_project_get_it_too(tmp_path):
    from flows.servers import prefect_env

    assert prefect_env(tmp_path)["PREFECT_SERVER_DATABASE_TIMEOUT"] in ("60", os.environ.get(
        "PREFECT_SERVER_DATABASE_TIMEOUT", "60"))
