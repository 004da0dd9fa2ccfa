"""Merge semantics (docs/merge-semantics.md), each rule pinned on every engine that runs here."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmscdc_provider.dms_writer import cdc_file_name, date_folder, load_file_name

from tests.core.harness import LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string()), ("dept", pa.string())])


@pytest.fixture
def lake(tmp_path, engine, table_format):
    return LakeHarness(tmp_path, engine, table_format)


def names(rows):
    return {row["id"]: row["name"] for row in rows}


def item(op, id_, name, dept="a"):
    return {"Op": op, "id": id_, "name": name, "dept": dept}


def test_same_key_burst_in_one_file_resolves_by_row_position(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [item("I", 1, "load")], ITEM)
    lake.cdc("s.t", [item("I", 2, "v1"), item("U", 2, "v2"), item("U", 2, "v3"), item("D", 2, "v3"),
                     item("I", 2, "reborn"), item("U", 1, "x"), item("D", 1, "x")], ITEM)
    lake.run_ok()
    assert names(lake.rows("s.t")) == {2: "reborn"}


@pytest.mark.parametrize("extension", ["parquet", "csv"])
def test_row_position_holds_when_spark_splits_one_file_into_many_tasks(lake, spark, extension):
    """Thousands of same-key changes in one file, read in many tiny splits: the last row wins."""
    lake.configure("s.t", primary_key=["id"])
    changes = []
    for version in range(400):
        for key in range(5):
            changes.append(item("U" if version else "I", key, f"k{key}-v{version:03d}"))
    changes.append(item("D", 4, "gone"))
    lake.cdc("s.t", changes, ITEM, extension=extension, row_group_size=50)
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "2048")
    try:
        lake.run_ok()
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    key = int if extension == "parquet" else str  # DMS CSV carries no types: columns stay strings
    assert names(lake.rows("s.t", order_by="name")) == {key(k): f"k{k}-v399" for k in range(4)}


@pytest.mark.parametrize("extension", ["parquet", "csv"])
def test_tiny_split_setting_really_splits_the_test_file(tmp_path, spark, extension):
    """Guards the test above: with 2 KB splits a Parquet file is read by several tasks, and a
    CSV file would be, but the DMS CSV reader (``multiLine``) reads it whole in one."""
    from dmscdc_spark.io import CsvFormat, read_dms_csv

    path = LakeHarness(tmp_path, engine=None).cdc("s.t", [item("U", k % 5, f"value-{k:05d}") for k in range(2000)], ITEM,
                    extension=extension, row_group_size=50)
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "2048")
    try:
        reader = spark.read.option("header", True)
        frame = reader.csv(path) if extension == "csv" else reader.parquet(path)
        assert frame.rdd.getNumPartitions() > 3
        if extension == "csv":
            assert read_dms_csv(spark, path, CsvFormat()).rdd.getNumPartitions() == 1
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)


def test_every_load_file_is_loaded_past_counter_nine(lake):
    """LOAD0000000A ... LOAD00000011 are LOAD files too: hexadecimal counters."""
    lake.configure("s.t", primary_key=["id"])
    for counter in range(1, 0x12):
        lake.load("s.t", [item("I", counter, load_file_name(counter))], ITEM, counter=counter)
    lake.cdc("s.t", [item("U", 0x0A, "changed after the load")], ITEM)
    result = lake.run_ok()
    assert [f["path"].rsplit("/", 1)[-1] for f in result.report.plans[0].files][8:11] == [
        "LOAD00000009.parquet", "LOAD0000000A.parquet", "LOAD0000000B.parquet"]
    rows = names(lake.rows("s.t"))
    assert len(rows) == 0x11
    assert rows[0x0A] == "changed after the load" and rows[0x10] == "LOAD00000010.parquet"


def test_full_load_applies_the_cdc_files_of_the_same_plan(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [item("I", 1, "one"), item("I", 2, "two"), item("I", 3, "three")], ITEM)
    lake.cdc("s.t", [item("U", 1, "uno"), item("D", 2, "two"), item("I", 4, "four")], ITEM)
    lake.cdc("s.t", [item("D", 4, "four"), item("I", 2, "dos")], ITEM)
    result = lake.run_ok()
    assert result.report.plans[0].mode == "full"
    assert names(lake.rows("s.t")) == {1: "uno", 2: "dos", 3: "three"}
    assert result.outcomes[0].summary["rows_read"] == {"I": 5, "U": 1, "D": 2}


def test_cdc_files_of_different_subsecond_precision_apply_in_time_order(lake):
    lake.configure("s.t", primary_key=["id"])
    # 10:01:01.9 (one digit) is later than 10:01:01.100000 (six digits) and 10:01:01 (none).
    lake.cdc("s.t", [item("U", 1, "last")], ITEM, name="20240301-1001019.parquet")
    lake.cdc("s.t", [item("I", 1, "first")], ITEM, name="20240301-100101.parquet")
    lake.cdc("s.t", [item("U", 1, "middle")], ITEM, name="20240301-100101100000.parquet")
    lake.run_ok()
    assert names(lake.rows("s.t")) == {1: "last"}


def test_date_partitioned_cdc_folders_apply_by_file_time_not_folder_name(lake):
    """DDMMYYYY folders sort 01032024 before 29022024 as text; the file times decide."""
    lake.configure("s.t", primary_key=["id"])
    feb29 = datetime(2024, 2, 29, 23, 59, tzinfo=timezone.utc)
    mar01 = datetime(2024, 3, 1, 0, 1, tzinfo=timezone.utc)
    lake.cdc("s.t", [item("U", 1, "march")], ITEM, at=mar01, folder=date_folder(mar01, "DDMMYYYY"))
    lake.cdc("s.t", [item("I", 1, "february")], ITEM, at=feb29, folder=date_folder(feb29, "DDMMYYYY"))
    lake.run_ok()
    assert names(lake.rows("s.t")) == {1: "march"}
    assert lake.state("s.t").last_incremental_file.endswith(cdc_file_name(mar01))


def test_keyed_table_holds_one_row_per_key_across_batches(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [item("I", i, f"n{i}") for i in range(5)], ITEM)
    lake.run_ok()
    lake.cdc("s.t", [item("U", 1, "u1"), item("I", 7, "new"), item("D", 3, "n3")], ITEM)
    lake.run_ok()
    lake.cdc("s.t", [item("I", 3, "back"), item("U", 7, "new2"), item("I", 1, "reinsert-as-upsert")], ITEM)
    lake.run_ok()
    rows = lake.rows("s.t")
    assert len(rows) == len({r["id"] for r in rows})
    assert names(rows) == {0: "n0", 1: "reinsert-as-upsert", 2: "n2", 3: "back", 4: "n4", 7: "new2"}


def test_composite_key_distinguishes_rows_sharing_one_key_column(lake):
    schema = pa.schema([("region", pa.string()), ("id", pa.int64()), ("name", pa.string())])
    lake.configure("s.t", primary_key=["region", "id"])
    lake.load("s.t", [{"Op": "I", "region": r, "id": 1, "name": f"{r}-1"} for r in ("eu", "us")], schema)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "U", "region": "eu", "id": 1, "name": "eu-changed"},
                     {"Op": "D", "region": "us", "id": 1, "name": "us-1"},
                     {"Op": "I", "region": "us", "id": 2, "name": "us-2"}], schema)
    lake.run_ok()
    rows = lake.rows("s.t", order_by="region, id")
    assert [(r["region"], r["id"], r["name"]) for r in rows] == [("eu", 1, "eu-changed"), ("us", 2, "us-2")]


def test_partition_key_update_moves_the_row_and_leaves_no_copy(lake):
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"])
    lake.load("s.t", [item("I", 1, "one", "a"), item("I", 2, "two", "a"), item("I", 3, "three", "b")], ITEM)
    lake.run_ok()
    lake.cdc("s.t", [item("U", 1, "one", "c")], ITEM)
    lake.run_ok()
    rows = lake.rows("s.t")
    assert [(r["id"], r["dept"]) for r in rows] == [(1, "c"), (2, "a"), (3, "b")]
    assert sorted({part for path in lake.data_files("s.t") for part in path.split("/") if "=" in part}) == [
        "dept=a", "dept=b", "dept=c"]


def test_keyless_table_appends_inserts_and_reports_skipped_updates_and_deletes(lake):
    lake.configure("s.t", partition_key=["dept"])
    lake.load("s.t", [item("I", 1, "one"), item("I", 2, "two")], ITEM)
    lake.run_ok()
    lake.cdc("s.t", [item("I", 1, "one again"), item("U", 2, "changed"), item("D", 1, "one"),
                     item("D", 2, "two")], ITEM)
    result = lake.run_ok()
    summary = result.outcomes[0].summary
    assert summary["skipped"] == {"U": 1, "D": 2}
    assert sorted((r["id"], r["name"]) for r in lake.rows("s.t")) == [(1, "one"), (1, "one again"), (2, "two")]


def test_column_added_later_appears_with_nulls_for_older_rows(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [item("I", 1, "one"), item("I", 2, "two")], ITEM)
    lake.run_ok()
    wider = pa.schema(list(ITEM) + [("color", pa.string())])
    lake.cdc("s.t", [{"Op": "I", "id": 3, "name": "three", "dept": "a", "color": "red"}], wider)
    lake.run_ok()
    rows = lake.rows("s.t")
    assert [(r["id"], r["color"]) for r in rows] == [(1, None), (2, None), (3, "red")]


def test_column_the_source_stops_sending_is_kept(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [item("I", 1, "one"), item("I", 2, "two")], ITEM)
    lake.run_ok()
    narrower = pa.schema([("id", pa.int64()), ("name", pa.string())])
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "uno"}], narrower)
    lake.run_ok()
    rows = lake.rows("s.t")
    assert [(r["id"], r["name"], r["dept"]) for r in rows] == [(1, "uno", None), (2, "two", "a")]


def test_int_column_widened_to_bigint_merges(lake):
    narrow = pa.schema([("id", pa.int32()), ("qty", pa.int32())])
    wide = pa.schema([("id", pa.int32()), ("qty", pa.int64())])
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "qty": 5}, {"Op": "I", "id": 2, "qty": 6}], narrow)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "U", "id": 1, "qty": 2**40}], wide)
    lake.run_ok()
    assert [(r["id"], r["qty"]) for r in lake.rows("s.t")] == [(1, 2**40), (2, 6)]


def test_dms_millisecond_timestamps_and_lake_timestamps_read_together(lake):
    schema = pa.schema([("id", pa.int64()), ("updated", pa.timestamp("ms"))])
    first = datetime(2024, 3, 1, 9, 0, 0, 123000)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "updated": first}, {"Op": "I", "id": 2, "updated": first}], schema)
    lake.run_ok()
    later = first + timedelta(hours=1, milliseconds=5)
    lake.cdc("s.t", [{"Op": "U", "id": 1, "updated": later}], schema)
    lake.run_ok()  # rewrites the lake file (Spark-written micros) together with DMS millis
    assert [(r["id"], r["updated"].replace(tzinfo=None)) for r in lake.rows("s.t")] == [(1, later), (2, first)]


def wall_clock_utc(value: datetime) -> datetime:
    """A timestamp read back as the UTC wall clock: a zone-aware one converted, a naive one as is."""
    return value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)


@pytest.mark.parametrize("lake_zone,change_zone", [(None, "UTC"), ("UTC", None)],
                         ids=["lake_naive_changes_utc", "lake_utc_changes_naive"])
def test_timestamp_changing_time_zone_keeps_its_value_on_a_host_far_from_utc(lake, foreign_host, lake_zone,
                                                                              change_zone):
    """A column that is a timestamp without time zone in the lake and with one (UTC) in a CDC file,
    or the other way round, takes the lake's type and keeps 12:00 as 12:00 on a host in
    America/Sao_Paulo (UTC-3): no cast follows the host's zone (it used to store 09:00, or 15:00)."""
    def schema(zone):
        return pa.schema([("id", pa.int64()), ("updated", pa.timestamp("us", tz=zone))])

    def at(hour, zone):
        moment = datetime(2024, 3, 1, hour, 0)
        return moment.replace(tzinfo=timezone.utc) if zone else moment

    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "updated": at(12, lake_zone)},
                      {"Op": "I", "id": 3, "updated": at(12, lake_zone)}], schema(lake_zone))
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "U", "id": 1, "updated": at(13, change_zone)},
                     {"Op": "I", "id": 2, "updated": at(12, change_zone)}], schema(change_zone))
    lake.run_ok()
    rows = lake.rows("s.t")
    assert [(r["id"], wall_clock_utc(r["updated"])) for r in rows] == [
        (1, datetime(2024, 3, 1, 13, 0)), (2, datetime(2024, 3, 1, 12, 0)), (3, datetime(2024, 3, 1, 12, 0))]
    assert {r["updated"].tzinfo is None for r in rows} == {lake_zone is None}  # the lake's type


