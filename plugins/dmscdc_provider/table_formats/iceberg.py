"""The Iceberg format: every merge is one atomic snapshot of an Apache Iceberg table.

The engines write their Parquet files where they stay (``<table>/data/<attempt_id>/...``, hive
partition folders as in the Parquet format); no reader sees them until a snapshot names them.
Publishing a recorded commit is one ``overwrite`` snapshot that removes the lake files the merge
rewrote and adds the new ones, with the plan, the attempt, the DMS watermark and the row counts
in its summary. A snapshot that already carries the attempt's id is the commit done (a crash
after the catalog commit and before the controller's), so no batch is applied twice.

Data files carry no Iceberg field ids; the table's name mapping (``schema.name-mapping.default``)
maps their columns by name, and identity partition values come from the manifests (as for a
table migrated from Hive): the same files serve both formats, so a table converts in place.

Catalogs: ``sqlite:///PATH`` (pyiceberg's SQL catalog, named ``dmscdc``, warehouse the lake
root, namespace the DMS schema, table the DMS table name) and ``glue://DATABASE`` (the Glue Data
Catalog: namespace the database, table the DMS table name; Athena reads it at once).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq

from dmscdc_provider.arrow_fs import arrow_filesystem, boto3_session
from dmscdc_provider.engines import hive_paths
from dmscdc_provider.observability.figures import snapshot_properties
from dmscdc_provider.plan import ICEBERG_DATA_FOLDER, TablePlan
from dmscdc_provider.report import one_line
from dmscdc_provider.state.base import StoreUnavailableError
from dmscdc_provider.storage import Storage, join, local_path
from dmscdc_provider.table_formats import LakeFile, StepCallback, TableFormatError, TableFormatName
from dmscdc_provider.table_formats.parquet import relative_to

log = logging.getLogger(__name__)

CATALOG_NAME = "dmscdc"
PROPERTY_PREFIX = "dmscdc."
ATTEMPT_PROPERTY = "dmscdc.attempt-id"
PLAN_PROPERTY = "dmscdc.plan-id"
FULL_LOAD_PROPERTY = "dmscdc.last-full-load-date"
INCREMENTAL_PROPERTY = "dmscdc.last-incremental-file"
PRIMARY_KEY_PROPERTY = "dmscdc.primary-key"


class IcebergCatalogError(TableFormatError):
    """The Iceberg catalog or table cannot be used as asked; the message says why and what to do."""


class IcebergCatalogUnavailable(IcebergCatalogError, StoreUnavailableError):
    """The Iceberg catalog cannot be reached, is locked, or refused a commit. Like the controller
    store: the table's state is unchanged, or a recorded commit is finished by the next attempt."""


def _catalog_access(method):
    """Turn the catalog's own errors (a locked SQLite file, an AWS error, a commit another writer
    won) into one line that names the catalog and what to do."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        from pyiceberg.exceptions import CommitFailedException

        retryable: tuple = (CommitFailedException, OSError)
        try:
            import sqlalchemy.exc

            retryable += (sqlalchemy.exc.OperationalError,)
        except ImportError:  # pragma: no cover - installed with pyiceberg's sql-sqlite extra
            pass
        try:
            import botocore.exceptions

            retryable += (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
        except ImportError:  # pragma: no cover - boto3 is a dependency
            pass
        try:
            return method(self, *args, **kwargs)
        except IcebergCatalogError:
            raise
        except retryable as error:
            cause = one_line(error).split(" [SQL:", 1)[0]
            raise IcebergCatalogUnavailable(
                f"the Iceberg catalog {self.catalog_uri} failed: {cause}; check that it is reachable and that no "
                "other program holds it locked, then run again (a recorded commit is finished by the next "
                "attempt; otherwise the table's state is unchanged)") from error

    return wrapper


def default_iceberg_catalog() -> str:
    """``$DMSCDC_ICEBERG_CATALOG``, else a SQLite catalog file in the working directory."""
    return os.environ.get("DMSCDC_ICEBERG_CATALOG") or f"sqlite:///{os.path.abspath('dmscdc_iceberg.sqlite')}"


def parse_catalog_uri(uri: str | None) -> tuple[str, str]:
    """``sqlite:///PATH`` -> ``("sqlite", "/PATH")``; ``glue://DATABASE`` -> ``("glue", "DATABASE")``."""
    if not uri:
        raise IcebergCatalogError("an Iceberg table needs a catalog: set --iceberg-catalog sqlite:///PATH "
                                  "(or glue://DATABASE on AWS), YAML iceberg.catalog")
    if uri.startswith("sqlite:///"):
        return "sqlite", uri[len("sqlite:///") - 1:]
    if uri.startswith("glue://") and uri[len("glue://"):].strip("/"):
        return "glue", uri[len("glue://"):].strip("/")
    raise IcebergCatalogError(f"Iceberg catalog {uri!r} is neither sqlite:///PATH nor glue://DATABASE")


