"""A table may change engines between runs (``auto`` picks per run) and stays exact: the
in-process engine writes the same files, types and partition folders as the Spark engine,
and each reads what the other wrote."""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmscdc_provider.engines.duckdb import DuckDBMergeEngine

from tests.core.harness import LakeHarness

ROW = pa.schema([
    ("id", pa.int64()), ("name", pa.string()), ("dept", pa.string()), ("qty", pa.int32()),
    ("price", pa.decimal128(10, 2)), ("updated", pa.timestamp("ms")), ("day", pa.date32()),
])
T0 = datetime(2024, 3, 1, 9, 0, 0, 123000)


def row(op, id_, name, dept, qty=1, at=T0):
    return {"Op": op, "id": id_, "name": name, "dept": dept, "qty": qty, "price": Decimal(id_) / 4,
            "updated": at, "day": at.date()}


def view(rows):
    return sorted((r["id"], r["name"], r["dept"], r["qty"], r["price"], r["updated"].replace(tzinfo=None), r["day"])
                  for r in rows)


def expected(model):
    return sorted((r["id"], r["name"], r["dept"], r["qty"], Decimal(r["id"]) / 4, r["updated"], r["updated"].date())
                  for r in model.values())


def run_batches(lake: LakeHarness, engines: list) -> None:
    """A full load and two CDC batches (update, delete, insert, partition move, null partition),
    each run by the next engine of ``engines``; the lake must equal the source after each."""
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"])
    model = {i: row("I", i, f"n{i}", "ab"[i % 2]) for i in range(1, 41)}
    lake.load("s.t", list(model.values()), ROW)
    batches = [
        [row("U", 3, "moved", "c", 7, T0 + timedelta(hours=1)), row("D", 4, "n4", "a"),
         row("I", 100, "new", "a/b c", 2, T0 + timedelta(milliseconds=5)), row("U", 5, "changed", "b", 9)],
        [row("U", 100, "again", None, 3, T0 + timedelta(days=1)), row("I", 4, "back", "b"),
         row("D", 3, "moved", "c"), row("U", 6, "upd", "a", 11, T0 + timedelta(seconds=30))],
    ]
    for number, engine in enumerate(engines):
        lake.engine = engine
        if number:
            for change in batches[number - 1]:
                if change["Op"] == "D":
                    model.pop(change["id"])
                else:
                    model[change["id"]] = change
            lake.cdc("s.t", batches[number - 1], ROW)
        lake.run_ok()
        assert view(lake.rows("s.t")) == expected(model), f"after run {number}"
        assert len({r["id"] for r in lake.rows("s.t")}) == len(model)


@pytest.fixture
def duckdb_engine():
    return DuckDBMergeEngine(memory_limit="256MB", threads=2)


def test_spark_full_load_then_in_process_incremental_merges_stay_exact(tmp_path, local_engine, duckdb_engine):
    run_batches(LakeHarness(tmp_path, local_engine), [local_engine, duckdb_engine, duckdb_engine])


def test_in_process_full_load_then_spark_incremental_merges_stay_exact(tmp_path, local_engine, duckdb_engine):
    run_batches(LakeHarness(tmp_path, duckdb_engine), [duckdb_engine, local_engine, duckdb_engine])


def parquet_shape(path: str) -> list[tuple]:
    """Each column's name, physical type and logical type, as a Parquet reader sees them."""
    schema = pq.ParquetFile(path).schema
    return [(schema.column(i).name, schema.column(i).physical_type, str(schema.column(i).logical_type))
            for i in range(len(schema))]


