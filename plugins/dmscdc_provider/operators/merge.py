"""Operator: merge one table's pinned plan into the lake and commit the table's state."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, AirflowSkipException, conf

from dmscdc_provider.engines import RemoteMergeEngine
from dmscdc_provider.engines.choice import AUTO, EngineConfig
from dmscdc_provider.hooks.dmscdc import DmsCdcHook
from dmscdc_provider.links import DmsCdcEmrServerlessJobRunLink, DmsCdcEmrStepLink, DmsCdcGlueJobRunLink, persist_job_link
from dmscdc_provider.observability.figures import describe_figures
from dmscdc_provider.observability.metrics import emit_merge_metrics
from dmscdc_provider.plan import TablePlan, plan_from_message
from dmscdc_provider.planner import plan_applied_by_state, raw_changes_since_planning
from dmscdc_provider.report import describe_failure
from dmscdc_provider.runner import (
    CONFLICT,
    FAILED,
    PROGRESS_INTERVAL_SECONDS,
    SUCCEEDED,
    FailureKind,
    MergeProgress,
    TableOutcome,
    complete_attempt,
    infrastructure_error,
    run_table,
    start_attempt,
)
from dmscdc_provider.triggers.merge_job import DmsCdcMergeJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

OUTCOME_KEY = "outcome"
# A cleared merge whose files a later run already applied: nothing to do (not a failure).
SUPERSEDED = "superseded"


def _run_name(context: Context) -> str:
    run_id = getattr(context.get("ti"), "run_id", None)
    return f"run {run_id}" if run_id else "this run"


def describe_success(outcome: TableOutcome, plan: TablePlan) -> str:
    """The success as a person reads it: what was merged where, and the table's new watermark."""
    summary = outcome.summary or {}
    read = summary.get("rows_read", {})
    watermark = plan.new_watermark
    sentence = (
        f"{outcome.table}: merged {len(plan.files)} file(s) into {plan.lake_table_path} in {outcome.seconds:.1f} s: "
        f"read {read.get('I', 0)} insert(s), {read.get('U', 0)} update(s), {read.get('D', 0)} delete(s); "
        f"wrote {summary.get('rows_written', 0)} row(s) in {summary.get('files_added', 0)} new file(s), "
        f"replacing {summary.get('files_removed', 0)}")
    skipped = summary.get("skipped") or {}
    if skipped.get("U") or skipped.get("D"):
        sentence += (f"; skipped {skipped.get('U', 0)} update(s) and {skipped.get('D', 0)} delete(s) "
                     "(the table has no primary key)")
    sentence += f". LastIncrementalFile is now {watermark['LastIncrementalFile'] or 'unset (no CDC file applied yet)'}"
    if plan.mode == "full":
        sentence += f", LastFullLoadDate {watermark['LastFullLoadDate']}"
    return sentence + (f" ({outcome.note})." if outcome.note else ".")


