"""Input never corrupts the lake: one test per way it used to (data loss or corruption reported
as success), and a test of each remedy the failure prints."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from dmscdc_provider.cli import main
from dmscdc_provider.dms_writer import cdc_file_name, write_dms_file
from dmscdc_provider.plan import STAGING_FOLDER

from tests.core.harness import START, LakeHarness, bad_and_good_tables

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])
ITEM_WITH_TEXT_ID = pa.schema([("id", pa.string()), ("name", pa.string())])


@pytest.fixture
def lake(tmp_path, engine):
    return bad_and_good_tables(tmp_path, engine, ITEM)


def snapshot(lake: LakeHarness, table: str = "s.bad"):
    state = lake.state(table)
    return (state.version, state.last_incremental_file, state.last_full_load_date, state.pending_commit,
            lake.data_files(table))


def staged(lake: LakeHarness, table: str = "s.bad") -> list[str]:
    """Files under the table's staging folder (an attempt's folder, once committed, is gone)."""
    root = os.path.join(lake.lake, STAGING_FOLDER, *table.split("."))
    return [name for _folder, _dirs, names in os.walk(root) for name in names]


def failed_alone(lake: LakeHarness, result, table: str = "s.bad") -> dict:
    """The table failed before anything was staged, naming itself; the other table merged."""
    outcomes = {o.table: o for o in result.outcomes}
    assert outcomes[table].status == "failed", outcomes[table].to_dict()
    assert outcomes[table].error["table"] == table
    assert not staged(lake, table)
    assert outcomes["s.good"].succeeded
    assert [r["name"] for r in lake.rows("s.good")] == ["good change"]
    return outcomes[table].error


def reload_in_dms(lake: LakeHarness, table: str, rows: list[dict], schema: pa.Schema) -> None:
    """What DMS's reload-target does: the LOAD files again, newer than the last full load."""
    lake.load(table, rows, schema, modified=lake.tick(3600))


# -- 1. a key column that changes type --------------------------------------------------------
def test_key_column_changing_from_int_to_string_fails_the_table_before_staging(lake):
    text_key = lake.cdc("s.bad", [{"Op": "I", "id": "2", "name": "two"}], ITEM_WITH_TEXT_ID)
    before = snapshot(lake)

    error = failed_alone(lake, lake.run())

    assert error["file"] == text_key and error["column"] == "id"
    assert "primary key column 'id' is string here but int64" in error["problem"]
    assert "reload the table in DMS" in error["remedy"] and "--full-refresh" not in error["remedy"]
    assert snapshot(lake) == before
    assert lake.rows("s.bad") == [{"Op": "I", "id": 1, "name": "one"}]


def test_the_remedy_for_a_key_type_change_a_dms_reload_rebuilds_the_table_in_the_new_type(lake):
    lake.cdc("s.bad", [{"Op": "I", "id": "2", "name": "two"}], ITEM_WITH_TEXT_ID)
    assert lake.run().outcomes[0].status == "failed"
    reload_in_dms(lake, "s.bad", [{"Op": "I", "id": "1", "name": "one"}, {"Op": "I", "id": "2", "name": "two"}],
                  ITEM_WITH_TEXT_ID)

    lake.run_ok("s.bad")

    assert lake.rows("s.bad") == [{"Op": "I", "id": "1", "name": "one"}, {"Op": "I", "id": "2", "name": "two"}]


def test_a_non_key_type_change_names_a_remedy_that_works_not_a_full_refresh_that_fails_the_same_way(lake):
    lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": 7}], pa.schema([("id", pa.int64()), ("name", pa.int64())]))
    error = failed_alone(lake, lake.run())
    assert error["column"] == "name" and "--full-refresh" not in error["remedy"]
    # What the old remedy suggested fails the same way: LOAD (string) then the CDC file (int).
    (refreshed,) = lake.run("s.bad", full_refresh=("s.bad",)).outcomes
    assert refreshed.status == "failed" and refreshed.error["column"] == "name"
    # What the remedy says works.
    reload_in_dms(lake, "s.bad", [{"Op": "I", "id": 1, "name": 7}], pa.schema([("id", pa.int64()), ("name", pa.int64())]))
    lake.run_ok("s.bad")
    assert lake.rows("s.bad") == [{"Op": "I", "id": 1, "name": 7}]


# -- 2. decimal widening ----------------------------------------------------------------------
WIDEST = Decimal("9" * 38)


