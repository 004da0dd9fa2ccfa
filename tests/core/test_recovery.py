"""Recovering a table the way the failure messages say, and the planning rules those paths rely
on: a reload against a run's cutoff, full refresh globs, files removed or replaced after planning."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from dmscdc_provider.cli import main
from dmscdc_provider.dms_writer import cdc_file_name
from dmscdc_provider.engines.duckdb import DuckDBMergeEngine
from dmscdc_provider.planner import FullRefreshGlobError, plan_applied_by_state, raw_changes_since_planning
from dmscdc_provider.runner import run_table

from tests.core.harness import START, LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])


def at(hour: int, minute: int) -> datetime:
    return datetime(2024, 3, 1, hour, minute, tzinfo=timezone.utc)


@pytest.fixture
def lake(tmp_path) -> LakeHarness:
    lake = LakeHarness(tmp_path, DuckDBMergeEngine())
    lake.configure("s.t", primary_key=["id"])
    return lake


def run_cli(lake: LakeHarness, *extra: str) -> int:
    return main(["run", "--raw", lake.raw, "--lake", lake.lake, "--state", f"sqlite://{lake.store.path}",
                 "--catalog", os.path.join(lake.root, "c.duckdb"), "--engine", "duckdb", *extra])


# -- a reload against the run's cutoff (docs/scheduling.md, "Reloads and the cutoff") -------------
def test_a_reload_supersedes_every_older_cdc_file_also_one_named_after_the_cutoff(lake, capsys):
    """The issue's scenario: LOAD00000001 written (modified) after CDC files named 10:05 and 11:10;
    a run with cutoff 11:00 does the full load, and neither CDC file is ever applied over it."""
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "changed at 10:05"}], ITEM, at=at(10, 5))
    lake.cdc("s.t", [{"Op": "I", "id": 2, "name": "inserted at 11:10"}], ITEM, at=at(11, 10))
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "as loaded at 12:00"}], ITEM, modified=at(12, 0))

    assert run_cli(lake, "--cdc-before", "2024-03-01T11:00") == 0
    assert [(r["id"], r["name"]) for r in lake.rows("s.t")] == [(1, "as loaded at 12:00")]
    assert lake.state("s.t").last_incremental_file.endswith(cdc_file_name(at(11, 10)))

    assert run_cli(lake) == 0
    assert "s.t: no new files" in capsys.readouterr().out
    assert [(r["id"], r["name"]) for r in lake.rows("s.t")] == [(1, "as loaded at 12:00")]


def test_cdc_files_from_the_reload_on_apply_only_up_to_the_cutoff(lake):
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "loaded"}], ITEM, modified=at(10, 0))
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "superseded"}], ITEM, at=at(9, 30))
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "10:30"}], ITEM, at=at(10, 30))
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "11:30"}], ITEM, at=at(11, 30))

    (plan,) = lake.planner().plan(cdc_before=at(11, 0)).plans
    assert [os.path.basename(f["path"]) for f in plan.files] == ["LOAD00000001.parquet", cdc_file_name(at(10, 30))]
    assert [os.path.basename(p) for p in plan.superseded_files] == [cdc_file_name(at(9, 30))]

    lake.run_ok(cdc_before=at(11, 0))
    lake.run_ok()
    assert [r["name"] for r in lake.rows("s.t")] == ["11:30"]


def test_the_sensor_and_the_planner_see_a_reload_past_the_cutoff_alike(lake):
    from dmscdc_provider.hooks.dmscdc import DmsCdcHook

    lake.load("s.t", [{"Op": "I", "id": 1, "name": "loaded"}], ITEM, modified=at(12, 0))

    assert DmsCdcHook(aws_conn_id=None).tables_with_changes(
        lake.raw, f"sqlite://{lake.store.path}", cdc_before=at(11, 0)) == ["s.t"]
    assert [p.mode for p in lake.planner().plan(cdc_before=at(11, 0)).plans] == ["full"]


# -- full refresh globs ----------------------------------------------------------------------------
def test_a_full_refresh_glob_that_matches_no_active_table_fails_before_anything_merges(lake, capsys):
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    lake.configure("s.asleep", active=False)
    lake.load("s.asleep", [{"Op": "I", "id": 1, "name": "one"}], ITEM)

    before = lake.state("s.t")

    assert run_cli(lake, "--full-refresh", "s.tt") == 2
    err = capsys.readouterr().err
    assert "full refresh: 's.tt' matches no table" in err and "The active tables are: s.t" in err
    after = lake.state("s.t")
    assert (after.version, after.last_full_load_date, after.last_run) == (before.version, before.last_full_load_date, None)
    assert lake.rows("s.t") == []

    with pytest.raises(FullRefreshGlobError, match=r"'s.asleep' matches only inactive tables \(s.asleep\)"):
        lake.planner().plan(full_refresh=("s.t", "s.asleep"))
    assert [p.table for p in lake.planner().plan(full_refresh=("s.*",)).plans] == ["s.t"]


# -- files removed or replaced after planning -------------------------------------------------------
def test_a_planned_file_removed_or_replaced_after_planning_is_told_apart(lake):
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    kept = lake.cdc("s.t", [{"Op": "I", "id": 2, "name": "two"}], ITEM)
    removed = lake.cdc("s.t", [{"Op": "I", "id": 3, "name": "three"}], ITEM)
    replaced = lake.cdc("s.t", [{"Op": "I", "id": 4, "name": "four"}], ITEM)
    (plan,) = lake.planner().plan().plans
    assert raw_changes_since_planning(plan, lake.storage).removed == []

    os.remove(removed)
    lake.cdc("s.t", [{"Op": "I", "id": 4, "name": "good copy"}], ITEM, name=os.path.basename(replaced),
             at=datetime.now(timezone.utc))

    changes = raw_changes_since_planning(plan, lake.storage)
    assert changes.removed == [removed]
    assert list(changes.replaced) == [replaced] and kept not in changes.replaced


def test_a_file_replaced_by_a_good_copy_before_its_merge_is_not_late_for_later_runs(lake):
    """Replace a bad file with a good copy (same name), merge the pinned plan again: later runs stay green."""
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    lake.run_ok()
    bad = lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "bad"}], ITEM)
    with open(bad, "wb") as handle:
        handle.write(b"not parquet")
    (plan,) = lake.planner().plan().plans
    failed = run_table(plan, lake.engine, lake.store, lake.storage)
    assert failed.status == "failed" and failed.error["file"] == bad

    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "good copy"}], ITEM, name=os.path.basename(bad),
             at=datetime.now(timezone.utc) + timedelta(seconds=5))
    replaced = raw_changes_since_planning(plan, lake.storage).replaced
    assert list(replaced) == [bad]
    assert run_table(replace(plan, replaced_files=replaced), lake.engine, lake.store, lake.storage).succeeded

    later = lake.cdc("s.t", [{"Op": "I", "id": 2, "name": "later"}], ITEM, at=datetime.now(timezone.utc))
    result = lake.run_ok()
    assert [p.table for p in result.report.plans] == ["s.t"] and result.report.problems == []
    assert lake.state("s.t").last_incremental_file == later
    assert [(r["id"], r["name"]) for r in lake.rows("s.t")] == [(1, "good copy"), (2, "later")]


def test_a_file_delivered_late_is_still_reported_next_to_a_replaced_one(lake):
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    lake.cdc("s.t", [{"Op": "I", "id": 2, "name": "two"}], ITEM, at=START + timedelta(minutes=10))
    lake.run_ok()
    late = lake.cdc("s.t", [{"Op": "I", "id": 3, "name": "late"}], ITEM, name=cdc_file_name(START + timedelta(minutes=5)),
                    at=datetime.now(timezone.utc))
    os.utime(late, (datetime.now(timezone.utc).timestamp(),) * 2)

    (problem,) = lake.run().report.problems
    assert late in problem.problem and "arrived after it was applied" in problem.problem


def test_a_plan_whose_files_a_later_run_applied_is_recognised_as_covered(lake):
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "I", "id": 2, "name": "two"}], ITEM)
    (older,) = lake.planner().plan().plans
    lake.cdc("s.t", [{"Op": "I", "id": 3, "name": "three"}], ITEM)
    assert not plan_applied_by_state(older, lake.state("s.t"))

    lake.run_ok()

    assert plan_applied_by_state(older, lake.state("s.t"))
    assert run_table(older, lake.engine, lake.store, lake.storage).status == "conflict"


def test_the_input_check_names_a_removed_planned_file_and_says_to_plan_again(lake):
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    stray = lake.cdc("s.t", [{"Op": "I", "id": 2, "name": "stray"}], ITEM)
    (plan,) = lake.planner().plan().plans
    os.remove(stray)

    outcome = run_table(plan, lake.engine, lake.store, lake.storage)

    assert outcome.status == "failed" and outcome.error["file"] == stray
    assert outcome.error["problem"].startswith("the file was removed from raw after planning")
    assert "clear the run's plan task" in outcome.error["remedy"] and "good copy" not in outcome.error["remedy"]
    assert lake.state("s.t").version == plan.base_version


def test_files_in_date_folders_are_compared_with_one_listing(lake, monkeypatch):
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    first = lake.cdc("s.t", [{"Op": "I", "id": 2, "name": "two"}], ITEM, folder="2024/03/01")
    second = lake.cdc("s.t", [{"Op": "I", "id": 3, "name": "three"}], ITEM, folder="2024/03/02")
    (plan,) = lake.planner().plan().plans
    listed = []
    original = lake.storage.list_files
    monkeypatch.setattr(lake.storage, "list_files", lambda root: listed.append(root) or original(root))
    os.remove(second)

    changes = raw_changes_since_planning(plan, lake.storage)

    assert changes.removed == [second] and first not in changes.removed
    assert listed == [lake.table_dir("s.t")]
