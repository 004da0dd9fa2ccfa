"""Observability (docs/observability.md): the figures of each merge, taken once at its commit point
and carried by the table's LastRun and the Iceberg snapshot summary."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from dmscdc_provider.dms_writer import cdc_file_name, load_file_name
from dmscdc_provider.engines.choice import EngineConfig
from dmscdc_provider.engines.duckdb import DuckDBMergeEngine
from dmscdc_provider.observability.figures import describe_figures
from dmscdc_provider.runner import run_source

from tests.core.harness import START, LakeHarness
from tests.core.test_dms_csv import write_raw

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
    assert figures["newest_commit_at"] is None  # no commit-time column: lag runs from the file's time
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


def history(lake: LakeHarness) -> list[dict]:
    """The lake's run history as Athena or DuckDB reads it (Hive ``day`` partitions), oldest first."""
    import duckdb

    from dmscdc_provider.observability.runs import runs_glob

    cursor = duckdb.execute(f"SELECT * FROM read_parquet('{runs_glob(lake.lake)}', hive_partitioning = true) "
                            "ORDER BY recorded_at")
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def test_every_merge_appends_one_record_to_the_run_history_partitioned_by_day(lake):
    lake.cdc("s.t", [item("U", 1, "x"), item("D", 2)], ITEM)
    run_with_cutoff(lake)

    records = history(lake)
    assert [(r["table"], r["status"], r["mode"]) for r in records] == [
        ("s.t", "succeeded", "full"), ("s.t", "succeeded", "incremental")]
    last, figures = records[-1], lake.state("s.t").last_run["figures"]
    assert str(last["day"]) == figures["committed_at"][:10]
    assert last["committed_at"] == datetime.fromisoformat(figures["committed_at"])
    assert (last["lag_seconds"], last["rows_updated"], last["rows_deleted"], last["pending_files"]) == (
        figures["lag_seconds"], 1, 1, 0)
    assert last["engine"] == "duckdb" and last["attempt_id"] == lake.state("s.t").last_run["attempt_id"]
    assert last["last_incremental_file"] == lake.state("s.t").last_incremental_file


