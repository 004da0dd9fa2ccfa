"""The run history: one Parquet record per merge under ``<lake>/_dmscdc/runs/day=YYYY-MM-DD/``.

Append-only: each record is its own small file named by its time, table and attempt, so writers
never touch each other's files and a repeated write of the same commit replaces its own record.
The ``day`` folders are Hive partitions (Athena, DuckDB, Spark read them as a column) and bound
what a query over recent days reads; expire old days with an S3 lifecycle rule on the prefix.
The folder starts with ``_``, so table readers, crawlers and dmscdc's own listings skip it.

A record is written after the merge's commit; failing to write it logs a warning and never
fails the committed merge.
"""

from __future__ import annotations

import io
import logging
import re
from datetime import datetime, timezone

from dmscdc_provider.observability.figures import NUMERIC_FIGURES
from dmscdc_provider.storage import join

log = logging.getLogger(__name__)

RUNS_FOLDER = "_dmscdc/runs"
DAY_PARTITION = "day"

# Columns of a record, in order (docs/observability.md); figures follow as their own columns.
TEXT_COLUMNS = ("table", "status", "mode", "engine", "plan_id", "attempt_id", "controller_key",
                "last_full_load_date", "last_incremental_file", "problem", "note")
TIME_COLUMNS = ("recorded_at", "committed_at", "newest_applied_at", "oldest_pending_at")
INTEGER_FIGURES = ("pending_files", "pending_bytes", "rows_inserted", "rows_updated", "rows_deleted",
                   "files_written", "bytes_written", "files_rewritten")


def runs_root(lake_root: str) -> str:
    return join(lake_root, RUNS_FOLDER)


def run_record(plan, outcome, recorded_at: datetime | None = None) -> dict:
    """The history record of one merge's outcome (a ``TableOutcome`` of ``plan``)."""
    summary = outcome.summary or {}
    figures = summary.get("figures") or {}
    succeeded = outcome.status == "succeeded"
    record = {
        "recorded_at": recorded_at or datetime.now(timezone.utc),
        "committed_at": figures.get("committed_at") if succeeded else None,
        "newest_applied_at": figures.get("newest_applied_at") if succeeded else None,
        "oldest_pending_at": figures.get("oldest_pending_at") if succeeded else None,
        "table": plan.table,
        "status": outcome.status,
        "mode": plan.mode,
        "engine": figures.get("engine") or plan.engine,
        "plan_id": plan.plan_id,
        "attempt_id": summary.get("attempt_id"),
        "controller_key": plan.state_path,
        "last_full_load_date": plan.new_last_full_load_date if succeeded else None,
        "last_incremental_file": plan.new_last_incremental_file if succeeded else None,
        "problem": (outcome.error or {}).get("problem"),
        "note": outcome.note,
        "files_read": len(plan.files),
        "rows_written": summary.get("rows_written") if succeeded else None,
        "seconds": round(outcome.seconds, 3),
    }
    for name in NUMERIC_FIGURES:
        record[name] = figures.get(name) if succeeded else None
    for name in TIME_COLUMNS:
        value = record[name]
        record[name] = datetime.fromisoformat(value) if isinstance(value, str) else value
    return record


def record_path(lake_root: str, record: dict) -> str:
    """``<lake>/_dmscdc/runs/day=<day>/<time>-<table>-<attempt or plan>.parquet``: a committed
    merge's record is named by its commit time and attempt, so writing it again replaces it."""
    moment = record["committed_at"] or record["recorded_at"]
    moment = moment.astimezone(timezone.utc)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", record["table"])
    run = record["attempt_id"] or f"{record['plan_id']}-{record['status']}-{record['recorded_at']:%H%M%S%f}"
    return join(runs_root(lake_root), f"{DAY_PARTITION}={moment:%Y-%m-%d}",
                f"{moment:%Y%m%dT%H%M%S%f}-{name}-{run}.parquet")


def runs_schema():
    import pyarrow as pa

    types = {name: pa.string() for name in TEXT_COLUMNS}
    types.update({name: pa.timestamp("us", tz="UTC") for name in TIME_COLUMNS})
    types.update({name: pa.int64() for name in (*INTEGER_FIGURES, "files_read", "rows_written")})
    types.update({name: pa.float64() for name in NUMERIC_FIGURES if name not in INTEGER_FIGURES})
    types["seconds"] = pa.float64()
    order = (*TIME_COLUMNS[:2], "table", "status", *TEXT_COLUMNS[2:], *TIME_COLUMNS[2:],
             "files_read", "rows_written", *NUMERIC_FIGURES, "seconds")
    return pa.schema([(name, types[name]) for name in order])


def encode_record(record: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = runs_schema()
    table = pa.Table.from_pylist([{name: record.get(name) for name in schema.names}], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="snappy")
    return buffer.getvalue()


def append_run(storage, plan, outcome) -> str | None:
    """Append the record of ``outcome`` to the plan's lake history; returns its path, or None
    (with a warning in the log) when it could not be written: the merge's outcome stands."""
    try:
        record = run_record(plan, outcome)
        path = record_path(plan.lake_root, record)
        storage.write_bytes(path, encode_record(record), "application/vnd.apache.parquet")
        return path
    except Exception as error:  # the commit is done: a history that cannot be written must not undo it
        log.warning("%s: the run history record could not be written under %s (%s); the merge's outcome "
                    "(%s) stands", plan.table, runs_root(plan.lake_root), error, outcome.status)
        return None


def runs_glob(lake_root: str) -> str:
    """The glob that reads the whole history with Hive partitions (DuckDB ``read_parquet``)."""
    return join(runs_root(lake_root), f"{DAY_PARTITION}=*", "*.parquet")


def read_runs(lake_root: str, since_day: str, tables: set[str] | None = None,
                 aws_conn_id: str | None = None, region_name: str | None = None) -> list[dict]:
    """The records of ``day >= since_day`` (``YYYY-MM-DD``), oldest first; only the day folders from
    ``since_day`` on are listed and read. An empty list when the lake has no history yet.

    :param tables: only these ``schema.table`` (None: all).
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    from dmscdc_provider.arrow_fs import arrow_filesystem

    filesystem, path = arrow_filesystem(runs_root(lake_root), aws_conn_id, region_name)
    days = [info.path for info in filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
            if info.type == pafs.FileType.Directory
            and info.base_name.startswith(f"{DAY_PARTITION}=") and info.base_name >= f"{DAY_PARTITION}={since_day}"]
    # Whole records only: a record being written is a ``.partial`` file until it is complete.
    files = [info.path for day in days for info in filesystem.get_file_info(pafs.FileSelector(day))
             if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")]
    if not files:
        return []
    dataset = ds.dataset(files, filesystem=filesystem, format="parquet", partition_base_dir=path,
                         schema=runs_schema().append(pa.field(DAY_PARTITION, pa.string())),
                         partitioning=ds.partitioning(pa.schema([(DAY_PARTITION, pa.string())]), flavor="hive"))
    condition = None if tables is None else ds.field("table").isin(sorted(tables))
    records = dataset.to_table(filter=condition).to_pylist()
    return sorted(records, key=lambda record: record["recorded_at"])
