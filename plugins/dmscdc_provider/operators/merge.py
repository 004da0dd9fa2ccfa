"""Operator: merge one table's pinned plan into the lake and commit the table's state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, conf

from dmscdc_provider.engines import RemoteMergeEngine
from dmscdc_provider.hooks.dmscdc import DmsCdcHook
from dmscdc_provider.plan import TablePlan, plan_from_message
from dmscdc_provider.runner import (
    CONFLICT,
    PROGRESS_INTERVAL_SECONDS,
    SUCCEEDED,
    MergeProgress,
    TableOutcome,
    complete_attempt,
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


def describe_success(outcome: TableOutcome, plan: TablePlan) -> str:
    """The success as a person reads it: what was merged where, and the table's new watermark."""
    summary = outcome.summary or {}
    read = summary.get("rows_read", {})
    watermark = plan.new_watermark
    sentence = (
        f"{outcome.table}: merged {len(plan.files)} file(s) into {plan.lake_table_path} in {outcome.seconds:.1f} s: "
        f"read {read.get('I', 0)} insert(s), {read.get('U', 0)} update(s), {read.get('D', 0)} delete(s); "
        f"wrote {summary.get('rows_written', 0)} row(s) in {summary.get('files_added', 0)} new file(s), "
        f"replacing {summary.get('files_removed', 0)}. LastIncrementalFile is now "
        f"{watermark['LastIncrementalFile'] or 'unset (no CDC file applied yet)'}")
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
    table, file and remedy when the input is bad or the engine fails (retried), and without
    retries on a conflict (another run committed the table first; plan again).

    :param plan: a plan message from the plan task: ``TablePlan.to_dict()``, or a reference to a
        stored plan document (``plan.plan_message``).
    :param state_uri: the controller store.
    :param engine: merge engine name: ``local`` (Spark in the worker), or a remote one
        (``glue``, ``emr``, ``emr_serverless``) once registered.
    :param engine_settings: the engine's settings.
    :param deferrable: with a remote engine, wait for the job in the triggerer.
    :param poll_interval: seconds between job status checks while deferred.
    :param progress_interval: seconds between progress lines while a step lasts.
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
        progress_interval: float = PROGRESS_INTERVAL_SECONDS,
        do_xcom_push: bool = False,
        **kwargs,
    ):
        super().__init__(do_xcom_push=do_xcom_push, **kwargs)
        self.plan = plan
        self.state_uri = state_uri
        self.engine = engine
        self.engine_settings = engine_settings or {}
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.progress_interval = progress_interval
        self._table_plan: TablePlan | None = None

    @property
    def table_plan(self) -> TablePlan:
        """The pinned plan, read from its stored document when the plan task passed a reference."""
        if self._table_plan is None:
            self._table_plan = plan_from_message(self.plan, self.hook.open_storage)
        return self._table_plan

    def _progress(self, engine=None) -> MergeProgress:
        return MergeProgress(self.table_plan, self.log.info, self.progress_interval, engine)

    def execute(self, context: Context) -> dict:
        plan = self.table_plan
        self.log.info("%s: %s merge of %d file(s), plan %s", plan.table, plan.mode, len(plan.files), plan.plan_id)
        engine = self.hook.make_engine(self.engine, self.engine_settings)
        store = self.hook.open_store(self.state_uri)
        try:
            lake_storage = self.hook.open_storage(plan.lake_root)
            if self.deferrable and isinstance(engine, RemoteMergeEngine):
                start = start_attempt(plan, store, lake_storage, self._progress().step)
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
                with self._progress(engine) as progress:
                    outcome = run_table(plan, engine, store, lake_storage, progress.step)
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
            result = {"status": "failed", "error": {
                "table": plan.table, "file": None, "problem": event.get("message"),
                "remedy": "see the log; the table's state is unchanged, clear the task to run it again"}}
        else:
            engine = self.hook.make_engine(self.engine, self.engine_settings)
            result = engine.fetch_result(event["job_ref"], engine_plan)
        store = self.hook.open_store(self.state_uri)
        try:
            with self._progress() as progress:
                outcome = complete_attempt(plan, attempt_id, result, store, self.hook.open_storage(plan.lake_root),
                                           progress.step)
        finally:
            store.close()
        return self._report(context, outcome)

    def _report(self, context: Context, outcome: TableOutcome) -> dict:
        """Push the outcome (once) for the catalog refresh and the run summary, then succeed or fail
        the task by it."""
        plan = self.table_plan
        document = {**outcome.to_dict(), "lake_table": plan.lake_table_path,
                    "watermark": plan.new_watermark if outcome.status == SUCCEEDED else None}
        context["ti"].xcom_push(key=OUTCOME_KEY, value=document)
        if outcome.status == SUCCEEDED:
            self.log.info("%s", describe_success(outcome, plan))
            return document
        message = describe_failure(outcome)
        if outcome.status == CONFLICT:
            # Repeating this plan cannot succeed: the table moved on. The next run plans afresh.
            raise AirflowFailException(message)
        raise AirflowException(message)
