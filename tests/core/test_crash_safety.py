"""Crash safety (docs/crash-safety.md): a merge stopped at any step and run again ends exactly
like one clean run; readers never see a file of a failed attempt; concurrent runs on one
table commit once."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from dmscdc_provider.runner import CONFLICT, FAILED, SUCCEEDED, FailureKind, run_table
from dmscdc_provider.table_formats.maintenance import maintain_table
from dmscdc_provider.state.sqlite import SqliteControllerStore

from tests.core.harness import LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string()), ("dept", pa.string())])


class SimulatedCrash(Exception):
    pass


def crash_at(step: str, occurrence: int = 1):
    seen = {"count": 0}

    def on_step(name: str, detail: dict) -> None:
        if name == step:
            seen["count"] += 1
            if seen["count"] == occurrence:
                raise SimulatedCrash(f"crash at {step} #{occurrence}")

    return on_step


def build_source(lake: LakeHarness) -> None:
    """A loaded table, then one CDC batch touching two of three partitions (update, delete,
    insert, partition move)."""
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"])
    lake.load("s.t", [{"Op": "I", "id": i, "name": f"n{i}", "dept": "abc"[i % 3]} for i in range(30)], ITEM)
    lake.run_ok()
    lake.cdc("s.t", [
        {"Op": "U", "id": 0, "name": "changed", "dept": "a"},  # id 0 lives in dept a (0 % 3)
        {"Op": "D", "id": 4, "name": "n4", "dept": "b"},
        {"Op": "I", "id": 100, "name": "new", "dept": "a"},
        {"Op": "U", "id": 7, "name": "moved", "dept": "z"},  # dept b -> z
    ], ITEM)


@pytest.fixture
def clean(tmp_path_factory, engine, table_format):
    lake = LakeHarness(tmp_path_factory.mktemp("clean"), engine, table_format)
    build_source(lake)
    lake.run_ok()
    return lake


def planned(lake: LakeHarness):
    report = lake.planner().plan()
    assert len(report.plans) == 1
    return report.plans[0]


def assert_same_as_clean(lake: LakeHarness, clean: LakeHarness) -> None:
    rows = lake.rows("s.t")
    assert rows == clean.rows("s.t")
    assert len({r["id"] for r in rows}) == len(rows), "duplicate keys"
    state, clean_state = lake.state("s.t"), clean.state("s.t")
    assert state.pending_commit is None
    assert os.path.basename(state.last_incremental_file) == os.path.basename(clean_state.last_incremental_file)
    assert state.last_full_load_date == clean_state.last_full_load_date
    assert not any("_dmscdc_staging" in path for path in lake.visible_files_everywhere())


BEFORE_COMMIT_POINT = [("merge_started", 1), ("staged", 1)]
AFTER_COMMIT_POINT = {
    "parquet": [("commit_recorded", 1), ("file_published", 1), ("files_published", 1),
                ("file_removed", 1), ("files_removed", 1), ("state_committed", 1)],
    # snapshot_committed: the catalog holds the snapshot, the controller does not know yet.
    "iceberg": [("commit_recorded", 1), ("snapshot_committed", 1), ("state_committed", 1)],
}
CRASH_POINTS = [(table_format, step, occurrence) for table_format, after in AFTER_COMMIT_POINT.items()
                for step, occurrence in BEFORE_COMMIT_POINT + after]


@pytest.mark.parametrize("recovery", ["retry_same_plan", "next_run"])
@pytest.mark.parametrize("table_format,step,occurrence", CRASH_POINTS)
def test_crash_at_each_step_then_rerun_equals_one_clean_run(tmp_path, engine, table_format, clean, step, occurrence,
                                                            recovery):
    lake = LakeHarness(tmp_path, engine, table_format)
    build_source(lake)
    before_rows, before_state = lake.rows("s.t"), lake.state("s.t")
    plan = planned(lake)

    with pytest.raises(SimulatedCrash):
        run_table(plan, engine, lake.store, lake.storage, on_step=crash_at(step, occurrence))

    if (step, occurrence) in BEFORE_COMMIT_POINT:
        # Nothing readers see changed and the watermark did not move.
        assert lake.rows("s.t") == before_rows
        assert lake.state("s.t").last_incremental_file == before_state.last_incremental_file
        assert lake.state("s.t").pending_commit is None

    if recovery == "retry_same_plan":
        outcome = run_table(plan, engine, lake.store, lake.storage)
        assert outcome.status == SUCCEEDED
    else:
        lake.run_ok()
    assert_same_as_clean(lake, clean)
    # A further run has nothing left to do: the batch was applied exactly once.
    assert lake.planner().plan().plans == []


class DiesMidWrite:
    """An engine whose Spark job dies after writing part of its output."""

    def __init__(self, engine):
        self.engine = engine

    def run(self, engine_plan: dict) -> dict:
        result = self.engine.run(engine_plan)
        staged = result["files_added"]
        os.remove(os.path.join(engine_plan["staging_path"], staged[0]["path"]))
        raise SimulatedCrash("executor lost while writing")


def test_crash_mid_write_leaves_nothing_visible_and_rerun_equals_clean(tmp_path, engine, table_format, clean):
    lake = LakeHarness(tmp_path, engine, table_format)
    build_source(lake)
    before_files = lake.visible_files_everywhere()
    plan = planned(lake)
    outcome = run_table(plan, DiesMidWrite(engine), lake.store, lake.storage)
    assert outcome.status == "failed"
    assert lake.visible_files_everywhere() == before_files
    assert lake.state("s.t").version == plan.base_version
    lake.run_ok()
    assert_same_as_clean(lake, clean)


def test_leftover_staging_of_a_killed_process_is_invisible_and_ignored(tmp_path, engine, table_format, clean):
    """A process killed mid-write leaves a partial staging folder that nobody committed."""
    lake = LakeHarness(tmp_path, engine, table_format)
    build_source(lake)
    plan = planned(lake)
    partial = os.path.join(plan.staging_path(f"{plan.plan_id}-killed"), "dept=a")
    os.makedirs(partial)
    with open(os.path.join(partial, "part-00000-partial.snappy.parquet"), "wb") as handle:
        handle.write(b"PAR1 truncated")
    lake.run_ok()
    assert_same_as_clean(lake, clean)


def test_two_concurrent_runs_on_one_table_commit_once(tmp_path, engine, table_format, clean):
    lake = LakeHarness(tmp_path, engine, table_format)
    build_source(lake)
    plans = [planned(lake), planned(lake)]
    both_staged = threading.Barrier(2, timeout=120)
    outcomes = [None, None]

    def wait_for_the_other(step: str, detail: dict) -> None:
        if step == "staged":
            both_staged.wait()  # both merges are done before either tries to commit

    def worker(index: int) -> None:
        store = SqliteControllerStore(lake.store.path)  # each run has its own connection
        outcomes[index] = run_table(plans[index], engine, store, lake.storage, on_step=wait_for_the_other)
        store.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    statuses = sorted(o.status for o in outcomes)
    assert statuses == [CONFLICT, SUCCEEDED]
    loser = next(o for o in outcomes if o.status == CONFLICT)
    assert "another run committed" in loser.note
    assert_same_as_clean(lake, clean)


def commit_the_same_plan_in_another_run(lake: LakeHarness, plan, engine) -> None:
    """Another run commits ``plan`` to the end; for an Iceberg table, maintenance then removes the
    files no snapshot names (the ones that commit replaced; a Parquet commit deletes them itself)."""
    store = SqliteControllerStore(lake.store.path)
    assert run_table(plan, engine, store, lake.storage).status == SUCCEEDED
    if lake.table_format == "iceberg":
        report = maintain_table(lake.state("s.t"), lake.lake, lake.iceberg_catalog, store, lake.storage,
                                compact_below_bytes=0, now=datetime.now(timezone.utc) + timedelta(days=30))
        assert report.files_removed > 0
    store.close()


def after_the_merge_finds_its_lake_files(monkeypatch, engine_name: str, action) -> None:
    """Call ``action(relative paths)`` once, in the next merge, right after the engine found the
    lake files holding the changed keys and before it reads them."""
    if engine_name == "duckdb":
        from dmscdc_provider.engines.duckdb import _TableMerge
    else:
        from dmscdc_spark.job import _TableMerge
    find_files_holding_keys = _TableMerge._files_holding_keys

    def then_act(self, *args):
        holding = find_files_holding_keys(self, *args)
        assert holding, "the change touches lake files"
        monkeypatch.setattr(_TableMerge, "_files_holding_keys", find_files_holding_keys)  # once
        # DuckDB pairs each file with its footer.
        action([entry[0].relative_path if isinstance(entry, tuple) else entry.relative_path for entry in holding])
        return holding

    monkeypatch.setattr(_TableMerge, "_files_holding_keys", then_act)


def test_a_lake_file_another_commit_removed_under_the_merge_is_a_conflict(
        tmp_path, engine_name, engine, table_format, clean, monkeypatch):
    """The other run commits after this merge found the lake files holding its keys and before it
    reads them: the merge cannot read a file that commit replaced, which is a conflict (the state
    moved), not a damaged input file."""
    lake = LakeHarness(tmp_path, engine, table_format)
    build_source(lake)
    plan = planned(lake)
    after_the_merge_finds_its_lake_files(
        monkeypatch, engine_name, lambda _: commit_the_same_plan_in_another_run(lake, plan, engine))
    outcome = run_table(plan, engine, lake.store, lake.storage)
    assert outcome.status == CONFLICT, outcome.to_dict()
    assert "another run committed it" in outcome.note and "plan again" in outcome.note
    assert lake.table_path("s.t") in outcome.note  # names the lake file it could not read
    assert_same_as_clean(lake, clean)


class AnotherRunCommitsThenRawFileIsTruncated:
    """An engine that lets another run commit the same plan, then truncates the plan's CDC file
    before it merges."""

    def __init__(self, lake: LakeHarness, plan, engine):
        self.lake, self.plan, self.engine = lake, plan, engine

    def run(self, engine_plan: dict) -> dict:
        commit_the_same_plan_in_another_run(self.lake, self.plan, self.engine)
        cdc = next(f["path"] for f in engine_plan["files"] if f["kind"] == "cdc")
        with open(cdc, "r+b") as handle:
            handle.truncate(os.path.getsize(cdc) // 2)
        return self.engine.run(engine_plan)


def test_a_raw_file_truncated_under_the_merge_is_bad_input_also_when_another_run_committed(
        tmp_path, engine, table_format):
    lake = LakeHarness(tmp_path, engine, table_format)
    build_source(lake)
    plan = planned(lake)
    cdc = next(f["path"] for f in plan.files if f["kind"] == "cdc")
    outcome = run_table(plan, AnotherRunCommitsThenRawFileIsTruncated(lake, plan, engine), lake.store, lake.storage)
    assert outcome.status == FAILED and outcome.failure_kind == FailureKind.INPUT, outcome.to_dict()
    assert outcome.error["file"] == cdc and "cannot read the file" in outcome.error["problem"]
    assert not outcome.error.get("lake_file")


def test_a_lake_file_removed_outside_dmscdc_fails_the_merge_with_a_rebuild_remedy(
        tmp_path, engine_name, engine, table_format, monkeypatch):
    """No run committed the table (its state is where the plan found it): the missing lake file
    is no conflict, and a rebuild from the LOAD files is the way out."""
    lake = LakeHarness(tmp_path, engine, table_format)
    build_source(lake)
    plan = planned(lake)

    def delete(relative_paths: list[str]) -> None:
        for relative_path in relative_paths:
            os.remove(os.path.join(lake.table_path("s.t"), relative_path))

    after_the_merge_finds_its_lake_files(monkeypatch, engine_name, delete)
    version = lake.state("s.t").version
    outcome = run_table(plan, engine, lake.store, lake.storage)
    assert outcome.status == FAILED, outcome.to_dict()
    assert outcome.error["lake_file"] and outcome.error["file"].startswith(lake.table_path("s.t"))
    assert "cannot read the lake file" in outcome.error["problem"]
    assert "dmscdc run --full-refresh s.t" in outcome.error["remedy"]
    assert lake.state("s.t").version == version


def test_retrying_a_committed_plan_changes_nothing(tmp_path, engine, table_format, clean):
    lake = LakeHarness(tmp_path, engine, table_format)
    build_source(lake)
    plan = planned(lake)
    assert run_table(plan, engine, lake.store, lake.storage).status == SUCCEEDED
    files = lake.data_files("s.t")
    again = run_table(plan, engine, lake.store, lake.storage)
    assert again.status == SUCCEEDED and again.note == "already committed by an earlier attempt"
    assert lake.data_files("s.t") == files
    assert_same_as_clean(lake, clean)


def test_plan_made_before_another_run_committed_stops_without_changes(tmp_path, engine, table_format):
    lake = LakeHarness(tmp_path, engine, table_format)
    build_source(lake)
    stale_plan = planned(lake)
    lake.cdc("s.t", [{"Op": "I", "id": 200, "name": "later", "dept": "c"}], ITEM)
    lake.run_ok()  # commits both CDC files under a different plan
    files, rows = lake.data_files("s.t"), lake.rows("s.t")
    outcome = run_table(stale_plan, engine, lake.store, lake.storage)
    assert outcome.status == CONFLICT
    assert "plan again" in outcome.note
    assert lake.data_files("s.t") == files and lake.rows("s.t") == rows


class ReattachesToEarlierJob:
    """An engine that, like Glue on a retried task, returns the result of the job an earlier
    try started for the same plan (another attempt id, its own staged files)."""

    def __init__(self, engine, earlier_attempt_id: str):
        self.engine, self.earlier_attempt_id = engine, earlier_attempt_id

    def run(self, engine_plan: dict) -> dict:
        earlier = dict(engine_plan, attempt_id=self.earlier_attempt_id,
                       staging_path=engine_plan["staging_path"].rsplit("/", 1)[0] + "/" + self.earlier_attempt_id)
        return self.engine.run(earlier)


def test_result_of_a_reattached_job_commits_that_jobs_staged_files(tmp_path, engine, table_format, clean):
    lake = LakeHarness(tmp_path, engine, table_format)
    build_source(lake)
    plan = planned(lake)
    outcome = run_table(plan, ReattachesToEarlierJob(engine, f"{plan.plan_id}-earlier"), lake.store, lake.storage)
    assert outcome.status == SUCCEEDED
    assert lake.state("s.t").last_run["attempt_id"] == f"{plan.plan_id}-earlier"
    assert_same_as_clean(lake, clean)