def absolute_location(uri: str) -> str:
    """A lake location as Iceberg metadata records it: ``s3://`` as it is, a local one absolute
    (metadata must name the same files whatever folder a later run starts in)."""
    return uri.rstrip("/") if "://" in uri and not uri.startswith("file:") else local_path(uri).rstrip("/")


def open_catalog(uri: str, warehouse: str, aws_conn_id: str | None = None, region_name: str | None = None):
    """The pyiceberg catalog ``uri`` names, with ``warehouse`` (the lake root) as its warehouse.

    A SQLite catalog of a local lake is opened once per process (its engine checks the catalog's
    tables); with AWS in play each call gets new clients, so they have the connection's current
    credentials and endpoint.
    """
    kind, where = parse_catalog_uri(uri)
    if kind == "sqlite" and not warehouse.startswith("s3://"):
        return _sqlite_catalog(where, warehouse)
    properties = {"warehouse": warehouse}
    if warehouse.startswith("s3://"):
        properties.update(_s3_properties(aws_conn_id, region_name))
    if kind == "sqlite":  # a local catalog of a lake on S3
        from pyiceberg.catalog.sql import SqlCatalog

        os.makedirs(os.path.dirname(where) or ".", exist_ok=True)
        return SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{where}", **properties)
    from pyiceberg.catalog.glue import GlueCatalog

    from dmscdc_provider.aws.clients import aws_client

    # The glue client comes from the task's connection, like every other AWS call.
    return GlueCatalog(CATALOG_NAME, client=aws_client("glue", aws_conn_id, region_name), **properties)


@functools.lru_cache(maxsize=16)
def _sqlite_catalog(path: str, warehouse: str):
    from pyiceberg.catalog.sql import SqlCatalog

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{path}", warehouse=warehouse)


def table_identifier(uri: str, schema: str, table: str) -> tuple[str, str]:
    """The Iceberg identifier of a DMS table: (DMS schema, table) locally, (database, table) in Glue."""
    kind, where = parse_catalog_uri(uri)
    return (where, table.lower()) if kind == "glue" else (schema, table)


def _s3_properties(aws_conn_id: str | None, region_name: str | None) -> dict:
    """pyiceberg's S3 settings from the credentials, region and endpoint the connection gives."""
    session, endpoint = boto3_session(aws_conn_id, region_name)
    properties = {"s3.region": session.region_name or region_name or "us-east-1"}
    credentials = session.get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        properties.update({"s3.access-key-id": frozen.access_key, "s3.secret-access-key": frozen.secret_key})
        if frozen.token:
            properties["s3.session-token"] = frozen.token
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        properties["s3.endpoint"] = endpoint
    return properties


# -- types -------------------------------------------------------------------------------------
_HIVE_TYPES = {
    "string": pa.string(), "boolean": pa.bool_(), "tinyint": pa.int32(), "smallint": pa.int32(),
    "int": pa.int32(), "bigint": pa.int64(), "float": pa.float32(), "double": pa.float64(),
    "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC"), "binary": pa.binary(),
}


def arrow_type_of(hive_type: str) -> pa.DataType:
    """The Arrow type of a column an engine reports by its Spark (Hive) type name."""
    decimal = re.fullmatch(r"decimal\((\d+),\s*(\d+)\)", hive_type)
    if decimal:
        return pa.decimal128(int(decimal.group(1)), int(decimal.group(2)))
    return _HIVE_TYPES.get(hive_type, pa.string())


def _iceberg_type(field: pa.Field):
    from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids

    return _pyarrow_to_schema_without_ids(pa.schema([field])).fields[0].field_type


