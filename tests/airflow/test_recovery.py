"""The recoveries a person reaches from the UI, one operator at a time: a merge whose planned file
was removed or replaced, a cleared merge a later run overtook, a mistyped full refresh, a run
waiting for the runs before it, a run that planned nothing."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_env import utc
from dmscdc_provider.demo import STORE, prepare_demo_source, sample_stores, write_change_batch
from dmscdc_provider.dms_writer import write_dms_file
from dmscdc_provider.operators.merge import SUPERSEDED, DmsCdcMergeOperator
from dmscdc_provider.operators.plan import DmsCdcPlanOperator, run_holding_the_source
from dmscdc_provider.operators.summary import DmsCdcRunSummaryOperator
from dmscdc_provider.planner import controller_path
from dmscdc_provider.sensors.raw_files import DmsCdcNewFilesSensor, RawFilesCheckError
from dmscdc_provider.state.base import open_store
from fakes import FakeTaskInstance, make_context

from airflow.sdk.exceptions import TaskDeferred

BEFORE_CHANGES, AFTER_CHANGES = utc(2024, 3, 2), utc(2024, 3, 3)


@pytest.fixture
def source(tmp_path) -> dict:
    raw, state = str(tmp_path / "raw"), f"sqlite://{tmp_path / 'state.sqlite'}"
    prepare_demo_source(raw, state)
    return {"raw_root": raw, "lake_root": str(tmp_path / "lake"), "state_uri": state}


def plan_task(source: dict, **kwargs) -> DmsCdcPlanOperator:
    return DmsCdcPlanOperator(task_id="plan", aws_conn_id=None, **{"engine": "duckdb", **source, **kwargs})


def plans(source: dict, interval_end, **kwargs) -> dict[str, dict]:
    return {e["plan"]["table"]: e["plan"] for e in plan_task(source, **kwargs).execute(make_context(interval_end))}


def merge(source: dict, plan: dict, context=None) -> dict:
    op = DmsCdcMergeOperator(task_id="merge", aws_conn_id=None, plan=plan, state_uri=source["state_uri"],
                             engine="duckdb")
    return op.execute(context or make_context())


def state(source: dict, table: str):
    store = open_store(source["state_uri"])
    try:
        return store.get(controller_path(source["raw_root"], *table.split(".")))
    finally:
        store.close()


def loaded_with_changes_planned(source: dict) -> dict[str, dict]:
    for plan in plans(source, BEFORE_CHANGES).values():
        merge(source, plan)
    write_change_batch(source["raw_root"])
    return plans(source, AFTER_CHANGES)


def cdc_path(plan: dict) -> str:
    [path] = [f["path"] for f in plan["files"] if f["kind"] == "cdc"]
    return path


class TestFilesChangedAfterPlanning:
    def test_a_removed_file_fails_the_merge_naming_it_and_the_plan_task_to_clear(self, source):
        store_plan = loaded_with_changes_planned(source)["sales.store"]
        os.remove(cdc_path(store_plan))
        before = state(source, "sales.store")
        context = make_context()

        with pytest.raises(AirflowFailException) as failed:
            merge(source, store_plan, context)

        message = str(failed.value)
        assert "removed from raw after the plan task listed them" in message and cdc_path(store_plan) in message
        assert "clear the plan task of run manual__test (with downstream)" in message
        assert "No such file" not in message and "replace it with a good copy" not in message.lower()
        assert context["ti"].pushed["outcome"]["status"] == "failed"
        assert state(source, "sales.store") == before

    def test_a_file_replaced_by_a_good_copy_merges_and_the_next_run_is_not_held_by_it(self, source):
        planned = loaded_with_changes_planned(source)
        path = cdc_path(planned["sales.store"])
        with open(path, "rb") as handle:
            good = handle.read()
        with open(path, "wb") as handle:
            handle.write(good[:64])
        with pytest.raises(AirflowFailException, match="not a Parquet file"):
            merge(source, planned["sales.store"])
        with open(path, "wb") as handle:  # the remedy the failure names: a good copy, same name
            handle.write(good)
        later = datetime.now(timezone.utc).timestamp() + 5
        os.utime(path, (later, later))

        assert merge(source, planned["sales.store"])["status"] == "succeeded"
        assert list(state(source, "sales.store").last_run["replaced_files"]) == [path]
        report_context = make_context(utc(2024, 3, 4))
        plan_task(source).execute(report_context)
        report = report_context["ti"].pushed["report"]
        assert report["problems"] == [] and "sales.store" in report["up_to_date"]


class TestClearedMergeOvertakenByALaterRun:
    def test_ends_skipped_with_a_superseded_outcome_and_the_summary_stays_green(self, source):
        older = loaded_with_changes_planned(source)["sales.store"]
        store = {**sample_stores()[0], "Op": "U", "city": "Tustin"}
        write_dms_file(f"{source['raw_root']}/sales/store/20240303-120000000.parquet", [store], STORE)
        for plan in plans(source, utc(2024, 3, 4)).values():  # the next run plans and merges these files and more
            merge(source, plan)
        context = make_context()

        with pytest.raises(AirflowSkipException, match="a later run already applied this plan's files"):
            merge(source, older, context)

        outcome = context["ti"].pushed["outcome"]
        assert outcome["status"] == SUPERSEDED
        summary = DmsCdcRunSummaryOperator(task_id="summary").execute(make_context(ti=FakeTaskInstance({
            ("plan", "report"): {"planned": ["sales.store"], "registered": [], "inactive": [], "up_to_date": [],
                                 "problems": [], "finished_commits": [], "cdc_before": None},
            ("merge", "outcome"): outcome}, {"plan": "success", "merge": "skipped"})))
        assert summary["merged"] == []

    def test_a_conflict_it_cannot_explain_fails_saying_which_task_to_clear(self, source):
        plan = plans(source, BEFORE_CHANGES)["sales.store"]
        store = open_store(source["state_uri"])
        store.update(plan["state_path"], order_column="AR_H_CHANGE_SEQ")
        store.close()

        with pytest.raises(AirflowFailException, match=r"clear the plan task of run manual__test .*the next run plans it"):
            merge(source, plan)


class TestFullRefreshGlobs:
    def test_the_plan_task_fails_naming_a_glob_that_matches_no_active_table(self, source):
        with pytest.raises(AirflowFailException, match=r"'sales.prodcut' matches no table.*full_refresh param"):
            plan_task(source, full_refresh="sales.prodcut,sales.store").execute(make_context(BEFORE_CHANGES))
        assert state(source, "sales.store").version == 1  # nothing planned or merged

    def test_the_sensor_fails_the_run_instead_of_skipping_it(self, source):
        sensor = DmsCdcNewFilesSensor(task_id="wait", aws_conn_id=None, raw_root=source["raw_root"],
                                      state_uri=source["state_uri"], full_refresh=["sales.nothing"], soft_fail=True)

        with pytest.raises(RawFilesCheckError, match="'sales.nothing' matches no table"):
            sensor.poke(make_context(BEFORE_CHANGES))


class RunsOfTheSource(FakeTaskInstance):
    """The Task SDK's run queries, answered from a list of other runs of the DAG."""

    def __init__(self, running: int, earlier=None, planning: int = 1, in_flight: int = 0):
        super().__init__()
        self.task_id = "plan"
        self.running, self.earlier, self.planning, self.in_flight = running, earlier, planning, in_flight

    def get_dr_count(self, dag_id, states=None, **_):
        assert states == ["running"]
        return self.running

    def get_previous_dagrun(self, state=None):
        assert state == "running"
        return self.earlier

    def get_ti_count(self, dag_id, task_ids=None, states=None, **_):
        return self.planning if task_ids == ["plan"] else self.in_flight