DRIFTS = {
    "timestamp_naive_lake_utc_changes": (pa.timestamp("us"), pa.timestamp("us", tz="UTC"),
                                         datetime(2024, 3, 1, 12, 0)),
    "timestamp_utc_lake_naive_changes": (pa.timestamp("us", tz="UTC"), pa.timestamp("us"),
                                         datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)),
    "bigint_lake_int_changes": (pa.int64(), pa.int32(), 7),
    "double_lake_float_changes": (pa.float64(), pa.float32(), 1.5),
    "wider_decimal_lake": (pa.decimal128(12, 2), pa.decimal128(10, 2), Decimal("12.50")),
}


@pytest.mark.parametrize("lake_type,change_type,value", DRIFTS.values(), ids=DRIFTS.keys())
def test_files_a_merge_adds_without_rewriting_any_carry_the_lake_types(lake, lake_type, change_type, value):
    """CDC files that only insert new keys rewrite no lake file; the file they add still carries
    the lake's column type (a narrower or other-zoned DMS type is cast to it), so every file of the
    table has one type per column, as Glue, Iceberg and Spark without mergeSchema read it."""
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "v": value}], pa.schema([("id", pa.int64()), ("v", lake_type)]))
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "I", "id": 2, "v": value}], pa.schema([("id", pa.int64()), ("v", change_type)]))
    lake.run_ok()
    files = lake.data_files("s.t")
    assert len(files) == 2  # the lake file was kept, the changes were added beside it
    types = {path: pq.read_schema(os.path.join(lake.table_path("s.t"), path)).field("v").type for path in files}
    assert set(types.values()) == {lake_type}, types
    assert [(r["id"], r["v"]) for r in lake.rows("s.t")] == [(1, value), (2, value)]


