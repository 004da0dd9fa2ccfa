"""``dmscdc status``: one line per table from its controller item and one listing of its raw folder.

Reads no Parquet and imports neither pyarrow nor pyiceberg, so it answers in well under a second
for a hundred local tables.
"""

from __future__ import annotations

from datetime import datetime

from dmscdc_provider.observability.figures import backlog_of
from dmscdc_provider.observability.freshness import FreshnessObjectives, behind_seconds, format_duration
from dmscdc_provider.planner import files_beyond, list_table_files, state_after_pending
from dmscdc_provider.report import format_size
from dmscdc_provider.state.base import TableState
from dmscdc_provider.storage import Storage, join


def table_status(state: TableState, raw_root: str, storage: Storage, now: datetime,
                 objectives: FreshnessObjectives, default_format: str = "parquet") -> dict:
    """What ``dmscdc status`` says about one table (its ``--json`` document)."""
    current = state_after_pending(state)
    last_run = state.last_run or {}
    figures = last_run.get("figures") or {}
    document = {
        "table": state.name,
        "active": state.active,
        "table_format": state.table_format or default_format,
        "engine": figures.get("engine"),
        "last_full_load_date": current.last_full_load_date,
        "last_incremental_file": current.last_incremental_file,
        "last_result": "commit pending" if state.pending_commit else ("succeeded" if last_run.get("plan_id") else None),
        "last_commit_at": figures.get("committed_at"),
        "lag_seconds": figures.get("lag_seconds"),
        "pending_files": None, "pending_bytes": None, "oldest_pending_at": None, "behind_seconds": None,
        "freshness_slo_seconds": None, "over_slo": False, "problem": None,
    }
    try:
        files = list_table_files(storage, join(raw_root, state.schema, state.table))
    except OSError as error:
        document["problem"] = f"cannot list raw: {error}"
        return document
    backlog = backlog_of(files_beyond(files, current.last_full_load_date, current.last_incremental_file))
    document.update(pending_files=backlog["files"], pending_bytes=backlog["bytes"],
                    oldest_pending_at=backlog["oldest_modified"],
                    behind_seconds=round(behind_seconds(backlog["oldest_modified"], now), 3))
    if state.active:
        objective = objectives.for_table(state.name)
        document["freshness_slo_seconds"] = objective
        document["over_slo"] = objective is not None and document["behind_seconds"] > objective
    return document


STATUS_HEADER = (f"{'table':<28} {'format':<8} {'engine':<7} {'watermark':<26} {'lag':>7} {'backlog':>16} "
                 f"{'behind':>8} {'slo':>7}  last result")


def status_line(document: dict) -> str:
    """One line of ``dmscdc status`` (``STATUS_HEADER`` names its columns)."""
    watermark = (document["last_incremental_file"] or "-").rsplit("/", 1)[-1]
    if document["pending_files"] is None:
        backlog = "?"
    else:
        backlog = f"{document['pending_files']} ({format_size(document['pending_bytes'])})"
    if not document["active"]:
        result = "inactive"
    elif document["problem"]:
        result = document["problem"]
    elif document["last_result"]:
        when = (document["last_commit_at"] or "")[:19].replace("T", " ")
        result = f"{document['last_result']} {when + ' UTC' if when else ''}".rstrip()
    else:
        result = "never merged"
    slo = format_duration(document["freshness_slo_seconds"]) if document["freshness_slo_seconds"] else "-"
    flag = "  OVER SLO" if document["over_slo"] else ""
    return (f"{document['table']:<28} {document['table_format']:<8} {document['engine'] or '-':<7} {watermark:<26} "
            f"{format_duration(document['lag_seconds']):>7} {backlog:>16} "
            f"{format_duration(document['behind_seconds']):>8} {slo:>7}  {result}{flag}")