EARLIER = SimpleNamespace(run_id="backfill__2024-03-02T10:00:00+00:00", logical_date=utc(2024, 3, 2, 10))


class TestOneRunAtATime:
    def test_a_run_alone_plans_at_once(self):
        assert run_holding_the_source(RunsOfTheSource(running=1, earlier=EARLIER), ["merge"]) is None

    def test_an_earlier_running_run_holds_a_later_one(self):
        holder = run_holding_the_source(RunsOfTheSource(running=2, earlier=EARLIER), ["merge"])
        assert holder == "the earlier run backfill__2024-03-02T10:00:00+00:00 (logical date 2024-03-02T10:00:00+00:00) is still running"

    def test_a_later_run_already_merging_holds_an_earlier_one_but_one_still_sensing_or_planning_does_not(self):
        assert run_holding_the_source(RunsOfTheSource(running=2, in_flight=1), ["merge"]) == (
            "a later run of this source is merging")
        assert run_holding_the_source(RunsOfTheSource(running=2, planning=2), ["merge"]) is None

    def test_the_plan_task_waits_deferred_with_a_message_and_fails_after_its_timeout_saying_what_to_do(
            self, source, capsys):
        op = plan_task(source, wait_timeout=600, wait_check_interval=30)
        ti = RunsOfTheSource(running=2, earlier=EARLIER)

        with pytest.raises(TaskDeferred) as deferred:
            op.execute(make_context(BEFORE_CHANGES, ti=ti))
        wakes = deferred.value.trigger.moment - datetime.now(timezone.utc)
        assert timedelta(seconds=25) < wakes <= timedelta(seconds=30)
        assert deferred.value.method_name == "execute_after_waiting"
        assert "Waiting to plan: the earlier run backfill__2024-03-02T10:00:00+00:00" in capsys.readouterr().out
        since = deferred.value.kwargs["waiting_since"]
        with pytest.raises(TaskDeferred) as again:  # still held: waits on, counting from the first check
            op.execute_after_waiting(make_context(BEFORE_CHANGES, ti=ti), waiting_since=since)
        assert again.value.kwargs["waiting_since"] == since

        long_ago = (datetime.now(timezone.utc) - timedelta(seconds=601)).isoformat()
        with pytest.raises(AirflowFailException) as failed:
            op.execute_after_waiting(make_context(BEFORE_CHANGES, ti=ti), waiting_since=long_ago)
        message = str(failed.value)
        assert "this run did not plan: the earlier run backfill__" in message
        assert "clear this plan task once that run has finished" in message and "mark it failed" in message
        assert state(source, "sales.store").version == 1

        ti.running = 1
        planned = op.execute_after_waiting(make_context(BEFORE_CHANGES, ti=ti), waiting_since=long_ago)
        assert "sales.store" in {e["plan"]["table"] for e in planned}


