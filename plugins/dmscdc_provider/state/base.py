"""The controller state: one item per source table, in the layout of the blog's DMSCDC_Controller.

Blog attributes keep their names and meanings (all strings, as the blog stores them):
``path`` (key), ``ActiveFlag`` ("true"/"false"), ``PrimaryKey`` and ``PartitionKey``
("null" or a comma list), ``LastFullLoadDate`` ("YYYY-MM-DD HH:MM:SS"),
``LastIncrementalFile``. dmscdc adds attributes and never changes those meanings:
``OrderColumn``, ``CommitTimeColumn``, ``KeepOnNull`` (a comma list), ``History`` (JSON: the
history table's tracked columns), ``TableFormat`` (``parquet`` or ``iceberg``; absent: the run's
default), ``StateVersion`` (bumped by every write; commits are conditional on it),
``PendingCommit`` (the commit record of a merge being published) and ``LastRun``.
See docs/crash-safety.md for how PendingCommit makes a merge crash-safe.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

NULL = "null"
NEVER_LOADED = "1900-01-01 00:00:00"


class StateError(Exception):
    """Base class of controller state errors."""


class ConcurrentCommitError(StateError):
    """Another run changed the table's state first; this run's work was not committed."""


class StoreUnavailableError(StateError):
    """The controller store cannot be reached or opened."""


class StoreBusyError(StoreUnavailableError):
    """The store is locked by another process and refused the operation; nothing was written."""


class UnknownTableError(StateError):
    """The table has no item in the controller."""


@dataclass(frozen=True)
class TableState:
    """One controller item.

    :param path: key; ``<raw root without scheme>/<schema>/<table>/`` as the blog writes it.
    :param schema: source schema name.
    :param table: source table name.
    :param active: whether runs load this table.
    :param primary_key: key columns; empty means inserts only.
    :param partition_key: lake partition columns; empty means one partition.
    :param last_full_load_date: LastModified of the newest LOAD file loaded (UTC).
    :param last_incremental_file: the last CDC file applied (path as stored).
    :param order_column: optional column that orders changes (e.g. AR_H_CHANGE_SEQ).
    :param commit_time_column: the column DMS fills with each change's commit time
        (``TimestampColumnName``): orders changes when there is no order column, and times the
        versions of the history table.
    :param keep_on_null: columns whose null in an update keeps the lake's value (LOB columns DMS
        sends as null in limited-LOB mode, PostgreSQL TOAST values).
    :param history: None (no history table), or the history table's tracked columns:
        ``{}`` all, ``{"columns": [...]}`` these, ``{"except": [...]}`` all but these.
    :param table_format: ``parquet`` or ``iceberg`` for this table; None: the run's default.
    :param version: StateVersion; every write bumps it.
    :param pending_commit: commit record of a merge that is being published, or None.
    :param last_run: summary of the last committed run.
    """

    path: str
    schema: str
    table: str
    active: bool = False
    primary_key: tuple[str, ...] = ()
    partition_key: tuple[str, ...] = ()
    last_full_load_date: str = NEVER_LOADED
    last_incremental_file: str | None = None
    order_column: str | None = None
    commit_time_column: str | None = None
    keep_on_null: tuple[str, ...] = ()
    history: dict | None = None
    table_format: str | None = None
    version: int = 0
    pending_commit: dict | None = None
    last_run: dict | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    def to_item(self) -> dict[str, str | int]:
        """The controller item: blog attributes as strings, extensions beside them."""
        item: dict[str, str | int] = {
            "path": self.path,
            "ActiveFlag": "true" if self.active else "false",
            "PrimaryKey": ",".join(self.primary_key) or NULL,
            "PartitionKey": ",".join(self.partition_key) or NULL,
            "LastFullLoadDate": self.last_full_load_date,
            "LastIncrementalFile": self.last_incremental_file or NULL,
            "SchemaName": self.schema,
            "TableName": self.table,
            "StateVersion": self.version,
        }
        if self.order_column:
            item["OrderColumn"] = self.order_column
        if self.commit_time_column:
            item["CommitTimeColumn"] = self.commit_time_column
        if self.keep_on_null:
            item["KeepOnNull"] = ",".join(self.keep_on_null)
        if self.history is not None:
            item["History"] = json.dumps(self.history, sort_keys=True)
        if self.table_format:
            item["TableFormat"] = self.table_format
        if self.pending_commit is not None:
            item["PendingCommit"] = json.dumps(self.pending_commit, sort_keys=True)
        if self.last_run is not None:
            item["LastRun"] = json.dumps(self.last_run, sort_keys=True)
        return item

    @classmethod
    def from_item(cls, item: dict) -> "TableState":
        """Read an item, including one the blog's controller wrote (no extension attributes)."""
        path = str(item["path"])
        schema, table = _schema_and_table(path, item)
        return cls(
            path=path,
            schema=schema,
            table=table,
            active=str(item.get("ActiveFlag", "false")).lower() == "true",
            primary_key=_column_list(item.get("PrimaryKey")),
            partition_key=_column_list(item.get("PartitionKey")),
            last_full_load_date=str(item.get("LastFullLoadDate") or NEVER_LOADED),
            last_incremental_file=_optional(item.get("LastIncrementalFile")),
            order_column=_optional(item.get("OrderColumn")),
            commit_time_column=_optional(item.get("CommitTimeColumn")),
            keep_on_null=_column_list(item.get("KeepOnNull")),
            history=_json_or_none(item.get("History")),
            table_format=_optional(item.get("TableFormat")),
            version=int(item.get("StateVersion", 0)),
            pending_commit=_json_or_none(item.get("PendingCommit")),
            last_run=_json_or_none(item.get("LastRun")),
        )

    def evolve(self, **changes) -> "TableState":
        return replace(self, **changes)


