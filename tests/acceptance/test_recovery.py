"""Recovering a failed table under a real Airflow scheduler, the way a person does it from the UI
(through the REST API the UI's buttons call), ends with the table exact and the DAG moving.

One deployment for the module (api-server, scheduler with LocalExecutor, dag-processor; see
airflow_stack.py). Runs are created as the UI and the scheduler create them: "hourly" runs with
the logical date of an hour, and manual runs with the logical date "now", which sorts after the
next hourly run although it ran before it (docs/scheduling.md, "One run at a time").
"""

from __future__ import annotations

import json
import os
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dmscdc_provider.catalog import query
from dmscdc_provider.demo import STORE, prepare_demo_source, sample_products, sample_stores, write_change_batch
from dmscdc_provider.demo import PRODUCT
from dmscdc_provider.dms_writer import write_dms_file
from dmscdc_provider.engines import ENGINE_CLASSES

from tests.acceptance.airflow_stack import AirflowStack

DAG_ID = "dmscdc_recovery"
RUN_SECONDS = 180
ENGINE = "duckdb" if "duckdb" in ENGINE_CLASSES else "local"

SOURCE_YAML = """\
source: recovery
raw: {home}/raw
lake: {home}/lake
state: sqlite:///{home}/state.sqlite
tables: "sales.product,sales.store"
schedule: "@hourly"
start_date: 2024-03-01
engine: {engine}
catalog:
  mode: duckdb
  settings: {{path: {home}/catalog.duckdb}}
wait_for_changes: {{mode: poke, poke_interval: 1, timeout: 8}}
merge: {{retries: 0, max_parallel: 2}}
aws: {{conn_id: null}}
"""


