"""What only the in-process engine has: bounded memory with spilling, its settings, and output
files sized like the Spark engine's. The merge rules themselves are pinned for every engine
in test_merge_semantics.py and friends."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmscdc_provider.engines import make_engine
from dmscdc_provider.engines.duckdb import DuckDBMergeEngine

from tests.core.harness import LakeHarness

ROW = pa.schema([("id", pa.int64()), ("name", pa.string()), ("pad", pa.string())])
ROWS = 60_000


def wide_row(op: str, key: int, name: str) -> dict:
    return {"Op": op, "id": key, "name": name, "pad": f"{key:08d}" * 16}


def loaded_lake(tmp_path, engine) -> LakeHarness:
    """A lake table of 60,000 wide rows, then a CDC file updating every second one."""
    lake = LakeHarness(tmp_path, DuckDBMergeEngine())
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [wide_row("I", key, "loaded") for key in range(ROWS)], ROW)
    lake.run_ok()
    lake.cdc("s.t", [wide_row("U", key, "updated") for key in range(0, ROWS, 2)], ROW)
    lake.engine = engine
    return lake


def test_merge_larger_than_the_memory_limit_completes_by_spilling(tmp_path):
    spill = tmp_path / "spill"
    lake = loaded_lake(tmp_path / "lake", DuckDBMergeEngine(memory_limit="24MB", temp_directory=str(spill), threads=1))
    lake.run_ok()
    rows = lake.rows("s.t")
    assert len(rows) == ROWS
    assert {r["name"] for r in rows if r["id"] % 2 == 0} == {"updated"}
    assert {r["name"] for r in rows if r["id"] % 2 == 1} == {"loaded"}


def test_merge_that_cannot_fit_the_memory_limit_fails_with_one_clear_line_and_changes_nothing(tmp_path):
    lake = loaded_lake(tmp_path, DuckDBMergeEngine(memory_limit="4MB", threads=1))
    before_files, before_state = lake.data_files("s.t"), lake.state("s.t")
    (outcome,) = lake.run().outcomes
    assert outcome.status == "failed"
    problem = outcome.error["problem"]
    assert problem.startswith("the merge needs more memory than the duckdb engine's memory_limit 4MB")
    assert "\n" not in problem
    assert "memory_limit" in outcome.error["remedy"]
    assert lake.data_files("s.t") == before_files
    assert lake.state("s.t").version == before_state.version
    assert not os.path.exists(os.path.join(lake.lake, "_dmscdc_staging", "s", "t")) or not any(
        files for _, _, files in os.walk(os.path.join(lake.lake, "_dmscdc_staging", "s", "t")))


def test_settings_from_the_command_line_reach_duckdb(tmp_path):
    engine = make_engine("duckdb", memory_limit="300MB", threads="1", temp_directory=str(tmp_path))
    with engine._connect(str(tmp_path)) as connection:
        settings = dict(connection.sql(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('memory_limit', 'threads', 'temp_directory', 'autoload_known_extensions')").fetchall())
    assert settings["threads"] == "1"
    assert settings["temp_directory"] == str(tmp_path)
    assert settings["autoload_known_extensions"] == "false"
    assert settings["memory_limit"].startswith("286")  # 300 MB as DuckDB prints it, in MiB


@pytest.mark.parametrize("max_records, target_bytes, files", [(25_000, 1 << 30, 3), (10**9, 200_000, None)])
def test_output_files_split_past_the_record_limit_and_the_target_size(tmp_path, max_records, target_bytes, files):
    lake = LakeHarness(tmp_path, DuckDBMergeEngine())
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [wide_row("I", key, "loaded") for key in range(ROWS)], ROW)
    plan = lake.planner().plan().plans[0]
    engine_plan = dict(plan.engine_plan(f"{plan.plan_id}-sizing"), max_records_per_file=max_records,
                       target_file_bytes=target_bytes)
    result = DuckDBMergeEngine().run(engine_plan)
    assert result["status"] == "succeeded" and result["rows_written"] == ROWS
    sizes = [pq.ParquetFile(os.path.join(engine_plan["staging_path"], f["path"])).metadata.num_rows
             for f in result["files_added"]]
    assert sum(sizes) == ROWS
    if files is not None:
        assert len(sizes) == files and max(sizes) <= max_records
    else:  # about target_bytes each: every file but the last reached it
        assert len(sizes) > 1
        assert all(f["bytes"] >= target_bytes for f in result["files_added"][:-1])


def test_csv_quoted_values_keep_quotes_delimiters_newlines_and_empty_strings(tmp_path):
    """DMS CSV is RFC 4180: quoted fields may hold the delimiter, doubled quotes and newlines;
    the null marker is null, an empty field is the empty string (columns stay strings)."""
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    lake = LakeHarness(tmp_path, DuckDBMergeEngine())
    lake.configure("s.t", primary_key=["id"])
    values = {1: 'say "hi"', 2: "a,b", 3: "line one\nline two", 4: "", 5: None}
    lake.cdc("s.t", [{"Op": "I", "id": key, "name": value} for key, value in values.items()], schema,
             extension="csv")
    lake.run_ok()
    rows = lake.rows("s.t", order_by="CAST(id AS INTEGER)")
    assert {r["id"]: r["name"] for r in rows} == {str(k): v for k, v in values.items()}


@pytest.fixture
def one_file_per_group(monkeypatch):
    """Every row group its own group, as inputs larger than the group size are read."""
    monkeypatch.setattr("dmscdc_provider.engines.duckdb.REWRITE_GROUP_BYTES", 1)


def test_input_read_in_several_groups_still_writes_one_file_per_partition(tmp_path, one_file_per_group):
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("dept", pa.string())])
    lake = LakeHarness(tmp_path, DuckDBMergeEngine())
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"])
    for counter in range(1, 4):
        lake.load("s.t", [{"Op": "I", "id": counter * 10 + i, "name": "load", "dept": "ab"[i % 2]} for i in range(4)],
                  schema, counter=counter, row_group_size=2)  # and each file read in two pieces
    lake.cdc("s.t", [{"Op": "U", "id": 11, "name": "changed", "dept": "c"}, {"Op": "D", "id": 20, "name": "", "dept": "a"}],
             schema)
    lake.run_ok()
    assert sorted(p.split("/")[0] for p in lake.data_files("s.t")) == ["dept=a", "dept=b", "dept=c"]
    rows = {r["id"]: (r["name"], r["dept"]) for r in lake.rows("s.t")}
    assert len(rows) == 11 and rows[11] == ("changed", "c") and 20 not in rows


def test_rewrite_of_several_groups_of_lake_files_keeps_every_surviving_row(tmp_path, one_file_per_group):
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    lake = LakeHarness(tmp_path, DuckDBMergeEngine())
    lake.configure("s.t", primary_key=["id"])
    for batch in range(3):  # three runs: three lake files
        lake.cdc("s.t", [{"Op": "I", "id": batch * 10 + i, "name": "first"} for i in range(5)], schema)
        lake.run_ok()
    assert len(lake.data_files("s.t")) == 3
    lake.cdc("s.t", [{"Op": "U", "id": key, "name": "changed"} for key in (1, 12, 23)] + [
        {"Op": "D", "id": 4, "name": ""}], schema)
    result = lake.run_ok()
    assert result.outcomes[0].summary["files_removed"] == 3
    rows = {r["id"]: r["name"] for r in lake.rows("s.t")}
    assert rows == {**{k: "first" for b in range(3) for k in range(b * 10, b * 10 + 5) if k != 4},
                    1: "changed", 12: "changed", 23: "changed"}


def test_gzipped_csv_files_are_read_like_plain_ones(tmp_path):
    import gzip
    import shutil

    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    lake = LakeHarness(tmp_path, DuckDBMergeEngine())
    lake.configure("s.t", primary_key=["id"])
    plain = lake.cdc("s.t", [{"Op": "I", "id": 1, "name": "one"}, {"Op": "I", "id": 2, "name": None}], schema,
                     extension="csv")
    with open(plain, "rb") as source, gzip.open(plain + ".gz", "wb") as target:
        shutil.copyfileobj(source, target)
    os.remove(plain)
    lake.run_ok()
    assert {r["id"]: r["name"] for r in lake.rows("s.t", order_by="id")} == {"1": "one", "2": None}


def test_empty_load_file_loads_an_empty_table(tmp_path):
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    lake = LakeHarness(tmp_path, DuckDBMergeEngine())
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [], schema)
    (outcome,) = lake.run_ok().outcomes
    assert outcome.summary["rows_written"] == 0 and lake.data_files("s.t") == {}