def history_tracking(columns=(), except_columns=()) -> dict:
    """The ``history`` of a table whose history table tracks ``columns`` (empty: every column),
    or every column but ``except_columns``; naming both is refused."""
    if columns and except_columns:
        raise ValueError("a history table tracks either the columns named or every column but those named, not both")
    if columns:
        return {"columns": list(columns)}
    if except_columns:
        return {"except": list(except_columns)}
    return {}


def _column_list(value) -> tuple[str, ...]:
    if value is None or str(value).strip().lower() in ("", NULL):
        return ()
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _optional(value) -> str | None:
    if value is None or str(value).strip().lower() in ("", NULL):
        return None
    return str(value)


def _json_or_none(value) -> dict | None:
    if value in (None, "", NULL):
        return None
    return json.loads(value)


def _schema_and_table(path: str, item: dict) -> tuple[str, str]:
    if item.get("SchemaName") and item.get("TableName"):
        return str(item["SchemaName"]), str(item["TableName"])
    parts = [p for p in path.rstrip("/").split("/") if p]
    return parts[-2], parts[-1]


class ControllerStore(ABC):
    """Where table states live. Every write is conditional on the state version it read."""

    @abstractmethod
    def get(self, path: str) -> TableState | None:
        """The item for ``path``, or None."""

    @abstractmethod
    def list(self) -> list[TableState]:
        """All items, sorted by path."""

    @abstractmethod
    def register(self, state: TableState) -> bool:
        """Create the item unless one exists; True when this call created it."""

    @abstractmethod
    def replace(self, state: TableState, expected_version: int) -> TableState:
        """Write ``state`` (version bumped) if the stored version is ``expected_version``.

        :raises ConcurrentCommitError: the stored version differs (or the item is gone).
        """

    def update(self, path: str, **changes) -> TableState:
        """Read, change and conditionally write one item (e.g. from ``dmscdc configure``)."""
        current = self.get(path)
        if current is None:
            raise UnknownTableError(f"no controller item for {path}")
        return self.replace(current.evolve(**changes), current.version)

    def close(self) -> None:
        """Release connections."""


def open_store(uri: str, aws_conn_id: str | None = None, region_name: str | None = None) -> ControllerStore:
    """The store for a ``--state`` URI: ``sqlite:///abs/path``, a plain file path, or
    ``dynamodb://TABLE``.

    :param aws_conn_id: Airflow AWS connection for DynamoDB (None: boto3's default chain).
    :param region_name: AWS region for DynamoDB.
    """
    if uri.startswith("dynamodb://"):
        from dmscdc_provider.state.dynamodb import DynamoDBControllerStore

        return DynamoDBControllerStore(uri[len("dynamodb://"):], aws_conn_id=aws_conn_id, region_name=region_name)
    from dmscdc_provider.state.sqlite import SqliteControllerStore

    if uri.startswith("sqlite:///"):
        return SqliteControllerStore(uri[len("sqlite://"):])
    if "://" in uri:
        raise ValueError(f"unsupported state store {uri!r}; use sqlite:///PATH or dynamodb://TABLE")
    return SqliteControllerStore(uri)
