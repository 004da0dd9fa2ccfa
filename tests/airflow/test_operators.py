"""plan, merge, refresh_catalog and summary operators, run on the demo source with local Spark."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, AirflowSkipException
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.exceptions import TaskDeferred

from airflow_env import utc
from dmscdc_provider.catalog import query
from dmscdc_provider.demo import prepare_demo_source, write_change_batch
from dmscdc_provider.dms_writer import load_file_name, write_dms_file
from dmscdc_provider.engines.choice import parse_size
from dmscdc_provider.engines import ENGINE_CLASSES
from dmscdc_provider.engines.local import LocalSparkEngine
from dmscdc_provider.operators.catalog import DmsCdcRefreshCatalogOperator, lake_table_uri
from dmscdc_provider.operators.merge import DmsCdcMergeOperator, describe_success
from dmscdc_provider.observability.figures import NUMERIC_FIGURES
from dmscdc_provider.plan import TablePlan
from dmscdc_provider.runner import MergeProgress, TableOutcome, run_table
from dmscdc_provider.storage import open_storage
from dmscdc_provider.operators.plan import DmsCdcPlanOperator
from dmscdc_provider.sensors.raw_files import describe_cutoff
from dmscdc_provider.operators.summary import DmsCdcRunSummaryOperator
from dmscdc_provider.planner import controller_path
from dmscdc_provider.state.base import StoreUnavailableError, TableState, open_store
from dmscdc_provider.triggers.merge_job import DmsCdcMergeJobTrigger
from fakes import (
    FakeTaskInstance,
    InletEvents,
    RecordedAssetEvent,
    ScriptedRemoteEngine,
    SleepingEngine,
    make_context,
)

BEFORE_CHANGES, AFTER_CHANGES = utc(2024, 3, 2), utc(2024, 3, 3)


@pytest.fixture
def source(tmp_path) -> dict:
    raw, state = str(tmp_path / "raw"), f"sqlite://{tmp_path / 'state.sqlite'}"
    prepare_demo_source(raw, state)
    return {"raw_root": raw, "lake_root": str(tmp_path / "lake"), "state_uri": state}


def plan_task(source: dict, **kwargs) -> DmsCdcPlanOperator:
    return DmsCdcPlanOperator(task_id="plan", aws_conn_id=None, **source, **kwargs)


def plans_by_table(source: dict, interval_end, **kwargs) -> dict[str, dict]:
    return {entry["plan"]["table"]: entry["plan"] for entry in plan_task(source, **kwargs).execute(make_context(interval_end))}


def merge_task(source: dict, plan: dict, **kwargs) -> DmsCdcMergeOperator:
    return DmsCdcMergeOperator(task_id="merge", aws_conn_id=None, plan=plan, state_uri=source["state_uri"], **kwargs)


def state(source: dict, table: str):
    store = open_store(source["state_uri"])
    try:
        return store.get(controller_path(source["raw_root"], *table.split(".")))
    finally:
        store.close()


def lake_rows(spark, source: dict, table: str) -> list:
    path = f"{source['lake_root']}/{table.replace('.', '/')}"
    return sorted(tuple(row) for row in spark.read.parquet(path).drop("Op").collect())


def test_template_fields_cover_locations_plan_engine_and_aws(source):
    ops = [
        plan_task(source),
        merge_task(source, {"table": "{{ params.t }}"}, engine="{{ params.engine }}"),
        DmsCdcRefreshCatalogOperator(task_id="r", lake_root="{{ params.lake }}", catalog_settings={"path": "{{ params.p }}"}),
    ]
    for op in ops:
        assert {"aws_conn_id", "region_name"} <= set(op.template_fields)
        for field in op.template_fields:
            getattr(op, field)
    ops[1].render_template_fields({"params": {"t": "sales.store", "engine": "glue"}})
    ops[2].render_template_fields({"params": {"lake": "s3://lake", "p": "/c.duckdb"}})
    assert ops[1].plan == {"table": "sales.store"} and ops[1].engine == "glue"
    assert ops[2].lake_root == "s3://lake" and ops[2].catalog_settings == {"path": "/c.duckdb"}
    assert set(plan_task(source).template_fields) >= {"raw_root", "lake_root", "state_uri", "tables", "cdc_before", "full_refresh"}


class TestDmsCdcPlanOperator:
    def test_one_plan_per_active_table_ready_for_expand_kwargs_and_a_report(self, source, tmp_path):
        (tmp_path / "raw" / "sales" / "customer").mkdir()
        context = make_context(BEFORE_CHANGES)

        mapped = plan_task(source).execute(context)

        assert [sorted(entry) for entry in mapped] == [["plan"]] * 3
        assert sorted(entry["plan"]["table"] for entry in mapped) == ["sales.product", "sales.productorder", "sales.store"]
        assert all(entry["plan"]["mode"] == "full" for entry in mapped)
        report = context["ti"].pushed["report"]
        assert report["registered"] == ["sales.customer"]
        assert report["inactive"] == ["sales.customer"]
        assert report["cdc_before"] == "2024-03-02T00:00:00+00:00"
        assert state(source, "sales.customer").active is False

    def test_on_mwaa_small_tables_merge_in_the_worker_and_a_large_one_goes_to_glue(self, source, capsys):
        schema = pa.schema([("id", pa.int64()), ("note", pa.string())])
        rows = [{"Op": "I", "id": i, "note": f"order note {i:032x}"} for i in range(60_000)]
        write_dms_file(f"{source['raw_root']}/sales/bigorder/{load_file_name(1)}", rows, schema)
        store = open_store(source["state_uri"])
        path = controller_path(source["raw_root"], "sales", "bigorder")
        store.register(TableState(path=path, schema="sales", table="bigorder"))
        store.update(path, active=True, primary_key=("id",))
        store.close()

        plans = plans_by_table(source, BEFORE_CHANGES, spark_engine="glue", inprocess_max_bytes=parse_size("100KiB"))

        engines = {table: plan["engine"] for table, plan in plans.items()}
        assert engines == {"sales.bigorder": "glue", "sales.product": "duckdb",
                           "sales.productorder": "duckdb", "sales.store": "duckdb"}
        assert "not under the in-process limit of 100.0 KiB" in plans["sales.bigorder"]["engine_reason"]
        log = capsys.readouterr().out
        assert "sales.bigorder: full merge of 1 file(s) on glue (auto: " in log
        assert "sales.store: full merge of 1 file(s) on duckdb (auto: " in log

    def test_files_that_are_not_dms_names_are_logged_and_reported_as_warnings(self, source, capsys):
        stray = os.path.join(source["raw_root"], "sales", "store", "LOAD0000000G.parquet")
        with open(stray, "w") as handle:
            handle.write("x")
        context = make_context(BEFORE_CHANGES)

        plan_task(source).execute(context)

        (warning,) = context["ti"].pushed["report"]["warnings"]
        assert warning["table"] == "sales.store" and stray in warning["warning"]
        logged = capsys.readouterr()
        assert any(stray in line and "warning" in line for line in (logged.out + logged.err).splitlines())

    @pytest.mark.parametrize(("interval_end", "sentence"), [
        (BEFORE_CHANGES, "This run applies the CDC files named before 2024-03-02T00:00:00+00:00, the end of its "
                         "data interval; files named at or after it are left for later runs."),
        (None, "This run has no data interval (it was triggered without a logical date), so it applies every "
               "CDC file present."),
    ])
    def test_logs_which_cdc_files_the_run_applies_as_a_sentence(self, source, capsys, interval_end, sentence):
        plan_task(source).execute(make_context(interval_end))

        log = capsys.readouterr().out  # the task SDK's logger writes to stdout
        assert sentence in log
        assert "any time" not in log

    def test_cdc_files_are_planned_only_by_runs_whose_interval_ends_after_their_name(self, source):
        write_change_batch(source["raw_root"])

        before = plans_by_table(source, BEFORE_CHANGES)
        after = plans_by_table(source, AFTER_CHANGES)

        assert all(entry["kind"] == "load" for entry in before["sales.store"]["files"])
        assert [entry["kind"] for entry in after["sales.store"]["files"]] == ["load", "cdc"]

    def test_full_refresh_param_rebuilds_only_the_chosen_tables(self, source, spark):
        for plan in plans_by_table(source, BEFORE_CHANGES).values():
            merge_task(source, plan).execute(make_context())

        plans = plans_by_table(source, BEFORE_CHANGES, full_refresh="sales.store")

        assert list(plans) == ["sales.store"]
        assert plans["sales.store"]["mode"] == "full"


    def test_the_log_says_which_files_a_run_applies_with_and_without_a_logical_date(self):
        assert describe_cutoff(BEFORE_CHANGES) == (
            "This run applies the CDC files named before 2024-03-02T00:00:00+00:00, the end of its data interval; "
            "files named at or after it are left for later runs.")
        assert describe_cutoff(BEFORE_CHANGES, explicit=True) == (
            "This run applies the CDC files named before 2024-03-02T00:00:00+00:00, given as the cdc_before "
            "argument; files named at or after it are left for later runs.")
        assert describe_cutoff(None).startswith("This run has no data interval (it was triggered without a "
                                                "logical date), so it applies every CDC file present")


class TestDmsCdcMergeOperator:
    def test_merges_one_table_commits_its_state_and_returns_the_outcome(self, source, spark):
        plan = plans_by_table(source, BEFORE_CHANGES)["sales.store"]
        context = make_context()

        outcome = merge_task(source, plan).execute(context)

        assert outcome["status"] == "succeeded"
        assert outcome["summary"]["rows_written"] == 8
        assert context["ti"].pushed["outcome"] == outcome
        assert state(source, "sales.store").last_full_load_date == "2024-03-01 09:00:00"
        assert len(lake_rows(spark, source, "sales.store")) == 8
        assert state(source, "sales.product").version == 1  # other tables untouched

    def test_the_outcome_is_pushed_once_and_the_return_value_not_at_all(self, source, spark):
        plan = plans_by_table(source, BEFORE_CHANGES)["sales.store"]
        context = make_context()
        op = merge_task(source, plan)

        op.execute(context)

        assert list(context["ti"].pushed) == ["outcome"]
        assert op.do_xcom_push is False  # Airflow pushes no return_value copy

    def test_success_is_logged_as_a_sentence_with_the_lake_path_and_the_new_watermark(self, source, spark):
        plans = plans_by_table(source, BEFORE_CHANGES)
        merge_task(source, plans["sales.store"]).execute(make_context())
        write_change_batch(source["raw_root"])
        plan = plans_by_table(source, AFTER_CHANGES)["sales.store"]
        outcome = merge_task(source, plan).execute(make_context())

        pushed_only = ("lake_table", "watermark", "table_format")
        sentence = describe_success(TableOutcome(**{k: v for k, v in outcome.items() if k not in pushed_only}),
                                    TablePlan.from_dict(plan))

        [cdc_file] = [f["path"] for f in plan["files"] if f["kind"] == "cdc"]
        assert sentence.startswith(f"sales.store: merged 1 file(s) into {source['lake_root']}/sales/store in ")
        assert f"read 1 insert(s), 0 update(s), 0 delete(s); wrote {outcome['summary']['rows_written']} row(s)" in sentence
        assert sentence.endswith(f"LastIncrementalFile is now {cdc_file}.")
        assert plan["new_last_incremental_file"] == cdc_file
        assert outcome["watermark"] == {"LastFullLoadDate": "2024-03-01 09:00:00",
                                        "LastIncrementalFile": plan["new_last_incremental_file"]}
        assert outcome["lake_table"] == f"{source['lake_root']}/sales/store"

    def test_a_plan_larger_than_the_inline_limit_travels_by_reference_and_merges_the_same(self, source, spark):
        context = make_context(BEFORE_CHANGES)
        [message] = [entry["plan"] for entry in plan_task(source, plan_inline_limit=0).execute(context)
                     if entry["plan"]["table"] == "sales.store"]
        inline = plans_by_table(source, BEFORE_CHANGES)["sales.store"]

        assert set(message) == {"table", "plan_id", "mode", "file_count", "plan_uri"}
        assert message["plan_uri"] == f"{source['lake_root']}/_dmscdc_plans/sales/store/{inline['plan_id']}.json"
        assert len(json.dumps(message)) < len(json.dumps(inline))
        stored = json.loads(open(message["plan_uri"]).read())
        # The same plan; only the time each planning listed the raw folder differs.
        assert {**stored, "raw_listed_at": None} == {**inline, "raw_listed_at": None}
        assert stored["raw_listed_at"] <= inline["raw_listed_at"]

        outcome = merge_task(source, message).execute(make_context())

        assert outcome["status"] == "succeeded" and outcome["plan_id"] == inline["plan_id"]
        assert len(lake_rows(spark, source, "sales.store")) == 8

    def test_stored_plans_older_than_the_retention_are_removed_when_the_table_is_planned_again(self, source):
        folder = f"{source['lake_root']}/_dmscdc_plans/sales/store"
        os.makedirs(folder)
        old, recent = f"{folder}/0123456789abcdef.json", f"{folder}/fedcba9876543210.json"
        for path in (old, recent):
            open(path, "w").write("{}")
        eight_days_ago = time.time() - 8 * 24 * 3600
        os.utime(old, (eight_days_ago, eight_days_ago))

        [message] = [entry["plan"] for entry in plan_task(source, plan_inline_limit=0).execute(make_context(BEFORE_CHANGES))
                     if entry["plan"]["table"] == "sales.store"]

        assert sorted(os.listdir(folder)) == sorted([os.path.basename(recent), os.path.basename(message["plan_uri"])])

    def test_a_missing_plan_document_names_the_remedy(self, source):
        message = {"table": "sales.store", "plan_id": "0123456789abcdef", "mode": "full", "file_count": 1,
                   "plan_uri": f"{source['lake_root']}/_dmscdc_plans/sales/store/0123456789abcdef.json"}

        with pytest.raises(FileNotFoundError, match="is gone .*clear the run's plan task to plan again"):
            merge_task(source, message).execute(make_context())

    def test_small_plans_travel_inline(self, source):
        [entry, *_] = plan_task(source).execute(make_context(BEFORE_CHANGES))

        assert "plan_uri" not in entry["plan"] and entry["plan"]["files"]

    def test_a_retry_of_a_committed_plan_changes_nothing(self, source, spark):
        plan = plans_by_table(source, BEFORE_CHANGES)["sales.product"]
        merge_task(source, plan).execute(make_context())
        committed = state(source, "sales.product")

        again = merge_task(source, plan).execute(make_context())

        assert again["note"] == "already committed by an earlier attempt"
        assert state(source, "sales.product").version == committed.version
        assert len(lake_rows(spark, source, "sales.product")) == 10

    def test_a_corrupt_file_fails_once_without_retries_naming_table_file_and_remedy_and_a_rerun_after_the_fix_succeeds(
            self, source, spark):
        for plan in plans_by_table(source, BEFORE_CHANGES).values():
            merge_task(source, plan).execute(make_context())
        write_change_batch(source["raw_root"])
        plans = plans_by_table(source, AFTER_CHANGES)
        [cdc_file] = [f["path"] for f in plans["sales.store"]["files"] if f["kind"] == "cdc"]
        with open(cdc_file, "rb") as handle:
            good = handle.read()
        with open(cdc_file, "wb") as handle:
            handle.write(good[:64])
        before = state(source, "sales.store")
        context = make_context()

        with pytest.raises(AirflowFailException) as failed:  # no retry can fix the file
            merge_task(source, plans["sales.store"]).execute(context)

        message = str(failed.value)
        assert "sales.store: merge failed" in message and cdc_file in message and "remedy" in message
        assert "is not a Parquet file" in "\n".join(message.splitlines()[:20])  # the cause, in the task log
        assert "An error occurred while calling" not in message
        assert context["ti"].pushed["outcome"]["status"] == "failed"
        assert state(source, "sales.store") == before
        merge_task(source, plans["sales.product"]).execute(make_context())  # another table is unaffected

        with open(cdc_file, "wb") as handle:
            handle.write(good)
        outcome = merge_task(source, plans["sales.store"]).execute(make_context())

        assert outcome["status"] == "succeeded"
        assert len(lake_rows(spark, source, "sales.store")) == 9
        assert state(source, "sales.productorder").version == before.version  # never touched by these retries

    def test_an_engine_that_cannot_start_fails_with_a_retryable_error_and_leaves_the_state(
            self, source, monkeypatch):
        monkeypatch.setitem(ENGINE_CLASSES, "unreachable", "fakes:UnreachableEngine")
        # The merge runs on the engine its plan names (auto would name duckdb here).
        plan = plans_by_table(source, BEFORE_CHANGES, engine="unreachable")["sales.store"]
        context = make_context()

        with pytest.raises(AirflowException, match="could not connect to the Spark master") as failed:
            merge_task(source, plan, engine="unreachable").execute(context)

        assert not isinstance(failed.value, AirflowFailException)  # Airflow retries it
        assert context["ti"].pushed["outcome"]["error"]["kind"] == "infrastructure"
        assert state(source, "sales.store").version == 1

    def test_an_unreachable_store_fails_with_a_retryable_error(self, source, tmp_path):
        plan = plans_by_table(source, BEFORE_CHANGES)["sales.store"]
        (tmp_path / "not-a-folder").write_text("")  # the store's folder cannot be opened
        unreachable = {**source, "state_uri": f"sqlite://{tmp_path / 'not-a-folder' / 'state.sqlite'}"}

        with pytest.raises(StoreUnavailableError, match="cannot open the controller store") as failed:
            merge_task(unreachable, plan).execute(make_context())

        assert not isinstance(failed.value, AirflowFailException)  # Airflow retries it
        assert state(source, "sales.store").version == 1

    def test_a_plan_made_stale_by_another_run_fails_without_retry(self, source, spark):
        plan = plans_by_table(source, BEFORE_CHANGES)["sales.store"]
        store = open_store(source["state_uri"])
        store.update(plan["state_path"], order_column="AR_H_CHANGE_SEQ")
        store.close()

        with pytest.raises(AirflowFailException, match="conflict"):
            merge_task(source, plan).execute(make_context())

    def test_deferrable_with_a_local_engine_runs_in_the_worker(self, source, spark):
        plan = plans_by_table(source, BEFORE_CHANGES, engine="local")["sales.store"]

        assert merge_task(source, plan, engine="local", deferrable=True).execute(make_context())["status"] == "succeeded"

    def test_in_process_engine_merges_in_the_worker(self, source):
        """``engine: duckdb``: the merge runs in the worker, no Spark and no job to wait for."""
        import duckdb

        plan = plans_by_table(source, BEFORE_CHANGES, engine="duckdb")["sales.store"]
        op = merge_task(source, plan, engine="duckdb", duckdb_settings={"memory_limit": "256MB"}, deferrable=True)
        outcome = op.execute(make_context())

        assert outcome["status"] == "succeeded"
        lake_glob = f"{source['lake_root']}/sales/store/**/*.parquet"
        (count,) = duckdb.sql(f"SELECT count(*) FROM read_parquet('{lake_glob}')").fetchall()[0]
        assert count == outcome["summary"]["rows_written"] > 0
        assert state(source, "sales.store").version > plan["base_version"]


class RecordingStats:
    """Airflow's metrics client as a test sees it: every gauge set, with its tags."""

    def __init__(self):
        self.gauges: list[tuple[str, float, dict]] = []

    def gauge(self, stat, value, rate=None, delta=None, *, tags=None):
        self.gauges.append((stat, value, tags))


