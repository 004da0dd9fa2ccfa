"""Iceberg tables (docs/table-formats.md): one snapshot per merge with the plan in its summary, time
travel, rollback that moves the watermark back with the table, maintenance that never races a
merge, and the DuckDB catalog reading snapshots without an extension."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pytest

from dmscdc_provider.catalog import catalog_views, query, refresh_duckdb, iceberg_views
from dmscdc_provider.runner import CONFLICT, run_table
from dmscdc_provider.table_formats import TableFormatError
from dmscdc_provider.table_formats.iceberg import rollback_table, snapshot_rows
from dmscdc_provider.table_formats.maintenance import maintain_table

from tests.core.harness import LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string()), ("dept", pa.string())])


def item(op, id_, name, dept="a"):
    return {"Op": op, "id": id_, "name": name, "dept": dept}


@pytest.fixture
def lake(tmp_path, engine):
    lake = LakeHarness(tmp_path, engine, "iceberg")
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"])
    lake.load("s.t", [item("I", i, f"n{i}", "ab"[i % 2]) for i in range(10)], ITEM)
    lake.run_ok()
    return lake


def names(rows):
    return {row["id"]: row["name"] for row in rows}


def test_each_merge_is_one_snapshot_whose_summary_names_plan_attempt_watermark_and_rows(lake):
    lake.cdc("s.t", [item("U", 1, "changed", "b"), item("D", 2, "n2"), item("I", 50, "new")], ITEM)
    result = lake.run_ok()

    rows = snapshot_rows(lake.iceberg_table("s.t"))
    assert [r["operation"] for r in rows] == ["append", "overwrite"]
    newest = lake.iceberg_table("s.t").current_snapshot().summary
    state = lake.state("s.t")
    assert newest["dmscdc.plan-id"] == result.outcomes[0].plan_id
    assert newest["dmscdc.attempt-id"] == state.last_run["attempt_id"]
    assert newest["dmscdc.last-incremental-file"] == state.last_incremental_file
    assert (newest["dmscdc.rows-read-inserts"], newest["dmscdc.rows-read-updates"],
            newest["dmscdc.rows-read-deletes"]) == ("1", "1", "1")
    assert int(newest["total-records"]) == 10


def test_the_table_is_partitioned_by_the_partition_key_and_sorted_by_the_primary_key(lake):
    table = lake.iceberg_table("s.t")
    schema = table.schema()
    assert [schema.find_field(f.source_id).name for f in table.spec().fields] == ["dept"]
    assert [schema.find_field(f.source_id).name for f in table.sort_order().fields] == ["id"]
    # Readers map the files' columns by name: the files carry no field ids.
    assert "schema.name-mapping.default" in table.properties


def test_time_travel_reads_an_older_snapshot_through_the_duckdb_catalog(lake, tmp_path):
    first = lake.iceberg_table("s.t").current_snapshot().snapshot_id
    lake.cdc("s.t", [item("U", 1, "changed", "b")], ITEM)
    lake.run_ok()
    catalog = str(tmp_path / "catalog.duckdb")
    refresh_duckdb(lake.lake, [], catalog, iceberg_tables=["s.t"], iceberg_catalog=lake.iceberg_catalog)

    now = query(catalog, "SELECT name FROM s.t WHERE id = 1")[1]
    then = query(catalog, "SELECT name FROM s.t WHERE id = 1",
                 iceberg_views(lake.lake, catalog_views(catalog), lake.iceberg_catalog, str(first)))[1]
    assert (now, then) == ([("changed",)], [("n1",)])
    with pytest.raises(TableFormatError, match="no Iceberg table has snapshot 42"):
        iceberg_views(lake.lake, ["s.t"], lake.iceberg_catalog, "42")


def test_rollback_moves_the_watermark_back_and_the_next_run_reapplies_the_later_files_exactly(lake):
    first = lake.iceberg_table("s.t").current_snapshot().snapshot_id
    lake.cdc("s.t", [item("U", 1, "changed", "b"), item("D", 3, "n3", "b")], ITEM)
    lake.run_ok()
    after_merge = lake.rows("s.t")

    restored = rollback_table(lake.iceberg_table("s.t"), lake.store, lake.state("s.t"), str(first))

    assert restored.last_incremental_file is None
    assert names(lake.rows("s.t"))[1] == "n1" and 3 in names(lake.rows("s.t"))
    lake.run_ok()
    assert lake.rows("s.t") == after_merge
    assert lake.planner().plan().plans == []


def test_rollback_refuses_a_snapshot_outside_the_current_history(lake):
    with pytest.raises(TableFormatError, match="no snapshot 123"):
        rollback_table(lake.iceberg_table("s.t"), lake.store, lake.state("s.t"), "123")


def test_compaction_merges_small_files_in_one_commit_and_a_plan_made_before_it_conflicts(lake):
    for batch in range(3):
        lake.cdc("s.t", [item("I", 100 + batch, f"new{batch}", "a")], ITEM)
        lake.run_ok()
    before_rows, before_files = lake.rows("s.t"), lake.data_files("s.t")
    lake.cdc("s.t", [item("U", 0, "late", "a")], ITEM)
    stale = lake.planner().plan().plans[0]

    report = maintain_table(lake.state("s.t"), lake.lake, lake.iceberg_catalog, lake.store, lake.storage,
                            orphan_age=dt.timedelta(days=1))

    assert report.files_compacted == len([p for p in before_files if "dept=a/" in p]) > 1
    assert report.files_written == 1
    assert lake.rows("s.t") == before_rows
    assert len([p for p in lake.data_files("s.t") if "dept=a/" in p]) == 1
    assert run_table(stale, lake.engine, lake.store, lake.storage).status == CONFLICT
    lake.run_ok()
    assert names(lake.rows("s.t"))[0] == "late"


def test_maintenance_removes_old_files_no_snapshot_names_and_keeps_young_ones(lake):
    folder = os.path.join(lake.table_path("s.t"), "data", "killed-attempt", "dept=a")
    os.makedirs(folder)
    old, young = os.path.join(folder, "part-old.parquet"), os.path.join(folder, "part-young.parquet")
    for path in (old, young):
        with open(path, "wb") as handle:
            handle.write(b"PAR1 left by a killed attempt")
    two_days_ago = (dt.datetime.now() - dt.timedelta(days=2)).timestamp()
    os.utime(old, (two_days_ago, two_days_ago))
    rows = lake.rows("s.t")

    report = maintain_table(lake.state("s.t"), lake.lake, lake.iceberg_catalog, lake.store, lake.storage,
                            compact_below_bytes=0)

    assert report.files_removed == 1
    assert not os.path.exists(old) and os.path.exists(young)
    assert lake.rows("s.t") == rows


def test_expiring_snapshots_keeps_the_current_one_and_its_rows(lake):
    lake.cdc("s.t", [item("U", 1, "changed", "b")], ITEM)
    lake.run_ok()
    rows = lake.rows("s.t")

    report = maintain_table(lake.state("s.t"), lake.lake, lake.iceberg_catalog, lake.store, lake.storage,
                            compact_below_bytes=0, expire_after=dt.timedelta(0),
                            now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1))

    assert report.snapshots_expired == 1
    assert len(lake.iceberg_table("s.t").snapshots()) == 1
    assert lake.rows("s.t") == rows


def test_new_columns_and_widened_types_become_iceberg_schema_updates(tmp_path, engine):
    lake = LakeHarness(tmp_path, engine, "iceberg")
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "qty": 1}], pa.schema([("id", pa.int64()), ("qty", pa.int32())]))
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "I", "id": 2, "qty": 2**40, "note": "wide"}],
             pa.schema([("id", pa.int64()), ("qty", pa.int64()), ("note", pa.string())]))
    lake.run_ok()

    schema = lake.iceberg_table("s.t").schema()
    assert str(schema.find_field("qty").field_type) == "long"
    assert str(schema.find_field("note").field_type) == "string"
    assert [(r["id"], r["qty"], r["note"]) for r in lake.rows("s.t")] == [(1, 1, None), (2, 2**40, "wide")]


def test_a_parquet_table_switched_to_iceberg_is_converted_in_place_and_continues_from_its_watermark(tmp_path, engine):
    lake = LakeHarness(tmp_path, engine)  # the Parquet format
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"])
    lake.load("s.t", [item("I", i, f"n{i}", "abc"[i % 3]) for i in range(12)], ITEM)
    lake.run_ok()
    lake.cdc("s.t", [item("U", 1, "changed", "b")], ITEM)
    lake.run_ok()
    parquet_files = lake.data_files("s.t")
    parquet_watermark = lake.state("s.t").last_incremental_file

    lake.store.update(lake.path_of("s.t"), table_format="iceberg")
    lake.table_format = "iceberg"
    lake.cdc("s.t", [item("U", 3, "in iceberg", "a"), item("I", 99, "new", "c")], ITEM)
    lake.run_ok()

    table = lake.iceberg_table("s.t")
    converted, merged = [s.summary for s in sorted(table.snapshots(), key=lambda s: s.sequence_number)]
    assert converted["dmscdc.mode"] == "convert" and merged["dmscdc.mode"] == "incremental"
    assert converted["dmscdc.last-incremental-file"].endswith(os.path.basename(parquet_watermark))
    expected = {i: f"n{i}" for i in range(12)} | {1: "changed", 3: "in iceberg", 99: "new"}
    assert names(lake.rows("s.t")) == expected
    # Files the merge did not rewrite are the Parquet table's files, byte for byte and in place.
    untouched = {p: v for p, v in lake.data_files("s.t").items() if not p.startswith("data/")}
    assert untouched and all(parquet_files[p] == v for p, v in untouched.items())
    # The merge rewrote dept=a (id 3) into the Iceberg data folder.
    assert "dept=a" not in {part for p in untouched for part in p.split("/")}


def lock(catalog_uri: str):
    import sqlite3

    connection = sqlite3.connect(catalog_uri[len("sqlite:///"):], isolation_level=None, timeout=0.1)
    connection.execute("BEGIN EXCLUSIVE")
    return connection


def test_a_locked_iceberg_catalog_fails_the_table_in_one_line_and_the_next_run_is_exact(lake):
    lake.cdc("s.t", [item("U", 1, "changed", "b")], ITEM)
    state, rows = lake.state("s.t"), lake.rows("s.t")
    holder = lock(lake.iceberg_catalog)
    try:
        result = lake.run()
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    [outcome] = result.outcomes
    assert outcome.status == "failed" and outcome.error["store"]
    assert f"the Iceberg catalog {lake.iceberg_catalog} failed: " in outcome.error["problem"]
    assert "database is locked" in outcome.error["problem"] and "\n" not in outcome.error["problem"]
    assert lake.state("s.t") == state and lake.rows("s.t") == rows
    lake.run_ok()
    assert names(lake.rows("s.t"))[1] == "changed"


def test_a_catalog_locked_after_the_commit_point_is_finished_by_the_next_run(lake):
    from dmscdc_provider.state.base import StoreUnavailableError

    lake.cdc("s.t", [item("U", 1, "changed", "b")], ITEM)
    plan = lake.planner().plan().plans[0]
    holders = []

    def lock_at_the_commit_point(step: str, detail: dict) -> None:
        if step == "commit_recorded":
            holders.append(lock(lake.iceberg_catalog))

    with pytest.raises(StoreUnavailableError, match="database is locked"):
        run_table(plan, lake.engine, lake.store, lake.storage, on_step=lock_at_the_commit_point)
    holders[0].execute("ROLLBACK")
    holders[0].close()
    assert lake.state("s.t").pending_commit is not None

    result = lake.run_ok()
    assert result.finished_commits == ["s.t"]
    assert names(lake.rows("s.t"))[1] == "changed"
    assert len(lake.iceberg_table("s.t").snapshots()) == 2


def test_a_type_change_iceberg_cannot_make_fails_the_table_before_anything_is_staged(tmp_path, engine):
    lake = LakeHarness(tmp_path, engine, "iceberg")
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "qty": 1}], pa.schema([("id", pa.int64()), ("qty", pa.int32())]))
    lake.run_ok()
    # A Parquet folder widens int to double; an Iceberg schema cannot.
    path = lake.cdc("s.t", [{"Op": "U", "id": 1, "qty": 1.5}], pa.schema([("id", pa.int64()), ("qty", pa.float64())]))
    state, rows = lake.state("s.t"), lake.rows("s.t")

    [outcome] = lake.run().outcomes

    assert outcome.status == "failed"
    assert (outcome.error["file"], outcome.error["column"]) == (path, "qty")
    assert "cannot change a column from int to double" in outcome.error["problem"]
    assert lake.state("s.t") == state and lake.rows("s.t") == rows and not lake.unpublished_files("s.t")


def test_a_reload_in_a_type_iceberg_cannot_change_to_fails_before_anything_is_staged(tmp_path, engine):
    """A DMS reload whose LOAD files bring a column in a type the table's Iceberg schema cannot
    take (text to number) would rebuild the table in files its schema does not describe: the
    input check refuses it, naming the schema and the way out (drop the table from the catalog)."""
    lake = LakeHarness(tmp_path, engine, "iceberg")
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "code": "7"}], pa.schema([("id", pa.int64()), ("code", pa.string())]))
    lake.run_ok()
    lake.tick()
    path = lake.load("s.t", [{"Op": "I", "id": 1, "code": 7}], pa.schema([("id", pa.int64()), ("code", pa.int64())]),
                     modified=lake.clock)
    state, rows = lake.state("s.t"), lake.rows("s.t")

    [outcome] = lake.run().outcomes

    assert outcome.status == "failed"
    assert (outcome.error["file"], outcome.error["column"]) == (path, "code")
    assert "cannot change a column from string to bigint" in outcome.error["problem"]
    assert "drop it from the Iceberg catalog" in outcome.error["remedy"]
    assert lake.state("s.t") == state and lake.rows("s.t") == rows and not lake.unpublished_files("s.t")