def _promotion(current, incoming):
    """The type ``current`` becomes to hold ``incoming`` (Iceberg's promotions), or None to keep it."""
    from pyiceberg.types import DecimalType, DoubleType, FloatType, IntegerType, LongType

    if current == incoming:
        return None
    if isinstance(current, IntegerType) and isinstance(incoming, LongType):
        return incoming
    if isinstance(current, FloatType) and isinstance(incoming, DoubleType):
        return incoming
    if (isinstance(current, DecimalType) and isinstance(incoming, DecimalType)
            and incoming.scale == current.scale and incoming.precision > current.precision):
        return incoming
    return None


# -- the format ---------------------------------------------------------------------------------
class IcebergFormat:
    """Iceberg tables in a catalog; one snapshot per merge.

    :param storage: the lake's storage (removing files of discarded attempts).
    :param catalog_uri: ``sqlite:///PATH`` or ``glue://DATABASE``.
    :param aws_conn_id: Airflow AWS connection for Glue and S3 (None: boto3's chain).
    :param region_name: AWS region for them.
    """

    name = TableFormatName.ICEBERG

    def __init__(self, storage: Storage, catalog_uri: str | None, *, aws_conn_id: str | None = None,
                 region_name: str | None = None):
        parse_catalog_uri(catalog_uri)
        self.storage, self.catalog_uri = storage, catalog_uri
        self.aws_conn_id, self.region_name = aws_conn_id, region_name

    def catalog(self, warehouse: str):
        return open_catalog(self.catalog_uri, absolute_location(warehouse), self.aws_conn_id, self.region_name)

    @_catalog_access
    def load(self, lake_root: str, schema: str, table: str):
        """The Iceberg table of a DMS table, or None when it has not been created yet."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return self.catalog(lake_root).load_table(table_identifier(self.catalog_uri, schema, table))
        except (NoSuchTableError, NoSuchNamespaceError):
            return None

    @_catalog_access
    def data_files(self, plan: TablePlan) -> list[LakeFile]:
        table = self.load(plan.lake_root, plan.schema_name, plan.table_name)
        if table is None or table.current_snapshot() is None:
            return []
        found = [LakeFile(relative_to(plan.lake_table_path, data_file.file_path), data_file.file_size_in_bytes)
                 for data_file in current_data_files(table)]
        return sorted(found, key=lambda f: f.relative_path)

    @_catalog_access
    def prepare(self, plan: TablePlan, state) -> None:
        """Convert a table kept in the Parquet format in place: its visible Parquet files become the
        Iceberg table's first snapshot (no data file is rewritten), carrying the controller's
        watermark, so the merge continues from it. A full load needs no conversion: it replaces
        every file (the old ones are removed by ``dmscdc maintain`` once unreferenced)."""
        if plan.mode == "full":
            return
        table = self.load(plan.lake_root, plan.schema_name, plan.table_name)
        if table is not None and table.current_snapshot() is not None:
            return
        from dmscdc_provider.table_formats.parquet import ParquetFolderFormat

        folder_files = [f for f in ParquetFolderFormat(self.storage).data_files(plan)
                        if f.relative_path.split("/", 1)[0] not in (ICEBERG_DATA_FOLDER, "metadata")]
        if not folder_files:
            return
        location = absolute_location(plan.lake_table_path)
        paths = {join(location, f.relative_path): f.size for f in folder_files}
        footers = {path: self._footer(path) for path in paths}
        from dmscdc_provider.engines.arrow_schema import unify_schemas

        schema = unify_schemas([(path, footer.schema.to_arrow_schema()) for path, footer in footers.items()])
        pending = {
            "table_location": location, "partition_key": list(plan.partition_key),
            "primary_key": list(plan.primary_key),
            "partition_column_types": raw_partition_types(plan, self.aws_conn_id, self.region_name),
        }
        if table is None:
            table = self._create(absolute_location(plan.lake_root), plan.schema_name, plan.table_name, pending, schema)
        properties = {
            "dmscdc.mode": "convert", FULL_LOAD_PROPERTY: state.last_full_load_date,
            INCREMENTAL_PROPERTY: state.last_incremental_file or "",
            "dmscdc.rows-written": str(sum(footer.num_rows for footer in footers.values())),
        }
        with table.transaction() as transaction:
            metadata = transaction.table_metadata
            with transaction.update_snapshot(snapshot_properties=properties).fast_append() as append:
                for path, footer in footers.items():
                    append.append_data_file(self._data_file(metadata, pending, path, paths[path], footer))
        log.info("%s: converted %d Parquet file(s) in place into Iceberg table %s", plan.table, len(paths),
                 ".".join(table_identifier(self.catalog_uri, plan.schema_name, plan.table_name)))

    @_catalog_access
    def column_types(self, plan: TablePlan) -> dict:
        """The table schema's columns as the engines read them (none before the first snapshot)."""
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        from dmscdc_provider.engines.arrow_schema import spark_view

        table = self.load(plan.lake_root, plan.schema_name, plan.table_name)
        if table is None:
            return {}
        return {field.name: spark_view(schema_to_pyarrow(field.field_type)) for field in table.schema().fields}

    def allows_type_change(self, current, widened) -> bool:
        before, after = _iceberg_type(pa.field("c", current)), _iceberg_type(pa.field("c", widened))
        return before == after or _promotion(before, after) is not None

    def pinned_data_files(self, plan: TablePlan) -> list[LakeFile]:
        # The table folder also holds metadata, older snapshots' files and discarded attempts:
        # the engine reads exactly the files of the snapshot the plan is merged against.
        return self.data_files(plan)

    def publish_document(self, plan: TablePlan, attempt_id: str, result: dict) -> dict:
        staging = absolute_location(plan.staging_path(attempt_id))
        rows_read = result.get("rows_read") or {}
        properties = {
            PLAN_PROPERTY: plan.plan_id,
            ATTEMPT_PROPERTY: attempt_id,
            "dmscdc.mode": plan.mode,
            FULL_LOAD_PROPERTY: plan.new_last_full_load_date or "",
            INCREMENTAL_PROPERTY: plan.new_last_incremental_file or "",
            "dmscdc.rows-read-inserts": str(rows_read.get("I", 0)),
            "dmscdc.rows-read-updates": str(rows_read.get("U", 0)),
            "dmscdc.rows-read-deletes": str(rows_read.get("D", 0)),
            "dmscdc.rows-written": str(result.get("rows_written", 0)),
            "dmscdc.files-read": str(len(plan.files)),
            **snapshot_properties(result.get("figures") or {}),
        }
        return {
            "iceberg_table": [absolute_location(plan.lake_root), plan.schema_name, plan.table_name],
            "table_location": absolute_location(plan.lake_table_path),
            "adds": [[join(staging, added["path"]), added["bytes"]] for added in result["files_added"]],
            "removes": list(result["files_removed"]),
            "partition_key": list(plan.partition_key),
            "primary_key": list(plan.primary_key),
            "partition_column_types": result.get("partition_column_types") or {},
            "snapshot_properties": properties,
        }

    @_catalog_access
    def publish(self, pending: dict, on_step: StepCallback) -> None:
        lake_root, schema, name = pending["iceberg_table"]
        table = self.load(lake_root, schema, name)
        if table is not None and committed_snapshot(table, pending["attempt_id"]) is not None:
            on_step("snapshot_found", {"attempt_id": pending["attempt_id"]})
            return
        sizes = dict((path, size) for path, size in pending["adds"])
        footers = {path: self._footer(path) for path in sizes}
        if table is None:
            if not footers:  # nothing to create a table from yet (an empty full load)
                return
            table = self._create(lake_root, schema, name, pending, next(iter(footers.values())).schema.to_arrow_schema())
        current = {relative_to(pending["table_location"], f.file_path): f for f in current_data_files(table)}
        missing = [path for path in pending["removes"] if path not in current]
        if missing:
            raise IcebergCatalogError(
                f"{schema}.{name}: the Iceberg table's current snapshot no longer holds {missing[0]} (and "
                f"{len(missing) - 1} more), which this commit replaces: something else committed the table. "
                "Roll it back (`dmscdc rollback`) or rebuild it (`dmscdc run --full-refresh`).")
        with table.transaction() as transaction:
            primary_key = ",".join(pending["primary_key"])
            if transaction.table_metadata.properties.get(PRIMARY_KEY_PROPERTY, "") != primary_key:
                transaction.set_properties(**{PRIMARY_KEY_PROPERTY: primary_key})  # readers take it from here
            for footer in footers.values():
                self._evolve_schema(transaction, footer.schema.to_arrow_schema(), pending)
            metadata = transaction.table_metadata
            added = [self._data_file(metadata, pending, path, sizes[path], footer)
                     for path, footer in footers.items()]
            with transaction.update_snapshot(snapshot_properties=pending["snapshot_properties"]).overwrite() as overwrite:
                for path in pending["removes"]:
                    overwrite.delete_data_file(current[path])
                for data_file in added:
                    overwrite.append_data_file(data_file)
        on_step("snapshot_committed", {"files_added": len(added), "files_removed": len(pending["removes"])})

    def clean_up(self, pending: dict) -> None:
        pass  # the attempt's files are the table's data files now

    # -- helpers --------------------------------------------------------------------------------
    def _footer(self, path: str) -> pq.FileMetaData:
        filesystem, local = arrow_filesystem(path, self.aws_conn_id, self.region_name)
        with filesystem.open_input_file(local) as handle:
            return pq.ParquetFile(handle).metadata

    def _create(self, lake_root: str, schema: str, name: str, pending: dict, file_schema: pa.Schema):
        """A new table: the first staged file's columns plus the partition columns (typed as the
        engine reports them), identity partitions on the partition key, sorted by the primary key."""
        from pyiceberg.exceptions import TableAlreadyExistsError
        from pyiceberg.table import TableProperties
        from pyiceberg.transforms import IdentityTransform

        columns = list(file_schema)
        for column in pending["partition_key"]:
            if column not in file_schema.names:
                columns.append(pa.field(column, arrow_type_of(pending["partition_column_types"].get(column, "string"))))
        catalog = self.catalog(lake_root)
        identifier = table_identifier(self.catalog_uri, schema, name)
        catalog.create_namespace_if_not_exists(identifier[0])
        try:
            table = catalog.create_table(identifier, schema=pa.schema(columns), location=pending["table_location"])
        except TableAlreadyExistsError:  # created by a crashed attempt of this commit
            return catalog.load_table(identifier)
        with table.transaction() as transaction:
            transaction.set_properties(**{
                TableProperties.DEFAULT_NAME_MAPPING: transaction.table_metadata.schema().name_mapping.model_dump_json(),
                PRIMARY_KEY_PROPERTY: ",".join(pending["primary_key"]),
            })
            if pending["partition_key"]:
                with transaction.update_spec() as spec:
                    for column in pending["partition_key"]:
                        spec.add_identity(column)
            if pending["primary_key"]:
                with transaction.update_sort_order() as order:
                    for column in pending["primary_key"]:
                        order.asc(column, IdentityTransform())
        return catalog.load_table(identifier)

    def _evolve_schema(self, transaction, file_schema: pa.Schema, pending: dict) -> None:
        """New columns are added, widened types promoted (int -> long, float -> double, decimal
        precision); columns the files no longer carry stay (older rows keep them)."""
        current = transaction.table_metadata.schema()
        additions, promotions = [], []
        for field in file_schema:
            incoming = _iceberg_type(field)
            existing = current.find_field(field.name) if field.name in current._name_to_id else None
            if existing is None:
                additions.append((field.name, incoming))
            elif (promoted := _promotion(existing.field_type, incoming)) is not None:
                promotions.append((field.name, promoted))
        if not additions and not promotions:
            return
        with transaction.update_schema() as update:
            for column, column_type in additions:
                update.add_column(column, column_type)
            for column, column_type in promotions:
                update.update_column(column, field_type=column_type)

    def _data_file(self, metadata, pending: dict, path: str, size: int, footer: pq.FileMetaData):
        """The data file at ``path`` as the snapshot records it: statistics from its footer, identity
        partition values from its folders (the default folder of a primary-key column is the empty
        string, a key being never null: ``hive_paths.typed_value``)."""
        from pyiceberg.io.pyarrow import (
            compute_statistics_plan,
            data_file_statistics_from_parquet_metadata,
            parquet_path_to_id_mapping,
            schema_to_pyarrow,
        )
        from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
        from pyiceberg.partitioning import _to_partition_representation
        from pyiceberg.typedef import Record

        schema = metadata.schema()
        statistics = data_file_statistics_from_parquet_metadata(
            footer, compute_statistics_plan(schema, metadata.properties), parquet_path_to_id_mapping(schema))
        spec = metadata.spec()
        folders = hive_paths.parse_folders(relative_to(pending["table_location"], path))
        values = []
        for partition_field in spec.fields:
            source = schema.find_field(partition_field.source_id)
            if source.name in folders:
                arrow_type = schema_to_pyarrow(source.field_type)
                value = hive_paths.typed_value(folders[source.name], arrow_type,
                                               in_primary_key=source.name in pending["primary_key"])
            else:
                value = None
            values.append(_to_partition_representation(source.field_type, value))
        serialized = statistics.to_serialized_dict()
        return DataFile.from_args(
            content=DataFileContent.DATA, file_path=path, file_format=FileFormat.PARQUET,
            partition=Record(*values), file_size_in_bytes=size,
            sort_order_id=None, spec_id=metadata.default_spec_id, equality_ids=None, key_metadata=None,
            **serialized)