class TestMergeMetrics:
    def test_a_successful_merge_sets_one_gauge_per_figure_tagged_with_source_and_table(self, source, monkeypatch):
        import airflow.providers.common.compat.sdk as compat

        stats = RecordingStats()
        monkeypatch.setattr(compat, "Stats", stats, raising=False)
        plan = plans_by_table(source, BEFORE_CHANGES, engine="duckdb")["sales.store"]

        outcome = DmsCdcMergeOperator(task_id="merge", aws_conn_id=None, plan=plan, state_uri=source["state_uri"],
                                      engine="duckdb", source="demo").execute(make_context())

        figures = outcome["summary"]["figures"]
        gauges = {stat: (value, tags) for stat, value, tags in stats.gauges}
        assert gauges["dmscdc.lag_seconds"] == (figures["lag_seconds"], {"source": "demo", "table": "sales.store"})
        assert gauges["dmscdc.rows_inserted"][0] == figures["rows_inserted"] == 8
        assert set(gauges) == {f"dmscdc.{name}" for name in NUMERIC_FIGURES}

    def test_the_task_log_says_the_lag_and_what_raw_holds_beyond_the_new_watermark(self, source, capsys):
        write_change_batch(source["raw_root"])  # named after this run's cutoff: left for the next run
        plan = plans_by_table(source, BEFORE_CHANGES, engine="duckdb")["sales.store"]

        outcome = merge_task(source, plan, engine="duckdb").execute(make_context())

        figures = outcome["summary"]["figures"]
        assert figures["pending_files"] == 1
        assert re.search(r"sales\.store: lag \d+d\d\dh \(commit time minus the newest applied file's time\); raw "
                         rf"holds 1 more file\(s\) \({figures['pending_bytes']:,} bytes\) beyond the new watermark, "
                         r"the oldest \d+[dhms]\w* old", capsys.readouterr().out)

    def test_a_failed_merge_sets_no_gauge(self, source, monkeypatch):
        import airflow.providers.common.compat.sdk as compat

        stats = RecordingStats()
        monkeypatch.setattr(compat, "Stats", stats, raising=False)
        plan = plans_by_table(source, BEFORE_CHANGES, engine="duckdb")["sales.store"]
        for entry in plan["files"]:
            with open(entry["path"], "wb") as handle:
                handle.write(b"not parquet")

        with pytest.raises(AirflowFailException):
            merge_task(source, plan, engine="duckdb").execute(make_context())
        assert stats.gauges == []

    def test_a_metrics_backend_that_fails_does_not_fail_the_committed_merge(self, source, monkeypatch, caplog):
        import airflow.providers.common.compat.sdk as compat

        class BrokenStats:
            def gauge(self, *args, **kwargs):
                raise OSError("statsd host unreachable")

        monkeypatch.setattr(compat, "Stats", BrokenStats(), raising=False)
        plan = plans_by_table(source, BEFORE_CHANGES, engine="duckdb")["sales.store"]

        assert merge_task(source, plan, engine="duckdb").execute(make_context())["status"] == "succeeded"
        assert "could not emit metric dmscdc.lag_seconds: statsd host unreachable" in caplog.text