@pytest.mark.parametrize("partition_key", [["dept"], ["day", "qty"]])
def test_both_engines_write_the_same_parquet_columns_and_partition_folders(
        tmp_path, local_engine, duckdb_engine, partition_key):
    lakes = {}
    for name, engine in (("spark", local_engine), ("duckdb", duckdb_engine)):
        lake = LakeHarness(tmp_path / name, engine)
        lake.configure("s.t", primary_key=["id"], partition_key=partition_key)
        lake.load("s.t", [row("I", 1, "x", "a/b c", qty=-3), row("I", 2, "y", None, at=T0 + timedelta(days=40)),
                          row("I", 3, "z", "q=1%", qty=12)], ROW)
        lake.run_ok()
        lakes[name] = lake
    spark_files, duckdb_files = (sorted(lakes[n].data_files("s.t")) for n in ("spark", "duckdb"))
    assert [os.path.dirname(p) for p in spark_files] == [os.path.dirname(p) for p in duckdb_files]
    assert all(p.endswith(".c000.snappy.parquet") for p in duckdb_files)
    for spark_file, duckdb_file in zip(spark_files, duckdb_files):
        spark_path = os.path.join(lakes["spark"].table_path("s.t"), spark_file)
        duckdb_path = os.path.join(lakes["duckdb"].table_path("s.t"), duckdb_file)
        assert parquet_shape(duckdb_path) == parquet_shape(spark_path)
        column = pq.ParquetFile(duckdb_path).metadata.row_group(0).column(0)
        assert column.compression == "SNAPPY"


ANCIENT = pa.schema([("id", pa.int64()), ("name", pa.string()), ("day", pa.date32()),
                     ("at", pa.timestamp("us")), ("at_utc", pa.timestamp("us", tz="UTC"))])


def ancient(op, id_, name, day: date, at: datetime):
    return {"Op": op, "id": id_, "name": name, "day": day, "at": at, "at_utc": at.replace(tzinfo=timezone.utc)}


def ancient_view(rows) -> list[tuple]:
    return [(r["id"], r["name"], r["day"], r["at"], r["at_utc"].astimezone(timezone.utc).replace(tzinfo=None))
            for r in rows]


@pytest.mark.parametrize("first", ["local", "duckdb"])
def test_dates_before_the_gregorian_reform_stay_exact_when_engines_take_turns(
        tmp_path, table_format, local_engine, duckdb_engine, foreign_host, first):
    """Legacy sentinels (0001-01-01), dates before 1582-10-15 and timestamps before 1900, on a
    Spark session left at Spark's defaults (which refuse them, or with LEGACY rebase shift them)
    in a zone far from UTC: each engine reads what the other wrote and writes them back unchanged."""
    engines = {"local": local_engine, "duckdb": duckdb_engine}
    writer, other = engines[first], engines["duckdb" if first == "local" else "local"]
    lake = LakeHarness(tmp_path, writer, table_format)
    lake.configure("s.t", primary_key=["id"])
    model = {1: ancient("I", 1, "sentinel", date(1, 1, 1), datetime(1, 1, 1)),
             2: ancient("I", 2, "medieval", date(1000, 6, 15), datetime(1000, 6, 15, 12, 30, 0, 123456)),
             3: ancient("I", 3, "eve of the reform", date(1582, 10, 4), datetime(1582, 10, 4, 23, 59, 59))}
    lake.load("s.t", list(model.values()), ANCIENT)
    batches = [
        (other, [ancient("U", 2, "medieval, renamed", date(1000, 6, 15), datetime(1000, 6, 15, 12, 30, 0, 123456)),
                 ancient("I", 4, "victorian", date(1850, 3, 1), datetime(1850, 3, 1, 8, 0, 0, 1)),
                 ancient("I", 5, "reform day", date(1582, 10, 15), datetime(1582, 10, 15))]),
        (writer, [ancient("U", 4, "victorian, later", date(1899, 12, 31), datetime(1899, 12, 31, 23, 59, 59))]),
    ]
    def expected():
        return [(c["id"], c["name"], c["day"], c["at"], c["at"]) for _, c in sorted(model.items())]

    lake.run_ok()
    assert ancient_view(lake.rows("s.t")) == expected()
    for number, (engine, changes) in enumerate(batches, start=1):
        lake.engine = engine
        lake.cdc("s.t", changes, ANCIENT)
        model.update({c["id"]: c for c in changes})
        lake.run_ok()
        assert ancient_view(lake.rows("s.t")) == expected(), f"after CDC batch {number}"