class Source:
    """The deployment and the DMS output of the source it runs."""

    def __init__(self, stack: AirflowStack, home: Path):
        self.stack, self.home, self.raw = stack, home, home / "raw"
        self.hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)

    def trigger(self, run_id: str, logical_date: datetime | None = None, conf: dict | None = None) -> str:
        """A run as the UI's trigger form makes it: logical date "now" unless given."""
        logical_date = logical_date or max(datetime.now(timezone.utc), self.hour + timedelta(seconds=1))
        args = ["dags", "trigger", DAG_ID, "--run-id", run_id, "--logical-date", logical_date.isoformat()]
        created = self.stack.airflow(*args, *(["--conf", json.dumps(conf)] if conf else []))
        assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
        return run_id

    def finished(self, run_id: str) -> str:
        return self.stack.wait_for_run(DAG_ID, run_id, RUN_SECONDS)

    def tasks(self, run_id: str) -> dict[str, str]:
        return {name: ti["state"] for name, ti in self.stack.task_instances(DAG_ID, run_id).items()}

    def clear(self, run_id: str, task_id: str, map_index: int | None = None) -> None:
        """"Clear" on one task instance of one run, with downstream, as the UI's button does it."""
        target = [task_id, map_index] if map_index is not None else task_id
        cleared = self.stack.api("POST", f"/dags/{DAG_ID}/clearTaskInstances", {
            "dry_run": False, "dag_run_id": run_id, "task_ids": [target], "include_downstream": True,
            "only_failed": False})
        assert cleared["total_entries"] >= 1, cleared

    def mark(self, run_id: str, task_id: str, map_index: int, state: str) -> None:
        """"Mark as success/failed" on one task instance, as the UI's button does it."""
        self.stack.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}",
                       {"new_state": state})

    def map_index(self, run_id: str, table: str) -> int:
        with closing(self.stack.db()) as db:
            (index,) = db.execute("SELECT map_index FROM task_instance WHERE dag_id = ? AND run_id = ? AND "
                                  "task_id = 'merge' AND rendered_map_index = ?", (DAG_ID, run_id, table)).fetchone()
        return index

    def lake(self, sql: str) -> list[tuple]:
        return query(str(self.home / "catalog.duckdb"), sql)[1]

    def cdc(self, table: str, name: str, rows: list[dict]) -> str:
        path = self.raw / "sales" / table / name
        write_dms_file(str(path), rows, {"product": PRODUCT, "store": STORE}[table])
        return str(path)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("recovery")
    home, sources, airflow_home = root / "demo", root / "sources", root / "airflow"
    sources.mkdir()
    airflow_home.mkdir()
    (sources / "recovery.yaml").write_text(SOURCE_YAML.format(home=home, engine=ENGINE))
    prepare_demo_source(str(home / "raw"), f"sqlite://{home / 'state.sqlite'}")
    stack = AirflowStack(airflow_home, sources, {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"})
    stack.start()
    try:
        stack.wait_for_dag(DAG_ID, seconds=120)
        yield Source(stack, home)
    finally:
        stack.stop()


def store_file(source: Source) -> Path:
    [path] = list((source.raw / "sales" / "store").rglob("2024*.parquet"))
    return path


def test_a_failed_manual_run_holds_no_later_run_a_good_copy_and_a_clear_or_a_mark_success_end_green(source):
    write_change_batch(str(source.raw))
    bad = store_file(source)
    good = bad.read_bytes()
    bad.write_bytes(good[:64])  # a truncated delivery

    manual = source.trigger("manual_from_the_ui")
    assert source.finished(manual) == "failed"
    assert source.tasks(manual)["merge[sales.store]"] == "failed"
    assert source.tasks(manual)["merge[sales.product]"] == "success"
    # The next hourly run sorts before the manual one (its logical date is earlier) and is not held
    # by it: it plans the failed table again and fails the same way, saying why.
    next_hour = source.trigger("next_hour", source.hour)
    assert source.finished(next_hour) == "failed"
    assert source.tasks(next_hour)["plan"] == "success" and source.tasks(next_hour)["merge[sales.store]"] == "failed"

    bad.write_bytes(good)  # the remedy the failure names: a good copy, same name
    source.clear(manual, "merge", source.map_index(manual, "sales.store"))
    assert source.finished(manual) == "success", source.tasks(manual)
    assert source.lake("SELECT city FROM sales.store WHERE id = 1009") == [("Irvine",)]
    # The hourly run's merge failed on the same file: a person marks it success (the manual run
    # merged the table); its summary runs again and accepts that.
    source.mark(next_hour, "merge", source.map_index(next_hour, "sales.store"), "success")
    assert source.finished(next_hour) == "success", source.tasks(next_hour)
    assert "marked success by a person" in source.stack.task_log(DAG_ID, next_hour, "summary")

    # Later runs are green: the copy replaced after planning is not taken for a late delivery.
    source.cdc("store", "20240302-110000000.parquet", [{**sample_stores()[1], "Op": "U", "city": "Tustin"}])
    later = source.trigger("later_manual")
    assert source.finished(later) == "success", source.tasks(later)
    assert source.tasks(later)["merge[sales.store]"] == "success"
    assert source.lake("SELECT count(*) FROM sales.store") == [(9,)]
    assert source.lake(f"SELECT city FROM sales.store WHERE id = {sample_stores()[1]['id']}") == [("Tustin",)]


def test_a_removed_file_names_the_plan_task_to_clear_and_clearing_it_lets_later_runs_plan(source):
    stray = source.cdc("product", "20240302-120000000.parquet", [])
    Path(stray).write_bytes(b"not a parquet file")
    failed = source.trigger("with_a_stray_file")
    assert source.finished(failed) == "failed"
    assert source.tasks(failed)["merge[sales.product]"] == "failed"

    os.remove(stray)
    source.clear(failed, "merge", source.map_index(failed, "sales.product"))
    assert source.finished(failed) == "failed"
    log = source.stack.task_log(DAG_ID, failed, "merge")
    assert "removed from raw after the plan task listed them" in log and stray in log
    assert f"clear the plan task of run {failed} (with downstream)" in log

    source.clear(failed, "plan")
    assert source.finished(failed) == "success", source.tasks(failed)
    assert "merge[sales.product]" not in source.tasks(failed) or source.tasks(failed)["merge[sales.product]"] in (
        "removed", "skipped")

    # The merge instances the cleared plan removed hold no later run.
    source.cdc("product", "20240302-130000000.parquet", [{**sample_products()[5], "Op": "U", "name": "renamed"}])
    later = source.trigger("after_the_cleared_plan")
    assert source.finished(later) == "success", source.tasks(later)
    assert source.lake(f"SELECT name FROM sales.product WHERE id = {sample_products()[5]['id']}") == [("renamed",)]


def test_a_full_refresh_glob_that_matches_no_table_fails_the_run_naming_it(source):
    before = source.lake("SELECT count(*) FROM sales.product")
    typo = source.trigger("full_refresh_typo", conf={"full_refresh": ["sales.prodcut"]})

    assert source.finished(typo) == "failed"
    assert source.tasks(typo)["wait_for_changes"] == "failed"
    assert "'sales.prodcut' matches no table" in source.stack.task_log(DAG_ID, typo, "wait_for_changes")
    assert source.lake("SELECT count(*) FROM sales.product") == before