WIDENINGS = {
    "int_to_bigint": (pa.int32(), pa.int64(), 7, "long"),
    "float_to_double": (pa.float32(), pa.float64(), 1.5, "double"),
    "decimal_precision": (pa.decimal128(10, 2), pa.decimal128(12, 2), Decimal("12.50"), "decimal(12, 2)"),
}


@pytest.mark.parametrize("lake_type,change_type,value,iceberg_type", WIDENINGS.values(), ids=WIDENINGS.keys())
def test_a_column_widened_by_new_keys_alone_leaves_one_type_per_column(lake, lake_type, change_type, value,
                                                                       iceberg_type):
    """CDC files that insert only new keys in a wider type: a Parquet folder's older files are
    rewritten in it too (Spark reads a folder in one file's types and fails on an int beside a
    bigint); an Iceberg table promotes its schema and keeps its older files, read through it."""
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "v": value}], pa.schema([("id", pa.int64()), ("v", lake_type)]))
    lake.run_ok()
    (old_file,) = lake.data_files("s.t")
    lake.cdc("s.t", [{"Op": "I", "id": 2, "v": value}], pa.schema([("id", pa.int64()), ("v", change_type)]))
    lake.run_ok()
    files = lake.data_files("s.t")
    types = {path: pq.read_schema(os.path.join(lake.table_path("s.t"), path)).field("v").type for path in files}
    if lake.table_format == "iceberg":
        assert types.pop(old_file) == lake_type and set(types.values()) == {change_type}, types
        assert str(lake.iceberg_table("s.t").schema().find_field("v").field_type) == iceberg_type
    else:
        assert old_file not in files and set(types.values()) == {change_type}, types
    assert [(r["id"], r["v"]) for r in lake.rows("s.t")] == [(1, value), (2, value)]