def test_dmscdc_query_reads_the_run_history_and_table_views_do_not_see_it(tmp_path, capsys):
    from dmscdc_provider.catalog import query
    from dmscdc_provider.cli import main

    lake = LakeHarness(tmp_path, None)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [item("I", i) for i in range(3)], ITEM)
    catalog = str(tmp_path / "catalog.duckdb")
    common = ["--raw", lake.raw, "--state", f"sqlite://{lake.store.path}", "--lake", lake.lake, "--catalog", catalog]
    assert main(["run", *common]) == 0
    lake.cdc("s.t", [item("D", 1)], ITEM)
    assert main(["run", *common]) == 0
    capsys.readouterr()

    assert main(["query", "--catalog", catalog, "select status, rows_deleted, engine from _dmscdc.runs "
                 "where \"table\" = 's.t' order by recorded_at"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()[2:4]] == [
        ["succeeded", "0", "duckdb"], ["succeeded", "1", "duckdb"]]
    assert query(catalog, "select count(*) from s.t")[1] == [(2,)]


def test_a_failed_merge_is_recorded_with_its_problem_and_no_figures(lake):
    path = lake.cdc("s.t", [item("U", 1, "x")], ITEM)
    with open(path, "wb") as handle:
        handle.write(b"not parquet at all")

    planner = lake.planner(choose_engine=EngineConfig(engine="duckdb").choose)
    [outcome] = run_source(planner, lake.engine, lake.storage).outcomes

    assert outcome.status == "failed"
    last = history(lake)[-1]
    assert (last["status"], last["committed_at"], last["lag_seconds"]) == ("failed", None, None)
    assert "not a Parquet file" in last["problem"]


def test_repeating_a_committed_plan_does_not_add_a_second_record(lake):
    from dmscdc_provider.runner import run_table

    lake.cdc("s.t", [item("U", 1, "x")], ITEM)
    report = lake.planner(choose_engine=EngineConfig(engine="duckdb").choose).plan()
    [plan] = report.plans
    assert run_table(plan, lake.engine, lake.store, lake.storage).succeeded
    again = run_table(plan, lake.engine, lake.store, lake.storage)

    assert again.note == "already committed by an earlier attempt"
    assert [r["status"] for r in history(lake)] == ["succeeded", "succeeded"]


def test_a_run_history_that_cannot_be_written_leaves_the_merge_committed_and_says_so(lake, monkeypatch, caplog):
    original = lake.storage.write_bytes

    def refuse_history(path, data, content_type="application/octet-stream"):
        if "/_dmscdc/runs/" in path:
            raise PermissionError(f"{path}: access denied")
        original(path, data, content_type)

    monkeypatch.setattr(lake.storage, "write_bytes", refuse_history)
    lake.cdc("s.t", [item("U", 1, "x")], ITEM)

    run_with_cutoff(lake)

    assert lake.state("s.t").last_run["figures"]["rows_updated"] == 1
    assert {r["id"]: r["name"] for r in lake.rows("s.t")}[1] == "x"
    assert "s.t: the run history record could not be written" in caplog.text
    assert "access denied" in caplog.text and "(succeeded) stands" in caplog.text


def status(lake: LakeHarness, capsys, *options) -> tuple[int, str]:
    from dmscdc_provider.cli import main

    code = main(["status", "--raw", lake.raw, "--state", f"sqlite://{lake.store.path}", *options])
    return code, capsys.readouterr().out


def test_status_says_per_table_lag_backlog_and_how_far_behind_and_fails_over_the_objective(tmp_path, capsys):
    lake = loaded_lake(tmp_path, "parquet")
    lake.configure("s.quiet", primary_key=["id"])
    lake.load("s.quiet", [item("I", 1)], ITEM)
    lake.configure("s.off", active=False)
    lake.load("s.off", [item("I", 1)], ITEM)
    applied_at = lake.tick(60)
    lake.cdc("s.t", [item("U", 1, "x")], ITEM, at=applied_at)
    pending = lake.cdc("s.t", [item("U", 2, "y")], ITEM, at=lake.tick(60))
    run_with_cutoff(lake, cdc_before=applied_at + timedelta(seconds=1))

    code, out = status(lake, capsys, "--json")
    by_table = {d["table"]: d for d in json.loads(out)}
    assert code == 0  # no objective given
    t = by_table["s.t"]
    assert (t["pending_files"], t["pending_bytes"]) == (1, os.path.getsize(pending))
    assert t["oldest_pending_at"] == (applied_at + timedelta(seconds=60)).isoformat()
    assert t["behind_seconds"] > 3600 * 24  # the pending file was written in 2024
    assert t["lag_seconds"] == lake.state("s.t").last_run["figures"]["lag_seconds"]
    assert (t["engine"], t["last_result"], t["table_format"]) == ("duckdb", "succeeded", "parquet")
    assert t["last_incremental_file"].endswith(os.path.basename(lake.state("s.t").last_incremental_file))
    quiet = by_table["s.quiet"]
    assert (quiet["pending_files"], quiet["behind_seconds"]) == (0, 0.0)
    assert not by_table["s.off"]["active"]

    code, out = status(lake, capsys, "--freshness-slo", "s.quiet=1m", "--freshness-slo", "2h")
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert code == 1
    assert lines["s.t"].endswith("OVER SLO") and " 2h00m " in lines["s.t"] and "1 (" in lines["s.t"]
    assert "OVER SLO" not in lines["s.quiet"] and " 1m00s " in lines["s.quiet"]
    assert lines["s.off"].rstrip().endswith("inactive")

    code, _ = status(lake, capsys, "--freshness-slo", "s.quiet=1m", "--tables", "s.quiet")
    assert code == 0


def test_status_rejects_a_duration_it_cannot_read(tmp_path, capsys):
    lake = loaded_lake(tmp_path, "parquet")
    from dmscdc_provider.cli import main

    assert main(["status", "--raw", lake.raw, "--state", f"sqlite://{lake.store.path}",
                 "--freshness-slo", "s.*=soon"]) == 2
    assert "--freshness-slo: 'soon' is not a duration" in capsys.readouterr().err


def test_reading_the_history_takes_the_days_asked_for_and_skips_a_record_being_written(lake):
    from dmscdc_provider.observability.runs import read_runs, runs_root

    lake.cdc("s.t", [item("U", 1, "x")], ITEM)
    run_with_cutoff(lake)
    today = datetime.now().astimezone().strftime("%Y-%m-%d")
    old_day = os.path.join(runs_root(lake.lake), "day=2000-01-01")
    os.makedirs(old_day)
    with open(os.path.join(old_day, "x.parquet"), "wb") as handle:
        handle.write(b"not read: older than asked")
    day_folder = os.path.join(runs_root(lake.lake), sorted(os.listdir(runs_root(lake.lake)))[-1])
    with open(os.path.join(day_folder, "y.parquet.123.partial"), "wb") as handle:
        handle.write(b"half a record")

    records = read_runs(lake.lake, "2001-01-01")

    assert [(r["table"], r["mode"]) for r in records] == [("s.t", "full"), ("s.t", "incremental")]
    assert read_runs(lake.lake, "2001-01-01", {"s.other"}) == []
    assert read_runs(str(lake.root) + "/no-lake", today) == []


TIMED = pa.schema([("id", pa.int64()), ("name", pa.string()), ("ts", pa.timestamp("us"))])
COMMITTED = datetime(2024, 2, 1, 8, 0, 0)  # a day and more before the files' times (START on)


def committed(minutes: int) -> datetime:
    return COMMITTED + timedelta(minutes=minutes)


def assert_lag_from_commit_time(lake: LakeHarness, table: str, newest: datetime) -> None:
    figures = lake.state(table).last_run["figures"]
    newest = newest.replace(tzinfo=timezone.utc)
    assert figures["newest_commit_at"] == newest.isoformat()
    committed_at = datetime.fromisoformat(figures["committed_at"])
    assert figures["lag_seconds"] == pytest.approx((committed_at - newest).total_seconds(), abs=0.01)
    assert "(commit time minus the newest source commit time)" in describe_figures(table, figures)


def test_with_a_commit_time_column_lag_runs_from_the_newest_source_commit_time(tmp_path, engine):
    """CSV text times (LOAD and CDC files) and Parquet timestamps, on each engine; the newest
    commit time need not be in the last row or the last file."""
    lake = LakeHarness(tmp_path, engine)
    lake.configure("s.text", primary_key=["id"], commit_time_column="ts")
    lake.configure("s.typed", primary_key=["id"], commit_time_column="ts")
    write_raw(lake, "s.text", load_file_name(1, "csv"), f"id,name,ts\n1,a,{committed(5)}\n2,b,{committed(1)}\n")
    lake.run_ok()
    assert_lag_from_commit_time(lake, "s.text", committed(5))

    write_raw(lake, "s.text", cdc_file_name(lake.tick(), extension="csv"),
              f"Op,id,name,ts\nU,1,x,{committed(30)}.250000\nU,2,y,{committed(20)}\n")
    lake.cdc("s.typed", [{"Op": "I", "id": 1, "name": "a", "ts": committed(40)},
                         {"Op": "U", "id": 1, "name": "b", "ts": committed(10)}], TIMED)
    lake.run_ok()
    assert_lag_from_commit_time(lake, "s.text", committed(30) + timedelta(milliseconds=250))
    assert_lag_from_commit_time(lake, "s.typed", committed(40))


def test_zone_aware_commit_times_count_as_the_instants_they_are(tmp_path):
    lake = LakeHarness(tmp_path, DuckDBMergeEngine(memory_limit="256MB", threads=1))
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts")
    berlin = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us", tz="Europe/Berlin"))])
    lake.cdc("s.t", [{"Op": "I", "id": 1, "ts": datetime(2024, 2, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))}],
             berlin)
    lake.run_ok()
    assert_lag_from_commit_time(lake, "s.t", datetime(2024, 2, 1, 9, 0))

