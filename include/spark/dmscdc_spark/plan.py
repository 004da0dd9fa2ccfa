"""The engine plan document as both engines read it (docs/plan-and-result.md).

Plain Python, no pyspark: the in-process engine in the Airflow worker reads the same document.
"""

from __future__ import annotations

from dataclasses import dataclass, field


# A history table's columns beside the table's: each version's validity (``__end_at`` null: current).
START_AT = "__start_at"
END_AT = "__end_at"


class HistoryColumns:
    """Working columns of the version walk, the same in both engines."""

    PHASE = "_dmscdc_phase"  # 0: the history's current version, 1: an event of this run
    SEQUENCE = "_dmscdc_sequence"
    TIME = "_dmscdc_time"
    AT = "_dmscdc_at"
    OPENS = "_dmscdc_opens"
    NEXT = "_dmscdc_next_at"
    VERSION = "_dmscdc_version"


@dataclass(frozen=True)
class HistoryPlan:
    """The engine plan's ``history`` section: the history table a merge maintains beside its table.

    :param lake_table_path: the history table's folder; ``staging_path`` where its files are staged.
    :param lake_files: its current data files when the table format pins them, else None.
    :param columns: the tracked columns (empty: all but ``except_columns``).
    :param file_times: per planned file, ISO instant of its rows when there is no commit-time column.
    """

    lake_table_path: str
    staging_path: str
    lake_files: list[dict] | None = None
    columns: list[str] = field(default_factory=list)
    except_columns: list[str] = field(default_factory=list)
    file_times: list[str | None] = field(default_factory=list)

    @classmethod
    def from_dict(cls, section: dict) -> "HistoryPlan":
        return cls(section["lake_table_path"].rstrip("/"), section["staging_path"], section.get("lake_files"),
                   list(section.get("columns") or []), list(section.get("except") or []),
                   list(section.get("file_times") or []))

    def tracked(self, names: list[str], plan: "MergePlan", op_column: str = "Op") -> list[str]:
        """Columns whose change opens a new version: those named, else every column but those
        excepted and the ones that describe the change rather than the row (``Op``, the order
        and commit-time columns)."""
        if self.columns:
            return [c for c in self.columns if c in names]
        describing = {op_column, plan.order_column, plan.commit_time_column, *self.except_columns}
        return [c for c in names if c not in describing]


@dataclass(frozen=True)
class MergePlan:
    """One table's merge as an engine runs it.

    :param lake_files: the table's current data files (``{"path": relative to the table,
        "size"}``) when the table format pins them (Iceberg: the files of the current snapshot);
        None: the engine lists the table folder (plain Parquet).
    :param column_types: the table's column types by Spark name (``{"updated": "timestamp_ntz"}``):
        its lake files' (an incremental merge of a Parquet folder) or its Iceberg schema's. Every
        file the merge writes carries them, widened only where the changes need it (int to
        bigint), whichever lake files it rewrites.
    :param widen_files: lake files (relative to the table) holding a column in a narrower type
        than the merge writes it: rewritten in the merge's types even when they hold no changed
        key, so every file of a Parquet folder has one type per column.
    :param commit_time_column: the column with each change's commit time (DMS
        ``TimestampColumnName``): orders changes when no ``order_column`` is set.
    :param keep_on_null: columns whose null in an update keeps the value the key had.
    :param history: the history table to maintain (docs/plan-and-result.md), or None.
    """

    table: str
    plan_id: str
    attempt_id: str
    mode: str  # "full" rebuilds the table, "incremental" merges into it
    files: list[dict]  # ordered: {"path", "kind": "load"|"cdc", "size"}
    lake_table_path: str
    staging_path: str
    primary_key: list[str] = field(default_factory=list)
    partition_key: list[str] = field(default_factory=list)
    order_column: str | None = None
    commit_time_column: str | None = None
    keep_on_null: list[str] = field(default_factory=list)
    history: dict | None = None
    csv_delimiter: str = ","
    csv_null_value: str = "NULL"
    target_file_bytes: int = 128 * 1024 * 1024
    max_records_per_file: int = 5_000_000
    lake_files: list[dict] | None = None
    column_types: dict[str, str] | None = None
    widen_files: list[str] = field(default_factory=list)

    def sequence_column(self, columns: list[str]) -> str | None:
        """The column that orders changes before file order and row position: the order column
        where the files carry it, else the commit-time column."""
        return next((c for c in (self.order_column, self.commit_time_column) if c and c in columns), None)

    @classmethod
    def from_dict(cls, plan: dict) -> "MergePlan":
        """The plan from its document; keys it does not know and null values (defaults) are skipped."""
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in plan.items() if key in known and value is not None})


def empty_partition_value_warning(column: str, rows: int) -> str:
    """The result's warning, from either engine, for rows whose text partition column outside the
    primary key holds the empty string: their folder is null's, so the table holds null there."""
    return (f"partition column {column!r}: {rows} row(s) hold the empty string, which a partition folder "
            "cannot tell from null (both are __HIVE_DEFAULT_PARTITION__), so the table holds null there "
            "(docs/merge-semantics.md, \"Partition values\")")