def current_data_files(table) -> list:
    """The data files (``DataFile``) of the table's current snapshot."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    files = []
    for manifest in snapshot.manifests(table.io):
        files.extend(entry.data_file for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True))
    return files


def raw_partition_types(plan: TablePlan, aws_conn_id: str | None, region_name: str | None) -> dict[str, str]:
    """The partition columns' types as the merges read them from the plan's DMS files (a folder name
    holds only text): the first Parquet file's types, as Spark names them; CSV columns are strings."""
    from dmscdc_provider.engines.arrow_schema import hive_type, spark_view_schema

    for entry in plan.files:
        if entry["path"].endswith(".parquet"):
            filesystem, local = arrow_filesystem(entry["path"], aws_conn_id, region_name)
            with filesystem.open_input_file(local) as handle:
                schema = spark_view_schema(pq.ParquetFile(handle).schema_arrow)
            return {c: hive_type(schema.field(c).type) for c in plan.partition_key if c in schema.names}
    return {}


def snapshot_at(table, as_of: str | None):
    """The snapshot ``as_of`` names: None -> the current one; digits -> that snapshot id; else an
    ISO time -> the last snapshot of the current history committed at or before it.

    :raises IcebergCatalogError: no such snapshot.
    """
    if as_of is None:
        return table.current_snapshot()
    if as_of.isdigit():
        snapshot = table.snapshot_by_id(int(as_of))
        if snapshot is None:
            raise IcebergCatalogError(f"{table.name()}: no snapshot {as_of} (see `dmscdc snapshots`)")
        return snapshot
    moment = dt.datetime.fromisoformat(as_of)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    snapshot = table.snapshot_as_of_timestamp(int(moment.timestamp() * 1000))
    if snapshot is None:
        raise IcebergCatalogError(f"{table.name()}: no snapshot at or before {as_of}")
    return snapshot