def test_timestamp_key_in_the_hour_a_host_zone_repeats_is_found_and_replaced(lake, foreign_host):
    """On 2018-02-18 America/Sao_Paulo left summer time: local 23:00-23:59 came twice (01:xxZ, then
    02:xxZ). The changed keys' range must not pass through the host's zone (02:30Z read back as
    01:30Z left the row in place beside its update)."""
    schema = pa.schema([("changed_at", pa.timestamp("us", tz="UTC")), ("name", pa.string())])
    first, second = (datetime(2018, 2, 18, hour, 30, tzinfo=timezone.utc) for hour in (1, 2))
    lake.configure("s.t", primary_key=["changed_at"])
    lake.load("s.t", [{"Op": "I", "changed_at": first, "name": "first"},
                      {"Op": "I", "changed_at": second, "name": "second"}], schema)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "U", "changed_at": second, "name": "second, updated"}], schema)
    lake.run_ok()
    assert [(r["changed_at"], r["name"]) for r in lake.rows("s.t", order_by="changed_at")] == [
        (first, "first"), (second, "second, updated")]


def test_reload_rebuilds_the_table_and_superseded_cdc_never_overwrites_it(lake):
    lake.configure("s.t", primary_key=["id"])
    t0 = lake.clock
    lake.load("s.t", [item("I", 1, "old"), item("I", 2, "old")], ITEM, modified=t0)
    lake.run_ok()
    stale = lake.cdc("s.t", [item("U", 1, "stale change before the reload"), item("I", 9, "stale")], ITEM,
                     at=t0 + timedelta(minutes=1))
    # The DMS task is reloaded: new LOAD files (new LastModified), then CDC keeps arriving.
    reload_at = t0 + timedelta(minutes=5)
    lake.load("s.t", [item("I", 1, "reloaded"), item("I", 3, "reloaded")], ITEM, modified=reload_at)
    lake.cdc("s.t", [item("U", 3, "after reload")], ITEM, at=reload_at + timedelta(minutes=1))
    result = lake.run_ok()
    plan_files = [f for f in result.report.plans[0].files]
    assert result.report.plans[0].mode == "full"
    assert stale not in [f["path"] for f in plan_files]
    assert names(lake.rows("s.t")) == {1: "reloaded", 3: "after reload"}
    lake.run_ok()  # nothing new: the superseded file stays unapplied
    assert names(lake.rows("s.t")) == {1: "reloaded", 3: "after reload"}


