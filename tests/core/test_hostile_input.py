"""Hostile input, against every engine: wrong types, null keys and Op, truncated and zero-byte
files. Each fails its table alone, before anything is staged, naming table, file, column and
the cause as the library states it; the table's state and lake files stay as they were."""

from __future__ import annotations

import os
from datetime import datetime, time

import pyarrow as pa
import pytest

from dmscdc_provider.cli import main
from dmscdc_provider.dms_writer import cdc_file_name

from tests.core.harness import LakeHarness, bad_and_good_tables

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])


@pytest.fixture
def lake(tmp_path, engine, table_format):
    return bad_and_good_tables(tmp_path, engine, ITEM, table_format)


def raw_bytes(lake: LakeHarness, data: bytes, extension: str = "parquet") -> str:
    path = os.path.join(lake.table_dir("s.bad"), cdc_file_name(lake.tick(), extension=extension))
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def truncated_parquet(lake):
    path = lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "x"}], ITEM)
    with open(path, "rb") as handle:
        data = handle.read()
    return raw_bytes(lake, data[: len(data) // 2])


# name -> (writes the hostile file and returns its path, words of the cause, column or None)
HOSTILE = {
    "zero_byte_parquet": (lambda lake: raw_bytes(lake, b""), "Parquet file size is 0 bytes", None),
    "truncated_parquet": (truncated_parquet, "magic bytes not found", None),
    "text_named_parquet": (lambda lake: raw_bytes(lake, b"Op,id,name\nI,2,two\n"), "magic bytes not found", None),
    "zero_byte_csv": (lambda lake: raw_bytes(lake, b"", "csv"), "Empty CSV file", None),
    "csv_cut_mid_row": (lambda lake: raw_bytes(lake, b"Op,id,name\nU,1,x\nI,2", "csv"), "Expected 3 columns", None),
    "key_turns_text": (
        lambda lake: lake.cdc("s.bad", [{"Op": "I", "id": "2", "name": "two"}],
                              pa.schema([("id", pa.string()), ("name", pa.string())])),
        "primary key column 'id' is string here but int64", "id"),
    "column_turns_number": (
        lambda lake: lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": 1.5}],
                              pa.schema([("id", pa.int64()), ("name", pa.float64())])),
        "column 'name' is double here but string", "name"),
    "key_column_missing": (
        lambda lake: lake.cdc("s.bad", [{"Op": "I", "name": "two"}], pa.schema([("name", pa.string())])),
        "primary key column 'id' does not exist", "id"),
    "null_key_parquet": (
        lambda lake: lake.cdc("s.bad", [{"Op": "I", "id": None, "name": "x"}], ITEM),
        "primary key column 'id' is null in 1 row(s)", "id"),
    "null_key_csv": (
        lambda lake: lake.cdc("s.bad", [{"Op": "I", "id": None, "name": "x"}], ITEM, extension="csv"),
        "primary key column 'id' is null in 1 row(s)", "id"),
    "null_op_parquet": (
        lambda lake: lake.cdc("s.bad", [{"Op": None, "id": 2, "name": "x"}], ITEM),
        "Op is null in 1 row(s)", "Op"),
    "null_op_csv": (
        lambda lake: lake.cdc("s.bad", [{"Op": "I", "id": 2, "name": "y"}, {"Op": None, "id": 3, "name": "x"}], ITEM,
                              extension="csv"),
        "Op is null in 1 row(s)", "Op"),
    # Athena and Glue match column names case-insensitively: a table cannot hold both spellings.
    "columns_differ_only_in_case_parquet": (
        lambda lake: lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "x", "Name": "y"}],
                              ITEM.append(pa.field("Name", pa.string()))),
        "columns 'name' and 'Name' differ only in case", "Name"),
    "columns_differ_only_in_case_csv": (
        lambda lake: lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "x", "NAME": "y"}],
                              ITEM.append(pa.field("NAME", pa.string())), extension="csv"),
        "columns 'name' and 'NAME' differ only in case", "NAME"),
    "column_spelled_otherwise_than_the_lake": (
        lambda lake: lake.cdc("s.bad", [{"Op": "U", "id": 1, "Name": "x"}],
                              pa.schema([("id", pa.int64()), ("Name", pa.string())])),
        "column 'Name' here and column 'name' in", "Name"),
    "column_spelled_otherwise_than_an_earlier_file": (
        lambda lake: (lake.cdc("s.bad", [{"Op": "I", "id": 2, "note": "x"}],
                               pa.schema([("id", pa.int64()), ("note", pa.string())])),
                      lake.cdc("s.bad", [{"Op": "I", "id": 3, "NOTE": "y"}],
                               pa.schema([("id", pa.int64()), ("NOTE", pa.string())])))[1],
        "column 'NOTE' here and column 'note' in", "NOTE"),
    "key_column_spelled_otherwise": (
        lambda lake: lake.cdc("s.bad", [{"Op": "U", "ID": 1, "name": "x"}],
                              pa.schema([("ID", pa.int64()), ("name", pa.string())])),
        "primary key column 'id' does not exist; the file has 'ID', which differs only in case", "id"),
    # DMS's TIME type: Spark 3.5 cannot read a Parquet TIME column, nor Athena type one.
    "time_of_day_column": (
        lambda lake: lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "x", "opens": time(9, 30)}],
                              ITEM.append(pa.field("opens", pa.time64("us")))),
        "column 'opens' is a time of day (time64[us])", "opens"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_fails_its_table_alone_before_staging(lake, case):
    write, cause, column = HOSTILE[case]
    path = write(lake)
    state = lake.state("s.bad")
    files_before = lake.data_files("s.bad")

    result = lake.run()

    outcomes = {o.table: o for o in result.outcomes}
    error = outcomes["s.bad"].error
    assert outcomes["s.bad"].status == "failed"
    assert (error["table"], error["file"], error["column"]) == ("s.bad", path, column)
    assert cause in error["problem"] and len(error["problem"].splitlines()) == 1
    assert error["remedy"]
    assert lake.state("s.bad") == state and lake.data_files("s.bad") == files_before
    assert not lake.unpublished_files("s.bad")
    assert outcomes["s.good"].succeeded and [r["name"] for r in lake.rows("s.good")] == ["good change"]


