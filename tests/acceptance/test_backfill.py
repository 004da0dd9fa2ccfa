"""A backfill under a real Airflow scheduler finishes green and applies its intervals in order.

The deployment shape of docs/scheduling.md: api-server, scheduler (LocalExecutor), dag-processor
and triggerer as separate processes on a throwaway AIRFLOW_HOME with SQLite, a source YAML
on local files, and the command the docs give: ``airflow backfill create --dag-id ...
--from-date ... --to-date ... --reprocess-behavior failed``, here with ``--max-active-runs 3``
so Airflow starts all three runs at once. The DMS output holds the demo's full load and one
CDC batch in each of three hourly intervals, plus one after the last interval end.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dmscdc_provider.catalog import query
from dmscdc_provider.demo import PRODUCT, STORE, prepare_demo_source, sample_products
from dmscdc_provider.dms_writer import cdc_file_name, write_dms_file
from dmscdc_provider.engines import ENGINE_CLASSES

from tests.acceptance.airflow_stack import FINISHED, AirflowStack

DAG_ID = "dmscdc_backfill"
FIRST_INTERVAL = datetime(2024, 3, 2, 10, tzinfo=timezone.utc)
LAST_INTERVAL = datetime(2024, 3, 2, 12, tzinfo=timezone.utc)
# One CDC batch per hourly interval 10:00-11:00, 11:00-12:00, 12:00-13:00, and one after 13:00.
BATCH_TIMES = {
    "first": datetime(2024, 3, 2, 10, 15, tzinfo=timezone.utc),
    "second": datetime(2024, 3, 2, 11, 20, tzinfo=timezone.utc),
    "third": datetime(2024, 3, 2, 12, 40, tzinfo=timezone.utc),
    "after_the_backfill": datetime(2024, 3, 2, 13, 5, tzinfo=timezone.utc),
}
WAIT_FOR_RUNS_SECONDS = 360
# The in-process engine where the provider has one (no JVM per merge task), else local Spark.
ENGINE = "duckdb" if "duckdb" in ENGINE_CLASSES else (
    '{name: local, settings: {master: "local[1]", spark_conf: {spark.sql.shuffle.partitions: "1", '
    'spark.ui.enabled: "false", spark.ui.showConsoleProgress: "false"}}}')

SOURCE_YAML = """\
source: backfill
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
wait_for_changes: {{mode: poke, poke_interval: 2, timeout: 120}}
merge: {{retries: 0, max_parallel: 2}}
aws: {{conn_id: null}}
"""


def write_cdc_batches(raw: str) -> None:
    """Product 1001 is renamed in every batch, so the name the lake ends with tells which batch
    came last; store 1009 opens in the first interval and moves in the third."""
    product = {p["id"]: p for p in sample_products()}
    store = {"id": 1009, "address": "125 Technology Dr.", "city": "Irvine", "state": "CA", "country": "US",
             "zip": "92618", "updated_at": BATCH_TIMES["first"].replace(tzinfo=None)}
    changes = {
        "first": ([{**product[1001], "Op": "U", "name": "renamed in the first interval"}],
                  [{**store, "Op": "I"}]),
        "second": ([{**product[1001], "Op": "U", "name": "renamed in the second interval"},
                    {**product[1002], "Op": "D"}], []),
        "third": ([{**product[1003], "Op": "U", "name": "renamed in the third interval"}],
                  [{**store, "Op": "U", "city": "Tustin"}]),
        "after_the_backfill": ([{**product[1001], "Op": "U", "name": "renamed after the backfill"}], []),
    }
    for batch, (product_rows, store_rows) in changes.items():
        name = cdc_file_name(BATCH_TIMES[batch])
        write_dms_file(f"{raw}/sales/product/{name}", product_rows, PRODUCT)
        if store_rows:
            write_dms_file(f"{raw}/sales/store/{name}", store_rows, STORE)


@pytest.fixture
def stack(tmp_path):
    home = tmp_path / "demo"
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "backfill.yaml").write_text(SOURCE_YAML.format(home=home, engine=ENGINE))
    prepare_demo_source(str(home / "raw"), f"sqlite://{home / 'state.sqlite'}")
    write_cdc_batches(str(home / "raw"))
    airflow_home = tmp_path / "airflow"
    airflow_home.mkdir()
    running = AirflowStack(airflow_home, sources)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def lake(stack_home: Path, sql: str) -> list[tuple]:
    return query(str(stack_home / "catalog.duckdb"), sql)[1]


def test_backfill_of_three_intervals_with_three_active_runs_applies_them_in_order_and_finishes_green(stack, tmp_path):
    stack.wait_for_dag(DAG_ID, seconds=120)
    created = stack.airflow("backfill", "create", "--dag-id", DAG_ID, "--from-date", FIRST_INTERVAL.isoformat(),
                            "--to-date", LAST_INTERVAL.isoformat(), "--max-active-runs", "3",
                            "--reprocess-behavior", "failed")
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]

    deadline = time.monotonic() + WAIT_FOR_RUNS_SECONDS
    runs = stack.runs(DAG_ID)
    while time.monotonic() < deadline and not (len(runs) == 3 and all(r["state"] in FINISHED for r in runs)):
        time.sleep(3)
        runs = stack.runs(DAG_ID)
    assert len(runs) == 3 and all(r["state"] in FINISHED for r in runs), f"{runs}\n{stack.logs()}"
    assert [r["state"] for r in runs] == ["success"] * 3, f"{runs}\n{stack.logs()}"

    instances = [stack.task_instances(DAG_ID, run["run_id"]) for run in runs]
    for tasks in instances:
        assert tasks["plan"]["state"] == "success"
        assert all(ti["state"] in ("success", "skipped") for ti in tasks.values()), tasks
        assert all(ti["try_number"] == 1 for name, ti in tasks.items() if name.startswith("merge[")), tasks
    # In interval order: a run planned only after the previous run had finished (summary last). Its
    # plan task started with the others and waited deferred (start_date is that first start).
    for earlier, later in zip(instances, instances[1:]):
        assert later["plan"]["end_date"] >= earlier["summary"]["end_date"]
        assert all(ti["start_date"] >= earlier["summary"]["end_date"]
                   for name, ti in later.items() if name.startswith("merge["))

    # Each run applied exactly the CDC files named in its own interval (the first also the full load).
    applied = [sorted(Path(f["path"]).name for plan in stack.plans(DAG_ID, run["run_id"]) for f in plan["files"])
               for run in runs]
    first, second, third = (cdc_file_name(BATCH_TIMES[b]) for b in ("first", "second", "third"))
    assert applied == [sorted(["LOAD00000001.parquet"] * 2 + [first] * 2), [second], [third, third]]

    home = tmp_path / "demo"
    assert lake(home, "SELECT id, name FROM sales.product WHERE id IN (1001, 1002, 1003) ORDER BY id") == [
        (1001, "renamed in the second interval"), (1003, "renamed in the third interval")]
    assert lake(home, "SELECT city FROM sales.store WHERE id = 1009") == [("Tustin",)]