def test_order_column_takes_precedence_over_file_order(lake):
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("AR_H_CHANGE_SEQ", pa.string())])
    lake.configure("s.t", primary_key=["id"], order_column="AR_H_CHANGE_SEQ")
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "newest", "AR_H_CHANGE_SEQ": "20240301100000000000000000002"},
                     {"Op": "U", "id": 1, "name": "older", "AR_H_CHANGE_SEQ": "20240301100000000000000000001"}],
             schema)
    lake.run_ok()
    assert names(lake.rows("s.t")) == {1: "newest"}


STAMPED = pa.schema([("id", pa.int64()), ("name", pa.string()), ("ts", pa.timestamp("us"))])


def at(second: int) -> datetime:
    return datetime(2024, 3, 1, 10, 0, second)


def test_commit_time_column_orders_changes_and_file_order_breaks_ties(lake):
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts")
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "committed last", "ts": at(9)},
                     {"Op": "U", "id": 1, "name": "committed first", "ts": at(1)},
                     {"Op": "I", "id": 2, "name": "tie, earlier row", "ts": at(5)},
                     {"Op": "U", "id": 2, "name": "tie, later row", "ts": at(5)}], STAMPED)
    # A later file whose commit time is older loses; a later file at the same time wins.
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "older commit in a later file", "ts": at(3)},
                     {"Op": "U", "id": 2, "name": "tie, later file", "ts": at(5)}], STAMPED)
    lake.run_ok()
    assert names(lake.rows("s.t")) == {1: "committed last", 2: "tie, later file"}


