"""Partition values, exactly, on every engine and table format: the empty string, negative zero,
characters a folder name must escape, and values no folder name can hold (docs/merge-semantics.md,
"Partition values")."""

from __future__ import annotations

import math
import os

import pyarrow as pa
import pytest

from dmscdc_provider.catalog import query, refresh_duckdb

from tests.core.harness import LakeHarness

REGIONAL = pa.schema([("region", pa.string()), ("id", pa.int64()), ("v", pa.string())])


@pytest.fixture
def lake(tmp_path, engine, table_format):
    return LakeHarness(tmp_path, engine, table_format)


def partition_folders(lake: LakeHarness, table: str) -> list[str]:
    """The partition folder of each data file readers see, sorted."""
    return sorted(path.split("/")[-2] for path in lake.data_files(table))


def catalog_rows(lake: LakeHarness, table: str, sql: str) -> list[tuple]:
    """``sql`` run by `dmscdc query` through the DuckDB catalog the runs refresh."""
    catalog = os.path.join(lake.root, "catalog.duckdb")
    if lake.table_format == "iceberg":
        refresh_duckdb(lake.lake, [], catalog, iceberg_tables=[table], iceberg_catalog=lake.iceberg_catalog)
    else:
        refresh_duckdb(lake.lake, [table], catalog)
    return query(catalog, sql)[1]


def test_an_empty_string_key_in_the_partition_column_is_updated_and_deleted(lake):
    lake.configure("s.t", primary_key=["region", "id"], partition_key=["region"])
    lake.load("s.t", [{"Op": "I", "region": "", "id": 1, "v": "a"}, {"Op": "I", "region": "", "id": 2, "v": "b"},
                      {"Op": "I", "region": "eu", "id": 1, "v": "e"}], REGIONAL)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "U", "region": "", "id": 1, "v": "a2"}, {"Op": "D", "region": "", "id": 2, "v": "b"}],
             REGIONAL)

    result = lake.run_ok()

    # A key is never null, so the default partition folder of a key column holds the empty string:
    # an Iceberg table records it as such; a Parquet folder's readers read the folder as null.
    empty = "" if lake.table_format == "iceberg" else None
    rows = lake.rows("s.t", order_by="region NULLS FIRST, id")
    assert [(r["region"], r["id"], r["v"]) for r in rows] == [(empty, 1, "a2"), ("eu", 1, "e")]
    assert partition_folders(lake, "s.t") == ["region=__HIVE_DEFAULT_PARTITION__", "region=eu"]
    summary = result.outcomes[0].summary
    assert (summary["files_added"], summary["files_removed"]) == (1, 1) and not summary.get("warnings")
    assert catalog_rows(lake, "s.t", "SELECT region, id, v FROM s.t ORDER BY id, region NULLS FIRST") == [
        (empty, 1, "a2"), ("eu", 1, "e")]


def test_a_null_and_an_empty_string_in_a_partition_column_outside_the_key_read_back_as_null(lake):
    lake.configure("s.t", primary_key=["id"], partition_key=["region"])
    lake.load("s.t", [{"Op": "I", "region": "", "id": 1, "v": "a"}, {"Op": "I", "region": None, "id": 2, "v": "b"}],
              REGIONAL)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "U", "region": "", "id": 2, "v": "b2"}, {"Op": "I", "region": None, "id": 3, "v": "c"}],
             REGIONAL)

    result = lake.run_ok()

    assert [(r["region"], r["id"], r["v"]) for r in lake.rows("s.t")] == [(None, 1, "a"), (None, 2, "b2"), (None, 3, "c")]
    assert set(partition_folders(lake, "s.t")) == {"region=__HIVE_DEFAULT_PARTITION__"}
    # Said in the run's warnings: the one incoming empty string (the rewritten row 1 is null by now).
    assert result.outcomes[0].summary["warnings"] == [
        "partition column 'region': 1 row(s) hold the empty string, which a partition folder cannot tell from null "
        "(both are __HIVE_DEFAULT_PARTITION__), so the table holds null there (docs/merge-semantics.md, "
        "\"Partition values\")"]


FLOATING = pa.schema([("id", pa.int64()), ("x", pa.float64()), ("v", pa.string())])


def test_negative_zero_and_zero_partition_values_keep_their_own_folders_and_signs(lake):
    lake.configure("s.t", primary_key=["id"], partition_key=["x"])
    lake.load("s.t", [{"Op": "I", "id": i, "x": -0.0 if i % 2 else 0.0, "v": f"n{i}"} for i in range(1, 7)], FLOATING)
    lake.run_ok()
    assert partition_folders(lake, "s.t") == ["x=-0.0", "x=0.0"]
    # Rewrites read the partition value back from the folder: both folders are rewritten here.
    lake.cdc("s.t", [{"Op": "U", "id": 1, "x": -0.0, "v": "changed"}, {"Op": "U", "id": 2, "x": 0.0, "v": "changed"}],
             FLOATING)

    lake.run_ok()

    assert partition_folders(lake, "s.t") == ["x=-0.0", "x=0.0"]
    rows = lake.rows("s.t")
    # DuckDB reads a Parquet folder's partition values as text unless told their type.
    assert [(r["id"], math.copysign(1, float(r["x"]))) for r in rows] == [(i, -1.0 if i % 2 else 1.0) for i in range(1, 7)]
    assert [r["v"] for r in rows] == ["changed", "changed", "n3", "n4", "n5", "n6"]


