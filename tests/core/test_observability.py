"""Observability (docs/observability.md): the figures of each merge, taken once at its commit point
and carried by the table's LastRun and the Iceberg snapshot summary."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from dmscdc_provider.engines.choice import EngineConfig
from dmscdc_provider.engines.duckdb import DuckDBMergeEngine
from dmscdc_provider.runner import run_source

from tests.core.harness import START, LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])


def item(op, id_, name="n"):
    return {"Op": op, "id": id_, "name": name}


def run_with_cutoff(lake: LakeHarness, cdc_before=None):
    planner = lake.planner(choose_engine=EngineConfig(engine="duckdb").choose)
    result = run_source(planner, lake.engine, lake.storage, cdc_before=cdc_before)
    assert [o.status for o in result.outcomes] == ["succeeded"] * len(result.outcomes), result.outcomes
    return result


def loaded_lake(root, table_format: str) -> LakeHarness:
    lake = LakeHarness(root, DuckDBMergeEngine(memory_limit="256MB", threads=1), table_format)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [item("I", i) for i in range(10)], ITEM)
    run_with_cutoff(lake)
    return lake


@pytest.fixture(params=["parquet", "iceberg"])
def lake(tmp_path, request):
    return loaded_lake(tmp_path, request.param)


def test_a_merge_reports_lag_backlog_rows_by_kind_files_bytes_seconds_and_engine(lake):
    applied_at = lake.tick(60)
    lake.cdc("s.t", [item("U", 1, "x"), item("U", 2, "y"), item("D", 3), item("I", 50)], ITEM, at=applied_at)
    first_pending = lake.cdc("s.t", [item("I", 51)], ITEM, at=lake.tick(60))
    second_pending = lake.cdc("s.t", [item("I", 52), item("I", 53)], ITEM, at=lake.tick(60))
    before = lake.data_files("s.t")

    run_with_cutoff(lake, cdc_before=applied_at + timedelta(seconds=30))

    figures = lake.state("s.t").last_run["figures"]
    committed_at = datetime.fromisoformat(figures["committed_at"])
    assert figures["newest_applied_at"] == applied_at.isoformat()
    assert figures["lag_seconds"] == pytest.approx((committed_at - applied_at).total_seconds(), abs=0.01)
    assert figures["pending_files"] == 2
    assert figures["pending_bytes"] == sum(path_size(p) for p in (first_pending, second_pending))
    assert figures["oldest_pending_at"] == (applied_at + timedelta(seconds=60)).isoformat()
    assert figures["oldest_pending_age_seconds"] == pytest.approx(
        (committed_at - applied_at - timedelta(seconds=60)).total_seconds(), abs=0.01)
    assert (figures["rows_inserted"], figures["rows_updated"], figures["rows_deleted"]) == (1, 2, 1)
    assert figures["files_written"] >= 1 and figures["files_rewritten"] == 1
    assert figures["bytes_written"] == added_bytes(lake, "s.t", before) > 0
    assert figures["merge_seconds"] > 0
    assert figures["engine"] == "duckdb"

    run_with_cutoff(lake)  # applies the rest: nothing is pending any more
    figures = lake.state("s.t").last_run["figures"]
    assert (figures["pending_files"], figures["pending_bytes"], figures["oldest_pending_age_seconds"]) == (0, 0, 0.0)
    assert figures["oldest_pending_at"] is None
    assert figures["newest_applied_at"] == (applied_at + timedelta(seconds=120)).isoformat()


def test_an_iceberg_snapshot_summary_carries_the_figures_of_its_merge(tmp_path):
    lake = loaded_lake(tmp_path, "iceberg")
    lake.cdc("s.t", [item("U", 1, "x"), item("I", 50)], ITEM)
    run_with_cutoff(lake)

    summary = lake.iceberg_table("s.t").current_snapshot().summary
    figures = lake.state("s.t").last_run["figures"]
    assert summary["dmscdc.lag-seconds"] == str(figures["lag_seconds"])
    assert (summary["dmscdc.rows-inserted"], summary["dmscdc.rows-updated"], summary["dmscdc.rows-deleted"]) == (
        "1", "1", "0")
    assert summary["dmscdc.pending-files"] == "0"
    assert summary["dmscdc.engine"] == "duckdb"


def test_a_full_load_counts_later_cdc_files_beyond_its_cutoff_as_pending(tmp_path):
    lake = LakeHarness(tmp_path, DuckDBMergeEngine(memory_limit="256MB", threads=1))
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [item("I", i) for i in range(3)], ITEM, modified=START)
    later = lake.cdc("s.t", [item("I", 9)], ITEM, at=START + timedelta(hours=2))

    run_with_cutoff(lake, cdc_before=START + timedelta(hours=1))

    figures = lake.state("s.t").last_run["figures"]
    assert figures["newest_applied_at"] == START.isoformat()
    assert (figures["pending_files"], figures["pending_bytes"]) == (1, path_size(later))
    assert figures["oldest_pending_at"] == (START + timedelta(hours=2)).isoformat()


def path_size(path: str) -> int:
    return os.path.getsize(path)


def added_bytes(lake: LakeHarness, table: str, before: dict) -> int:
    """Bytes of the data files the table has now that it did not have in ``before``."""
    return sum(os.path.getsize(os.path.join(lake.table_path(table), relative))
               for relative in set(lake.data_files(table)) - set(before))