class SubmittedJob:
    """An engine that runs each merge as Glue and EMR do: the plan document in a file, read by
    ``dmscdc_spark.submit.run_job`` (what ``glue_entry.py`` and ``submit.py`` call) on a session
    the cluster made, the result document read back from beside the plan."""

    def __init__(self, spark, folder):
        self.spark, self.folder = spark, folder

    def run(self, engine_plan: dict) -> dict:
        from dmscdc_spark.submit import result_uri_for, run_job

        plan_path = os.path.join(self.folder, engine_plan["attempt_id"], "plan.json")
        os.makedirs(os.path.dirname(plan_path))
        with open(plan_path, "w") as handle:
            json.dump(engine_plan, handle)
        run_job(self.spark, plan_path)
        with open(result_uri_for(plan_path)) as handle:
            return json.load(handle)


def test_a_glue_or_emr_job_reads_and_writes_ancient_dates_and_casts_in_utc_on_a_session_left_at_defaults(
        tmp_path, spark, foreign_host):
    """Glue and EMR hand the job a session with the cluster's settings: the job sets the zone
    and rebase modes the merge needs itself, so a remote merge equals a local one."""
    lake = LakeHarness(tmp_path / "lake", SubmittedJob(spark, str(tmp_path / "jobs")))
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [ancient("I", 1, "sentinel", date(1, 1, 1), datetime(1, 1, 1))], ANCIENT)
    lake.run_ok()
    utc_changes = pa.schema([("id", pa.int64()), ("name", pa.string()), ("day", pa.date32()),
                             ("at", pa.timestamp("us", tz="UTC")), ("at_utc", pa.timestamp("us"))])
    lake.cdc("s.t", [ancient("U", 1, "sentinel, updated", date(1, 1, 1), datetime(1, 1, 1)),
                     ancient("I", 2, "noon", date(1000, 6, 15), datetime(2024, 3, 1, 12, 0))], utc_changes)
    lake.run_ok()  # rewrites the lake file: the lake's types win
    assert ancient_view(lake.rows("s.t")) == [
        (1, "sentinel, updated", date(1, 1, 1), datetime(1, 1, 1), datetime(1, 1, 1)),
        (2, "noon", date(1000, 6, 15), datetime(2024, 3, 1, 12, 0), datetime(2024, 3, 1, 12, 0))]


@pytest.mark.parametrize("first, second", [("spark", "duckdb"), ("duckdb", "spark")])
def test_partition_values_one_engine_wrote_are_found_and_rewritten_exactly_by_the_other(
        tmp_path, local_engine, duckdb_engine, first, second):
    """An empty-string key, -0.0 beside 0.0, a 32-bit float and escaped characters in the folders."""
    engines = {"spark": local_engine, "duckdb": duckdb_engine}
    schema = pa.schema([("region", pa.string()), ("id", pa.int64()), ("x", pa.float32()), ("v", pa.string())])
    keys = [("", 1, -0.0), ("", 2, 0.0), ("", 3, -0.0), ("a/b", 1, 0.1), ("50%", 1, 1e10)]
    lake = LakeHarness(tmp_path, engines[first])
    lake.configure("s.t", primary_key=["region", "id"], partition_key=["region", "x"])
    lake.load("s.t", [{"Op": "I", "region": r, "id": i, "x": x, "v": "load"} for r, i, x in keys], schema)
    lake.run_ok()
    folders = sorted(os.path.dirname(p) for p in lake.data_files("s.t"))
    assert folders == ["region=50%25/x=1.0E10", "region=__HIVE_DEFAULT_PARTITION__/x=-0.0",
                       "region=__HIVE_DEFAULT_PARTITION__/x=0.0", "region=a%2Fb/x=0.1"]
    lake.engine = engines[second]
    lake.cdc("s.t", [{"Op": "U", "region": r, "id": i, "x": x, "v": "changed"} for r, i, x in keys if i != 2]
             + [{"Op": "D", "region": "", "id": 2, "x": 0.0, "v": "load"}], schema)

    lake.run_ok()

    rows = lake.rows("s.t", order_by="region NULLS FIRST, id")
    assert [(r["region"], r["id"], str(r["x"]), r["v"]) for r in rows] == [
        (None, 1, "-0.0", "changed"), (None, 3, "-0.0", "changed"), ("50%", 1, "1.0E10", "changed"),
        ("a/b", 1, "0.1", "changed")]
    assert sorted(os.path.dirname(p) for p in lake.data_files("s.t")) == [
        f for f in folders if f != "region=__HIVE_DEFAULT_PARTITION__/x=0.0"]