def test_decimal_widening_that_no_decimal_can_hold_fails_instead_of_turning_values_null(tmp_path, engine):
    lake = LakeHarness(tmp_path, engine)
    lake.configure("s.money", primary_key=["id"])
    lake.load("s.money", [{"Op": "I", "id": 1, "amount": WIDEST}], pa.schema([("id", pa.int64()), ("amount", pa.decimal128(38, 0))]))
    lake.run_ok()
    scaled = lake.cdc("s.money", [{"Op": "I", "id": 2, "amount": Decimal("1.5")}],
                      pa.schema([("id", pa.int64()), ("amount", pa.decimal128(38, 10))]))

    (outcome,) = lake.run().outcomes

    assert outcome.status == "failed"
    assert outcome.error["file"] == scaled and outcome.error["column"] == "amount"
    assert "decimal(38,10) here but decimal(38,0)" in outcome.error["problem"]
    assert "no decimal holds both" in outcome.error["problem"]
    assert lake.rows("s.money") == [{"Op": "I", "id": 1, "amount": WIDEST}]


def test_decimal_widening_that_fits_picks_the_type_holding_both(tmp_path, engine):
    lake = LakeHarness(tmp_path, engine)
    lake.configure("s.money", primary_key=["id"])
    lake.load("s.money", [{"Op": "I", "id": 1, "amount": Decimal("12345678.12")}],
              pa.schema([("id", pa.int64()), ("amount", pa.decimal128(10, 2))]))
    lake.run_ok()
    lake.cdc("s.money", [{"Op": "U", "id": 1, "amount": Decimal("12345678.1234")},
                         {"Op": "I", "id": 2, "amount": Decimal("0.0001")}],
             pa.schema([("id", pa.int64()), ("amount", pa.decimal128(12, 4))]))
    lake.run_ok()
    assert [r["amount"] for r in lake.rows("s.money")] == [Decimal("12345678.1234"), Decimal("0.0001")]


def test_spark_decimal_rule_refuses_a_widening_past_38_digits():
    from pyspark.sql import types as T

    from dmscdc_spark.schema import wider_type

    assert wider_type(T.DecimalType(38, 0), T.DecimalType(38, 10)) is None
    assert wider_type(T.DecimalType(10, 2), T.DecimalType(12, 4)) == T.DecimalType(12, 4)


# -- 3. null primary key, null Op ---------------------------------------------------------------
def test_null_primary_key_in_an_insert_fails_the_table(lake):
    null_key = lake.cdc("s.bad", [{"Op": "I", "id": None, "name": "nobody"}], ITEM)
    before = snapshot(lake)
    error = failed_alone(lake, lake.run())
    assert error["file"] == null_key and error["column"] == "id"
    assert "primary key column 'id' is null in 1 row(s)" in error["problem"]
    assert snapshot(lake) == before


def test_the_remedy_for_a_null_key_the_right_key_and_a_full_refresh_recovers(tmp_path, engine):
    lake = LakeHarness(tmp_path, engine)
    coded = pa.schema([("id", pa.int64()), ("code", pa.string())])
    lake.configure("s.t", primary_key=["code"])  # not the source's key: it may be null
    lake.load("s.t", [{"Op": "I", "id": 1, "code": "a"}], coded)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "I", "id": 2, "code": None}], coded)
    (outcome,) = lake.run().outcomes
    assert outcome.status == "failed" and "--primary-key" in outcome.error["remedy"]

    lake.configure("s.t", primary_key=["id"])
    lake.run_ok(full_refresh=("s.t",))

    assert [(r["id"], r["code"]) for r in lake.rows("s.t")] == [(1, "a"), (2, None)]


def test_null_op_in_a_cdc_file_fails_the_table_instead_of_applying_an_insert(lake):
    null_op = lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "x"}, {"Op": None, "id": 2, "name": "y"}], ITEM)
    error = failed_alone(lake, lake.run())
    assert error["file"] == null_op and error["column"] == "Op"
    assert "Op is null in 1 row(s)" in error["problem"]
    assert lake.rows("s.bad") == [{"Op": "I", "id": 1, "name": "one"}]


def test_the_remedy_for_a_null_op_a_good_copy_of_the_file_is_applied(lake):
    path = lake.cdc("s.bad", [{"Op": None, "id": 2, "name": "y"}], ITEM)
    assert {o.table: o for o in lake.run().outcomes}["s.bad"].status == "failed"
    lake.cdc("s.bad", [{"Op": "I", "id": 2, "name": "y"}], ITEM, name=os.path.basename(path))
    lake.run_ok()
    assert [r["id"] for r in lake.rows("s.bad")] == [1, 2]


def test_the_engine_itself_refuses_a_null_op(lake):
    """The runner's check comes first; the engine's own check holds when it is run on its own."""
    lake.cdc("s.bad", [{"Op": None, "id": 2, "name": "y"}], ITEM)
    plan = next(p for p in lake.planner("s.bad").plan().plans)
    result = lake.engine.run(plan.engine_plan("direct"))
    assert result["status"] == "failed" and "Op is null" in result["error"]["problem"]