def snapshot_data_files(table, as_of: str | None = None) -> list[str] | None:
    """Paths of the data files of the snapshot ``as_of`` names (``snapshot_at``); None when the
    table has no snapshot yet."""
    snapshot = snapshot_at(table, as_of)
    if snapshot is None:
        return None
    files = []
    for manifest in snapshot.manifests(table.io):
        files.extend(entry.data_file.file_path
                     for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True))
    return files


def committed_snapshot(table, attempt_id: str):
    """The snapshot in the current history whose summary carries ``attempt_id``, else None."""
    from pyiceberg.table.snapshots import ancestors_of

    current = table.current_snapshot()
    if current is None:
        return None
    for snapshot in ancestors_of(current, table.metadata):
        if snapshot.summary is not None and snapshot.summary.get(ATTEMPT_PROPERTY) == attempt_id:
            return snapshot
    return None


def snapshot_rows(table) -> list[dict]:
    """The table's snapshots, oldest first: id, time, operation, plan, watermark, row counts, and
    whether each is current or in the current history (a rolled-back snapshot is not)."""
    from pyiceberg.table.snapshots import ancestors_of

    current = table.current_snapshot()
    history = {s.snapshot_id for s in ancestors_of(current, table.metadata)} if current else set()
    rows = []
    for snapshot in sorted(table.snapshots(), key=lambda s: (s.timestamp_ms, s.sequence_number or 0)):
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        rows.append({
            "snapshot_id": snapshot.snapshot_id,
            "committed_at": dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.timezone.utc).isoformat(),
            "operation": str(snapshot.summary.operation.value) if snapshot.summary else None,
            "plan_id": summary.get(PLAN_PROPERTY),
            "mode": summary.get("dmscdc.mode"),
            "last_full_load_date": summary.get(FULL_LOAD_PROPERTY) or None,
            "last_incremental_file": summary.get(INCREMENTAL_PROPERTY) or None,
            "rows_written": int(summary.get("dmscdc.rows-written", 0) or 0),
            "total_records": int(summary.get("total-records", 0) or 0),
            "current": current is not None and snapshot.snapshot_id == current.snapshot_id,
            "in_history": snapshot.snapshot_id in history,
        })
    return rows





