"""Table formats: where a merge's staged data becomes what readers see.

Engines write data (Parquet files under the plan's ``staging_path``); a table format commits
it. Two formats share one contract:

- ``parquet``: the blog's layout, a folder of hive-partitioned Parquet files. Publishing moves
  the staged files in and deletes the replaced ones (readers may see a merge half published).
- ``iceberg``: an Apache Iceberg table in a catalog (SQLite locally, the Glue Data Catalog on
  AWS). The engines write the data files where they stay; publishing is one snapshot that
  removes the replaced files and adds the new ones, so readers see a merge whole or not at all.

The controller's conditional write records a commit (``commit.record``); the format publishes
it (``publish``), idempotently, so whoever finds a recorded commit can finish it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from dmscdc_provider.plan import TablePlan
    from dmscdc_provider.storage import Storage

StepCallback = Callable[[str, dict], None]


class TableFormatError(Exception):
    """A table format cannot do what was asked (no catalog, no such snapshot, a table changed
    outside dmscdc); the message says what and what to do."""


class TableFormatName(StrEnum):
    """The table formats a lake table can have."""

    PARQUET = "parquet"
    ICEBERG = "iceberg"


DEFAULT_TABLE_FORMAT = TableFormatName.PARQUET


@dataclass(frozen=True)
class LakeFile:
    """A data file of a lake table's current version: path relative to the table, size in bytes."""

    relative_path: str
    size: int

    @property
    def partition_text(self) -> dict[str, str | None]:
        """The hive partition folder values in the file's path (text; None for null)."""
        from dmscdc_provider.engines.hive_paths import parse_folders

        return parse_folders(self.relative_path)


class TableFormat(Protocol):
    """What the commit protocol and the engines need from a table format."""

    name: TableFormatName

    def data_files(self, plan: "TablePlan") -> list[LakeFile]:
        """The data files readers see now (the files a merge may rewrite)."""

    def prepare(self, plan: "TablePlan", state) -> None:
        """Before a merge: make the table ready for it (Iceberg: a Parquet folder the table had in
        the Parquet format becomes its first snapshot, files unchanged)."""

    def pinned_data_files(self, plan: "TablePlan") -> list[LakeFile] | None:
        """The data files to hand the engine in its plan, or None when the engine lists the
        table folder itself (a folder is the table)."""

    def column_types(self, plan: "TablePlan") -> dict:
        """Column -> Arrow type (as the engines read it) that the table holds its columns to; a
        merge may change one only as ``allows_type_change`` says. Empty: no such rule."""

    def allows_type_change(self, current, widened) -> bool:
        """Whether a column of type ``current`` may become ``widened`` (Arrow types)."""

    def publish_document(self, plan: "TablePlan", attempt_id: str, result: dict) -> dict:
        """This format's part of the commit record: what ``publish`` needs, nothing it must recompute.

        ``result`` is the engine's result with the merge's ``figures`` (``observability.figures``).
        """

    def publish(self, pending: dict, on_step: StepCallback) -> None:
        """Make a recorded commit what readers see. Safe to repeat after a crash anywhere."""

    def clean_up(self, pending: dict) -> None:
        """Once the controller holds the commit: remove what publishing left (a staging folder)."""


def open_table_format(
    name: str | None,
    storage: "Storage",
    *,
    iceberg_catalog: str | None = None,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
) -> TableFormat:
    """The table format ``name`` (default ``parquet``) over the lake's ``storage``.

    :param iceberg_catalog: for ``iceberg``: ``sqlite:///PATH`` or ``glue://DATABASE``.
    :param aws_conn_id: Airflow AWS connection for the Glue catalog and S3 (None: boto3's chain).
    :param region_name: AWS region for them.
    """
    format_name = TableFormatName(name or DEFAULT_TABLE_FORMAT)
    if format_name == TableFormatName.ICEBERG:
        from dmscdc_provider.table_formats.iceberg import IcebergFormat  # pyiceberg: not at DAG-parse time

        return IcebergFormat(storage, iceberg_catalog, aws_conn_id=aws_conn_id, region_name=region_name)
    from dmscdc_provider.table_formats.parquet import ParquetFolderFormat

    return ParquetFolderFormat(storage)


def table_format_for_plan(plan: "TablePlan", storage: "Storage", *, aws_conn_id: str | None = None,
                          region_name: str | None = None) -> TableFormat:
    """The format of the table a plan merges."""
    return open_table_format(plan.table_format, storage, iceberg_catalog=plan.iceberg_catalog,
                             aws_conn_id=aws_conn_id, region_name=region_name)


def table_format_for_record(pending: dict, storage: "Storage", *, aws_conn_id: str | None = None,
                            region_name: str | None = None) -> TableFormat:
    """The format of the table a recorded commit publishes into (records before formats: parquet)."""
    return open_table_format(pending.get("table_format"), storage, iceberg_catalog=pending.get("iceberg_catalog"),
                             aws_conn_id=aws_conn_id, region_name=region_name)