def test_commit_time_column_as_csv_text_orders_as_time(lake):
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("ts", pa.string())])
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts")
    # As text the "T" spelling sorts after the space; as time it is an hour earlier.
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "newest", "ts": "2024-03-01 11:00:00"},
                     {"Op": "U", "id": 1, "name": "older", "ts": "2024-03-01T10:00:00.5"}], schema, extension="csv")
    lake.run_ok()
    assert names(lake.rows("s.t")) == {"1": "newest"}  # CSV carries no types


def test_order_column_takes_precedence_over_the_commit_time_column(lake):
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("ts", pa.timestamp("us")),
                        ("AR_H_CHANGE_SEQ", pa.string())])
    lake.configure("s.t", primary_key=["id"], order_column="AR_H_CHANGE_SEQ", commit_time_column="ts")
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "newest", "ts": at(1), "AR_H_CHANGE_SEQ": "0002"},
                     {"Op": "U", "id": 1, "name": "older", "ts": at(2), "AR_H_CHANGE_SEQ": "0001"}], schema)
    lake.run_ok()
    assert names(lake.rows("s.t")) == {1: "newest"}


NOTED = pa.schema([("id", pa.int64()), ("name", pa.string()), ("dept", pa.string()), ("notes", pa.string())])


def noted(op, id_, name, notes, dept="a"):
    return {"Op": op, "id": id_, "name": name, "dept": dept, "notes": notes}


def notes_of(rows):
    return {row["id"]: (row["name"], row["notes"]) for row in rows}


def test_keep_on_null_keeps_the_lakes_value_when_an_update_carries_null(lake):
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"], keep_on_null=["notes"])
    lake.load("s.t", [noted("I", i, f"n{i}", f"lob {i}") for i in range(1, 6)], NOTED)
    lake.run_ok()
    lake.cdc("s.t", [noted("U", 1, "renamed", None),                      # null: the lake's value stays
                     noted("U", 2, "new lob", "lob 2b"),                  # a value: applied
                     noted("I", 3, "re-inserted", None),                  # an insert keeps its null
                     noted("U", 4, "moved", None, dept="b"),              # a partition move keeps it too
                     noted("I", 6, "new", "lob 6"), noted("U", 6, "new, updated", None),   # earlier change
                     noted("D", 5, "n5", "lob 5"), noted("I", 5, "reborn", None), noted("U", 5, "again", None)],
             NOTED)
    lake.run_ok()
    assert notes_of(lake.rows("s.t")) == {
        1: ("renamed", "lob 1"), 2: ("new lob", "lob 2b"), 3: ("re-inserted", None), 4: ("moved", "lob 4"),
        5: ("again", None), 6: ("new, updated", "lob 6")}
    assert {r["id"]: r["dept"] for r in lake.rows("s.t")}[4] == "b"


def test_keep_on_null_in_a_full_load_keeps_the_load_rows_value(lake):
    lake.configure("s.t", primary_key=["id"], keep_on_null=["notes"])
    lake.load("s.t", [noted("I", 1, "loaded", "lob 1"), noted("I", 2, "loaded", "lob 2")], NOTED)
    lake.cdc("s.t", [noted("U", 1, "updated", None)], NOTED)
    lake.run_ok()
    assert notes_of(lake.rows("s.t")) == {1: ("updated", "lob 1"), 2: ("loaded", "lob 2")}


def test_without_keep_on_null_an_updates_null_is_applied(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [noted("I", 1, "loaded", "lob 1")], NOTED)
    lake.run_ok()
    lake.cdc("s.t", [noted("U", 1, "updated", None)], NOTED)
    lake.run_ok()
    assert notes_of(lake.rows("s.t")) == {1: ("updated", None)}


def test_copy_on_write_rewrites_only_files_holding_changed_keys(lake):
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"])
    lake.load("s.t", [item("I", i, f"n{i}", dept) for dept in "abcd" for i in range(ord(dept) * 10, ord(dept) * 10 + 5)],
              ITEM)
    lake.run_ok()
    before = lake.data_files("s.t")
    assert len(before) == 4
    changed_key = ord("b") * 10 + 1
    lake.cdc("s.t", [item("U", changed_key, "changed", "b")], ITEM)
    result = lake.run_ok()
    after = lake.data_files("s.t")
    untouched = {p: v for p, v in before.items() if "dept=b/" not in p}
    assert all(after[p] == v for p, v in untouched.items()), "files without changed keys must keep bytes and mtime"
    assert not any("dept=b/" in p and p in before for p in after)
    assert result.outcomes[0].summary["files_removed"] == 1


