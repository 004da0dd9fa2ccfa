"""Operator: merge one table's pinned plan into the lake and commit the table's state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, conf

from dmscdc_provider.engines import RemoteMergeEngine
from dmscdc_provider.hooks.dmscdc import DmsCdcHook
from dmscdc_provider.plan import TablePlan
from dmscdc_provider.runner import (
    CONFLICT,
    SUCCEEDED,
    FailureKind,
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


def describe_failure(outcome: TableOutcome) -> str:
    """The failure as a person reads it: table, status, file, problem, remedy."""
    error = outcome.error or {}
    lines = [f"{outcome.table}: merge {outcome.status}"]
    for label, key in (("file", "file"), ("problem", "problem"), ("remedy", "remedy")):
        if error.get(key):
            lines.append(f"  {label}: {error[key]}")
    if outcome.note:
        lines.append(f"  note: {outcome.note}")
    return "\n".join(lines)


class DmsCdcMergeOperator(AwsBaseOperator[DmsCdcHook]):
    """Runs one table's merge exactly as planned, then commits the table's controller state.

    Map it over the plan task's output (``expand_kwargs``): one task instance per table. A
    retry or a cleared instance repeats the same pinned plan, never another table's; a plan
    that an earlier attempt already committed is not applied twice (``runner.start_attempt``).

    Returns (XCom) the table's outcome. Fails with the table, file and remedy. Bad input or
    configuration (a corrupt file, an unknown ``Op``, a missing key column) and a conflict
    (another run committed the table first) fail without retries; a store, network or engine
    start failure raises an ordinary error that Airflow retries.

    :param plan: ``TablePlan.to_dict()`` from the plan task.
    :param state_uri: the controller store.
    :param engine: merge engine name: ``local`` (Spark in the worker), or a remote one
        (``glue``, ``emr``, ``emr_serverless``) once registered.
    :param engine_settings: the engine's settings.
    :param deferrable: with a remote engine, wait for the job in the triggerer.
    :param poll_interval: seconds between job status checks while deferred.
    """

    aws_hook_class = DmsCdcHook
    template_fields: Sequence[str] = aws_template_fields("plan", "state_uri", "engine", "engine_settings")
    template_fields_renderers = {"plan": "json", "engine_settings": "json"}
    ui_color = "#fdf1e3"

    def __init__(
        self,
        *,
        plan: dict,
        state_uri: str,
        engine: str = "local",
        engine_settings: dict | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.plan = plan
        self.state_uri = state_uri
        self.engine = engine
        self.engine_settings = engine_settings or {}
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    @property
    def table_plan(self) -> TablePlan:
        return TablePlan.from_dict(self.plan)

    def _log_step(self, step: str, detail: dict) -> None:
        if not step.startswith("file_"):  # one line per protocol step, not per file
            self.log.info("%s: %s %s", self.table_plan.table, step, detail or "")

    def execute(self, context: Context) -> dict:
        plan = self.table_plan
        self.log.info("%s: %s merge of %d file(s), plan %s", plan.table, plan.mode, len(plan.files), plan.plan_id)
        engine = self.hook.make_engine(self.engine, self.engine_settings)
        store = self.hook.open_store(self.state_uri)
        try:
            lake_storage = self.hook.open_storage(plan.lake_root)
            if self.deferrable and isinstance(engine, RemoteMergeEngine):
                start = start_attempt(plan, store, lake_storage, self._log_step)
                if start.outcome is None:
                    job_ref = engine.submit(plan.engine_plan(start.attempt_id))
                    self.log.info("%s: submitted job %s for attempt %s", plan.table, job_ref, start.attempt_id)
                    self.defer(
                        trigger=DmsCdcMergeJobTrigger(
                            engine=self.engine, engine_settings=self.engine_settings, job_ref=job_ref,
                            attempt_id=start.attempt_id, poll_interval=self.poll_interval,
                            aws_conn_id=self.aws_conn_id, region_name=self.region_name),
                        method_name="execute_complete",
                    )
                outcome = start.outcome
            else:
                outcome = run_table(plan, engine, store, lake_storage, self._log_step)
        finally:
            store.close()
        return self._report(context, outcome)

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
            engine = self.hook.make_engine(self.engine, self.engine_settings)
            result = engine.fetch_result(event["job_ref"], engine_plan)
        store = self.hook.open_store(self.state_uri)
        try:
            outcome = complete_attempt(plan, attempt_id, result, store, self.hook.open_storage(plan.lake_root),
                                       self._log_step)
        finally:
            store.close()
        return self._report(context, outcome)

    def _report(self, context: Context, outcome: TableOutcome) -> dict:
        """Push the outcome for the run summary, then succeed or fail the task by it."""
        document = outcome.to_dict()
        context["ti"].xcom_push(key=OUTCOME_KEY, value=document)
        if outcome.status == SUCCEEDED:
            summary = outcome.summary or {}
            read = summary.get("rows_read", {})
            self.log.info(
                "%s: ok in %.1fs: read I=%s U=%s D=%s, wrote %s rows, +%s/-%s files%s", outcome.table,
                outcome.seconds, read.get("I", 0), read.get("U", 0), read.get("D", 0),
                summary.get("rows_written", 0), summary.get("files_added", 0), summary.get("files_removed", 0),
                f" ({outcome.note})" if outcome.note else "")
            return document
        message = describe_failure(outcome)
        if outcome.status == CONFLICT or outcome.failure_kind == FailureKind.INPUT:
            # Repeating this plan cannot succeed: the input must be fixed first (then clear the
            # task), or the table moved on (the next run plans afresh). No retries.
            raise AirflowFailException(message)
        raise AirflowException(message)
