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
INTERNAL_COLUMNS = (FILE_SEQ, ROW_POS)
KNOWN_OPS = ("I", "U", "D")


def column(name: str):
    """The column called ``name``, whatever characters it holds (a name given as a string is
    parsed: ``a.b`` would mean field ``b`` of a struct ``a``)."""
    return F.col("`" + name.replace("`", "``") + "`")


def _order_columns(order_column: str | None, columns: list[str]) -> list[str]:
    """Columns that order changes, most significant first.

    A configured ordering column (e.g. DMS's ``AR_H_CHANGE_SEQ``) decides first where the
    files carry it; rows without a value (LOAD files) sort before rows with one. File order
    and row position break ties and are the whole order when no ordering column is present.
    """
    ordering = [order_column] if order_column and order_column in columns else []
    return ordering + [FILE_SEQ, ROW_POS]


def latest_change_per_key(
    changes: DataFrame, key_columns: list[str], order_column: str | None = None
) -> DataFrame:
    """One row per key: the newest change, whatever its ``Op``."""
    newest_first = [column(c).desc_nulls_last() for c in _order_columns(order_column, changes.columns)]
    window = Window.partitionBy(*[column(k) for k in key_columns]).orderBy(*newest_first)
    return (
        changes.withColumn("_dmscdc_rank", F.row_number().over(window))
        .where(F.col("_dmscdc_rank") == 1)
        .drop("_dmscdc_rank")
    )


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