@pytest.fixture
def scripted_engine(monkeypatch):
    monkeypatch.setitem(ENGINE_CLASSES, "scripted", "fakes:ScriptedRemoteEngine")
    ScriptedRemoteEngine.submitted = []
    return "scripted"


class TestRemoteEngineDeferral:
    def test_defers_on_a_job_trigger_after_submitting_the_pinned_plan(self, source, scripted_engine):
        plan = plans_by_table(source, BEFORE_CHANGES, engine=scripted_engine)["sales.store"]
        op = merge_task(source, plan, engine=scripted_engine, engine_settings={"statuses": ["running", "succeeded"]},
                        deferrable=True, poll_interval=5)

        with pytest.raises(TaskDeferred) as deferred:
            op.execute(make_context())

        trigger = deferred.value.trigger
        assert isinstance(trigger, DmsCdcMergeJobTrigger)
        assert deferred.value.method_name == "execute_complete"
        [submitted] = ScriptedRemoteEngine.submitted
        assert submitted["plan_id"] == plan["plan_id"]
        assert trigger.job_ref == f"job-{submitted['attempt_id']}"
        assert trigger.attempt_id == submitted["attempt_id"]
        assert (trigger.engine, trigger.engine_settings, trigger.poll_interval) == (
            scripted_engine, {"statuses": ["running", "succeeded"]}, 5)
        assert state(source, "sales.store").version == 1  # nothing committed while the job runs

    def test_bad_input_fails_the_task_before_a_job_is_submitted(self, source, scripted_engine):
        plan = plans_by_table(source, BEFORE_CHANGES)["sales.store"]
        [load_file] = [f["path"] for f in plan["files"] if f["kind"] == "load"][:1]
        open(load_file, "wb").close()  # zero bytes
        context = make_context()

        with pytest.raises(AirflowException, match="Parquet file size is 0 bytes") as failed:
            merge_task(source, plan, engine=scripted_engine, deferrable=True).execute(context)

        assert ScriptedRemoteEngine.submitted == []
        assert load_file in str(failed.value)
        assert context["ti"].pushed["outcome"]["error"]["file"] == load_file
        assert state(source, "sales.store").version == 1

    def test_execute_complete_fetches_the_result_and_commits(self, source, scripted_engine, spark):
        plan = plans_by_table(source, BEFORE_CHANGES, engine=scripted_engine)["sales.store"]
        op = merge_task(source, plan, engine=scripted_engine, deferrable=True)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(make_context())
        trigger = deferred.value.trigger

        outcome = op.execute_complete(make_context(), {"status": "succeeded", "job_ref": trigger.job_ref,
                                                       "attempt_id": trigger.attempt_id})

        assert outcome["status"] == "succeeded"
        assert state(source, "sales.store").last_full_load_date == "2024-03-01 09:00:00"
        assert len(lake_rows(spark, source, "sales.store")) == 8

    def test_a_polling_error_fails_the_instance_with_a_retryable_error_and_leaves_the_state(
            self, source, scripted_engine):
        plan = plans_by_table(source, BEFORE_CHANGES, engine=scripted_engine)["sales.store"]
        op = merge_task(source, plan, engine=scripted_engine, deferrable=True)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(make_context())

        with pytest.raises(AirflowException, match="throttled") as failed:
            op.execute_complete(make_context(), {"status": "error", "message": "throttled",
                                                 "job_ref": deferred.value.trigger.job_ref,
                                                 "attempt_id": deferred.value.trigger.attempt_id})
        assert not isinstance(failed.value, AirflowFailException)
        assert state(source, "sales.store").version == 1

    def test_job_trigger_logs_each_check(self, scripted_engine):
        import asyncio

        from structlog.testing import capture_logs

        async def last_event():
            async for event in DmsCdcMergeJobTrigger(
                    engine=scripted_engine, engine_settings={"statuses": ["running", "running", "succeeded"]},
                    job_ref="job-1", attempt_id="a-1", poll_interval=0.01, aws_conn_id=None).run():
                return event.payload

        with capture_logs() as logs:
            assert asyncio.run(asyncio.wait_for(last_event(), 10))["status"] == "succeeded"

        checks = [entry["event"] for entry in logs if "check" in str(entry["event"])]
        assert [re.search(r": (\w+) \(check (\d+) of", line).groups() for line in checks] == [
            ("running", "1"), ("running", "2"), ("succeeded", "3")]
        assert checks[0].startswith(f"{scripted_engine} job job-1 (attempt a-1)")

    def test_job_trigger_serialize_round_trips_and_fires_when_the_job_ends(self, scripted_engine):
        import asyncio

        trigger = DmsCdcMergeJobTrigger(engine=scripted_engine, engine_settings={"statuses": ["running", "failed"]},
                                        job_ref="job-1", attempt_id="a-1", poll_interval=0.01, max_attempts=5,
                                        aws_conn_id=None)
        classpath, kwargs = trigger.serialize()
        assert classpath == "dmscdc_provider.triggers.merge_job.DmsCdcMergeJobTrigger"
        assert DmsCdcMergeJobTrigger(**kwargs).serialize() == (classpath, kwargs)

        async def first():
            async for event in DmsCdcMergeJobTrigger(**kwargs).run():
                return event.payload

        assert asyncio.run(asyncio.wait_for(first(), 10)) == {"status": "failed", "job_ref": "job-1", "attempt_id": "a-1"}


    def test_job_trigger_gives_up_after_max_attempts_logging_each_check(self, scripted_engine, capsys):
        import asyncio

        trigger = DmsCdcMergeJobTrigger(engine=scripted_engine, engine_settings={"statuses": ["running"]},
                                        job_ref="job-1", attempt_id="a-1", poll_interval=0.01, max_attempts=3,
                                        aws_conn_id=None)

        async def first():
            async for event in trigger.run():
                return event.payload

        payload = asyncio.run(asyncio.wait_for(first(), 10))

        assert payload["status"] == "error" and payload["attempt_id"] == "a-1"
        assert "still running after 3 checks" in payload["message"]
        logged = capsys.readouterr()
        checks = re.findall(r"scripted job job-1 \(attempt a-1\): running \(check \d of 3\)", logged.out + logged.err)
        assert checks == [f"{scripted_engine} job job-1 (attempt a-1): running (check {n} of 3)" for n in (1, 2, 3)]


