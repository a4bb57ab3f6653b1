"""Start and stop the project's Prefect and MLflow servers (for `make ui` and the tests).

Servers bind to loopback unless params say otherwise, keep their state in the project (Prefect in
`.prefect/`, MLflow in `mlflow.db` + `mlruns/`), run in their own process group, and are stopped by
PID: SIGTERM to the group, SIGKILL after a timeout, so nothing is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flows import PREFECT_DB_TIMEOUT_S

BIN = Path(sys.executable).parent


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.process, timeout)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL it if it has not exited after `timeout` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    stop_process(proc)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s; see {log}")


def _spawn(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def prefect_env(prefect_home: Path, api_url: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
    env.setdefault("PREFECT_SERVER_DATABASE_TIMEOUT", PREFECT_DB_TIMEOUT_S)   # see flows/__init__.py
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def start_prefect(root: Path, host: str = "127.0.0.1", port: int | None = None, prefect_home: Path | None = None,
                  scheduler_loop_s: float | None = None) -> Server:
    """`prefect server start` with the project's PREFECT_HOME; returns once /api/health answers."""
    port = port or free_port(host)
    home = prefect_home or root / ".prefect"
    env = prefect_env(home)
    if scheduler_loop_s:
        env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = str(scheduler_loop_s)
    log = home / "server.log"
    proc = _spawn([str(BIN / "prefect"), "server", "start", "--host", host, "--port", str(port)], log, env, root)
    url = f"http://{host}:{port}/api"
    wait_healthy(f"{url}/health", proc, log)
    return Server("prefect", url, proc, log)


def start_mlflow(root: Path, host: str = "127.0.0.1", port: int | None = None, backend_uri: str | None = None,
                 artifacts: Path | None = None) -> Server:
    """`mlflow server` on the project's store (sqlite:///<root>/mlflow.db, artefacts in <root>/mlruns)."""
    port = port or free_port(host)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = root / ".prefect" / "mlflow-server.log"
    cmd = [str(BIN / "mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1",
           "--backend-store-uri", backend_uri or f"sqlite:///{root / 'mlflow.db'}",
           "--default-artifact-root", (artifacts or root / "mlruns").as_uri()]
    proc = _spawn(cmd, log, env, root)
    url = f"http://{host}:{port}"
    wait_healthy(f"{url}/health", proc, log)
    return Server("mlflow", url, proc, log)


def start_runner(root: Path, api_url: str, prefect_home: Path | None = None, extra_env: dict | None = None) -> Server:
    """`python -m flows.serve`: registers the deployments and runs what the server schedules."""
    env = prefect_env(prefect_home or root / ".prefect", api_url)
    env.update(extra_env or {})
    log = (prefect_home or root / ".prefect") / "runner.log"
    proc = _spawn([sys.executable, "-m", "flows.serve"], log, env, root)
    return Server("runner", api_url, proc, log)
