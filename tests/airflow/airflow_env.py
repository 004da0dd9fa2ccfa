"""The test Airflow environment: a throwaway AIRFLOW_HOME with SQLite as the metadata DB, and
helpers that run ``airflow`` in child processes, as CI and users do.

Airflow reads its configuration once, when first imported, so importing this module (conftest
does) sets the environment before any test module imports airflow.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from contextlib import closing
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
AIRFLOW_HOME = tempfile.mkdtemp(prefix="dmscdc-airflow-home-")
AIRFLOW_ENV = {
    "AIRFLOW_HOME": AIRFLOW_HOME,
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
}
for _key, _value in AIRFLOW_ENV.items():
    os.environ[_key] = _value

BIN = Path(sys.executable).parent


def run_airflow(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """``airflow ARGS`` in a child process with the test AIRFLOW_HOME and ``env`` on top."""
    return subprocess.run([str(BIN / "airflow"), *args], env={**os.environ, **AIRFLOW_ENV, **env},
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def run_dag_helper(command: str, logical_date: datetime, env: dict, dag_id: str = "dmscdc_demo") -> dict:
    """Run tests/airflow/dag_runs.py in a child process; returns the DAG run's task states."""
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("dag_runs.py")), command, dag_id, logical_date.isoformat()],
        env={**os.environ, **AIRFLOW_ENV, **env}, capture_output=True, text=True, timeout=300, cwd=REPO)
    for line in completed.stdout.splitlines():
        if line.startswith("DAG_RUN_STATES="):
            return json.loads(line.split("=", 1)[1])
    raise AssertionError(f"dag_runs.py {command} printed no states:\n{completed.stdout[-3000:]}\n{completed.stderr[-5000:]}")


def dag_run_states(dag_id: str, logical_date: datetime) -> dict:
    """The state of a DAG run and of its task instances (mapped ones named by their map index
    template), read from the test metadata DB."""
    stamp = logical_date.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    with closing(sqlite3.connect(os.path.join(AIRFLOW_HOME, "airflow.db"))) as db:
        run_id, state = db.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND logical_date = ?", (dag_id, stamp)).fetchone()
        tasks = {
            task_id if map_index < 0 else f"{task_id}[{rendered or map_index}]": {"state": ti_state, "try_number": tries}
            for task_id, map_index, rendered, ti_state, tries in db.execute(
                "SELECT task_id, map_index, rendered_map_index, state, try_number FROM task_instance "
                "WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        }
    return {"run_id": run_id, "state": state, "tasks": tasks}


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)