class TestMergeProgress:
    def test_a_long_merge_step_is_reported_every_interval_with_its_step_and_elapsed_time(self, source):
        plan = TablePlan.from_dict(plans_by_table(source, BEFORE_CHANGES)["sales.store"])
        store = open_store(source["state_uri"])
        said: list[str] = []
        try:
            with MergeProgress(plan, said.append, interval=0.05) as progress:
                outcome = run_table(plan, SleepingEngine(0.4), store, open_storage(source["lake_root"]), progress.step)
        finally:
            store.close()
        lines_when_done = len(said)
        time.sleep(0.2)

        assert outcome.status == "failed"
        assert said[0].startswith("sales.store: merging 1 file(s) (") and plan.lake_table_path in said[0]
        heartbeats = [line for line in said if ": still " in line]
        assert len(heartbeats) >= 3
        assert all(line.startswith(f"sales.store: still merging 1 file(s) into {plan.lake_table_path}")
                   for line in heartbeats)
        assert re.search(r"\(\d+ s in this step, \d+ s since the merge task started\)$", heartbeats[-1])
        assert len(said) == lines_when_done  # the heartbeat stops with the merge

    def test_the_merge_task_reports_progress_at_its_configured_interval(self, source, monkeypatch):
        monkeypatch.setitem(ENGINE_CLASSES, "sleeping", "fakes:SleepingEngine")
        plan = plans_by_table(source, BEFORE_CHANGES, engine="sleeping")["sales.store"]  # the engine it runs on
        op = merge_task(source, plan, engine="sleeping", engine_settings={"seconds": 0.3}, progress_interval=0.05)
        said: list[str] = []
        monkeypatch.setattr(MergeProgress, "__init__", _recording_init(MergeProgress.__init__, said))

        with pytest.raises(AirflowException, match="bad input"):
            op.execute(make_context())

        assert len([line for line in said if ": still merging" in line]) >= 3


    def test_progress_lines_of_a_local_spark_merge_say_which_stage_runs(self, source, spark):
        plan = TablePlan.from_dict(plans_by_table(source, BEFORE_CHANGES)["sales.productorder"])
        engine = LocalSparkEngine(session=spark)
        store = open_store(source["state_uri"])
        said: list[str] = []
        try:
            with MergeProgress(plan, said.append, interval=0.2, engine=engine) as progress:
                outcome = run_table(plan, engine, store, open_storage(source["lake_root"]), progress.step)
        finally:
            store.close()

        assert outcome.status == "succeeded"
        assert any(re.search(r": Spark stage \d+ \(\w+\): \d+ of \d+ tasks done", line) for line in said), said


