"""How a table's outcome reads to a person: one formatter for the CLI and the Airflow task log.

A failure leads with its cause (one line, as the library that raised it states it) and a remedy
for that cause; the full trace is logged at debug level where it happened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from dmscdc_provider.runner import TableOutcome

# Causes a crashed merge reports (matched on the cause's text) -> what to do about each.
_CRASH_REMEDIES = (
    ("No space left on device",
     "free space on the disk that filled (Spark's scratch folder spark.local.dir, /tmp by "
     "default, or the lake's), then run again; the table's state is unchanged"),
    ("OutOfMemoryError",
     "give the merge more memory (--spark-conf spark.driver.memory=4g, or a larger remote "
     "worker), then run again; the table's state is unchanged"),
    ("Permission denied",
     "give the user running dmscdc read access to the raw files and write access to the lake, "
     "then run again; the table's state is unchanged"),
)
CRASH_REMEDY = ("for the full trace run again as `dmscdc --log-level debug run ...` (in Airflow, "
                "the task log at DEBUG); the table's state is unchanged")


def remedy_for_crash(cause: str) -> str:
    """A remedy for a merge that crashed with ``cause`` (one line)."""
    return next((remedy for marker, remedy in _CRASH_REMEDIES if marker in cause), CRASH_REMEDY)


def one_line(error: BaseException) -> str:
    """An exception's cause in one line: its first line, and the lines after it ends in ``:``
    (engines already reduce a Spark failure to its cause)."""
    # Imported here: parsing the DAG files imports this module, and the scheduler has no Spark package.
    from dmscdc_spark.errors import one_line as whole_cause

    return whole_cause(str(error)) or type(error).__name__


def outcome_line(outcome: "TableOutcome") -> str:
    """One line: ``ok in 1.2s: read I=.. U=.. D=.., wrote .. rows, +a/-r files`` or the failure's cause."""
    if outcome.succeeded:
        s = outcome.summary or {}
        read = s.get("rows_read", {})
        line = (f"ok in {outcome.seconds:.1f}s: read I={read.get('I', 0)} U={read.get('U', 0)} "
                f"D={read.get('D', 0)}, wrote {s.get('rows_written', 0)} rows, "
                f"+{s.get('files_added', 0)}/-{s.get('files_removed', 0)} files")
        skipped = s.get("skipped") or {}
        if skipped.get("U") or skipped.get("D"):
            line += f", skipped (no primary key) U={skipped.get('U', 0)} D={skipped.get('D', 0)}"
        if outcome.note:
            line += f" ({outcome.note})"
        return line
    if outcome.status == "conflict":
        return f"CONFLICT: {outcome.note}"
    return f"FAILED: {(outcome.error or {}).get('problem')}"


def describe_failure(outcome: "TableOutcome") -> str:
    """The failure as a person reads it: table and status, then file, cause, remedy, note."""
    error = outcome.error or {}
    lines = [f"{outcome.table}: merge {outcome.status}"]
    for label, key in (("file", "file"), ("cause", "problem"), ("remedy", "remedy")):
        if error.get(key):
            lines.append(f"  {label + ':':<8}{error[key]}")
    if outcome.note:
        lines.append(f"  {'note:':<8}{outcome.note}")
    return "\n".join(lines)


def format_size(size: int) -> str:
    """``1.5 GiB``, ``20.0 MiB``: sizes in progress lines, reasons and status lines."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