def history_rollback_target(history_table, snapshot, table_name: str):
    """The snapshot of the table's history table that goes with ``snapshot`` of the table: the one
    the same attempt committed, else (history switched on or off between merges) the last one of
    the history table's current history committed at or before ``snapshot``.

    :raises IcebergCatalogError: the history table has no snapshot that old, so no state of it
        goes with ``snapshot``.
    """
    from pyiceberg.table.snapshots import ancestors_of

    attempt_id = snapshot.summary.get(ATTEMPT_PROPERTY) if snapshot.summary else None
    same_attempt = committed_snapshot(history_table, attempt_id) if attempt_id else None
    if same_attempt is not None:
        return same_attempt
    current = history_table.current_snapshot()
    earlier = [s for s in (ancestors_of(current, history_table.metadata) if current else [])
               if s.timestamp_ms <= snapshot.timestamp_ms]
    if not earlier:
        raise IcebergCatalogError(
            f"{table_name}: its history table has no snapshot at or before snapshot {snapshot.snapshot_id} "
            "(history was switched on later), so rolling back would leave versions the next run adds again; "
            "roll back to a later snapshot, or rebuild both (`dmscdc run --full-refresh`)")
    return max(earlier, key=lambda s: (s.timestamp_ms, s.sequence_number or 0))