def _recording_init(original, said: list[str]):
    def init(self, plan, say, interval, engine=None):
        original(self, plan, lambda line: (said.append(line), say(line)), interval, engine)
    return init


def outcome(table: str, status: str = "succeeded", problem: str | None = None) -> dict:
    return {"table": table, "status": status, "plan_id": "p", "summary": {"rows_read": {"I": 1}, "rows_written": 1},
            "error": {"problem": problem} if problem else None, "note": None, "seconds": 1.0}


class TestDmsCdcRefreshCatalogOperator:
    def refresh_task(self, source, catalog, alias):
        return DmsCdcRefreshCatalogOperator(task_id="refresh_catalog", aws_conn_id=None, lake_root=source["lake_root"],
                                            catalog_mode="duckdb", catalog_settings={"path": catalog},
                                            outlets=[alias], inlets=[alias])

    def test_refreshes_only_merged_tables_and_emits_their_assets(self, source, spark, tmp_path):
        merged = [merge_task(source, plan).execute(make_context())
                  for plan in plans_by_table(source, BEFORE_CHANGES).values()]
        catalog = str(tmp_path / "catalog.duckdb")
        alias = AssetAlias("dmscdc_demo_lake")
        product = next(o for o in merged if o["table"] == "sales.product")
        ti = FakeTaskInstance({("merge", "outcome"): [product, outcome("sales.store", "failed", "bad file")]})
        context = make_context(ti=ti, inlet_events={alias: InletEvents()})

        assert self.refresh_task(source, catalog, alias).execute(context) == ["sales.product"]

        assert query(catalog, "SELECT count(*) FROM sales.product")[1] == [(10,)]
        assert query(catalog, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'store'")[1] == [(0,)]
        expected_uri = lake_table_uri(source["lake_root"], "sales.product")
        assert expected_uri.startswith("file:///") and expected_uri.endswith("/lake/sales/product")
        [(asset, extra)] = context["outlet_events"][alias]
        assert asset == Asset(expected_uri)
        assert extra == {"table": "sales.product", "plan_id": product["plan_id"], "rows_written": 10,
                         "files_added": product["summary"]["files_added"], "files_removed": 0,
                         "watermark": {"LastFullLoadDate": "2024-03-01 09:00:00", "LastIncrementalFile": None},
                         "figures": product["summary"]["figures"]}
        assert extra["figures"]["rows_inserted"] == 10 and extra["figures"]["pending_files"] == 0

    def test_after_clearing_a_failed_table_only_that_table_is_announced_again(self, source, tmp_path):
        alias = AssetAlias("dmscdc_demo_lake")
        announced_before = InletEvents([
            RecordedAssetEvent({"table": "sales.product", "plan_id": "p"}),
            # The same table announced by another run, and by another DAG's run with this run's id.
            RecordedAssetEvent({"table": "sales.store", "plan_id": "p"}, source_run_id="scheduled__other"),
            RecordedAssetEvent({"table": "sales.store", "plan_id": "p"}, source_dag_id="dmscdc_hr"),
        ])
        (tmp_path / "lake" / "sales" / "store").mkdir(parents=True)
        ti = FakeTaskInstance({("merge", "outcome"): [outcome("sales.product"), outcome("sales.store")]})
        context = make_context(ti=ti, inlet_events={alias: announced_before})

        self.refresh_task(source, str(tmp_path / "catalog.duckdb"), alias).execute(context)

        assert [extra["table"] for _, extra in context["outlet_events"][alias]] == ["sales.store"]
        assert announced_before.bound == "2024-03-03T00:00:00+00:00"  # only this run's time is read

    def test_a_table_with_a_history_table_has_both_refreshed(self, source, tmp_path):
        alias = AssetAlias("dmscdc_demo_lake")
        for name in ("store", "store_history"):
            (tmp_path / "lake" / "sales" / name).mkdir(parents=True)
            pq.write_table(pa.table({"id": [1]}), tmp_path / "lake" / "sales" / name / "part-0.parquet")
        with_history = {**outcome("sales.store"), "summary": {"history": {"rows_written": 1, "files_added": 1,
                                                                          "files_removed": 0}}}
        ti = FakeTaskInstance({("merge", "outcome"): [with_history]})
        context = make_context(ti=ti, inlet_events={alias: InletEvents()})

        catalog = str(tmp_path / "catalog.duckdb")
        self.refresh_task(source, catalog, alias).execute(context)

        assert query(catalog, "SELECT count(*) FROM sales.store_history")[1] == [(1,)]

    def test_on_airflow_3_0_the_announced_events_come_as_a_plain_list(self, source, tmp_path):
        alias = AssetAlias("dmscdc_demo_lake")
        (tmp_path / "lake" / "sales" / "store").mkdir(parents=True)
        ti = FakeTaskInstance({("merge", "outcome"): [outcome("sales.product"), outcome("sales.store")]})
        context = make_context(ti=ti, inlet_events={
            alias: [RecordedAssetEvent({"table": "sales.product", "plan_id": "p"})]})

        self.refresh_task(source, str(tmp_path / "catalog.duckdb"), alias).execute(context)

        assert [extra["table"] for _, extra in context["outlet_events"][alias]] == ["sales.store"]

    def test_skips_when_no_table_merged(self, source):
        op = DmsCdcRefreshCatalogOperator(task_id="r", aws_conn_id=None, lake_root=source["lake_root"])
        ti = FakeTaskInstance({("merge", "outcome"): outcome("sales.store", "failed", "bad file")})

        with pytest.raises(AirflowSkipException):
            op.execute(make_context(ti=ti))

    def test_s3_lake_tables_are_s3_assets(self):
        assert lake_table_uri("s3://lake-bucket/lake/", "sales.product") == "s3://lake-bucket/lake/sales/product"

    def test_an_unknown_catalog_mode_names_the_known_ones(self, source):
        op = DmsCdcRefreshCatalogOperator(task_id="r", aws_conn_id=None, lake_root=source["lake_root"],
                                          catalog_mode="hive")
        ti = FakeTaskInstance({("merge", "outcome"): outcome("sales.store")})

        with pytest.raises(ValueError, match="duckdb"):
            op.execute(make_context(ti=ti))


class TestDmsCdcRunSummaryOperator:
    def report(self, planned, problems=()):
        return {"planned": planned, "registered": [], "inactive": [], "up_to_date": [],
                "problems": list(problems), "finished_commits": [], "cdc_before": None}

    def run(self, xcoms, task_states=None, **kwargs):
        return DmsCdcRunSummaryOperator(task_id="summary", **kwargs).execute(
            make_context(ti=FakeTaskInstance(xcoms, task_states)))

    def freshness_run(self, oldest_pending_at, failed_plan_files=None):
        """A run of two tables: sales.store merged leaving a file from ``oldest_pending_at`` in raw;
        sales.product failed with its planned files of ``failed_plan_files`` (path -> modified)."""
        store = outcome("sales.store")
        store["summary"]["figures"] = {"oldest_pending_at": oldest_pending_at}
        product = outcome("sales.product", "failed", "bad file")
        plans = [{"plan": {"table": "sales.store", "file_versions": {}}},
                 {"plan": {"table": "sales.product", "file_versions": failed_plan_files or {}}}]
        return {("plan", "report"): self.report(["sales.store", "sales.product"]), ("plan", "return_value"): plans,
                ("merge", "outcome"): [store, product]}

    def test_a_table_left_behind_raw_beyond_its_freshness_objective_fails_the_run_naming_it(self, capsys):
        two_hours_ago = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
        xcoms = self.freshness_run(two_hours_ago)
        xcoms[("merge", "outcome")] = xcoms[("merge", "outcome")][:1]
        xcoms[("plan", "report")] = self.report(["sales.store"])

        with pytest.raises(AirflowFailException) as failed:
            self.run(xcoms, freshness_slo={"sales.product": 60, "sales.*": 3600})

        message = str(failed.value)
        assert "every planned table merged, but these are further behind raw" in message
        assert f"sales.store: 2h00m behind raw (the oldest file it has not applied arrived {two_hours_ago}), " \
               "over its freshness objective of 1h00m" in message
        assert "sales.store: 2h00m behind raw" in capsys.readouterr().out
        assert self.run(xcoms, freshness_slo={"sales.store": 3 * 3600})["merged"] == ["sales.store"]
        assert self.run(xcoms)["merged"] == ["sales.store"]  # no objective, no check

    def test_a_failed_table_is_behind_by_its_oldest_planned_file(self):
        now = datetime.now(timezone.utc)
        xcoms = self.freshness_run(None, {"a": (now - timedelta(minutes=5)).isoformat(),
                                          "b": (now - timedelta(minutes=50)).isoformat()})

        with pytest.raises(AirflowFailException) as failed:
            self.run(xcoms, freshness_slo={"*": 1800})

        message = str(failed.value)
        assert "sales.product: bad file" in message
        assert "over the freshness objective:\nsales.product: 50m00s behind raw" in message
        assert "sales.store: 0s" not in message and "sales.store: " not in message.split("objective:")[1]

    def test_succeeds_when_every_planned_table_merged(self):
        result = self.run({("plan", "report"): self.report(["sales.store"]),
                           ("merge", "outcome"): outcome("sales.store")})

        assert result["merged"] == ["sales.store"]

    def test_fails_naming_each_table_that_did_not_merge(self):
        with pytest.raises(AirflowFailException) as failed:
            self.run({("plan", "report"): self.report(["sales.product", "sales.store", "sales.productorder"]),
                      ("plan", "return_value"): [{"plan": {"table": t}} for t in
                                                 ("sales.product", "sales.store", "sales.productorder")],
                      ("merge", "outcome"): [outcome("sales.product"), outcome("sales.store", "failed", "bad file")]},
                     {"wait_for_changes": "success", "plan": "success", "merge_0": "success", "merge_1": "failed",
                      "merge_2": "failed", "refresh_catalog": "success"})

        message = str(failed.value)
        assert "sales.store: bad file" in message
        assert "sales.productorder: the merge task failed" in message
        assert "sales.product:" not in message
        assert "failed: merge[sales.productorder], merge[sales.store]" in message

    def test_fails_on_a_table_that_could_not_be_planned(self):
        with pytest.raises(AirflowFailException, match="sales.gone: not planned: cannot list"):
            self.run({("plan", "report"): self.report([], [{"table": "sales.gone", "problem": "cannot list"}])})

    def test_skips_when_nothing_was_planned_and_nothing_failed(self):
        with pytest.raises(AirflowSkipException):
            self.run({})

    def test_when_the_sensor_alone_failed_names_it_and_the_tasks_that_did_not_run_apart(self):
        with pytest.raises(AirflowFailException) as failed:
            self.run({}, {"wait_for_changes": "failed", "plan": "upstream_failed", "merge": "upstream_failed",
                          "refresh_catalog": "skipped", "summary": "running"})

        message = str(failed.value)
        assert "before planning finished" in message
        assert ("failed: wait_for_changes; did not run because an earlier task failed: merge, plan; "
                "skipped: refresh_catalog") in message
        assert "task(s)" not in message

    def test_skipped_tasks_are_not_failures(self):
        with pytest.raises(AirflowSkipException):
            self.run({}, {"wait_for_changes": "skipped", "plan": "skipped", "merge": "skipped",
                          "refresh_catalog": "skipped"})

    def test_fails_naming_the_catalog_refresh_when_every_table_merged_but_it_failed(self):
        with pytest.raises(AirflowFailException, match=r"failed: refresh_catalog\)"):
            self.run({("plan", "report"): self.report(["sales.store"]),
                      ("merge", "outcome"): outcome("sales.store")},
                     {"wait_for_changes": "success", "plan": "success", "merge": "success",
                      "refresh_catalog": "failed"})
