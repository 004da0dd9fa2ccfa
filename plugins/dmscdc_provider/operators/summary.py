"""Operator: the run's per-table summary; fails the DAG run when any table failed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException, BaseOperator

from dmscdc_provider.operators.catalog import pull_outcomes
from dmscdc_provider.operators.plan import REPORT_KEY
from dmscdc_provider.runner import SUCCEEDED

FAILED, UPSTREAM_FAILED = "failed", "upstream_failed"

if TYPE_CHECKING:
    from airflow.sdk import Context


class DmsCdcRunSummaryOperator(BaseOperator):
    """Logs one line per table, and fails when a table could not be planned or merged or when
    any of its upstream tasks failed.

    Airflow decides a DAG run's state by its leaf tasks. The catalog refresh runs (and
    succeeds) for the tables that merged even when others failed, so this leaf, run with
    ``trigger_rule="all_done"``, is what marks such a run failed. It skips itself when
    nothing was planned and nothing failed (the sensor found no new files).

    :param plan_task_id: the plan task of this DAG.
    :param merge_task_id: the mapped merge task of this DAG.
    """

    ui_color = "#f0f0f0"

    def __init__(self, *, plan_task_id: str = "plan", merge_task_id: str = "merge", **kwargs):
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id
        self.merge_task_id = merge_task_id

    def _failed_upstream(self, context: Context) -> int:
        ti = context["ti"]
        return ti.get_ti_count(dag_id=ti.dag_id, task_ids=sorted(self.upstream_task_ids), run_ids=[ti.run_id],
                               states=[FAILED, UPSTREAM_FAILED])

    def execute(self, context: Context) -> dict:
        failed_tasks = self._failed_upstream(context)
        report = context["ti"].xcom_pull(task_ids=self.plan_task_id, key=REPORT_KEY)
        if report is None:
            if failed_tasks:
                raise AirflowFailException(f"{failed_tasks} task(s) of this run failed before planning finished; "
                                           "see the logs of wait_for_changes and plan")
            raise AirflowSkipException("nothing was planned in this run (no new files for active tables)")
        outcomes = {o["table"]: o for o in pull_outcomes(context, self.merge_task_id)}
        lines = [f"{'table':<32} {'status':<10} {'files':>5} {'I':>7} {'U':>7} {'D':>7} {'written':>8}"]
        failed = []
        for table in report["planned"]:
            outcome = outcomes.get(table)
            status = outcome["status"] if outcome else "failed"
            summary = (outcome or {}).get("summary") or {}
            read = summary.get("rows_read", {})
            lines.append(f"{table:<32} {status:<10} {summary.get('files_read', ''):>5} {read.get('I', ''):>7} "
                         f"{read.get('U', ''):>7} {read.get('D', ''):>7} {summary.get('rows_written', ''):>8}")
            if status != SUCCEEDED:
                problem = ((outcome or {}).get("error") or {}).get("problem") or (outcome or {}).get("note")
                failed.append(f"{table}: {problem or 'the merge task failed; see its log'}")
        for problem in report["problems"]:
            failed.append(f"{problem['table']}: not planned: {problem['problem']}")
        self.log.info("run summary (CDC files before %s):\n%s", report.get("cdc_before") or "any time", "\n".join(lines))
        for warning in report.get("warnings", []):
            self.log.warning("%s: %s", warning["table"], warning["warning"])
        if failed_tasks and not failed:
            failed.append(f"{failed_tasks} task(s) of this run failed; see their logs")
        if failed:
            raise AirflowFailException(
                "these tables failed; their state is unchanged. Fix the cause, then clear the failed "
                "merge instances (or the next run plans them again):\n" + "\n".join(failed))
        return {"merged": sorted(t for t, o in outcomes.items() if o["status"] == SUCCEEDED),
                "up_to_date": report["up_to_date"]}