# value -> its folder name, as Spark (and Hive) escape it: both engines must write exactly these.
ESCAPED = {
    "a/b": "dept=a%2Fb", "x=y": "dept=x%3Dy", "c:d": "dept=c%3Ad", "50%": "dept=50%25", "%2F": "dept=%252F",
    "q?*#": "dept=q%3F%2A%23", "[a]{b}^": "dept=%5Ba%5D%7Bb}%5E", "it's \"x\"": "dept=it%27s %22x%22",
    "back\\slash": "dept=back%5Cslash", "tab\there": "dept=tab%09here", "été ü": "dept=été ü", "a b~!@$&()+,;": "dept=a b~!@$&()+,;",
}
DEPT = pa.schema([("id", pa.int64()), ("dept", pa.string())])


def test_special_characters_in_partition_values_get_spark_folder_names_and_read_back_exactly(lake):
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"])
    values = sorted(ESCAPED)
    lake.load("s.t", [{"Op": "I", "id": i, "dept": value} for i, value in enumerate(values)], DEPT)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "U", "id": i, "dept": value} for i, value in enumerate(values)], DEPT)

    lake.run_ok()  # every file rewritten: the values come back from the folder names

    assert partition_folders(lake, "s.t") == sorted(ESCAPED.values())
    assert [r["dept"] for r in lake.rows("s.t")] == values
    assert [dept for (dept,) in catalog_rows(lake, "s.t", "SELECT dept FROM s.t ORDER BY id")] == values


@pytest.mark.parametrize("value, cause", [
    ("nul\x00byte", "holds a NUL character"),
    ("x" * 300, "folder name of 305 bytes"),
    ("é" * 126, "folder name of 257 bytes"),
    ("/" * 90, "folder name of 275 bytes"),
    ("__HIVE_DEFAULT_PARTITION__", "is the name of Hive's null partition"),
])
def test_a_partition_value_no_folder_name_can_hold_fails_the_table_before_staging(lake, value, cause):
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"])
    lake.load("s.t", [{"Op": "I", "id": 1, "dept": "a"}], DEPT)
    lake.run_ok()
    state, files = lake.state("s.t"), lake.data_files("s.t")
    path = lake.cdc("s.t", [{"Op": "U", "id": 1, "dept": "a"}, {"Op": "I", "id": 2, "dept": value}], DEPT)

    (outcome,) = lake.run().outcomes

    error = outcome.error
    assert outcome.status == "failed"
    assert (error["table"], error["file"], error["column"]) == ("s.t", path, "dept")
    assert cause in error["problem"] and "partition column 'dept'" in error["problem"]
    assert len(error["problem"].splitlines()) == 1 and "transformation rule" in error["remedy"]
    assert lake.state("s.t") == state and lake.data_files("s.t") == files
    assert not lake.unpublished_files("s.t")


def test_iceberg_catalog_views_read_text_partition_values_as_text(tmp_path, engine):
    lake = LakeHarness(tmp_path, engine, "iceberg")
    lake.configure("s.t", primary_key=["region", "id"], partition_key=["region"])
    lake.load("s.t", [{"Op": "I", "region": "123", "id": 1, "v": "a"}, {"Op": "I", "region": "", "id": 2, "v": "b"}],
              REGIONAL)
    lake.run_ok()

    assert catalog_rows(lake, "s.t", "SELECT region, id FROM s.t ORDER BY id") == [("123", 1), ("", 2)]


def test_iceberg_compaction_keeps_null_empty_and_escaped_partition_values(tmp_path, engine):
    from dmscdc_provider.table_formats.maintenance import maintain_table

    lake = LakeHarness(tmp_path, engine, "iceberg")
    lake.configure("s.t", primary_key=["region", "id"], partition_key=["region"])
    for batch, region in enumerate(["", "", "a/b", "a/b", "50%", "50%"]):
        lake.cdc("s.t", [{"Op": "I", "region": region, "id": batch, "v": f"v{batch}"}], REGIONAL)
        lake.run_ok()  # a file per run: small files to compact
    before = lake.rows("s.t", order_by="id")

    report = maintain_table(lake.state("s.t"), lake.lake, lake.iceberg_catalog, lake.store, lake.storage)

    assert (report.files_compacted, report.files_written) == (6, 3)
    assert lake.rows("s.t", order_by="id") == before
    assert [r["region"] for r in before] == ["", "", "a/b", "a/b", "50%", "50%"]
    assert partition_folders(lake, "s.t") == ["region=50%25", "region=__HIVE_DEFAULT_PARTITION__", "region=a%2Fb"]


@pytest.mark.parametrize("float_type", [pa.float64(), pa.float32()], ids=["double", "float"])
def test_floating_partition_values_are_named_as_java_prints_them_and_read_back_exactly(lake, float_type):
    schema = pa.schema([("id", pa.int64()), ("x", float_type), ("v", pa.string())])
    values = [0.1, 1e10, 1.5e-5, 123.25, -2.5]
    lake.configure("s.t", primary_key=["id"], partition_key=["x"])
    lake.load("s.t", [{"Op": "I", "id": i, "x": x, "v": "n"} for i, x in enumerate(values)], schema)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "U", "id": i, "x": x, "v": "changed"} for i, x in enumerate(values)], schema)

    lake.run_ok()  # every file rewritten: the values come back from the folder names

    assert partition_folders(lake, "s.t") == sorted(["x=0.1", "x=1.0E10", "x=1.5E-5", "x=123.25", "x=-2.5"])
    # Read through `dmscdc query`: pyiceberg 0.12 reads a double partition value of a manifest as
    # a 32-bit float (its Cython Avro decoder), which no other reader does.
    stored = pa.array([float(x) for (x,) in catalog_rows(lake, "s.t", "SELECT x FROM s.t ORDER BY id")])
    assert stored.cast(float_type).to_pylist() == pa.array(values).cast(float_type).to_pylist()
