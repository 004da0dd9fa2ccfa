"""The figures of one table's merge, computed once when its commit is recorded (``commit.commit_record``).

They travel in the commit's summary (``LastRun.figures``), so the CLI, the Airflow task, the Asset
event, the Iceberg snapshot summary and the run history all report the same numbers.
"""

from __future__ import annotations

from datetime import datetime

# Figures that are numbers, in the order reports show them (docs/observability.md defines each).
NUMERIC_FIGURES = (
    "lag_seconds", "pending_files", "pending_bytes", "oldest_pending_age_seconds",
    "rows_inserted", "rows_updated", "rows_deleted",
    "files_written", "bytes_written", "files_rewritten", "merge_seconds",
)


def backlog_of(files) -> dict:
    """What raw holds that a table has not applied: file count, bytes and the oldest file's
    last-modified time (ISO, None without files).

    :param files: ``DmsFile``s beyond the table's watermark (``planner.files_beyond``).
    """
    oldest = min((f.modified for f in files), default=None)
    return {"files": len(files), "bytes": sum(f.size for f in files),
            "oldest_modified": oldest.isoformat() if oldest else None}


def _instant(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _seconds_between(later: datetime, earlier: datetime | None) -> float | None:
    # Raw's LastModified and this worker's clock can disagree by a little: never a negative age.
    return None if earlier is None else round(max(0.0, (later - earlier).total_seconds()), 3)


def merge_figures(plan, result: dict, committed_at: datetime) -> dict:
    """The figures of a merge whose commit is recorded at ``committed_at``.

    :param plan: the ``TablePlan`` (its files' last-modified times and the backlog its planning saw).
    :param result: the engine's result (docs/plan-and-result.md).
    """
    newest_applied = max((datetime.fromisoformat(v) for v in plan.file_versions.values()), default=None)
    # The source's own commit time, where the table has a commit-time column, is nearer the truth
    # than the time DMS wrote the file (which adds DMS's batching to the lag).
    newest_commit = _instant(result.get("newest_commit_time"))
    backlog = plan.backlog
    oldest_pending = _instant(backlog["oldest_modified"]) if backlog else None
    read, skipped = result.get("rows_read") or {}, result.get("skipped") or {}
    return {
        "committed_at": committed_at.isoformat(),
        "engine": plan.engine,
        "newest_applied_at": newest_applied.isoformat() if newest_applied else None,
        "newest_commit_at": newest_commit.isoformat() if newest_commit else None,
        "lag_seconds": _seconds_between(committed_at, newest_commit or newest_applied),
        "pending_files": backlog["files"] if backlog else None,
        "pending_bytes": backlog["bytes"] if backlog else None,
        "oldest_pending_at": backlog["oldest_modified"] if backlog else None,
        "oldest_pending_age_seconds": (_seconds_between(committed_at, oldest_pending) or 0.0) if backlog else None,
        "rows_inserted": read.get("I", 0),
        "rows_updated": read.get("U", 0) - skipped.get("U", 0),
        "rows_deleted": read.get("D", 0) - skipped.get("D", 0),
        "files_written": len(result.get("files_added") or []),
        "bytes_written": sum(added.get("bytes") or 0 for added in result.get("files_added") or []),
        "files_rewritten": len(result.get("files_removed") or []),
        "merge_seconds": result.get("seconds"),
    }


def snapshot_properties(figures: dict) -> dict[str, str]:
    """The figures as Iceberg snapshot summary properties (``dmscdc.lag-seconds`` ...; strings)."""
    properties = {f"dmscdc.{name.replace('_', '-')}": str(figures[name])
                  for name in NUMERIC_FIGURES if figures.get(name) is not None}
    if figures.get("engine"):
        properties["dmscdc.engine"] = figures["engine"]
    return properties


def describe_figures(table: str, figures: dict) -> str:
    """The freshness of a merge as a person reads it in a task log."""
    from dmscdc_provider.observability.freshness import format_duration

    measured_from = "source commit time" if figures.get("newest_commit_at") else "applied file's time"
    sentence = f"{table}: lag {format_duration(figures.get('lag_seconds'))} (commit time minus the newest {measured_from})"
    if figures.get("pending_files"):
        sentence += (f"; raw holds {figures['pending_files']} more file(s) ({figures['pending_bytes']:,} bytes) beyond "
                     f"the new watermark, the oldest {format_duration(figures.get('oldest_pending_age_seconds'))} old")
    elif figures.get("pending_files") == 0:
        sentence += "; raw holds nothing beyond the new watermark"
    return sentence