def test_a_column_spelled_otherwise_than_the_lake_names_the_lake_file(lake):
    path = lake.cdc("s.bad", [{"Op": "U", "id": 1, "NAME": "x"}],
                    pa.schema([("id", pa.int64()), ("NAME", pa.string())]))
    (lake_file,) = lake.data_files("s.bad")

    error = {o.table: o for o in lake.run().outcomes}["s.bad"].error

    assert error["file"] == path and error["column"] == "NAME"
    assert os.path.join(lake.table_path("s.bad"), lake_file) in error["problem"]
    assert "Athena and Glue match column names case-insensitively" in error["problem"]
    assert "reload-target" in error["remedy"]


def test_a_reload_that_renames_a_column_by_case_rebuilds_a_parquet_table_but_not_an_iceberg_one(
        tmp_path, engine, table_format):
    """After a DMS reload whose LOAD files spell a column ``Name`` instead of ``name``, a full
    refresh replaces a Parquet table's files (only the new spelling remains); an Iceberg table's
    schema keeps the old column, so its rebuild is refused before anything is staged."""
    lake = bad_and_good_tables(tmp_path, engine, ITEM, table_format)
    load = lake.load("s.bad", [{"Op": "I", "id": 1, "Name": "one"}],
                     pa.schema([("id", pa.int64()), ("Name", pa.string())]), modified=lake.tick())
    files_before = lake.data_files("s.bad")

    outcome = {o.table: o for o in lake.run(full_refresh=("s.bad",)).outcomes}["s.bad"]

    if table_format == "parquet":
        assert outcome.succeeded and [(r["id"], r["Name"]) for r in lake.rows("s.bad")] == [(1, "one")]
        assert "name" not in lake.rows("s.bad")[0]
        return
    assert outcome.error["file"] == load and outcome.error["column"] == "Name"
    assert "column 'Name' here and column 'name' in the table's iceberg schema" in outcome.error["problem"]
    assert "drop the table from the Iceberg catalog" in outcome.error["remedy"]
    assert lake.data_files("s.bad") == files_before and not lake.unpublished_files("s.bad")


