"""The engine plan document as both engines read it (docs/plan-and-result.md).

Plain Python, no pyspark: the in-process engine in the Airflow worker reads the same document.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    csv_delimiter: str = ","
    csv_null_value: str = "NULL"
    target_file_bytes: int = 128 * 1024 * 1024
    max_records_per_file: int = 5_000_000
    lake_files: list[dict] | None = None
    column_types: dict[str, str] | None = None
    widen_files: list[str] = field(default_factory=list)

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