def test_cdc_files_with_and_without_an_op_column_read_together_keep_both_meanings(lake):
    lake.cdc("s.bad", [{"Op": "D", "id": 1}], ITEM)
    lake.cdc("s.bad", [{"id": 3, "name": "three"}], ITEM, with_op=False)  # inserts
    lake.run_ok()
    assert [(r["id"], r["name"]) for r in lake.rows("s.bad")] == [(3, "three")]


# -- 4. file:// lakes -------------------------------------------------------------------------
def test_a_file_uri_lake_runs_a_full_and_then_an_incremental_merge(tmp_path, engine, capsys):
    lake = LakeHarness(tmp_path, engine)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    arguments = ["run", "--raw", lake.raw, "--lake", f"file://{lake.lake}", "--state", f"sqlite://{lake.store.path}",
                 "--catalog", str(tmp_path / "catalog.duckdb")]

    assert main(arguments) == 0
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "uno"}, {"Op": "I", "id": 2, "name": "two"}], ITEM)
    assert main(arguments) == 0

    out = capsys.readouterr().out
    assert "s.t: full merge" in out and "s.t: incremental merge" in out
    assert [(r["id"], r["name"]) for r in lake.rows("s.t")] == [(1, "uno"), (2, "two")]
    assert lake.state("s.t").pending_commit is None
    assert "catalog duckdb" in out and "1 table(s) (s.t)" in out
    # The run history lands in the lake the URI names, not under a folder called "file:".
    assert len(list((tmp_path / "lake" / "_dmscdc" / "runs").glob("day=*/*.parquet"))) == 2


def test_a_commit_recorded_with_file_uris_finishes_with_plain_paths(tmp_path):
    from dmscdc_provider.storage import LocalStorage

    staged_file = tmp_path / "staging" / "part-0.parquet"
    staged_file.parent.mkdir()
    staged_file.write_bytes(b"data")
    storage = LocalStorage()
    storage.move(f"file://{staged_file}", f"file://{tmp_path}/table/part-0.parquet")
    assert (tmp_path / "table" / "part-0.parquet").read_bytes() == b"data"
    storage.move(str(staged_file), str(tmp_path / "table" / "part-0.parquet"))  # a repeat is done


# -- 5. relative and absolute raw paths -------------------------------------------------------
def test_a_relative_raw_path_names_the_same_tables_as_the_absolute_one(tmp_path, engine, monkeypatch, capsys):
    lake = LakeHarness(tmp_path, engine)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    common = ["--state", f"sqlite://{lake.store.path}", "--lake", lake.lake, "--catalog", str(tmp_path / "c.duckdb")]
    assert main(["run", "--raw", lake.raw, *common]) == 0
    lake.cdc("s.t", [{"Op": "I", "id": 2, "name": "two"}], ITEM)
    capsys.readouterr()

    monkeypatch.chdir(tmp_path)
    assert main(["run", "--raw", "raw", *common]) == 0

    out = capsys.readouterr().out
    assert "registered" not in out and "inactive" not in out
    assert "s.t: incremental merge" in out
    assert [state.path for state in lake.store.list()] == [lake.path_of("s.t")]
    assert [r["id"] for r in lake.rows("s.t")] == [1, 2]


# -- 6. a CDC file older than the watermark ---------------------------------------------------
def deliver_late(lake: LakeHarness, table: str, rows: list[dict], named_at: datetime) -> str:
    """A CDC file named at ``named_at`` that arrives now (a late delivery, a restored copy)."""
    path = lake.cdc(table, rows, ITEM, name=cdc_file_name(named_at))
    now = datetime.now(timezone.utc).timestamp()
    os.utime(path, (now, now))
    return path


def test_a_cdc_file_named_before_the_watermark_is_reported_not_skipped(lake, capsys):
    lake.cdc("s.bad", [{"Op": "I", "id": 2, "name": "two"}], ITEM, at=START + timedelta(minutes=10))
    lake.run_ok()
    late = deliver_late(lake, "s.bad", [{"Op": "U", "id": 1, "name": "late change"}], START + timedelta(minutes=5))
    before = snapshot(lake)

    code = main(["run", "--raw", lake.raw, "--lake", lake.lake, "--state", f"sqlite://{lake.store.path}",
                 "--catalog", os.path.join(lake.root, "c.duckdb")])

    err = capsys.readouterr().err
    assert code == 1
    assert "s.bad: FAILED to plan" in err and late in err and "named before the table's watermark" in err
    assert "--full-refresh s.bad" in err
    assert snapshot(lake) == before