def test_a_hostile_load_file_fails_the_first_full_load_and_loads_nothing(tmp_path, engine):
    lake = LakeHarness(tmp_path, engine)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM, counter=1)
    zero = os.path.join(lake.table_dir("s.t"), "LOAD00000002.parquet")
    open(zero, "wb").close()

    (outcome,) = lake.run().outcomes

    assert outcome.status == "failed" and outcome.error["file"] == zero
    assert lake.state("s.t").last_full_load_date == "1900-01-01 00:00:00" and lake.rows("s.t") == []


def test_the_remedy_for_an_unreadable_file_a_good_copy_under_the_same_name_is_applied(lake):
    path = raw_bytes(lake, b"")
    assert {o.table: o for o in lake.run().outcomes}["s.bad"].status == "failed"
    lake.cdc("s.bad", [{"Op": "I", "id": 2, "name": "two"}], ITEM, name=os.path.basename(path))
    lake.run_ok()
    assert [r["id"] for r in lake.rows("s.bad")] == [1, 2]


def test_the_cli_shows_a_corrupt_files_cause_in_its_first_lines(lake, capsys):
    path = raw_bytes(lake, b"")
    code = main(["run", "--raw", lake.raw, "--lake", lake.lake, "--state", f"sqlite://{lake.store.path}",
                 "--catalog", os.path.join(lake.root, "c.duckdb")])
    captured = capsys.readouterr()
    assert code == 1
    head = "\n".join((captured.out + captured.err).splitlines()[:20])
    assert "s.bad" in head and path in head and "Parquet file size is 0 bytes" in head


STAMPED = pa.schema([("id", pa.int64()), ("name", pa.string()), ("ts", pa.timestamp("us"))])
AT = datetime(2024, 3, 1, 10, 0, 0)

# name -> (writes the hostile file into s.t and returns its path, words of the cause)
HOSTILE_COMMIT_TIMES = {
    "null_commit_time": (
        lambda lake: lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "x", "ts": None}], STAMPED),
        "commit-time column 'ts' is null in 1 row(s)"),
    "unparsable_commit_time_csv": (
        lambda lake: lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "x", "ts": "yesterday"}],
                              pa.schema([("id", pa.int64()), ("name", pa.string()), ("ts", pa.string())]),
                              extension="csv"),
        "commit-time column 'ts' holds 1 value(s) that are not a timestamp, such as 'yesterday'"),
    "commit_time_missing": (
        lambda lake: lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "x"}], ITEM),
        "commit-time column 'ts' does not exist"),
    "commit_time_a_number": (
        lambda lake: lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "x", "ts": 5}],
                              pa.schema([("id", pa.int64()), ("name", pa.string()), ("ts", pa.int64())])),
        "commit-time column 'ts' is int64, not a timestamp"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_COMMIT_TIMES))
def test_a_null_or_unparsable_commit_time_fails_the_table_naming_file_and_column(tmp_path, engine, case):
    lake = LakeHarness(tmp_path, engine)
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts")
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one", "ts": AT}], STAMPED)
    lake.run_ok()
    write, cause = HOSTILE_COMMIT_TIMES[case]
    path = write(lake)
    state, files_before = lake.state("s.t"), lake.data_files("s.t")

    (outcome,) = lake.run().outcomes

    assert outcome.status == "failed"
    assert (outcome.error["file"], outcome.error["column"]) == (path, "ts")
    assert cause in outcome.error["problem"] and "TimestampColumnName" in outcome.error["remedy"]
    assert lake.state("s.t") == state and lake.data_files("s.t") == files_before
