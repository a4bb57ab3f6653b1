"""`make ui`: Prefect server, MLflow server and the deployment runner for this project, on loopback.

Prints the addresses, runs until Ctrl-C (or SIGTERM), then stops all three; nothing is left running.
Host and ports come from `orchestration.servers` in params.yaml.
"""

from __future__ import annotations

import signal
import sys
import time

from avmatch.core.paths import project_root
from flows.servers import start_mlflow, start_prefect, start_runner
from pipelines.runner import load_run_params


def main() -> int:
    root = project_root()
    cfg = load_run_params(root).orchestration.servers
    started = []

    def stop(*_: object) -> None:
        for server in reversed(started):
            server.stop()
        print("[ui] stopped Prefect, MLflow and the runner", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        started.append(start_prefect(root, cfg.host, cfg.prefect_port))
        started.append(start_mlflow(root, cfg.host, cfg.mlflow_port))
        started.append(start_runner(root, started[0].url))
    except Exception as exc:
        print(f"[ui] could not start: {exc}", file=sys.stderr)
        stop()
    print(f"[ui] Prefect UI   {started[0].url.removesuffix('/api')}   (deployments: <pipeline>/avmatch, "
          f"reevaluate/scheduled)\n[ui] MLflow UI   {started[1].url}\n"
          f"[ui] runner log  {started[2].log}\n[ui] Ctrl-C stops everything", flush=True)
    while True:
        for server in started:
            if server.process.poll() is not None:
                print(f"[ui] {server.name} exited ({server.process.returncode}); see {server.log}", file=sys.stderr)
                stop()
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
