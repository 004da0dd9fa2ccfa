"""The demo source DAG end to end, as a user runs it: ``airflow dags test`` with SQLite as the
metadata DB, the lake checked through the DuckDB catalog.

The demo's LOAD files are dated 2024-03-01 09:00 UTC and its change batch is named
2024-03-02 10:01:01.856 UTC; the DAG is hourly, so a run at logical date T covers the hour
ending at T and applies the CDC files named before T.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from airflow_env import AIRFLOW_HOME, dag_run_states, run_airflow, run_dag_helper, utc
from dmscdc_provider.catalog import query
from dmscdc_provider.demo import prepare_demo_source

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG_ID = "dmscdc_demo"
BEFORE_CHANGES = utc(2024, 3, 2, 0, 0)
AFTER_CHANGES = utc(2024, 3, 3, 0, 0)
NOTHING_NEW = utc(2024, 3, 4, 0, 0)


def demo_source(env: dict, changes: bool = False) -> Path:
    home = Path(env["DMSCDC_DEMO_HOME"])
    prepare_demo_source(str(home / "raw"), f"sqlite://{home / 'state.sqlite'}", changes=changes)
    return home


def dags_test(logical_date, env: dict) -> None:
    completed = run_airflow(["dags", "test", DAG_ID, logical_date.isoformat()], env)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


def asset_events(run_id: str) -> list[tuple[str, dict]]:
    """(asset URI, extra) of the Asset events the run emitted, from the test metadata DB."""
    with closing(sqlite3.connect(os.path.join(AIRFLOW_HOME, "airflow.db"))) as db:
        return [(uri, json.loads(extra)) for uri, extra in db.execute(
            "SELECT asset.uri, asset_event.extra FROM asset_event JOIN asset ON asset.id = asset_event.asset_id "
            "WHERE asset_event.source_dag_id = ? AND asset_event.source_run_id = ?", (DAG_ID, run_id))]


def merge_xcom_keys(run_id: str) -> dict[str, int]:
    with closing(sqlite3.connect(os.path.join(AIRFLOW_HOME, "airflow.db"))) as db:
        return dict(db.execute("SELECT key, count(*) FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'merge' "
                               "GROUP BY key", (DAG_ID, run_id)).fetchall())


def rows(home: Path, sql: str) -> list[tuple]:
    return query(str(home / "catalog.duckdb"), sql)[1]


@pytest.mark.parametrize("table_format", ["parquet", "iceberg"])
def test_dags_test_loads_the_demo_then_applies_the_change_batch_then_skips_when_nothing_is_new(demo_env, table_format):
    demo_env = {**demo_env, "DMSCDC_DEMO_TABLE_FORMAT": table_format,
                "DMSCDC_DEMO_MAINTENANCE": str(table_format == "iceberg").lower()}
    home = demo_source(demo_env)

    dags_test(BEFORE_CHANGES, demo_env)
    first = dag_run_states(DAG_ID, BEFORE_CHANGES)
    assert first["state"] == "success"
    merges = sorted(name for name in first["tasks"] if name.startswith("merge["))
    assert merges == ["merge[sales.product]", "merge[sales.productorder]", "merge[sales.store]"]
    assert all(first["tasks"][name]["state"] == "success" for name in first["tasks"])
    assert rows(home, "SELECT count(*) FROM sales.product") == [(10,)]
    assert rows(home, "SELECT count(*) FROM sales.store") == [(8,)]
    assert rows(home, "SELECT count(*) FROM sales.productorder") == [(12,)]

    demo_source(demo_env, changes=True)
    dags_test(AFTER_CHANGES, demo_env)
    second = dag_run_states(DAG_ID, AFTER_CHANGES)
    assert second["state"] == "success"
    assert rows(home, "SELECT id, name, dept FROM sales.product WHERE id IN (1001, 1002)") == [
        (1001, "Smart Speaker Pro", "Home")]
    assert rows(home, "SELECT city FROM sales.store WHERE id = 1009") == [("Irvine",)]
    assert rows(home, "SELECT count(*) FROM sales.productorder") == [(18,)]
    if table_format == "iceberg":  # one snapshot per merge, read by any Iceberg reader
        from pyiceberg.catalog.sql import SqlCatalog

        catalog = SqlCatalog("dmscdc", uri=f"sqlite:///{home / 'iceberg.sqlite'}", warehouse=str(home / "lake"))
        product = catalog.load_table(("sales", "product"))
        assert len(product.snapshots()) == 2
        assert second["tasks"]["maintain"]["state"] == "success"
        assert sorted(product.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())[:2] == [1001, 1003]

    dags_test(NOTHING_NEW, demo_env)
    third = dag_run_states(DAG_ID, NOTHING_NEW)
    assert third["tasks"]["wait_for_changes"]["state"] == "skipped"
    assert {third["tasks"][task]["state"] for task in ("plan", "refresh_catalog", "summary")} == {"skipped"}
    assert third["state"] == "success"
    assert rows(home, "SELECT count(*) FROM sales.productorder") == [(18,)]


def test_a_corrupt_file_fails_only_its_table_in_one_try_and_clearing_it_after_the_fix_reruns_only_that_table(
        demo_env):
    demo_env = {**demo_env, "DMSCDC_DEMO_MERGE_RETRIES": "2"}  # retries that a bad file must not use
    home = demo_source(demo_env, changes=True)
    [bad_file] = (home / "raw" / "sales" / "productorder").rglob("2024*.parquet")
    good_copy = home / "good.parquet"
    shutil.copy(bad_file, good_copy)
    bad_file.write_bytes(good_copy.read_bytes()[:100])

    failed = run_dag_helper("test", AFTER_CHANGES, demo_env)

    assert failed["state"] == "failed"
    assert failed["tasks"]["merge[sales.productorder]"] == {"state": "failed", "try_number": 1}
    assert failed["tasks"]["merge[sales.product]"]["state"] == "success"
    assert failed["tasks"]["merge[sales.store]"]["state"] == "success"
    assert failed["tasks"]["refresh_catalog"]["state"] == "success"
    assert failed["tasks"]["summary"]["state"] == "failed"
    assert rows(home, "SELECT count(*) FROM sales.store") == [(9,)]

    shutil.copy(good_copy, bad_file)
    cleared = run_dag_helper("clear-failed", AFTER_CHANGES, demo_env)

    assert cleared["state"] == "success"
    assert cleared["tasks"]["merge[sales.productorder]"] == {"state": "success", "try_number": 2}
    # The other tables' instances were not run again.
    assert cleared["tasks"]["merge[sales.product]"] == {"state": "success", "try_number": 1}
    assert cleared["tasks"]["merge[sales.store]"] == {"state": "success", "try_number": 1}
    assert cleared["tasks"]["plan"]["try_number"] == 1
    assert rows(home, "SELECT count(*) FROM sales.productorder") == [(18,)]
    assert rows(home, "SELECT count(*) FROM sales.store") == [(9,)]
    assert rows(home, "SELECT count(*) FROM sales.product") == [(9,)]
    # Each merge instance's outcome is in XCom once, under "outcome" (no return_value copy); the
    # other keys are Airflow's own, one per extra link (job console links) of every finished instance.
    from dmscdc_provider.operators.merge import DmsCdcMergeOperator

    link_keys = {link.xcom_key for link in DmsCdcMergeOperator.operator_extra_links}
    keys = merge_xcom_keys(cleared["run_id"])
    assert {key: count for key, count in keys.items() if key not in link_keys} == {"outcome": 3}
    # Each table's merge was announced once: the rerun after the clear announced only the fixed table.
    events = asset_events(cleared["run_id"])
    assert sorted(extra["table"] for _, extra in events) == ["sales.product", "sales.productorder", "sales.store"]
    productorder = next(extra for _, extra in events if extra["table"] == "sales.productorder")
    assert productorder["rows_written"] > 0 and productorder["files_added"] >= 1
    assert productorder["watermark"]["LastIncrementalFile"] == str(bad_file)
