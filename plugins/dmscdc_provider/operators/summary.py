"""Operator: the run's per-table summary; fails the DAG run when any table failed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException, BaseOperator

from dmscdc_provider.observability.freshness import FreshnessObjectives, behind_seconds, format_duration
from dmscdc_provider.operators.catalog import pull_outcomes
from dmscdc_provider.operators.merge import SUPERSEDED
from dmscdc_provider.operators.plan import REPORT_KEY
from dmscdc_provider.runner import SUCCEEDED
from dmscdc_provider.sensors.raw_files import describe_cutoff
from dmscdc_provider.triggers.raw_files import parse_instant

FAILED, UPSTREAM_FAILED, SKIPPED, SUCCESS = "failed", "upstream_failed", "skipped", "success"

if TYPE_CHECKING:
    from airflow.sdk import Context


@dataclass(frozen=True)
class UpstreamStates:
    """The upstream task instances of this run that failed, those that did not run because a
    task before them failed, and those skipped; each named as the UI names it
    (``merge[sales.store]``)."""

    failed: list[str]
    not_run: list[str]
    skipped: list[str]
    # Merge instances that ended success or skipped, named as the UI names them: one whose
    # outcome says failed was marked so by a person.
    succeeded: frozenset[str] = frozenset()

    def describe(self) -> str:
        parts = [f"failed: {', '.join(self.failed)}"] if self.failed else []
        if self.not_run:
            parts.append(f"did not run because an earlier task failed: {', '.join(self.not_run)}")
        if self.skipped:
            parts.append(f"skipped: {', '.join(self.skipped)}")
        return "; ".join(parts)


class DmsCdcRunSummaryOperator(BaseOperator):
    """Logs one line per table, and fails when a table could not be planned or merged or when
    any of its upstream tasks failed, naming the tasks that failed apart from those that did not
    run because of them.

    Airflow decides a DAG run's state by its leaf tasks. The catalog refresh runs (and
    succeeds) for the tables that merged even when others failed, so this leaf, run with
    ``trigger_rule="all_done"``, is what marks such a run failed. It skips itself when
    nothing was planned and nothing failed (the sensor found no new files).

    With freshness objectives, it also fails when a planned table is left further behind raw than
    its objective allows (``observability.freshness``): a merged table by the age of the oldest file
    raw held beyond its new watermark, a table whose merge failed by the age of the oldest file it
    planned. Failing runs the DAG's failure callbacks, which can page or post to a channel.

    :param plan_task_id: the plan task of this DAG.
    :param merge_task_id: the mapped merge task of this DAG.
    :param freshness_slo: ``schema.table`` glob -> seconds a table may be behind raw after a run
        (the first glob that matches decides); empty: no objective.
    """

    ui_color = "#f0f0f0"

    def __init__(self, *, plan_task_id: str = "plan", merge_task_id: str = "merge",
                 freshness_slo: dict[str, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id
        self.merge_task_id = merge_task_id
        self.freshness_slo = dict(freshness_slo or {})

    def _over_objective(self, plans: list[dict], outcomes: dict[str, dict]) -> list[str]:
        """One sentence per planned table left behind raw beyond its freshness objective."""
        objectives = FreshnessObjectives(tuple(self.freshness_slo.items()))
        now = datetime.now(timezone.utc)
        over = []
        for entry in plans:
            plan = entry["plan"]
            objective = objectives.for_table(plan["table"])
            outcome = outcomes.get(plan["table"]) or {}
            if objective is None or outcome.get("status") == SUPERSEDED:
                continue
            if outcome.get("status") == SUCCEEDED:
                oldest = ((outcome.get("summary") or {}).get("figures") or {}).get("oldest_pending_at")
            else:  # not merged: its planned files are still pending (known when the plan came inline)
                oldest = min(plan.get("file_versions", {}).values(), key=datetime.fromisoformat, default=None)
            behind = behind_seconds(oldest, now)
            if behind > objective:
                over.append(f"{plan['table']}: {format_duration(behind)} behind raw (the oldest file it has not "
                            f"applied arrived {oldest}), over its freshness objective of {format_duration(objective)}")
        return over

    def _upstream_states(self, context: Context, plans: list[dict]) -> UpstreamStates:
        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=sorted(self.upstream_task_ids),
                                    run_ids=[ti.run_id]).get(ti.run_id, {})
        # Mapped instances come back as "merge_<map index>"; the plan list gives their tables.
        mapped = re.compile(rf"^{re.escape(self.merge_task_id)}_(\d+)$")

        def name(key: str) -> str:
            match = mapped.match(key)
            if match and int(match.group(1)) < len(plans):
                return f"{self.merge_task_id}[{plans[int(match.group(1))]['plan']['table']}]"
            return key

        others = {key: state for key, state in states.items() if key != self.task_id}
        return UpstreamStates(
            failed=sorted(name(key) for key, state in others.items() if state == FAILED),
            not_run=sorted(name(key) for key, state in others.items() if state == UPSTREAM_FAILED),
            skipped=sorted(name(key) for key, state in others.items() if state == SKIPPED),
            succeeded=frozenset(name(key) for key, state in others.items() if state in (SUCCESS, SKIPPED)),
        )

    def execute(self, context: Context) -> dict:
        plans = context["ti"].xcom_pull(task_ids=self.plan_task_id) or []
        upstream = self._upstream_states(context, plans)
        report = context["ti"].xcom_pull(task_ids=self.plan_task_id, key=REPORT_KEY)
        if report is None:
            if upstream.failed or upstream.not_run:
                raise AirflowFailException(f"this run failed before planning finished ({upstream.describe()}); "
                                           "see the log of the failed task")
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
            if status not in (SUCCEEDED, SUPERSEDED) and f"{self.merge_task_id}[{table}]" in upstream.succeeded:
                self.log.warning("%s: its merge failed and was marked success by a person; the table's state is "
                                 "unchanged, so the next run plans it again (deactivate it with `dmscdc configure "
                                 "%s --inactive` to stop that)", table, table)
            elif status not in (SUCCEEDED, SUPERSEDED):
                problem = ((outcome or {}).get("error") or {}).get("problem") or (outcome or {}).get("note")
                failed.append(f"{table}: {problem or 'the merge task failed; see its log'}")
        for problem in report["problems"]:
            failed.append(f"{problem['table']}: not planned: {problem['problem']}")
        self.log.info("run summary. %s\n%s", describe_cutoff(parse_instant(report.get("cdc_before"))), "\n".join(lines))
        for warning in report.get("warnings", []):
            self.log.warning("%s: %s", warning["table"], warning["warning"])
        over = self._over_objective(plans, outcomes) if self.freshness_slo else []
        for sentence in over:
            self.log.warning("%s", sentence)
        if failed:
            raise AirflowFailException(
                "these tables failed; their state is unchanged. Fix the cause named for each, then clear "
                "its failed merge instance (it repeats its plan), or clear this run's plan task when a planned "
                "file was removed; the next run also plans them again from their watermark:\n" + "\n".join(failed)
                + (f"\ntasks: {upstream.describe()}" if upstream.failed or upstream.not_run else "")
                + ("\nover the freshness objective:\n" + "\n".join(over) if over else ""))
        if upstream.failed or upstream.not_run:
            raise AirflowFailException(f"tasks of this run failed ({upstream.describe()}); see their logs")
        if over:
            raise AirflowFailException(
                "every planned table merged, but these are further behind raw than their freshness objective "
                "allows (a backlog beyond this run's cutoff, or files arriving faster than the runs apply "
                "them):\n" + "\n".join(over))
        if not report["planned"]:
            raise AirflowSkipException(
                "nothing was planned in this run: every active table was up to date at its cutoff "
                f"({', '.join(report['up_to_date']) or 'no active table'})")
        return {"merged": sorted(t for t, o in outcomes.items() if o["status"] == SUCCEEDED),
                "up_to_date": report["up_to_date"]}
