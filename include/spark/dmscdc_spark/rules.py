"""Merge rules: pure DataFrame -> DataFrame functions, no I/O and no session handling.

A change frame holds the data columns, ``Op`` and two ordering columns added at read time:
``FILE_SEQ`` (the file's position in the plan: LOAD files by hex counter, then CDC files by
the timestamp in their names) and ``ROW_POS`` (the row's position inside its file).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

OP = "Op"
FILE_SEQ = "_dmscdc_file_seq"
ROW_POS = "_dmscdc_row_pos"
# The commit-time column read as a timestamp, when the files carry it as text (CSV).
COMMIT_TIME = "_dmscdc_commit_time"
INTERNAL_COLUMNS = (FILE_SEQ, ROW_POS, COMMIT_TIME)
KNOWN_OPS = ("I", "U", "D")


def column(name: str):
    """The column called ``name``, whatever characters it holds (a name given as a string is
    parsed: ``a.b`` would mean field ``b`` of a struct ``a``)."""
    return F.col("`" + name.replace("`", "``") + "`")


def _order_columns(sequence_column: str | None, columns: list[str]) -> list[str]:
    """Columns that order changes, most significant first.

    The sequence column (a configured ordering column such as DMS's ``AR_H_CHANGE_SEQ`` where
    the files carry it, else the commit-time column) decides first; rows without a value (LOAD
    files) sort before rows with one. File order and row position break ties and are the whole
    order when there is no sequence column.
    """
    ordering = [sequence_column] if sequence_column and sequence_column in columns else []
    return ordering + [FILE_SEQ, ROW_POS]


def latest_change_per_key(
    changes: DataFrame, key_columns: list[str], sequence_column: str | None = None
) -> DataFrame:
    """One row per key: the newest change, whatever its ``Op``."""
    newest_first = [column(c).desc_nulls_last() for c in _order_columns(sequence_column, changes.columns)]
    window = Window.partitionBy(*[column(k) for k in key_columns]).orderBy(*newest_first)
    return (
        changes.withColumn("_dmscdc_rank", F.row_number().over(window))
        .where(F.col("_dmscdc_rank") == 1)
        .drop("_dmscdc_rank")
    )


def with_sequence(changes: DataFrame, order_column: str | None, commit_time_column: str | None) -> tuple[DataFrame, str | None]:
    """The changes and the column that orders them before file order and row position: the
    order column where the files carry it, else the commit-time column (text, as CSV carries
    it, is read as a timestamp into a column of the engine's own)."""
    column = next((c for c in (order_column, commit_time_column) if c and c in changes.columns), None)
    if column is None or column == order_column:
        return changes, column
    if dict(changes.dtypes)[column] == "string":
        return changes.withColumn(COMMIT_TIME, F.to_timestamp(F.col(column))), COMMIT_TIME
    return changes, column


def keep_values_on_null(
    changes: DataFrame, key_columns: list[str], sequence_column: str | None, keep: list[str],
    prior: DataFrame | None,
) -> DataFrame:
    """A null that an update carries in a ``keep`` column becomes the value the key had: the last
    value an earlier change gave it since the key's last insert or delete, else (no insert or
    delete before it among ``changes``) its value in ``prior`` (the lake's rows, or a full load's
    LOAD rows: key and ``keep`` columns). Inserts keep their nulls."""
    op = F.col(OP)
    oldest_first = [F.col(c).asc_nulls_first() for c in _order_columns(sequence_column, changes.columns)]
    since = "_dmscdc_since_insert"
    upto_here = Window.partitionBy(*key_columns).orderBy(*oldest_first).rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    frame = changes.withColumn(since, F.sum(F.when(op != "U", 1).otherwise(0)).over(upto_here))
    run = Window.partitionBy(*key_columns, since).orderBy(*oldest_first).rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    for column in keep:
        carried = F.last(F.when(op != "D", F.col(column)), ignorenulls=True).over(run)
        frame = frame.withColumn(column, F.when(op == "U", carried).otherwise(F.col(column)))
    if prior is not None:
        renamed = prior.select(*key_columns, *[F.col(c).alias(f"_dmscdc_prior_{i}") for i, c in enumerate(keep)])
        frame = frame.join(renamed, on=key_columns, how="left")
        from_lake = (op == "U") & (F.col(since) == 0)
        for i, column in enumerate(keep):
            frame = frame.withColumn(column, F.when(from_lake, F.coalesce(F.col(column), F.col(f"_dmscdc_prior_{i}")))
                                     .otherwise(F.col(column)))
        frame = frame.drop(*[f"_dmscdc_prior_{i}" for i in range(len(keep))])
    return frame.drop(since).select(*changes.columns)


def live_rows(latest: DataFrame) -> DataFrame:
    """Rows the lake keeps: every newest change that is not a delete."""
    return latest.where(F.col(OP) != "D")


def inserts_only(changes: DataFrame) -> DataFrame:
    """For tables without a primary key: inserts are appended, updates and deletes are not applied."""
    return changes.where(F.col(OP) == "I")


def without_keys(rows: DataFrame, keys: DataFrame, key_columns: list[str]) -> DataFrame:
    """Rows whose key is not in ``keys``: what survives of a rewritten lake file."""
    return rows.join(keys, on=key_columns, how="left_anti")


def lake_rows(frame: DataFrame) -> DataFrame:
    """Drop the engine's ordering columns; ``Op`` first, as the lake keeps it."""
    data = [c for c in frame.columns if c not in INTERNAL_COLUMNS and c != OP]
    return frame.select(*[column(c) for c in [OP, *data]])
