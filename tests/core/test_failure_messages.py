"""A failing table's message leads with the cause as the library states it (one line, no Py4J
wrapper) and a remedy that works; Spark's own logging stays quiet; the trace is at debug level."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from dmscdc_provider.report import CRASH_REMEDY, describe_failure, remedy_for_crash
from dmscdc_provider.runner import run_table

from tests.core.harness import LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])
PY4J_WRAPPER = "An error occurred while calling"


@pytest.fixture
def lake(tmp_path, local_engine):
    lake = LakeHarness(tmp_path, local_engine)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    lake.run_ok()
    return lake


def damage(path: str, how: str) -> bytes:
    """Damage a file in place; returns its good bytes."""
    with open(path, "rb") as handle:
        good = handle.read()
    damaged = {"truncated": good[: len(good) // 2], "empty": b"", "text": b"id,name\n1,not parquet\n"}[how]
    with open(path, "wb") as handle:
        handle.write(damaged)
    return good


@pytest.mark.parametrize(("how", "cause"), [
    # The shared input check reads every planned file's footer first, with pyarrow: its words.
    ("truncated", "Parquet magic bytes not found in footer"),
    ("empty", "Parquet file size is 0 bytes"),
    ("text", "Parquet magic bytes not found in footer"),
])
def test_unreadable_parquet_file_reports_the_parquet_readers_own_cause_in_one_line(lake, how, cause):
    path = lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "changed"}], ITEM)
    good = damage(path, how)
    (outcome,) = lake.run().outcomes
    assert outcome.status == "failed" and outcome.error["file"] == path
    problem = outcome.error["problem"]
    assert cause in problem
    assert "\n" not in problem and PY4J_WRAPPER not in problem and "Py4J" not in problem

    # The remedy it prints: replace the file with a good copy and run again.
    assert "Replace it with a good copy" in outcome.error["remedy"]
    with open(path, "wb") as handle:
        handle.write(good)
    lake.run_ok()
    assert [r["name"] for r in lake.rows("s.t")] == ["changed"]


def test_root_cause_of_a_py4j_error_is_the_innermost_java_message(spark, tmp_path):
    from dmscdc_spark.errors import root_cause

    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(Exception) as raised:
        spark.read.parquet(str(empty)).collect()
    assert PY4J_WRAPPER in str(raised.value)
    assert root_cause(raised.value) == f"file:{empty} is not a Parquet file (length is too low: 0)"


class JavaThrowable:
    """A Java exception as Py4J hands it over: ``getMessage`` and ``getCause``."""

    def __init__(self, message: str, cause: "JavaThrowable | None" = None):
        self.message, self.cause = message, cause

    def getMessage(self) -> str:  # noqa: N802 - Java's name
        return self.message

    def getCause(self) -> "JavaThrowable | None":  # noqa: N802 - Java's name
        return self.cause


def test_root_cause_keeps_the_lines_a_message_ending_in_a_colon_goes_on_to():
    from dmscdc_spark.errors import root_cause

    error = RuntimeError("An error occurred while calling o47.parquet.")
    error.java_exception = JavaThrowable("Job aborted.", JavaThrowable(
        "[FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_MISMATCH] Column [v] in file:/lake/s/t/part-0.parquet "
        "cannot be converted:\nExpected: bigint, Found: INT32.\nat org.apache.spark.sql.Reader.read"))
    assert root_cause(error) == ("Column [v] in file:/lake/s/t/part-0.parquet cannot be converted: "
                                 "Expected: bigint, Found: INT32.")


def test_a_one_line_cause_keeps_what_follows_a_trailing_colon_and_nothing_else():
    from dmscdc_provider.report import one_line

    assert one_line(OSError("IOError: cannot open:\n/raw/s/t/x.parquet\nsecond sentence")) == (
        "IOError: cannot open: /raw/s/t/x.parquet")
    assert one_line(ValueError("first line\nsecond line")) == "first line"


def test_an_unreadable_lake_file_is_named_with_a_remedy_for_the_lakes_own_file(tmp_path, engine, table_format):
    """A damaged file of the table itself (not DMS input) fails the table naming it; the remedy
    restores the file or rebuilds the table, never a DMS re-run, which cannot write it again."""
    lake = LakeHarness(tmp_path, engine, table_format)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    lake.run_ok()
    (relative,) = lake.data_files("s.t")
    damage(os.path.join(lake.table_path("s.t"), relative), "truncated")
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "changed"}], ITEM)
    (outcome,) = lake.run().outcomes
    assert outcome.status == "failed"
    assert outcome.error["file"].endswith("/" + relative)
    assert outcome.error["problem"].startswith("cannot read the lake file (") and "\n" not in outcome.error["problem"]
    remedy = outcome.error["remedy"]
    assert "dmscdc run --full-refresh s.t" in remedy and "restore it from a copy" in remedy
    assert "DMS" not in remedy


class CrashingEngine:
    """An engine whose Spark job died on the infrastructure, as LocalSparkEngine reports it."""

    def __init__(self, cause: str):
        self.cause = cause

    def run(self, engine_plan: dict) -> dict:
        from dmscdc_provider.engines import MergeCrashed

        try:
            raise OSError(28, "No space left on device")
        except OSError as error:
            raise MergeCrashed(self.cause) from error


def test_crashed_merge_is_one_line_with_a_remedy_and_its_trace_only_at_debug(lake, caplog):
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "changed"}], ITEM)
    (plan,) = lake.planner().plan().plans
    with caplog.at_level(logging.DEBUG, logger="dmscdc_provider"):
        outcome = run_table(plan, CrashingEngine("No space left on device"), lake.store, lake.storage)
    assert outcome.error["problem"] == "the merge failed: No space left on device"
    assert "free space on the disk" in outcome.error["remedy"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    traces = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert traces and "No space left on device" in str(traces[0].exc_info[1].__cause__)
    assert staged_files(lake) == []


def staged_files(lake: LakeHarness) -> list[str]:
    staging = os.path.join(lake.lake, "_dmscdc_staging")
    return [os.path.join(folder, name) for folder, _, names in os.walk(staging) for name in names]


def test_every_crash_remedy_names_an_action_for_its_cause():
    assert "spark.local.dir" in remedy_for_crash("java.io.IOException: No space left on device")
    assert "spark.driver.memory" in remedy_for_crash("java.lang.OutOfMemoryError: Java heap space")
    assert "read access" in remedy_for_crash("/raw/s/t/x.parquet (Permission denied)")
    assert remedy_for_crash("something nobody foresaw") == CRASH_REMEDY


def test_cli_and_task_log_share_one_failure_format(lake):
    from dmscdc_provider.runner import TableOutcome

    outcome = TableOutcome("s.t", "failed", "p1", error={
        "file": "/raw/s/t/x.parquet", "problem": "cannot read the file: boom", "remedy": "do this"})
    assert describe_failure(outcome).splitlines() == [
        "s.t: merge failed", "  file:   /raw/s/t/x.parquet", "  cause:  cannot read the file: boom",
        "  remedy: do this"]


def test_cli_run_shows_a_corrupt_files_cause_in_its_first_20_lines_and_no_spark_errors(lake):
    """The command as a user types it, in a new process with its own JVM and Spark logging."""
    path = lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "changed"}], ITEM)
    damage(path, "truncated")
    lake.store.close()
    completed = subprocess.run(
        [sys.executable, "-m", "dmscdc_provider.cli", "run", "--raw", lake.raw, "--lake", lake.lake,
         "--state", f"sqlite://{lake.store.path}", "--catalog", os.path.join(lake.root, "catalog.duckdb")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    lines = completed.stdout.splitlines()
    assert completed.returncode == 1, completed.stdout
    head = "\n".join(lines[:20])
    assert "Parquet magic bytes not found in footer" in head and path in head, completed.stdout
    assert not [line for line in lines if " ERROR " in line or line.startswith("ERROR")], completed.stdout
    assert PY4J_WRAPPER not in completed.stdout and "\tat " not in completed.stdout


def test_the_full_trace_of_an_unreadable_file_is_logged_at_debug_only(lake, caplog):
    path = lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "changed"}], ITEM)
    damage(path, "empty")
    # The runner's input check reports such a file before any engine runs; the Spark engine's
    # own handling is what this pins, so the engine is run on the plan directly.
    (plan,) = lake.planner().plan().plans
    with caplog.at_level(logging.DEBUG, logger="dmscdc_spark"):
        result = lake.engine.run(plan.engine_plan("direct"))
    assert result["status"] == "failed"
    records = [r for r in caplog.records if r.name.startswith("dmscdc_spark")]
    assert records and all(r.levelno == logging.DEBUG for r in records)
    traced = [r for r in records if r.exc_info]
    assert traced and PY4J_WRAPPER in str(traced[0].exc_info[1].__cause__)


def test_a_column_whose_type_changed_names_a_remedy_that_works_a_dms_reload(lake):
    """``--full-refresh`` would rebuild from the LOAD files in raw, which hold the old type; a DMS
    reload writes LOAD files in the new type, and the next run rebuilds from them."""
    as_float = pa.schema([("id", pa.int64()), ("name", pa.float64())])
    clash = lake.cdc("s.t", [{"Op": "U", "id": 1, "name": 1.5}], as_float)
    (failed,) = lake.run().outcomes
    assert failed.status == "failed" and "column 'name'" in failed.error["problem"]
    assert "reload the table in DMS" in failed.error["remedy"]
    assert "--full-refresh" not in failed.error["remedy"]

    (refreshed,) = lake.run(full_refresh=("s.t",)).outcomes  # what the old remedy said: fails alike
    assert refreshed.status == "failed" and "column 'name'" in refreshed.error["problem"]

    lake.tick()
    lake.load("s.t", [{"Op": "I", "id": 1, "name": 2.5}, {"Op": "I", "id": 2, "name": 3.5}], as_float,
              modified=lake.clock)
    lake.run_ok()
    assert [(r["id"], r["name"]) for r in lake.rows("s.t")] == [(1, 2.5), (2, 3.5)]
    assert os.path.exists(clash)


def test_a_csv_row_with_missing_fields_names_the_csv_readers_cause(lake):
    path = os.path.join(lake.table_dir("s.t"), "20240301-100000000.csv")
    with open(path, "w") as handle:
        handle.write("Op,id,name\nU,1,uno\nU,2\n")
    (outcome,) = lake.run().outcomes
    assert outcome.error["file"] == path
    assert outcome.error["problem"] == "cannot read the file (CSV parse error: Expected 3 columns, got 2: U,2)"


class UnpublishableStorage:
    """Lake storage whose publishing step fails, as a lake volume that went read-only does."""

    def __init__(self, storage):
        self.storage = storage

    def __getattr__(self, name):
        return getattr(self.storage, name)

    def move(self, source, target):
        raise PermissionError(13, "Permission denied", target)


def test_an_infrastructure_failure_after_the_merge_is_one_line_with_its_remedy(lake, caplog):
    from dmscdc_provider.runner import run_source

    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "changed"}], ITEM)
    with caplog.at_level(logging.DEBUG, logger="dmscdc_provider"):
        result = run_source(lake.planner(), lake.engine, UnpublishableStorage(lake.storage))
    (outcome,) = result.outcomes
    assert outcome.status == "failed"
    assert outcome.error["problem"].startswith("[Errno 13] Permission denied")
    assert "\n" not in outcome.error["problem"] and "write access to the lake" in outcome.error["remedy"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)

    # The remedy: once the lake is writable again, a run finishes the recorded commit.
    lake.run_ok()
    assert [r["name"] for r in lake.rows("s.t")] == ["changed"]
