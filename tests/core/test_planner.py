"""Planning: registration of new tables, full vs incremental, watermarks, time bounds."""

import json
from datetime import timedelta

import pyarrow as pa

from dmscdc_provider.plan import TablePlan
from dmscdc_provider.planner import state_after_pending

from tests.core.harness import LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])
ROW = [{"Op": "I", "id": 1, "name": "x"}]


def harness(tmp_path):
    return LakeHarness(tmp_path, engine=None)


def test_new_tables_are_registered_inactive_and_not_planned(tmp_path):
    lake = harness(tmp_path)
    lake.load("sales.product", ROW, ITEM)
    lake.load("hr.staff", ROW, ITEM)
    report = lake.planner().plan()
    assert sorted(report.registered) == ["hr.staff", "sales.product"]
    assert report.plans == []
    assert not lake.state("sales.product").active
    again = lake.planner().plan()
    assert again.registered == [] and sorted(again.inactive) == ["hr.staff", "sales.product"]


def test_first_plan_is_a_full_load_of_every_load_file_then_cdc(tmp_path):
    lake = harness(tmp_path)
    lake.configure("s.t", primary_key=["id"])
    loaded_at = lake.clock
    lake.load("s.t", ROW, ITEM, counter=2)
    lake.load("s.t", ROW, ITEM, counter=1)
    cdc = lake.cdc("s.t", ROW, ITEM)
    plan = lake.planner().plan().plans[0]
    assert plan.mode == "full"
    assert [f["path"].rsplit("/", 1)[-1] for f in plan.files] == [
        "LOAD00000001.parquet", "LOAD00000002.parquet", cdc.rsplit("/", 1)[-1]]
    assert plan.new_last_full_load_date == loaded_at.strftime("%Y-%m-%d %H:%M:%S")
    assert plan.new_last_incremental_file == cdc


def test_incremental_plan_starts_after_the_watermark_in_either_stored_form(tmp_path):
    lake = harness(tmp_path)
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", ROW, ITEM)
    first = lake.cdc("s.t", ROW, ITEM)
    second = lake.cdc("s.t", ROW, ITEM)
    name = first.rsplit("/", 1)[-1]
    for stored in (f"my-bucket/raw/s/t/{name}", f"raw/s/t/{name}", name):
        # the blog's controller writes bucket/key, a bare key compares the same way
        lake.store.update(lake.path_of("s.t"), last_full_load_date="2030-01-01 00:00:00",
                          last_incremental_file=stored)
        plan = lake.planner().plan().plans[0]
        assert plan.mode == "incremental"
        assert [f["path"] for f in plan.files] == [second]


def test_cdc_before_bounds_what_a_scheduled_run_applies(tmp_path):
    lake = harness(tmp_path)
    lake.configure("s.t", primary_key=["id"])
    early = lake.cdc("s.t", ROW, ITEM)
    early_at = lake.clock
    lake.cdc("s.t", ROW, ITEM, at=early_at + timedelta(hours=1))
    plan = lake.planner().plan(cdc_before=early_at + timedelta(minutes=30)).plans[0]
    assert [f["path"] for f in plan.files] == [early]


def test_newer_load_files_trigger_a_full_load_that_skips_superseded_cdc(tmp_path):
    lake = harness(tmp_path)
    lake.configure("s.t", primary_key=["id"])
    t0 = lake.clock
    lake.load("s.t", ROW, ITEM, modified=t0)
    lake.store.update(lake.path_of("s.t"), last_full_load_date=t0.strftime("%Y-%m-%d %H:%M:%S"))
    superseded = lake.cdc("s.t", ROW, ITEM, at=t0 + timedelta(minutes=1))
    assert lake.planner().plan().plans[0].mode == "incremental"
    lake.load("s.t", ROW, ITEM, modified=t0 + timedelta(minutes=10))
    after = lake.cdc("s.t", ROW, ITEM, at=t0 + timedelta(minutes=11))
    plan = lake.planner().plan().plans[0]
    assert plan.mode == "full"
    assert plan.superseded_files == [superseded]
    assert [f["kind"] for f in plan.files] == ["load", "cdc"] and plan.files[1]["path"] == after


