"""A locked controller store or catalog: named, bounded waits, exit 2, no staged files left
behind, and a rerun catches up."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from dmscdc_provider.catalog import query
from dmscdc_provider.cli import main
from dmscdc_provider.state.base import StoreBusyError
from dmscdc_provider.state.sqlite import SqliteControllerStore

from tests.core.harness import LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])


@pytest.fixture
def lake(tmp_path, local_engine):
    lake = LakeHarness(tmp_path, local_engine)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    lake.run_ok()
    return lake


def cli_run(lake: LakeHarness, *extra: str) -> int:
    return main(["run", "--raw", lake.raw, "--lake", lake.lake, "--state", f"sqlite://{lake.store.path}",
                 "--catalog", os.path.join(lake.root, "catalog.duckdb"), *extra])


def staged_files(lake: LakeHarness) -> list[str]:
    staging = os.path.join(lake.lake, "_dmscdc_staging")
    return [os.path.join(folder, name) for folder, _, names in os.walk(staging) for name in names]


def test_locked_sqlite_store_gives_up_within_seconds_and_names_the_store(tmp_path):
    path = str(tmp_path / "state.sqlite")
    SqliteControllerStore(path).list()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    store = SqliteControllerStore(path, busy_timeout=1)
    from dmscdc_provider.state.base import TableState

    started = time.monotonic()
    with pytest.raises(StoreBusyError) as raised:
        store.register(TableState(path="raw/s/t/", schema="s", table="t"))
    assert time.monotonic() - started < 5
    assert path in str(raised.value) and "locked" in str(raised.value)
    holder.execute("ROLLBACK")
    assert store.register(TableState(path="raw/s/t/", schema="s", table="t"))


def test_locked_sqlite_store_exits_2_names_the_store_and_drops_the_staged_files(lake, capsys):
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "changed"}], ITEM)
    before = lake.state("s.t")
    capsys.readouterr()
    holder = sqlite3.connect(lake.store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        code = cli_run(lake)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    captured = capsys.readouterr()
    assert code == 2
    assert lake.store.path in captured.err and "locked" in captured.err
    assert "s.t: FAILED" in captured.out and "summary:" in captured.out
    assert staged_files(lake) == []
    assert lake.state("s.t") == before
    assert [r["name"] for r in lake.rows("s.t")] == ["one"]

    # The remedy: once the other writer is done, run again.
    assert cli_run(lake) == 0
    assert [r["name"] for r in lake.rows("s.t")] == ["changed"]


def test_staged_files_of_an_attempt_that_could_not_record_its_commit_are_deleted(lake):
    from dmscdc_provider.runner import complete_attempt, start_attempt

    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "changed"}], ITEM)
    (plan,) = lake.planner().plan().plans
    start = start_attempt(plan, lake.store, lake.storage)
    result = lake.engine.run(plan.engine_plan(start.attempt_id))
    assert result["status"] == "succeeded" and staged_files(lake)
    locked_store = SqliteControllerStore(lake.store.path, busy_timeout=0.5)
    holder = sqlite3.connect(lake.store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreBusyError):
            complete_attempt(plan, start.attempt_id, result, locked_store, lake.storage)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert staged_files(lake) == []
    assert lake.state("s.t").pending_commit is None


@pytest.fixture
def catalog_holder(lake):
    """Another process holding the DuckDB catalog file open for writing, as a DuckDB shell does."""
    catalog = os.path.join(lake.root, "catalog.duckdb")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
         "sys.stdin.read()", catalog],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    yield holder
    if holder.poll() is None:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_locked_catalog_commits_the_merge_prints_the_summary_and_exits_2_then_a_rerun_catches_up(
        lake, catalog_holder, capsys):
    lake.configure("s.new", primary_key=["id"])
    lake.load("s.new", [{"Op": "I", "id": 7, "name": "seven"}], ITEM)
    capsys.readouterr()
    code = cli_run(lake)
    captured = capsys.readouterr()
    assert code == 2
    catalog = os.path.join(lake.root, "catalog.duckdb")
    assert f"cannot refresh the DuckDB catalog {catalog}" in captured.err and "lock" in captured.err
    assert "summary:" in captured.out and "s.new" in captured.out
    assert [r["name"] for r in lake.rows("s.new")] == ["seven"]  # the merge committed

    catalog_holder.stdin.close()
    catalog_holder.wait(timeout=30)
    assert cli_run(lake) == 0  # nothing new to merge, and the view the failed refresh missed appears
    assert "s.new: no new files" in capsys.readouterr().out
    assert query(catalog, "SELECT id, name FROM s.new")[1] == [(7, "seven")]