def write_file_with_damaged_data_pages(path: str, rows: list[dict], schema: pa.Schema) -> None:
    """A Parquet file whose footer (schema, min/max statistics) is intact and whose data pages
    are not: reading its footer works, reading any of its values fails."""
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema), path, compression="snappy")
    with open(path, "rb") as handle:
        data = bytearray(handle.read())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[4:footer_start] = b"\xff" * (footer_start - 4)  # keep the leading PAR1 magic
    with open(path, "wb") as handle:
        handle.write(bytes(data))


def test_files_outside_the_changed_key_range_are_judged_by_their_footer_alone(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [item("I", i, f"n{i}") for i in range(1, 6)], ITEM)
    lake.run_ok()
    # Ids 1000-1099 by its footer statistics; its values cannot be read. The change (ids 2 and
    # 7) lies outside that range, so the key scan must skip the file on its footer.
    damaged = os.path.join(lake.table_path("s.t"), "part-damaged.parquet")
    write_file_with_damaged_data_pages(
        damaged, [item("I", i, "far") for i in range(1000, 1100)], pa.schema([("Op", pa.string())] + list(ITEM)))
    lake.cdc("s.t", [item("U", 2, "changed"), item("I", 7, "new")], ITEM)
    result = lake.run_ok()
    os.remove(damaged)
    assert names(lake.rows("s.t")) == {1: "n1", 2: "changed", 3: "n3", 4: "n4", 5: "n5", 7: "new"}
    assert result.outcomes[0].summary["files_removed"] == 1


@pytest.fixture
def without_dynamic_partition_pruning(spark):
    """Spark prunes partitions by itself only when the changed keys are broadcast; without it,
    what prunes is the key range the merge pushes down."""
    setting = "spark.sql.optimizer.dynamicPartitionPruning.enabled"
    spark.conf.set(setting, "false")
    yield
    spark.conf.unset(setting)


def test_partition_column_in_the_key_prunes_partitions_compared_as_numbers(tmp_path, engine,
                                                                          without_dynamic_partition_pruning):
    # A Parquet folder: the damaged file below is part of the table only where a folder is the table.
    lake = LakeHarness(tmp_path, engine)
    schema = pa.schema([("region", pa.int32()), ("id", pa.int64()), ("name", pa.string())])
    lake.configure("s.t", primary_key=["region", "id"], partition_key=["region"])
    lake.load("s.t", [{"Op": "I", "region": r, "id": i, "name": f"{r}-{i}"} for r in (7, 10, 12) for i in (1, 2)],
              schema)
    lake.run_ok()
    # A file no reader can parse, in a partition outside the changed keys' range [7, 10]:
    # the merge succeeds only if that partition folder is pruned, not opened.
    damaged = os.path.join(lake.table_path("s.t"), "region=12", "part-damaged.parquet")
    with open(damaged, "wb") as handle:
        handle.write(b"not parquet")
    # As strings, "7" > "10": a range compared on folder-name strings would match no partition.
    lake.cdc("s.t", [{"Op": "U", "region": 7, "id": 1, "name": "changed"},
                     {"Op": "D", "region": 10, "id": 2, "name": "10-2"}], schema)
    result = lake.run_ok()
    os.remove(damaged)
    rows = lake.rows("s.t", order_by="region, id")
    assert [(r["region"], r["id"], r["name"]) for r in rows] == [
        (7, 1, "changed"), (7, 2, "7-2"), (10, 1, "10-1"), (12, 1, "12-1"), (12, 2, "12-2")]
    assert result.outcomes[0].summary["files_removed"] == 2


