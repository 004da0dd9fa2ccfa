"""A real Airflow deployment on a throwaway AIRFLOW_HOME: api-server, scheduler (LocalExecutor) and
dag-processor and triggerer as separate processes, SQLite metadata, the repository's DAG file, sources from a folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FINISHED = ("success", "failed")


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AirflowStack:
    """api-server, scheduler, dag-processor and triggerer of one AIRFLOW_HOME, each its own process group."""

    def __init__(self, home: Path, sources: Path, extra_env: dict[str, str] | None = None):
        self.home = home
        port = self.port = free_port()
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            # SQLite allows one writer: the scheduler, executor and CLI wait up to a minute for
            # each other (Python's default is 5 s, too short on a busy 2-core machine).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db?timeout=60",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "dmscdc-backfill-test",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # Only the backfill creates runs: the schedule would add a run for the latest hour.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "DMSCDC_SOURCES_DIR": str(sources),
            **(extra_env or {}),
        }
        self.processes: list[subprocess.Popen] = []

    def airflow(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    def start(self) -> None:
        migrated = self.airflow("db", "migrate", timeout=300)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        # The triggerer runs deferred tasks: a plan task waiting for an earlier run of its source.
        for component in (["api-server", "--workers", "1"], ["scheduler"], ["dag-processor"], ["triggerer"]):
            log = open(self.home / f"{component[0]}.log", "w")
            self.processes.append(subprocess.Popen(
                [str(BIN / "airflow"), *component], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                cwd=REPO, start_new_session=True))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-4000:]}" for path in sorted(self.home.glob("*.log")))

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.home / "airflow.db", timeout=30)

    def wait_for_dag(self, dag_id: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with closing(self.db()) as db:
                if db.execute("SELECT 1 FROM serialized_dag WHERE dag_id = ?", (dag_id,)).fetchone():
                    return
            time.sleep(2)
        raise AssertionError(f"{dag_id} was not parsed within {seconds}s\n{self.logs()}")

    def runs(self, dag_id: str) -> list[dict]:
        with closing(self.db()) as db:
            rows = db.execute("SELECT run_id, logical_date, state FROM dag_run WHERE dag_id = ? ORDER BY logical_date",
                              (dag_id,)).fetchall()
        return [{"run_id": run_id, "logical_date": logical_date, "state": state} for run_id, logical_date, state in rows]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        with closing(self.db()) as db:
            rows = db.execute(
                "SELECT task_id, map_index, rendered_map_index, state, try_number, start_date, end_date "
                "FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)).fetchall()
        return {
            task_id if map_index < 0 else f"{task_id}[{rendered or map_index}]":
                {"state": state, "try_number": tries, "start_date": start, "end_date": end}
            for task_id, map_index, rendered, state, tries, start, end in rows
        }

    def plans(self, dag_id: str, run_id: str) -> list[dict]:
        with closing(self.db()) as db:
            (value,) = db.execute("SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'plan' "
                                  "AND key = 'return_value'", (dag_id, run_id)).fetchone()
        document = json.loads(value)
        return [item["plan"] for item in (json.loads(document) if isinstance(document, str) else document)]

    def wait_for_run(self, dag_id: str, run_id: str, seconds: float) -> str:
        """The state a run ends in (success or failed), waiting at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with closing(self.db()) as db:
                row = db.execute("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)).fetchone()
            if row and row[0] in FINISHED:
                return row[0]
            time.sleep(2)
        raise AssertionError(f"{run_id} did not finish within {seconds}s: {self.task_instances(dag_id, run_id)}\n"
                             f"{self.logs()}")

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        """Every log file of a task of one run (all tries, all map indexes), concatenated."""
        root = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(path.read_text() for path in sorted(root.rglob("*.log")))

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """A call to the REST API (``/api/v2``) as the UI makes it; needs a stack started with
        ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True`` (no login)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v2{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: {error.code} {error.read()[:2000]!r}") from None
