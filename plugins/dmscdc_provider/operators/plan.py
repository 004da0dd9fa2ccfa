"""Operator: plan one merge per table from the controller state and the raw listing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from dmscdc_provider.engines.choice import AUTO, DEFAULT_INPROCESS_MAX_BYTES, EngineConfig
from dmscdc_provider.hooks.dmscdc import DmsCdcHook
from dmscdc_provider.plan import PLAN_INLINE_LIMIT_BYTES, plan_message
from dmscdc_provider.runner import finish_pending_commits
from dmscdc_provider.sensors.raw_files import describe_cutoff, interval_end, split_globs
from dmscdc_provider.triggers.raw_files import parse_instant

if TYPE_CHECKING:
    from airflow.sdk import Context

REPORT_KEY = "report"


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

    def execute(self, context: Context) -> list[dict]:
        cdc_before = parse_instant(self.cdc_before) if self.cdc_before else interval_end(context)
        full_refresh = split_globs(self.full_refresh)
        engines = EngineConfig(self.engine, self.spark_engine, self.inprocess_max_bytes)
        store = self.hook.open_store(self.state_uri)
        try:
            planner = self.hook.planner(self.raw_root, self.lake_root, store, self.tables,
                                        self.csv_delimiter, self.csv_null_value, engines,
                                        table_format=self.table_format, iceberg_catalog=self.iceberg_catalog)
            selected = [s for s in (store.get(p) for p in planner.selected_paths()) if s is not None]
            finished = finish_pending_commits(store, self.hook.open_storage(self.lake_root), selected,
                                              aws_conn_id=self.aws_conn_id, region_name=self.region_name)
            report = planner.plan(cdc_before=cdc_before, full_refresh=full_refresh)
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
