"""Prefect flows (UI runs, schedules) over the pipeline stages.

Two flow runs without a Prefect server each start a temporary one on the same SQLite file
($PREFECT_HOME/prefect.db), as do Dask workers without PREFECT_API_URL. Prefect opens SQLite
connections with a 10 s timeout by default (`server.database.timeout`), and a run waiting longer
than that for another's write fails with "database is locked". The flows set 60 s (as Prefect's
own busy_timeout) unless the user chose a value; it must be set before prefect is imported.
"""

import os

PREFECT_DB_TIMEOUT_S = "60"
os.environ.setdefault("PREFECT_SERVER_DATABASE_TIMEOUT", PREFECT_DB_TIMEOUT_S)
