"""A table may change engines between runs (``auto`` picks per run) and stays exact: the
in-process engine writes the same files, types and partition folders as the Spark engine,
and each reads what the other wrote."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
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