def test_the_remedy_for_a_late_file_a_full_refresh_applies_it_in_order(lake):
    lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "newest"}], ITEM, at=START + timedelta(minutes=10))
    lake.run_ok()
    deliver_late(lake, "s.bad", [{"Op": "U", "id": 1, "name": "older"}, {"Op": "I", "id": 2, "name": "late"}],
                 START + timedelta(minutes=5))
    assert [p.table for p in lake.run().report.problems] == ["s.bad"]

    lake.run_ok("s.bad", full_refresh=("s.bad",))

    assert [(r["id"], r["name"]) for r in lake.rows("s.bad")] == [(1, "newest"), (2, "late")]
    assert "s.bad" in lake.run_ok().report.up_to_date


def test_files_applied_by_earlier_runs_are_not_reported_late(lake):
    lake.cdc("s.bad", [{"Op": "I", "id": 2, "name": "two"}], ITEM)
    lake.run_ok()
    assert lake.run_ok().report.problems == []


# -- 7. dotted folder names -------------------------------------------------------------------
def test_dotted_schema_and_table_folders_do_not_collide_in_one_lake_table(tmp_path, engine, capsys):
    lake = LakeHarness(tmp_path, engine)
    write_dms_file(os.path.join(lake.raw, "a", "b.c", "LOAD00000001.parquet"),
                   [{"Op": "I", "id": 1, "name": "table b.c of schema a"}], ITEM)
    write_dms_file(os.path.join(lake.raw, "a.b", "c", "LOAD00000001.parquet"),
                   [{"Op": "I", "id": 2, "name": "table c of schema a.b"}], ITEM)

    assert main(["tables", "--raw", lake.raw, "--state", f"sqlite://{lake.store.path}"]) == 0
    assert "a.b.c: not registered" in capsys.readouterr().err
    report = lake.run().report

    assert [s.path for s in lake.store.list()] == [f"{lake.raw}/a/b.c/"]
    (problem,) = report.problems
    assert problem.table == "a.b.c" and f"{lake.raw}/a.b" in problem.problem and "rename the schema" in problem.problem
    lake.store.update(f"{lake.raw}/a/b.c/", active=True, primary_key=("id",))
    lake.run()
    with duckdb.connect() as connection:
        names = connection.execute(
            f"SELECT name FROM read_parquet('{lake.lake}/*/*/*.parquet', filename = true)").fetchall()
    assert names == [("table b.c of schema a",)]
    assert os.listdir(lake.lake + "/a") == ["b.c"]


def test_a_lake_left_with_two_key_types_by_an_earlier_version_is_named_and_a_full_refresh_repairs_it(lake):
    import pyarrow.parquet as pq

    corrupted = os.path.join(lake.table_path("s.bad"), "part-zzz-written-by-an-earlier-version.parquet")
    pq.write_table(pa.table({"Op": ["I"], "id": ["2"], "name": ["two"]}), corrupted)
    lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "uno"}], ITEM)

    error = failed_alone(lake, lake.run())
    assert error["file"] == corrupted and error["column"] == "id"
    assert "the lake's files disagree on column 'id'" in error["problem"]
    assert "--full-refresh s.bad" in error["remedy"]

    lake.run_ok("s.bad", full_refresh=("s.bad",))
    assert [(r["id"], r["name"]) for r in lake.rows("s.bad")] == [(1, "uno")]


def test_a_table_keyed_by_a_relative_raw_path_continues_under_the_absolute_key(tmp_path, engine, monkeypatch):
    from dmscdc_provider.planner import Planner
    from dmscdc_provider.state.base import TableState

    lake = LakeHarness(tmp_path, engine)
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    lake.cdc("s.t", [{"Op": "I", "id": 2, "name": "applied before"}], ITEM, name="20240301-093000000.parquet")
    lake.cdc("s.t", [{"Op": "I", "id": 3, "name": "new"}], ITEM, name="20240301-094000000.parquet")
    monkeypatch.chdir(tmp_path)
    # What an earlier version wrote for `--raw raw`: the key as typed, loaded up to 09:30.
    lake.store.register(TableState(
        path="raw/s/t/", schema="s", table="t", active=True, primary_key=("id",),
        last_full_load_date="2024-03-01 09:00:00", last_incremental_file="raw/s/t/20240301-093000000.parquet"))

    report = Planner("raw", lake.lake, lake.store, lake.storage).plan()

    assert report.registered == [] and report.inactive == []
    (plan,) = report.plans
    assert plan.state_path == lake.path_of("s.t") and plan.mode == "incremental"
    assert [os.path.basename(f["path"]) for f in plan.files] == ["20240301-094000000.parquet"]