class DmsCdcMergeOperator(AwsBaseOperator[DmsCdcHook]):
    """Runs one table's merge exactly as planned, then commits the table's controller state.

    Map it over the plan task's output (``expand_kwargs``): one task instance per table. A
    retry or a cleared instance repeats the same pinned plan, never another table's; a plan
    that an earlier attempt already committed is not applied twice (``runner.start_attempt``).

    Pushes the table's outcome once, under the XCom key ``outcome``, also when it fails (the
    return value is not pushed: ``do_xcom_push`` defaults to False). The outcome adds the lake
    table path and, on success, the new watermark to ``TableOutcome.to_dict``. Fails with the
    table, file and remedy. Bad input or configuration (a corrupt file, an unknown ``Op``, a
    missing key column) and a conflict (another run committed the table first) fail without
    retries; a store, network or engine start failure raises an ordinary error that Airflow retries.

    :param plan: a plan message from the plan task: ``TablePlan.to_dict()``, or a reference to a
        stored plan document (``plan.plan_message``).
    :param state_uri: the controller store.
    :param engine: ``auto`` (the engine the plan names: the plan task chose it per table), or
        one engine for every table: ``duckdb`` (in the worker, no JVM), ``local`` (Spark in the
        worker), ``glue``, ``emr`` or ``emr_serverless``.
    :param spark_engine: the Spark engine ``auto`` uses for large tables (default ``local``).
    :param engine_settings: the Spark engine's settings.
    :param duckdb_settings: the in-process engine's settings (``memory_limit``, ``temp_directory``, ``threads``).
    :param deferrable: with a remote engine, wait for the job in the triggerer.
    :param poll_interval: seconds between job status checks while deferred.
    :param progress_interval: seconds between progress lines while a step lasts.
    :param source: the source's name, the ``source`` tag of the merge's metrics (default: the DAG id).
    :param glue_catalog: where the ``glue_tables`` catalog refresh registers the lake tables
        (``database``, ``table_name_format``), for the OpenLineage symlink to the Glue table.
    :param openlineage_inject_parent_job_info: with a remote Spark engine (``glue``, ``emr``,
        ``emr_serverless``) and the OpenLineage provider installed, the job started carries this
        task as its OpenLineage parent job (``spark.openlineage.parent*`` Spark properties), as the
        Amazon provider's Glue and EMR operators do. Defaults to the
        ``openlineage.spark_inject_parent_job_info`` config value.
    """

    aws_hook_class = DmsCdcHook
    template_fields: Sequence[str] = aws_template_fields(
        "plan", "state_uri", "engine", "spark_engine", "engine_settings", "duckdb_settings")
    template_fields_renderers = {"plan": "json", "engine_settings": "json", "duckdb_settings": "json"}
    ui_color = "#fdf1e3"
    operator_extra_links = (DmsCdcGlueJobRunLink(), DmsCdcEmrServerlessJobRunLink(), DmsCdcEmrStepLink())

    def __init__(
        self,
        *,
        plan: dict,
        state_uri: str,
        engine: str = AUTO,
        spark_engine: str | None = None,
        engine_settings: dict | None = None,
        duckdb_settings: dict | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        progress_interval: float = PROGRESS_INTERVAL_SECONDS,
        do_xcom_push: bool = False,
        source: str | None = None,
        glue_catalog: dict | None = None,
        openlineage_inject_parent_job_info: bool = conf.getboolean(
            "openlineage", "spark_inject_parent_job_info", fallback=False),
        **kwargs,
    ):
        super().__init__(do_xcom_push=do_xcom_push, **kwargs)
        self.plan = plan
        self.state_uri = state_uri
        self.engine = engine
        self.spark_engine = spark_engine
        self.engine_settings = engine_settings or {}
        self.duckdb_settings = duckdb_settings or {}
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.progress_interval = progress_interval
        self.source = source
        self.glue_catalog = glue_catalog
        self.openlineage_inject_parent_job_info = openlineage_inject_parent_job_info
        self._table_plan: TablePlan | None = None
        self._remote_job: tuple | None = None  # (engine, job_ref) while a remote job runs, for on_kill

    @property
    def table_plan(self) -> TablePlan:
        """The pinned plan, read from its stored document when the plan task passed a reference."""
        if self._table_plan is None:
            self._table_plan = plan_from_message(self.plan, self.hook.open_storage)
        return self._table_plan

    def _progress(self, engine=None) -> MergeProgress:
        return MergeProgress(self.table_plan, self.log.info, self.progress_interval, engine)

    def _table_engine(self, plan: TablePlan) -> tuple[str, dict]:
        """The engine that merges ``plan`` (the one its planning chose) and that engine's settings."""
        config = EngineConfig(engine=self.engine, spark_engine=self.spark_engine,
                              spark_settings=self.engine_settings, duckdb_settings=self.duckdb_settings)
        name = config.engine_for(plan)
        return name, config.settings_for(name)

    def _check_raw_since_planning(self, context: Context, store) -> TablePlan:
        """The plan to merge, once raw still holds its files: a file removed since planning fails the
        task (naming it and what to clear); a file replaced by a copy of the same name is merged as it
        is now and recorded with the commit (so the next planning does not take it for late)."""
        plan = self.table_plan
        state = store.get(plan.state_path)
        if state is None or state.pending_commit is not None or state.version != plan.base_version:
            return plan  # committed already, or moved on: start_attempt says which
        changes = raw_changes_since_planning(plan, self.hook.open_storage(plan.files[0]["path"]))
        if changes.removed:
            names = ", ".join(changes.removed[:3]) + (f" and {len(changes.removed) - 3} more"
                                                      if len(changes.removed) > 3 else "")
            self._report(context, TableOutcome(plan.table, FAILED, plan.plan_id, error={
                "table": plan.table, "file": changes.removed[0], "kind": FailureKind.INPUT.value,
                "problem": f"{len(changes.removed)} planned file(s) were removed from raw after the plan task "
                           f"listed them at {plan.raw_listed_at}, so this pinned plan cannot be applied: {names}",
                "remedy": f"clear the plan task of {_run_name(context)} (with downstream): it plans the table "
                          "again from raw as it is now; the table's state is unchanged"}))
        for path, modified in changes.replaced.items():
            self.log.warning("%s: %s was replaced after planning (listed as modified %s, now %s); merging the "
                             "copy now in raw", plan.table, path, plan.file_versions.get(path), modified)
        if changes.replaced:
            plan = replace(plan, replaced_files=changes.replaced)
            self._table_plan = plan
        return plan

    def execute(self, context: Context) -> dict:
        plan = self.table_plan
        engine_name, engine_settings = self._table_engine(plan)
        self.log.info("%s: %s merge of %d file(s) on %s (%s), plan %s", plan.table, plan.mode, len(plan.files),
                      engine_name, plan.engine_reason or "configured", plan.plan_id)
        engine = self.hook.make_engine(engine_name, engine_settings)
        if isinstance(engine, RemoteMergeEngine):
            engine.on_submitted = lambda job_ref: self._job_submitted(context, engine, job_ref)
            if self.openlineage_inject_parent_job_info:
                from dmscdc_provider.observability.lineage import parent_job_spark_properties

                engine.spark_properties = parent_job_spark_properties(context)
        store = self.hook.open_store(self.state_uri)
        try:
            plan = self._check_raw_since_planning(context, store)
            lake_storage = self.hook.open_storage(plan.lake_root)
            if self.deferrable and isinstance(engine, RemoteMergeEngine):
                start = start_attempt(plan, store, lake_storage, self._progress().step,
                                      aws_conn_id=self.aws_conn_id, region_name=self.region_name)
                if start.outcome is None:
                    job_ref = engine.submit(start.engine_plan)
                    self.log.info("%s: submitted job %s for attempt %s", plan.table, job_ref, start.attempt_id)
                    self._job_submitted(context, engine, job_ref)
                    wait_timeout = getattr(engine, "wait_timeout", None)
                    self.defer(
                        trigger=DmsCdcMergeJobTrigger(
                            engine=engine_name, engine_settings=engine_settings, job_ref=job_ref,
                            attempt_id=start.attempt_id, poll_interval=self.poll_interval,
                            max_attempts=math.ceil(wait_timeout / self.poll_interval) if wait_timeout else None,
                            aws_conn_id=self.aws_conn_id, region_name=self.region_name),
                        method_name="execute_complete",
                    )
                outcome = start.outcome
            else:
                with self._progress(engine) as progress:
                    outcome = run_table(plan, engine, store, lake_storage, progress.step,
                                        aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        finally:
            store.close()
        return self._report(context, outcome)

    def get_openlineage_facets_on_complete(self, task_instance):
        """OpenLineage (with ``apache-airflow-providers-openlineage``): the table's DMS raw folder in,
        the lake table out with its schema, identity column lineage and its Glue table as a symlink."""
        from dmscdc_provider.observability.lineage import glue_table, lake_columns, merge_lineage
        from dmscdc_provider.table_formats import table_format_for_plan

        plan = self.table_plan
        try:
            table_format = table_format_for_plan(plan, self.hook.open_storage(plan.lake_root),
                                                 aws_conn_id=self.aws_conn_id, region_name=self.region_name)
            columns = lake_columns(plan, table_format, self.aws_conn_id, self.region_name)
        except Exception as error:  # lineage without a schema beats no lineage
            self.log.warning("%s: OpenLineage: the lake table's schema could not be read: %s", plan.table, error)
            columns = []
        symlink = None
        database_table = glue_table(plan, self.glue_catalog)
        if database_table:
            try:
                region = self.hook.region_name
                if not region:
                    raise ValueError("no AWS region is configured")
                symlink = (f"arn:aws:glue:{region}:{self.hook.account_id}",
                           f"table/{database_table[0]}/{database_table[1]}")
            except Exception as error:
                self.log.warning("%s: OpenLineage: no symlink to the Glue table %s.%s (the region or account id "
                                 "could not be read: %s)", plan.table, *database_table, error)
        return merge_lineage(plan, columns, symlink)

    def _job_submitted(self, context: Context, engine, job_ref: str) -> None:
        """Remember the running job (for on_kill) and link it from the task (Extra Links)."""
        self._remote_job = (engine, job_ref)
        persist_job_link(context, job_ref, self.hook)

    def on_kill(self) -> None:
        """Stop the remote job this task is waiting for (a deferred task has no worker to kill)."""
        if self._remote_job is not None:
            engine, job_ref = self._remote_job
            self.log.info("%s: stopping job %s", self.plan.get("table"), job_ref)
            engine.cancel(job_ref)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict:
        plan = self.table_plan
        event = event or {}
        attempt_id = event.get("attempt_id")
        if not attempt_id:
            raise AirflowException(f"{plan.table}: unexpected trigger event {event!r}")
        engine_plan = plan.engine_plan(attempt_id)
        if event.get("status") == "error":
            result = {"status": "failed", "error": infrastructure_error(
                plan.table, event.get("message"),
                "see the log; the table's state is unchanged, clear the task to run it again")}
        else:
            engine = self.hook.make_engine(*self._table_engine(plan))
            result = engine.fetch_result(event["job_ref"], engine_plan)
        if result.get("status") == SUCCEEDED:
            # The job read raw as it was at submission; a copy replaced since planning is recorded as read.
            replaced = raw_changes_since_planning(plan, self.hook.open_storage(plan.files[0]["path"])).replaced
            if replaced:
                plan = self._table_plan = replace(plan, replaced_files=replaced)
        store = self.hook.open_store(self.state_uri)
        try:
            with self._progress() as progress:
                outcome = complete_attempt(plan, attempt_id, result, store, self.hook.open_storage(plan.lake_root),
                                           progress.step, aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        finally:
            store.close()
        return self._report(context, outcome)

    def _report(self, context: Context, outcome: TableOutcome) -> dict:
        """Push the outcome (once) for the catalog refresh and the run summary, then succeed or fail
        the task by it."""
        plan = self.table_plan
        document = {**outcome.to_dict(), "lake_table": plan.lake_table_path, "table_format": plan.table_format,
                    "watermark": plan.new_watermark if outcome.status == SUCCEEDED else None}
        context["ti"].xcom_push(key=OUTCOME_KEY, value=document)
        if outcome.status == SUCCEEDED:
            self.log.info("%s", describe_success(outcome, plan))
            figures = (outcome.summary or {}).get("figures")
            if figures:
                self.log.info("%s", describe_figures(plan.table, figures))
                emit_merge_metrics(self.source or context["ti"].dag_id, plan.table, figures)
            return document
        if outcome.status == CONFLICT:
            store = self.hook.open_store(self.state_uri)
            try:
                current = store.get(plan.state_path)
            finally:
                store.close()
            if current is not None and plan_applied_by_state(plan, current):
                # A cleared merge of an older run: a later run planned and committed these files.
                message = (f"{plan.table}: nothing to do; a later run already applied this plan's files "
                           f"(LastIncrementalFile is {current.last_incremental_file}), so the lake is current")
                context["ti"].xcom_push(key=OUTCOME_KEY, value={**document, "status": SUPERSEDED, "note": message})
                raise AirflowSkipException(message)
            outcome.error = {"table": plan.table, "file": None, "problem": outcome.note,
                             "remedy": f"clear the plan task of {_run_name(context)} (with downstream) to plan the "
                                       "table again, or leave it: the next run plans it"}
            outcome.note = None
        message = describe_failure(outcome)
        if outcome.status == CONFLICT or outcome.failure_kind == FailureKind.INPUT:
            # Repeating this plan cannot succeed: the input must be fixed first (then clear the
            # task), or the table moved on (the next run plans afresh). No retries.
            raise AirflowFailException(message)
        raise AirflowException(message)
