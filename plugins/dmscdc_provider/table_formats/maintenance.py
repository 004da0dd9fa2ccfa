"""Keeping Iceberg tables small and fast: compact small files, expire old snapshots, remove the
files no snapshot names (attempts that failed or were killed, files of expired snapshots); a
table's history table is expired and cleaned with it, not compacted.

Compaction is a commit like a merge's (docs/crash-safety.md): the files it writes are recorded in
the controller by one conditional write, then published as one Iceberg snapshot, so it never races
a merge (of the two, only the one that records first commits; the other plans again) and a crash
anywhere is finished or discarded like any attempt. Expiring snapshots and removing unreferenced
files change no data that a current snapshot names.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from dmscdc_provider.arrow_fs import ArrowFiles
from dmscdc_provider.engines import arrow_schema, hive_paths
from dmscdc_provider.plan import HISTORY_SUFFIX, TablePlan
from dmscdc_provider.state.base import ControllerStore, TableState
from dmscdc_provider.storage import Storage, join
from dmscdc_provider.table_formats import LakeFile
from dmscdc_provider.table_formats.iceberg import (
    IcebergCatalogError, IcebergFormat, absolute_location, history_rollback_target, snapshot_data_files)

log = logging.getLogger(__name__)

DEFAULT_COMPACT_BELOW_BYTES = 8 * 1024 * 1024
DEFAULT_TARGET_FILE_BYTES = 128 * 1024 * 1024
DEFAULT_EXPIRE_AFTER = dt.timedelta(days=7)
# A file no snapshot names may still belong to an attempt in progress: only older ones are removed.
DEFAULT_ORPHAN_AGE = dt.timedelta(days=1)


@dataclass
class MaintenanceReport:
    """What maintenance did to one table."""

    table: str
    files_compacted: int = 0
    files_written: int = 0
    snapshots_expired: int = 0
    files_removed: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.table}: compacted {self.files_compacted} small file(s) into {self.files_written}, expired "
                f"{self.snapshots_expired} snapshot(s), removed {self.files_removed} unreferenced file(s) "
                f"in {self.seconds:.1f} s" + "".join(f"; {note}" for note in self.notes))


def maintain_table(
    state: TableState,
    lake_root: str,
    iceberg_catalog: str,
    store: ControllerStore,
    storage: Storage,
    *,
    compact_below_bytes: int = DEFAULT_COMPACT_BELOW_BYTES,
    target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES,
    expire_after: dt.timedelta = DEFAULT_EXPIRE_AFTER,
    orphan_age: dt.timedelta = DEFAULT_ORPHAN_AGE,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
    now: dt.datetime | None = None,
) -> MaintenanceReport:
    """Compact, expire and clean one Iceberg table.

    :param compact_below_bytes: data files smaller than this are merged with the other small
        files of their partition (0: no compaction).
    :param target_file_bytes: the largest file a compaction writes.
    :param expire_after: snapshots older than this are expired (the current one never is).
    :param orphan_age: files no snapshot names are removed once they are this old.
    """
    started = time.monotonic()
    now = now or dt.datetime.now(dt.timezone.utc)
    report = MaintenanceReport(state.name)
    iceberg = IcebergFormat(storage, iceberg_catalog, aws_conn_id=aws_conn_id, region_name=region_name)
    table = iceberg.load(lake_root, state.schema, state.table)
    if table is None:
        report.notes.append("no Iceberg table yet")
        return report
    if state.pending_commit is not None:
        report.notes.append("a recorded commit is still being published (the next run finishes it); not compacted")
    elif compact_below_bytes > 0:
        _compact(state, lake_root, iceberg_catalog, store, storage, iceberg, report, compact_below_bytes,
                 target_file_bytes, aws_conn_id, region_name)
        table = iceberg.load(lake_root, state.schema, state.table)
    before = len(table.snapshots())
    table.maintenance.expire_snapshots().older_than(now - expire_after).commit()
    table = iceberg.load(lake_root, state.schema, state.table)
    report.snapshots_expired = before - len(table.snapshots())
    report.files_removed = _remove_unreferenced(table, absolute_location(join(lake_root, state.schema, state.table)),
                                                now - orphan_age,
                                                ArrowFiles(aws_conn_id, region_name))
    history = iceberg.load(lake_root, state.schema, state.table + HISTORY_SUFFIX)
    if history is not None:
        _expire_and_clean_history(state, lake_root, table, history, now - expire_after, now - orphan_age,
                                  ArrowFiles(aws_conn_id, region_name), report)
    report.seconds = time.monotonic() - started
    return report


def _expire_and_clean_history(state, lake_root, table, history, expire_before: dt.datetime,
                              orphans_before: dt.datetime, files: ArrowFiles, report: MaintenanceReport) -> None:
    """Expire the history table's snapshots and remove its unreferenced files as the table's.

    Its snapshots are expired only up to the one that goes with the table's oldest remaining
    snapshot (``history_rollback_target``), so a rollback to any snapshot the table keeps finds
    its history. It is not compacted: a compaction of it would be a commit of its own, while
    the table and its history are committed by one controller record (docs/table-formats.md).
    """
    oldest_kept = min(table.snapshots(), key=lambda s: (s.timestamp_ms, s.sequence_number or 0))
    try:
        goes_with_oldest = history_rollback_target(history, oldest_kept, state.name)
        cutoff_ms = min(int(expire_before.timestamp() * 1000), goes_with_oldest.timestamp_ms)
    except IcebergCatalogError:  # the history table is younger than every snapshot the table keeps
        cutoff_ms = int(expire_before.timestamp() * 1000)
    before = len(history.snapshots())
    history.maintenance.expire_snapshots().older_than(
        dt.datetime.fromtimestamp(cutoff_ms / 1000, dt.timezone.utc)).commit()
    history = history.refresh()
    expired = before - len(history.snapshots())
    removed = _remove_unreferenced(history, absolute_location(join(lake_root, state.schema,
                                                                   state.table + HISTORY_SUFFIX)),
                                   orphans_before, files)
    report.notes.append(f"history table: expired {expired} snapshot(s), removed {removed} unreferenced file(s), "
                        "not compacted")


def _compact(state, lake_root, iceberg_catalog, store, storage, iceberg, report, compact_below_bytes,
             target_file_bytes, aws_conn_id, region_name) -> None:
    from dmscdc_provider.runner import SUCCEEDED, complete_attempt

    plan = TablePlan(
        table=state.name, state_path=state.path, base_version=state.version, mode="compact", files=[],
        lake_root=lake_root, primary_key=list(state.primary_key), partition_key=list(state.partition_key),
        new_last_full_load_date=state.last_full_load_date, new_last_incremental_file=state.last_incremental_file,
        raw_listed_at=(state.last_run or {}).get("raw_listed_at"), table_format="iceberg",
        iceberg_catalog=iceberg_catalog)
    groups: dict[str, list[LakeFile]] = {}
    for lake_file in iceberg.data_files(plan):
        if lake_file.size < compact_below_bytes:
            # The folders as named: a value's escapes and the null folder are kept as they are.
            groups.setdefault(hive_paths.partition_folders(lake_file.relative_path), []).append(lake_file)
    groups = {folder: files for folder, files in groups.items() if len(files) > 1}
    if not groups:
        return
    attempt_id = f"{plan.plan_id}-{uuid.uuid4().hex[:8]}"
    files = ArrowFiles(aws_conn_id, region_name)
    result = {"status": SUCCEEDED, "rows_read": {}, "rows_written": 0, "files_added": [], "files_removed": [],
              "partition_column_types": {}}
    for folder, small in sorted(groups.items()):
        written = _rewrite(files, plan, attempt_id, folder, small, target_file_bytes)
        result["files_added"] += written
        result["files_removed"] += [f.relative_path for f in small]
        result["rows_written"] += sum(w["rows"] for w in written)
    outcome = complete_attempt(plan, attempt_id, result, store, storage, aws_conn_id=aws_conn_id,
                               region_name=region_name)
    if outcome.status != SUCCEEDED:
        report.notes.append(f"compaction not committed: {outcome.note or outcome.error}")
        return
    report.files_compacted = len(result["files_removed"])
    report.files_written = len(result["files_added"])


def _rewrite(files: ArrowFiles, plan: TablePlan, attempt_id: str, folder: str, small: list[LakeFile],
             target_file_bytes: int) -> list[dict]:
    """The rows of ``small`` (one partition) in new files of up to ``target_file_bytes``, sorted by
    the primary key; columns unified as the merges unify them."""
    root = plan.lake_table_path.rstrip("/")
    tables = []
    for lake_file in small:
        with files.open_input(f"{root}/{lake_file.relative_path}") as handle:
            tables.append(pq.read_table(handle))
    schema = arrow_schema.unify_schemas([(f.relative_path, t.schema) for f, t in zip(small, tables)])
    rows = pa.concat_tables([arrow_schema.conform_batch(t, schema) for t in tables])
    if plan.primary_key:
        rows = rows.sort_by([(column, "ascending") for column in plan.primary_key if column in rows.column_names])
    bytes_per_row = max(1.0, sum(f.size for f in small) / max(1, rows.num_rows))
    rows_per_file = max(1, int(target_file_bytes / bytes_per_row))
    written = []
    for start in range(0, rows.num_rows, rows_per_file):
        piece = rows.slice(start, rows_per_file)
        name = f"part-{len(written):05d}-{uuid.uuid4()}.c000.snappy.parquet"
        relative = f"{folder}/{name}" if folder else name
        with files.open_output(join(plan.staging_path(attempt_id), relative)) as sink:
            pq.write_table(piece, sink, compression="snappy", coerce_timestamps="us", allow_truncated_timestamps=True,
                           store_decimal_as_integer=True)
            size = sink.tell()
        written.append({"path": relative, "rows": piece.num_rows, "bytes": size})
    return written


def _remove_unreferenced(table, table_path: str, older_than: dt.datetime, files: ArrowFiles) -> int:
    """Delete the data files under the table folder that no snapshot names and that are older
    than ``older_than``; returns how many."""
    import pyarrow.fs as pafs

    referenced = set()
    for snapshot in table.snapshots():
        referenced.update(absolute_location(p) for p in snapshot_data_files(table, str(snapshot.snapshot_id)) or [])
    filesystem, root = files.resolve(table_path)
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    prefix = table_path.rstrip("/") + "/"
    removed = 0
    for info in infos:
        relative = info.path[len(root.rstrip("/")) + 1:]
        if (info.type != pafs.FileType.File or not relative.endswith(".parquet") or relative.startswith("metadata/")
                or prefix + relative in referenced):
            continue
        if info.mtime is not None and info.mtime.replace(tzinfo=info.mtime.tzinfo or dt.timezone.utc) >= older_than:
            continue
        filesystem.delete_file(info.path)
        removed += 1
    return removed