def test_full_refresh_rebuilds_a_table_whose_load_files_are_not_new(tmp_path):
    lake = harness(tmp_path)
    lake.configure("s.t", primary_key=["id"])
    lake.configure("s.u", primary_key=["id"])
    for table in ("s.t", "s.u"):
        lake.load(table, ROW, ITEM)
        lake.store.update(lake.path_of(table), last_full_load_date="2030-01-01 00:00:00")
        lake.cdc(table, ROW, ITEM)
    plans = {p.table: p.mode for p in lake.planner().plan(full_refresh=("s.t",)).plans}
    assert plans == {"s.t": "full", "s.u": "incremental"}


def test_table_globs_select_tables(tmp_path):
    lake = harness(tmp_path)
    for table in ("sales.product", "sales.store", "hr.staff"):
        lake.load(table, ROW, ITEM)
    report = lake.planner("sales.*").plan()
    assert sorted(report.registered) == ["sales.product", "sales.store"]


def test_recorded_commit_is_planned_as_finished(tmp_path):
    lake = harness(tmp_path)
    lake.configure("s.t", primary_key=["id"])
    first = lake.cdc("s.t", ROW, ITEM)
    second = lake.cdc("s.t", ROW, ITEM)
    state = lake.state("s.t")
    pending = {"plan_id": "x", "attempt_id": "x-1", "staging_path": "/nowhere", "moves": [], "removes": [],
               "new_last_full_load_date": state.last_full_load_date, "new_last_incremental_file": first,
               "summary": {}}
    lake.store.replace(state.evolve(pending_commit=pending), state.version)
    plan = lake.planner().plan().plans[0]
    assert [f["path"] for f in plan.files] == [second]
    assert plan.base_version == lake.state("s.t").version + 1 == state_after_pending(lake.state("s.t")).version


def test_plan_round_trips_through_json_with_a_stable_id(tmp_path):
    lake = harness(tmp_path)
    lake.configure("s.t", primary_key=["id"], partition_key=["name"], order_column="AR_H_CHANGE_SEQ")
    lake.cdc("s.t", ROW, ITEM)
    plan = lake.planner().plan().plans[0]
    copy = TablePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert copy == plan and copy.plan_id == plan.plan_id
    assert copy.engine_plan("a1")["staging_path"].endswith("/_dmscdc_staging/s/t/a1")


def test_reload_leaves_out_load_files_of_the_previous_load(tmp_path):
    """The old load had three LOAD files, the reload writes two: the third is a leftover."""
    lake = harness(tmp_path)
    lake.configure("s.t", primary_key=["id"])
    t0 = lake.clock
    for counter in (1, 2, 3):
        lake.load("s.t", ROW, ITEM, counter=counter, modified=t0)
    lake.store.update(lake.path_of("s.t"), last_full_load_date=t0.strftime("%Y-%m-%d %H:%M:%S"))
    for counter in (1, 2):
        lake.load("s.t", ROW, ITEM, counter=counter, modified=t0 + timedelta(hours=1))
    plan = lake.planner().plan().plans[0]
    assert plan.mode == "full"
    assert [f["path"].rsplit("/", 1)[-1] for f in plan.files] == ["LOAD00000001.parquet", "LOAD00000002.parquet"]
    forced = lake.planner().plan(full_refresh=("s.t",)).plans[0]
    assert len(forced.files) == 2


def test_blogs_initial_watermark_means_every_cdc_file_is_new(tmp_path):
    """The blog's controller registers tables with LastIncrementalFile = <path>0.parquet."""
    lake = harness(tmp_path)
    lake.configure("s.t", primary_key=["id"])
    cdc = lake.cdc("s.t", ROW, ITEM)
    lake.store.update(lake.path_of("s.t"), last_incremental_file=lake.path_of("s.t") + "0.parquet")
    assert [f["path"] for f in lake.planner().plan().plans[0].files] == [cdc]


def test_table_settings_override_the_controller_item_for_matching_tables():
    from dmscdc_provider.planner import apply_table_settings
    from dmscdc_provider.state.base import TableState

    state = TableState(path="p/s/t/", schema="s", table="t", commit_time_column="old", keep_on_null=("x",))
    settings = {"s.*": {"commit_time_column": "ts", "keep_on_null": ["notes", "doc"], "history": True,
                        "history_except": "ts"},
                "other.*": {"history": True}}
    applied = apply_table_settings(state, settings)
    assert (applied.commit_time_column, applied.keep_on_null, applied.history) == (
        "ts", ("notes", "doc"), {"except": ["ts"]})
    assert apply_table_settings(applied, {"s.t": {"history": False}}).history is None
    assert apply_table_settings(state, {"other.*": {"history": True}}) == state