def test_lake_layout_is_hive_partitioned_parquet_under_schema_and_table_with_op(lake):
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"])
    lake.load("s.t", [item("I", 1, "one", "a"), item("I", 2, "two", "b")], ITEM)
    lake.run_ok()
    files = lake.data_files("s.t")
    assert files and all(p.endswith(".parquet") and p.split("/")[-2] in ("dept=a", "dept=b") for p in files)
    assert os.path.isdir(os.path.join(lake.lake, "s", "t"))
    assert {r["Op"] for r in lake.rows("s.t")} == {"I"}


def test_csv_files_with_custom_delimiter_and_null_marker(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [item("I", 1, "one"), {"Op": "I", "id": 2, "name": None, "dept": "a"}], ITEM,
              extension="csv", csv_delimiter="|", csv_null_value="<null>")
    lake.cdc("s.t", [item("U", 1, "uno, with comma")], ITEM, extension="csv", csv_delimiter="|",
             csv_null_value="<null>")
    lake.run_ok(csv_delimiter="|", csv_null_value="<null>")
    assert names(lake.rows("s.t", order_by="CAST(id AS INTEGER)")) == {"1": "uno, with comma", "2": None}


def test_load_files_without_op_column_are_inserts(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"id": 1, "name": "one", "dept": "a"}], ITEM, with_op=False)
    lake.run_ok()
    assert [(r["Op"], r["id"]) for r in lake.rows("s.t")] == [("I", 1)]


def test_output_file_count_follows_size_and_uses_every_core():
    from dmscdc_spark.job import output_file_count

    mib = 1024 * 1024
    assert output_file_count(10_000, 128 * mib, 2) == 1  # a tiny change: one file
    assert output_file_count(120 * mib, 128 * mib, 2) == 2  # both cores write
    assert output_file_count(320 * mib, 128 * mib, 2) == 4  # 3 by size, rounded to whole rounds
    assert output_file_count(2000 * mib, 128 * mib, 8) == 16


def test_column_names_with_dots_spaces_and_symbols_are_names_not_expressions(lake):
    """Every role a column can have: key, partition key, ordering column, data."""
    schema = pa.schema([("key.id", pa.int64()), ("dept name", pa.string()), ("seq$no", pa.string()),
                        ("a.b", pa.string()), ("ünï-cöde", pa.int32())])
    lake.configure("s.t", primary_key=["key.id"], partition_key=["dept name"], order_column="seq$no")
    lake.load("s.t", [{"Op": "I", "key.id": i, "dept name": "d x", "seq$no": "0", "a.b": "v", "ünï-cöde": i}
                      for i in (1, 2)], schema)
    lake.cdc("s.t", [{"Op": "U", "key.id": 1, "dept name": "d y", "seq$no": "2", "a.b": "newest", "ünï-cöde": 10},
                     {"Op": "U", "key.id": 1, "dept name": "d x", "seq$no": "1", "a.b": "older", "ünï-cöde": 9}],
             schema)
    lake.run_ok()
    rows = {row["key.id"]: (row["dept name"], row["a.b"], row["ünï-cöde"]) for row in lake.rows("s.t", '"key.id"')}
    assert rows == {1: ("d y", "newest", 10), 2: ("d x", "v", 2)}


def test_a_partition_key_that_is_a_timestamp_with_time_zone_merges_and_reads_back(lake):
    schema = pa.schema([("id", pa.int64()), ("at", pa.timestamp("ms", tz="UTC"))])
    first, second = (datetime(2024, 3, 1, 9, 30, 0, 1000, tzinfo=timezone.utc),
                     datetime(1999, 12, 31, 23, tzinfo=timezone.utc))
    lake.configure("s.t", primary_key=["id"], partition_key=["at"])
    lake.load("s.t", [{"Op": "I", "id": 1, "at": first}, {"Op": "I", "id": 2, "at": first}], schema)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "U", "id": 2, "at": second}], schema)  # a partition move reads the folder's value
    lake.run_ok()
    # A Parquet folder's readers get the folder text, the instant in UTC; an Iceberg table's the instant.
    read = {row["id"]: row["at"] for row in lake.rows("s.t")}
    assert {key: value if isinstance(value, datetime) else datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
            for key, value in read.items()} == {1: first, 2: second}
