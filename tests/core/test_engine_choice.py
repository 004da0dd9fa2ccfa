"""``auto``: each table's engine is chosen at planning time from the bytes its merge reads,
estimated from real Parquet footers (never from the data)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmscdc_provider.engines.choice import (
    DEFAULT_INPROCESS_MAX_BYTES, EngineConfig, RunEngines, parse_size)
from dmscdc_provider.engines.read_estimate import estimate_read_bytes

from tests.core.harness import LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])
PAIR = pa.schema([("region", pa.int32()), ("id", pa.int64()), ("name", pa.string())])


def items(ids, op="I"):
    return [{"Op": op, "id": i, "name": f"item {i}"} for i in ids]


def write_lake_file(lake: LakeHarness, table: str, name: str, rows: list[dict], schema=ITEM) -> int:
    """A lake file as an engine writes it (no Op filtering needed for footers); returns its size."""
    path = os.path.join(lake.table_path(table), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, pa.schema([("Op", pa.string()), *schema])), path)
    return os.path.getsize(path)


def incremental_table(lake: LakeHarness, table="s.t") -> dict[str, int]:
    """A table loaded once, whose lake holds three files of ids 0-999, 1000-1999, 2000-2999."""
    lake.configure(table, primary_key=["id"])
    lake.load(table, items(range(3000)), ITEM)
    state = lake.state(table)
    lake.store.update(state.path, last_full_load_date="2100-01-01 00:00:00")
    return {name: write_lake_file(lake, table, name, items(range(start, start + 1000)))
            for name, start in (("part-0.parquet", 0), ("part-1.parquet", 1000), ("part-2.parquet", 2000))}


def plan_of(lake: LakeHarness, config: EngineConfig, table="s.t"):
    (plan,) = lake.planner(table, choose_engine=config.choose).plan().plans
    return plan


def test_incremental_counts_only_the_lake_files_whose_footer_key_range_meets_the_changes(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    sizes = incremental_table(lake)
    cdc = lake.cdc("s.t", items([2500, 2600], "U") + items([3000]), ITEM)

    (plan,) = lake.planner("s.t").plan().plans
    estimate = estimate_read_bytes(plan)

    # ids 2500..3000 meet only part-2 (2000..2999); part-0 and part-1 are judged by their footers.
    assert (estimate.lake_files_read, estimate.lake_files) == (1, 3)
    assert estimate.lake_bytes == sizes["part-2.parquet"]
    assert estimate.planned_bytes == os.path.getsize(cdc)
    assert estimate.total == os.path.getsize(cdc) + sizes["part-2.parquet"]


def test_changes_spanning_the_key_range_count_every_lake_file(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    sizes = incremental_table(lake)
    lake.cdc("s.t", items([5], "U") + items([2999], "D"), ITEM)

    (plan,) = lake.planner("s.t").plan().plans
    estimate = estimate_read_bytes(plan)

    assert estimate.lake_files_read == 3 and estimate.lake_bytes == sum(sizes.values())


def test_key_ranges_combine_over_every_cdc_file_of_the_plan(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    sizes = incremental_table(lake)
    lake.cdc("s.t", items([1500], "U"), ITEM)
    lake.cdc("s.t", items([2500], "U"), ITEM)

    (plan,) = lake.planner("s.t").plan().plans

    assert estimate_read_bytes(plan).lake_bytes == sizes["part-1.parquet"] + sizes["part-2.parquet"]


def test_a_composite_key_excludes_a_file_disjoint_in_any_key_column(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    lake.configure("s.t", primary_key=["region", "id"])
    lake.load("s.t", [{"Op": "I", "region": 1, "id": 1, "name": "a"}], PAIR)
    lake.store.update(lake.state("s.t").path, last_full_load_date="2100-01-01 00:00:00")
    rows = lambda region: [{"Op": "I", "region": region, "id": i, "name": "a"} for i in range(100)]  # noqa: E731
    write_lake_file(lake, "s.t", "part-0.parquet", rows(1), PAIR)
    second = write_lake_file(lake, "s.t", "part-1.parquet", rows(2), PAIR)
    # Same ids, other region: only the region column tells the files apart.
    lake.cdc("s.t", [{"Op": "U", "region": 2, "id": 5, "name": "b"}], PAIR)

    (plan,) = lake.planner("s.t").plan().plans
    estimate = estimate_read_bytes(plan)

    assert (estimate.lake_files_read, estimate.lake_bytes) == (1, second)


def test_a_partition_folder_outside_the_changed_keys_is_not_counted(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    lake.configure("s.t", primary_key=["region", "id"], partition_key=["region"])
    lake.load("s.t", [{"Op": "I", "region": 1, "id": 1, "name": "a"}], PAIR)
    lake.store.update(lake.state("s.t").path, last_full_load_date="2100-01-01 00:00:00")
    rows = [{"Op": "I", "id": i, "name": "a"} for i in range(100)]  # region lives in the folder name
    write_lake_file(lake, "s.t", "region=1/part-0.parquet", rows)
    second = write_lake_file(lake, "s.t", "region=2/part-0.parquet", rows)
    lake.cdc("s.t", [{"Op": "U", "region": 2, "id": 5, "name": "b"}], PAIR)

    (plan,) = lake.planner("s.t").plan().plans
    estimate = estimate_read_bytes(plan)

    assert (estimate.lake_files_read, estimate.lake_files, estimate.lake_bytes) == (1, 2, second)


def test_a_csv_cdc_file_has_no_footer_so_every_lake_file_counts(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    sizes = incremental_table(lake)
    lake.cdc("s.t", items([2500], "U"), ITEM, extension="csv")

    (plan,) = lake.planner("s.t").plan().plans

    assert estimate_read_bytes(plan).lake_bytes == sum(sizes.values())


def test_a_full_load_reads_its_load_files_and_never_the_lake(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    lake.configure("s.t", primary_key=["id"])
    first = lake.load("s.t", items(range(500)), ITEM, counter=1)
    second = lake.load("s.t", items(range(500, 1000)), ITEM, counter=2)
    write_lake_file(lake, "s.t", "part-0.parquet", items(range(1000)))  # an earlier load's lake

    (plan,) = lake.planner("s.t").plan().plans
    estimate = estimate_read_bytes(plan)

    assert plan.mode == "full"
    assert estimate.total == os.path.getsize(first) + os.path.getsize(second)
    assert estimate.lake_files is None


def test_a_table_without_a_key_only_appends_so_no_lake_file_counts(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    incremental_table(lake)
    lake.configure("s.t", primary_key=[])
    cdc = lake.cdc("s.t", items([2500]), ITEM)

    (plan,) = lake.planner("s.t").plan().plans

    assert estimate_read_bytes(plan).total == os.path.getsize(cdc)


def test_auto_chooses_duckdb_under_the_threshold_and_the_spark_engine_otherwise(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    sizes = incremental_table(lake)
    cdc = os.path.getsize(lake.cdc("s.t", items([2500], "U"), ITEM))
    needed = cdc + sizes["part-2.parquet"]

    small = plan_of(lake, EngineConfig(spark_engine="glue", inprocess_max_bytes=needed + 1))
    large = plan_of(lake, EngineConfig(spark_engine="glue", inprocess_max_bytes=needed))

    assert small.engine == "duckdb"
    assert small.engine_reason.startswith("auto: ") and "in 1 of 3 lake files" in small.engine_reason
    assert "under the in-process limit" in small.engine_reason
    assert large.engine == "glue" and "not under the in-process limit" in large.engine_reason
    assert small.plan_id == large.plan_id  # the choice is not part of what the plan merges


def test_the_estimate_stops_reading_footers_once_past_the_threshold(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    incremental_table(lake)
    lake.cdc("s.t", items([5], "U") + items([2999], "U"), ITEM)

    (plan,) = lake.planner("s.t").plan().plans
    estimate = estimate_read_bytes(plan, stop_above=1)

    assert estimate.stopped_early and estimate.lake_files_read == 0
    assert plan_of(lake, EngineConfig(inprocess_max_bytes=1)).engine_reason.startswith("auto: more than ")


def test_a_configured_engine_is_recorded_for_every_table(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", items(range(10)), ITEM)

    plan = plan_of(lake, EngineConfig(engine="emr_serverless"))

    assert (plan.engine, plan.engine_reason) == ("emr_serverless", "engine emr_serverless configured")
    assert plan.to_dict()["engine"] == "emr_serverless"


@pytest.mark.parametrize(("config", "message"), [
    ({"engine": "spark"}, "unknown engine 'spark'"),
    ({"spark_engine": "duckdb"}, "unknown Spark engine 'duckdb'"),
    ({"engine": "glue", "spark_engine": "emr"}, "spark_engine 'emr' is for engine auto"),
    ({"engine": "duckdb", "spark_settings": {"role_arn": "x"}}, "engine duckdb runs no Spark"),
    ({"engine": "glue", "duckdb_settings": {"memory_limit": "1GB"}}, "never merges in-process"),
])
def test_engine_configs_that_would_leave_an_option_unused_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**config)


def test_auto_runs_build_duckdb_and_the_spark_engine_each_with_its_own_settings():
    made = []
    config = EngineConfig(spark_engine="glue", spark_settings={"role_arn": "r"},
                          duckdb_settings={"memory_limit": "1GB"})

    RunEngines(config, make=lambda name, **settings: made.append((name, settings)) or name)

    assert made == [("duckdb", {"memory_limit": "1GB"}), ("glue", {"role_arn": "r"})]
    assert EngineConfig().engines == ("duckdb", "local")
    assert EngineConfig(engine="glue").engines == ("glue",)


def test_sizes_read_as_bytes_with_decimal_and_binary_units():
    assert parse_size("1GiB") == DEFAULT_INPROCESS_MAX_BYTES == 2**30
    assert (parse_size("512MB"), parse_size("1.5 KiB"), parse_size("2048"), parse_size(7)) == (
        512 * 10**6, 1536, 2048, 7)
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