def test_a_run_that_planned_nothing_ends_its_summary_skipped_saying_so():
    ti = FakeTaskInstance({("plan", "report"): {
        "planned": [], "registered": [], "inactive": [], "up_to_date": ["sales.store"], "problems": [],
        "finished_commits": [], "cdc_before": None}}, {"wait_for_changes": "success", "plan": "success"})

    with pytest.raises(AirflowSkipException, match="nothing was planned in this run.*sales.store"):
        DmsCdcRunSummaryOperator(task_id="summary").execute(make_context(ti=ti))


def test_a_deferred_merge_records_a_copy_replaced_since_planning_when_it_commits(source, monkeypatch, spark):
    from dmscdc_provider.engines import ENGINE_CLASSES
    from fakes import ScriptedRemoteEngine
    from airflow.sdk.exceptions import TaskDeferred

    monkeypatch.setitem(ENGINE_CLASSES, "scripted", "fakes:ScriptedRemoteEngine")
    ScriptedRemoteEngine.submitted = []
    for plan in plans(source, BEFORE_CHANGES).values():
        merge(source, plan)
    write_change_batch(source["raw_root"])
    plan = plans(source, AFTER_CHANGES, engine="scripted")["sales.store"]
    path = cdc_path(plan)
    later = datetime.now(timezone.utc).timestamp() + 5
    os.utime(path, (later, later))  # a good copy put in place after planning

    def operator():  # Airflow resumes a deferred task on a fresh operator
        return DmsCdcMergeOperator(task_id="merge", aws_conn_id=None, plan=plan, state_uri=source["state_uri"],
                                   engine="scripted", deferrable=True)

    with pytest.raises(TaskDeferred) as deferred:
        operator().execute(make_context())
    trigger = deferred.value.trigger
    outcome = operator().execute_complete(make_context(), {"status": "succeeded", "job_ref": trigger.job_ref,
                                                           "attempt_id": trigger.attempt_id})

    assert outcome["status"] == "succeeded"
    assert list(state(source, "sales.store").last_run["replaced_files"]) == [path]


def test_a_failed_merge_a_person_marked_success_does_not_fail_the_summary_again(capsys):
    failed_outcome = {"table": "sales.store", "status": "failed", "plan_id": "p", "summary": {},
                      "error": {"problem": "bad file"}, "note": None}
    ti = FakeTaskInstance({
        ("plan", "report"): {"planned": ["sales.store"], "registered": [], "inactive": [], "up_to_date": [],
                             "problems": [], "finished_commits": [], "cdc_before": None},
        ("plan", "return_value"): [{"plan": {"table": "sales.store"}}],
        ("merge", "outcome"): failed_outcome}, {"plan": "success", "merge_0": "success"})

    DmsCdcRunSummaryOperator(task_id="summary").execute(make_context(ti=ti))

    assert "sales.store: its merge failed and was marked success by a person" in capsys.readouterr().out
    ti.task_states["merge_0"] = "failed"
    with pytest.raises(AirflowFailException, match="sales.store: bad file"):
        DmsCdcRunSummaryOperator(task_id="summary").execute(make_context(ti=ti))
