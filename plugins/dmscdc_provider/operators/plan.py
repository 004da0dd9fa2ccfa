"""Operator: plan one merge per table from the controller state and the raw listing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

from dmscdc_provider.engines.choice import AUTO, DEFAULT_INPROCESS_MAX_BYTES, EngineConfig
from dmscdc_provider.hooks.dmscdc import DmsCdcHook
from dmscdc_provider.plan import PLAN_INLINE_LIMIT_BYTES, plan_message
from dmscdc_provider.planner import FullRefreshGlobError
from dmscdc_provider.runner import finish_pending_commits
from dmscdc_provider.sensors.raw_files import describe_cutoff, interval_end, split_globs
from dmscdc_provider.triggers.raw_files import parse_instant

if TYPE_CHECKING:
    from airflow.sdk import Context

REPORT_KEY = "report"
# Task instance states of a run that is past its plan task and not finished.
IN_FLIGHT_STATES = ["running", "queued", "scheduled", "deferred", "up_for_retry", "up_for_reschedule", "restarting"]


def run_holding_the_source(ti, downstream_task_ids: list[str]) -> str | None:
    """The run of this DAG that must finish before this run plans, described for the log; None when
    this run may plan now (docs/scheduling.md, "One run at a time"):

    - an earlier run (by logical date) that is running: runs plan in logical-date order;
    - a run whose merges, catalog refresh or summary are under way: two runs never merge one
      source at once.

    Runs that are queued (waiting for a slot) hold nothing, so no run can wait on one that waits on it.
    Uses the Task SDK's run and task-instance queries; without them (older Airflow) nothing holds.
    """
    if not all(hasattr(ti, name) for name in ("get_dr_count", "get_previous_dagrun", "get_ti_count")):
        return None
    if ti.get_dr_count(dag_id=ti.dag_id, states=["running"]) <= 1:
        return None  # this run is the only one running: the common case costs one query
    earlier = ti.get_previous_dagrun(state="running")
    if earlier is not None:
        return f"the earlier run {earlier.run_id} (logical date {earlier.logical_date.isoformat()}) is still running"
    # A later run already past its plan task (it started before this one: a cleared older run, a
    # backfill beside scheduled runs). A later run still at its plan task waits for this one.
    if ti.get_ti_count(dag_id=ti.dag_id, task_ids=downstream_task_ids, states=IN_FLIGHT_STATES):
        return "a later run of this source is merging"
    return None


class DmsCdcPlanOperator(AwsBaseOperator[DmsCdcHook]):
    """Finishes commits crashed runs recorded, registers new tables (inactive) and pins one
    ``TablePlan`` per active table with work.

    Returns (XCom) ``[{"plan": ...}, ...]`` (a plan, or a reference to a stored plan document
    once it outgrows ``plan_inline_limit``: see ``plan.plan_message``), ready for
    ``DmsCdcMergeOperator.partial(...).expand_kwargs(...)``, and pushes the planning report
    (registered, inactive, up-to-date tables and problems) under the XCom key ``report``.

    :param raw_root: where DMS writes.
    :param lake_root: where the lake tables live.
    :param state_uri: the controller store.
    :param tables: comma-separated globs on ``schema.table`` (empty: all tables).
    :param cdc_before: ISO instant; apply only CDC files named before it. Empty: the run's
        ``data_interval_end``.
    :param full_refresh: globs (list or comma-separated) of tables to rebuild from LOAD files.
    :param csv_delimiter: DMS ``csvDelimiter``.
    :param csv_null_value: DMS ``csvNullValue``.
    :param plan_inline_limit: bytes up to which a plan travels in the XCom itself; a larger one
        is stored under ``<lake>/_dmscdc_plans/`` and the XCom carries its URI.
    :param engine: ``auto`` names each plan's engine from the bytes its merge reads (Parquet
        footers only); another engine name is recorded in every plan.
    :param spark_engine: the Spark engine ``auto`` uses for large tables (default ``local``).
    :param inprocess_max_bytes: ``auto`` merges a table in-process when it reads less than this.
    :param table_format: format of tables whose controller item names none (``parquet``, ``iceberg``).
    :param iceberg_catalog: catalog of Iceberg tables (``sqlite:///PATH``, ``glue://DATABASE``).
    :param table_settings: glob on ``schema.table`` -> change semantics (commit-time column,
        keep-on-null columns, history) that override the controller item's.
    :param wait_timeout: seconds this task waits while another run of the source is planning or
        merging (``run_holding_the_source``) before it fails saying what to do.
    :param wait_check_interval: seconds between those checks (the task waits deferred in between);
        under about 30 s a resumed task can race the scheduler's handling of its previous try
        (apache/airflow#71172), which then fails it.
    """

    aws_hook_class = DmsCdcHook
    template_fields: Sequence[str] = aws_template_fields(
        "raw_root", "lake_root", "state_uri", "tables", "cdc_before", "full_refresh")
    ui_color = "#eef3fb"

    def __init__(
        self,
        *,
        raw_root: str,
        lake_root: str,
        state_uri: str,
        tables: str | None = None,
        cdc_before: str | None = None,
        full_refresh: str | Sequence[str] = (),
        csv_delimiter: str = ",",
        csv_null_value: str = "NULL",
        plan_inline_limit: int = PLAN_INLINE_LIMIT_BYTES,
        engine: str = AUTO,
        spark_engine: str | None = None,
        inprocess_max_bytes: int = DEFAULT_INPROCESS_MAX_BYTES,
        table_format: str = "parquet",
        iceberg_catalog: str | None = None,
        table_settings: dict[str, dict] | None = None,
        wait_timeout: int = 3600,
        wait_check_interval: int = 30,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.raw_root = raw_root
        self.lake_root = lake_root
        self.state_uri = state_uri
        self.tables = tables
        self.cdc_before = cdc_before
        self.full_refresh = full_refresh
        self.csv_delimiter = csv_delimiter
        self.csv_null_value = csv_null_value
        self.plan_inline_limit = plan_inline_limit
        self.engine = engine
        self.spark_engine = spark_engine
        self.inprocess_max_bytes = inprocess_max_bytes
        self.table_format = table_format
        self.iceberg_catalog = iceberg_catalog
        self.table_settings = dict(table_settings or {})
        self.wait_timeout = wait_timeout
        self.wait_check_interval = wait_check_interval

    def _wait_for_the_source(self, context: Context, waiting_since: str | None = None) -> None:
        """Defer this task while another run holds the source (``run_holding_the_source``), checking
        again every ``wait_check_interval`` seconds, in the triggerer (no worker slot, and none of the
        reschedule race of apache/airflow#71172); fail, saying what to do, after ``wait_timeout``."""
        ti = context["ti"]
        holder = run_holding_the_source(ti, sorted(self.get_flat_relative_ids(upstream=False)))
        if holder is None:
            return
        now = datetime.now(timezone.utc)
        since = datetime.fromisoformat(waiting_since) if waiting_since else now
        waited = (now - since).total_seconds()
        if waited >= self.wait_timeout:
            raise AirflowFailException(
                f"this run did not plan: {holder} after {waited:.0f} s of waiting (wait_timeout "
                f"{self.wait_timeout} s); its files are not lost, the next run plans them. To plan this run, "
                "clear this plan task once that run has finished; if that run is stuck, mark it failed.")
        self.log.info("Waiting to plan: %s; runs of one source plan and merge one at a time, in logical-date "
                      "order. Checking again in %d s (waited %.0f s of at most %d s).",
                      holder, self.wait_check_interval, waited, self.wait_timeout)
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=self.wait_check_interval)),
                   method_name="execute_after_waiting", kwargs={"waiting_since": since.isoformat()})

    def execute_after_waiting(self, context: Context, event: Any = None, waiting_since: str | None = None) -> list[dict]:
        """Back from a wait for another run: check again, then plan."""
        self._wait_for_the_source(context, waiting_since)
        return self._plan(context)

    def execute(self, context: Context) -> list[dict]:
        self._wait_for_the_source(context)
        return self._plan(context)

    def _plan(self, context: Context) -> list[dict]:
        cdc_before = parse_instant(self.cdc_before) if self.cdc_before else interval_end(context)
        full_refresh = split_globs(self.full_refresh)
        engines = EngineConfig(self.engine, self.spark_engine, self.inprocess_max_bytes)
        store = self.hook.open_store(self.state_uri)
        try:
            planner = self.hook.planner(self.raw_root, self.lake_root, store, self.tables,
                                        self.csv_delimiter, self.csv_null_value, engines,
                                        table_format=self.table_format, iceberg_catalog=self.iceberg_catalog,
                                        table_settings=self.table_settings)
            selected = [s for s in (store.get(p) for p in planner.selected_paths()) if s is not None]
            finished = finish_pending_commits(store, self.hook.open_storage(self.lake_root), selected,
                                              aws_conn_id=self.aws_conn_id, region_name=self.region_name)
            report = planner.plan(cdc_before=cdc_before, full_refresh=full_refresh)
        except FullRefreshGlobError as error:  # before anything is planned or merged
            raise AirflowFailException(f"{error} (the run's full_refresh param)") from None
        finally:
            store.close()

        self.log.info("%s%s", describe_cutoff(cdc_before, explicit=bool(self.cdc_before)),
                      f" Full refresh requested for {', '.join(full_refresh)}." if full_refresh else "")
        for name in finished:
            self.log.info("%s: finished the commit a crashed run had recorded", name)
        for name in report.registered:
            self.log.warning("%s: new table, registered inactive; activate it with `dmscdc configure %s "
                             "--raw %s --active --primary-key ...`", name, name, self.raw_root)
        for name in report.inactive:
            self.log.info("%s: inactive, skipped", name)
        for name in report.up_to_date:
            self.log.info("%s: no new files", name)
        for problem in report.problems:
            self.log.error("%s: cannot plan: %s", problem.table, problem.problem)
        for warning in report.warnings:
            self.log.warning("%s: %s", warning.table, warning.problem)
        for plan in report.plans:
            self.log.info("%s: %s merge of %d file(s) on %s (%s), plan %s", plan.table, plan.mode,
                          len(plan.files), plan.engine, plan.engine_reason, plan.plan_id)

        context["ti"].xcom_push(key=REPORT_KEY, value={
            "planned": [plan.table for plan in report.plans],
            "registered": report.registered,
            "inactive": report.inactive,
            "up_to_date": report.up_to_date,
            "problems": [{"table": p.table, "problem": p.problem} for p in report.problems],
            "warnings": [{"table": w.table, "warning": w.problem} for w in report.warnings],
            "finished_commits": finished,
            "cdc_before": cdc_before.isoformat() if cdc_before else None,
        })
        lake_storage = self.hook.open_storage(self.lake_root)
        return [{"plan": plan_message(plan, lake_storage, self.plan_inline_limit)} for plan in report.plans]
