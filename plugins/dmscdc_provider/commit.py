"""The commit protocol that makes a table merge crash-safe (docs/crash-safety.md).

1. The engine writes the merged files under the plan's staging path (Parquet format:
   ``<lake>/_dmscdc_staging/...``, which readers skip; Iceberg: the table's ``data/<attempt>/``,
   which no snapshot names yet). Nothing readers see has changed.
2. ``record``: one conditional write puts a commit record (what the table format needs to
   publish it, new watermarks) into the controller item, conditional on the version the plan
   was made from. This is the commit point: before it the attempt is discarded, after it the
   change is durable. Of two concurrent runs on one table only one can pass this condition.
3. ``finish``: the table format publishes the record (Parquet: move the staged files in, delete
   the replaced ones; Iceberg: one snapshot, recognised by the attempt id in its summary once
   made), then one conditional write sets the new watermarks and clears the record. Every step
   is idempotent, so whoever finds a record (a retry, the next run) finishes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

from dmscdc_provider.observability.figures import merge_figures
from dmscdc_provider.plan import TablePlan
from dmscdc_provider.state.base import ConcurrentCommitError, ControllerStore, TableState
from dmscdc_provider.storage import Storage
from dmscdc_provider.table_formats import TableFormat, table_format_for_record

log = logging.getLogger(__name__)

StepCallback = Callable[[str, dict], None]


def _no_steps(step: str, detail: dict) -> None:
    pass


def commit_record(plan: TablePlan, attempt_id: str, result: dict, table_format: TableFormat) -> dict:
    """The record that step 2 writes: everything ``finish`` needs, nothing it must recompute.

    Its summary (the table's ``LastRun`` once finished) carries the merge's ``figures``, taken at
    this commit point; the table format may publish them too (Iceberg: the snapshot summary).
    """
    staging = plan.staging_path(attempt_id)
    figures = merge_figures(plan, result, datetime.now(timezone.utc))
    summary = {key: result[key] for key in ("rows_read", "skipped", "rows_written", "seconds") if key in result}
    summary.update(
        plan_id=plan.plan_id,
        attempt_id=attempt_id,
        mode=plan.mode,
        files_read=len(plan.files),
        files_added=len(result["files_added"]),
        files_removed=len(result["files_removed"]),
        raw_listed_at=plan.raw_listed_at,
        figures=figures,
    )
    if plan.replaced_files:  # copies read instead of the listed files: not late (planner.late_files)
        summary["replaced_files"] = plan.replaced_files
    history = {}
    if result.get("history") is not None:
        # The history table's part of this one commit: the same format publishes it, first.
        history_plan = plan.history_plan()
        history = {"history": {
            "table": history_plan.table,
            "attempt_id": attempt_id,
            "staging_path": history_plan.staging_path(attempt_id),
            **table_format.publish_document(history_plan, attempt_id, result["history"]),
        }}
        summary["history"] = {"rows_written": result["history"]["rows_written"],
                              "files_added": len(result["history"]["files_added"]),
                              "files_removed": len(result["history"]["files_removed"])}
    return {
        "plan_id": plan.plan_id,
        "attempt_id": attempt_id,
        "staging_path": staging,
        "table_format": table_format.name.value,
        "iceberg_catalog": plan.iceberg_catalog,
        **table_format.publish_document(plan, attempt_id, {**result, "figures": figures}),
        "new_last_full_load_date": plan.new_last_full_load_date,
        "new_last_incremental_file": plan.new_last_incremental_file,
        "summary": summary,
        **history,
    }


def record(store: ControllerStore, plan: TablePlan, record_document: dict) -> TableState:
    """Step 2: the commit point. Raises ConcurrentCommitError if the table moved on."""
    current = store.get(plan.state_path)
    if current is None:
        raise KeyError(f"no controller item for {plan.table}")
    return store.replace(current.evolve(pending_commit=record_document), plan.base_version)


def finish(
    store: ControllerStore, storage: Storage, state: TableState, on_step: StepCallback = _no_steps,
    *, aws_conn_id: str | None = None, region_name: str | None = None,
) -> TableState:
    """Step 3: publish a recorded commit and clear it. Safe to repeat after a crash anywhere.

    :param storage: the lake's storage.
    :param aws_conn_id: AWS connection for an Iceberg table's Glue catalog (None: boto3's chain).
    :param region_name: AWS region for it.
    """
    pending = state.pending_commit
    if pending is None:
        return state
    table_format = table_format_for_record(pending, storage, aws_conn_id=aws_conn_id, region_name=region_name)
    if pending.get("history") is not None:
        # The history table first: a crash after it leaves the record, and the retry finds the
        # history published (Parquet moves are idempotent, an Iceberg snapshot names its attempt).
        table_format.publish(pending["history"], on_step)
    table_format.publish(pending, on_step)
    try:
        committed = store.replace(
            state.evolve(
                last_full_load_date=pending["new_last_full_load_date"],
                last_incremental_file=pending["new_last_incremental_file"],
                pending_commit=None,
                last_run=pending["summary"],
            ),
            state.version,
        )
    except ConcurrentCommitError:
        # Another process finished the same record first; that is the same outcome.
        committed = store.get(state.path)
        if committed is None or (committed.last_run or {}).get("attempt_id") != pending["attempt_id"]:
            raise
    on_step("state_committed", {"version": committed.version})
    table_format.clean_up(pending)
    if pending.get("history") is not None:
        table_format.clean_up(pending["history"])
    return committed