def rollback_table(table, store, state, snapshot_id: str, history_table=None):
    """Make an earlier snapshot of the current history current again and set the controller's
    watermarks to those it was committed with, so the next run applies the later DMS files again.
    The table's history table (``history_table``, when it has one) goes back with it to the
    snapshot ``history_rollback_target`` names, so the re-applied merges add no version twice.

    The controller moves first (conditionally, as every commit does): a crash before the tables
    move leaves a watermark that the next run re-applies from, and running the rollback again
    finishes it. Both targets are found before anything moves: a refusal changes nothing.

    :param store: the controller store; ``state``: the table's item.
    :return: the table's new controller state.
    """
    if state.pending_commit is not None:
        raise IcebergCatalogError(f"{state.name}: a recorded commit is still being published; run "
                                  "`dmscdc run` (which finishes it) before rolling back")
    snapshot = table.snapshot_by_id(int(snapshot_id)) if str(snapshot_id).isdigit() else None
    current = table.current_snapshot()
    if snapshot is None or current is None:
        raise IcebergCatalogError(f"{state.name}: no snapshot {snapshot_id} (see `dmscdc snapshots {state.name}`)")
    from pyiceberg.table.snapshots import ancestors_of

    if snapshot.snapshot_id not in {s.snapshot_id for s in ancestors_of(current, table.metadata)}:
        raise IcebergCatalogError(f"{state.name}: snapshot {snapshot_id} is not in the table's current history")
    summary = snapshot.summary.additional_properties if snapshot.summary else {}
    if FULL_LOAD_PROPERTY not in summary:
        raise IcebergCatalogError(f"{state.name}: snapshot {snapshot_id} was not committed by dmscdc, so it names "
                                  "no watermark to go back to")
    history_target = (history_rollback_target(history_table, snapshot, state.name)
                      if history_table is not None else None)
    restored = store.replace(state.evolve(
        last_full_load_date=summary[FULL_LOAD_PROPERTY],
        last_incremental_file=summary.get(INCREMENTAL_PROPERTY) or None,
        last_run={"rolled_back_to": snapshot.snapshot_id, "plan_id": summary.get(PLAN_PROPERTY),
                  **({"history_rolled_back_to": history_target.snapshot_id} if history_target else {})},
    ), state.version)
    if history_target is not None and history_table.current_snapshot().snapshot_id != history_target.snapshot_id:
        history_table.manage_snapshots().rollback_to_snapshot(history_target.snapshot_id).commit()
    if current.snapshot_id != snapshot.snapshot_id:
        table.manage_snapshots().rollback_to_snapshot(snapshot.snapshot_id).commit()
    return restored
