"""Direct Glue Data Catalog update: the lake tables and their partitions, exactly, without a crawler.

For each lake table the update lists its files on S3 and

- creates the Glue table (Parquet, hive partitions) or updates it: columns come from the
  Parquet footers of the files written since shortly before the last update (the whole
  table the first time), added to the columns the table already has; a column is never dropped (the lake
  keeps columns a source stops sending) and integer / float columns only ever widen;
- adds a partition for every partition folder that holds files and drops the partitions
  whose folders no longer do.

Footers are read with ranged GETs, a few kilobytes per file. Athena can query the table as
soon as the update returns. Partition columns are declared ``string``: their values come
from folder names.
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from dmscdc_provider.aws.clients import aws_client, error_code, parse_s3_uri
from dmscdc_provider.engines import hive_paths
from dmscdc_provider.engines.arrow_schema import hive_type
from dmscdc_provider.aws.s3_storage import S3Storage

log = logging.getLogger(__name__)

PARQUET_INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
REFRESHED_AT = "dmscdc_refreshed_at"  # table parameter: when the files were last read
# Files modified this long before the last refresh are read again: S3's LastModified has
# one-second resolution and this machine's clock is not S3's.
REREAD_MARGIN = timedelta(minutes=5)
_WIDENING = [["tinyint", "smallint", "int", "bigint"], ["float", "double"]]
_CREATE_BATCH, _DELETE_BATCH = 100, 25  # BatchCreatePartition / BatchDeletePartition limits


# -- Parquet schemas -> Glue columns -----------------------------------------------------------
def wider_type(current: str, new: str) -> str:
    """The type a column keeps when files disagree: the wider of two integer or float types,
    otherwise the newer files' type."""
    for family in _WIDENING:
        if current in family and new in family:
            return family[max(family.index(current), family.index(new))]
    return new


def merge_columns(existing: list[dict], found: list[dict]) -> list[dict]:
    """Existing columns in their order (types widened), then columns seen for the first time."""
    merged = [dict(column) for column in existing]
    position = {column["Name"].lower(): index for index, column in enumerate(merged)}
    for column in found:
        name = column["Name"].lower()
        if name in position:
            kept = merged[position[name]]
            kept["Type"] = wider_type(kept["Type"], column["Type"])
        else:
            position[name] = len(merged)
            merged.append({"Name": name, "Type": column["Type"]})
    return merged


class S3RangeReader(io.RawIOBase):
    """A seekable read-only file over one S3 object; every read is a ranged GET."""

    def __init__(self, client, bucket: str, key: str, size: int):
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        if self._position >= self._size or len(buffer) == 0:
            return 0
        end = min(self._size, self._position + len(buffer)) - 1
        data = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={self._position}-{end}")["Body"].read()
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def parquet_columns(client, uri: str, size: int) -> list[dict]:
    """The Glue columns of one Parquet file, from its footer."""
    import pyarrow.parquet as pq

    bucket, key = parse_s3_uri(uri)
    with io.BufferedReader(S3RangeReader(client, bucket, key, size), buffer_size=64 * 1024) as handle:
        schema = pq.read_schema(handle)
    return [{"Name": f.name.lower(), "Type": hive_type(f.type)} for f in schema]


def partition_columns(relative_path: str) -> list[str]:
    """``["orderdate"]`` for ``orderdate=2024-03-01/part-0.parquet``: the hive partition folders."""
    return [folder.partition("=")[0] for folder in relative_path.split("/")[:-1] if "=" in folder]


def refresh_glue_tables(
    lake_root: str,
    tables: list[str],
    database: str,
    table_name_format: str = "{table}",
    aws_conn_id: str | None = None,
    region_name: str | None = None,
) -> list[str]:
    """The ``glue_tables`` catalog mode: create or update each table and its partitions in a
    Glue database straight from its files; returns the tables Athena can query now."""
    catalog = GlueCatalog(database, table_name_format, aws_conn_id, region_name)
    catalog.ensure_database()
    root = lake_root.rstrip("/")
    updated = []
    for name in tables:
        schema, table = name.split(".", 1)
        if not catalog.refresh_table(f"{root}/{schema}/{table}", schema, table).skipped:
            updated.append(name)
    return updated


def is_iceberg_table(glue_table: dict) -> bool:
    """Whether a Glue ``GetTable`` answer is an Iceberg table (``table_type`` ICEBERG, as Athena,
    Glue and pyiceberg mark them)."""
    return str((glue_table.get("Parameters") or {}).get("table_type", "")).upper() == "ICEBERG"


def partition_values(relative_path: str, partition_key: list[str]) -> tuple[str, ...] | None:
    """``("2024-03-01",)`` for ``orderdate=2024-03-01/part-0.parquet``; None if the path does not
    have the table's partition folders."""
    folders = relative_path.split("/")[:-1]
    if len(folders) != len(partition_key):
        return None
    values = []
    for folder, column in zip(folders, partition_key):
        name, sep, value = folder.partition("=")
        if not sep or name.lower() != column.lower():
            return None
        # Spark escapes / : % and others in partition folders; the null folder's name is kept:
        # Athena reads a partition of that value as null, as Spark and Hive read the folder.
        values.append(hive_paths.unescape(value))
    return tuple(values)


@dataclass
class CatalogTableUpdate:
    """What one table's update changed."""

    table: str
    created: bool = False
    columns_added: list[str] = field(default_factory=list)
    partitions_added: int = 0
    partitions_removed: int = 0
    skipped: str | None = None


class GlueCatalog:
    """Creates and updates lake tables in a Glue database.

    :param database: Glue database (created when missing).
    :param table_name_format: catalog table name from ``{schema}`` and ``{table}``; the blog's
        crawler names tables after the table folder, which ``{table}`` matches.
    :param aws_conn_id: Airflow AWS connection (None: boto3's default credential chain).
    :param region_name: AWS region (None: the connection's or the environment's).
    :param footer_threads: footers read in parallel.
    """

    def __init__(
        self,
        database: str,
        table_name_format: str = "{table}",
        aws_conn_id: str | None = None,
        region_name: str | None = None,
        footer_threads: int = 8,
    ):
        self.database = database
        self.table_name_format = table_name_format
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.footer_threads = footer_threads
        self._glue = None
        self._storage: S3Storage | None = None

    @property
    def glue(self):
        if self._glue is None:
            self._glue = aws_client("glue", self.aws_conn_id, self.region_name)
        return self._glue

    @property
    def storage(self) -> S3Storage:
        if self._storage is None:
            self._storage = S3Storage(self.aws_conn_id, self.region_name)
        return self._storage

    def catalog_name(self, schema: str, table: str) -> str:
        return self.table_name_format.format(schema=schema, table=table).lower()

    def ensure_database(self) -> None:
        try:
            self.glue.get_database(Name=self.database)
        except Exception as error:
            if error_code(error) != "EntityNotFoundException":
                raise
            try:
                self.glue.create_database(DatabaseInput={"Name": self.database, "Description": "dmscdc data lake"})
            except Exception as create_error:
                if error_code(create_error) != "AlreadyExistsException":
                    raise

    def refresh(self, lake_root: str, tables: list[tuple[str, str, list[str]]]) -> list[CatalogTableUpdate]:
        """Update every ``(schema, table, partition_key)`` whose lake folder holds data."""
        self.ensure_database()
        root = lake_root.rstrip("/")
        return [self.refresh_table(f"{root}/{schema}/{table}", schema, table, list(keys))
                for schema, table, keys in tables]

    def refresh_table(
        self, lake_table_path: str, schema: str, table: str, partition_key: list[str] | None = None
    ) -> CatalogTableUpdate:
        """Create or update one table and its partitions from its files on S3.

        :param partition_key: the table's partition columns; None reads them from the
            ``column=value`` folders of its files.
        """
        name = self.catalog_name(schema, table)
        update = CatalogTableUpdate(table=name)
        started = datetime.now(timezone.utc)
        existing = self._get_table(name)
        if existing is not None and is_iceberg_table(existing):
            # Its commits keep it current; as a Parquet table it would show every snapshot's files.
            update.skipped = "an Iceberg table (its own commits keep the catalog current)"
            log.warning("catalog %s.%s: left as it is: %s", self.database, name, update.skipped)
            return update
        files = [f for f in self.storage.list_files(lake_table_path) if f.path.endswith(".parquet")]
        if not files:
            update.skipped = "no data files yet"
            return update
        if partition_key is None:
            partition_key = partition_columns(files[0].path[len(lake_table_path.rstrip("/")) + 1:])
        refreshed_at = _parse_time((existing or {}).get("Parameters", {}).get(REFRESHED_AT)) if existing else None
        unread = [f for f in files if refreshed_at is None or f.modified >= refreshed_at - REREAD_MARGIN]
        found = self._columns_of(unread)
        old_columns = existing["StorageDescriptor"]["Columns"] if existing else []
        partition_names = {c.lower() for c in partition_key}
        found = [c for c in found if c["Name"] not in partition_names]
        columns = merge_columns(old_columns, found)
        update.columns_added = [c["Name"] for c in columns[len(old_columns):]]
        table_input = self._table_input(name, lake_table_path, columns, partition_key, schema, table, started)
        if existing is None:
            self.glue.create_table(DatabaseName=self.database, TableInput=table_input)
            update.created = True
        else:
            self.glue.update_table(DatabaseName=self.database, TableInput=table_input)
        if partition_key:
            self._sync_partitions(name, lake_table_path, files, partition_key, table_input["StorageDescriptor"], update)
        log.info("catalog %s.%s: %s", self.database, name, update)
        return update

    def _get_table(self, name: str) -> dict | None:
        try:
            return self.glue.get_table(DatabaseName=self.database, Name=name)["Table"]
        except Exception as error:
            if error_code(error) == "EntityNotFoundException":
                return None
            raise

    def _columns_of(self, files) -> list[dict]:
        client = self.storage.client
        with ThreadPoolExecutor(max_workers=self.footer_threads) as pool:
            per_file = list(pool.map(lambda f: parquet_columns(client, f.path, f.size), sorted(files, key=lambda f: f.modified)))
        merged: list[dict] = []
        for columns in per_file:  # oldest first, so newer files' types win where they differ
            merged = merge_columns(merged, columns)
        return merged

    def _table_input(self, name, location, columns, partition_key, schema, table, refreshed) -> dict:
        return {
            "Name": name,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {
                "classification": "parquet",
                "EXTERNAL": "TRUE",
                "dmscdc_source_table": f"{schema}.{table}",
                REFRESHED_AT: refreshed.isoformat(),
            },
            "PartitionKeys": [{"Name": c.lower(), "Type": "string"} for c in partition_key],
            "StorageDescriptor": {
                "Columns": columns,
                "Location": location.rstrip("/") + "/",
                "InputFormat": PARQUET_INPUT_FORMAT,
                "OutputFormat": PARQUET_OUTPUT_FORMAT,
                "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE, "Parameters": {"serialization.format": "1"}},
            },
        }

    def _sync_partitions(self, name, lake_table_path, files, partition_key, descriptor, update) -> None:
        root = lake_table_path.rstrip("/") + "/"
        wanted = {}
        for stored in files:
            values = partition_values(stored.path[len(root):], partition_key)
            if values is not None:
                folder = "/".join(stored.path[len(root):].split("/")[:-1])
                wanted[values] = root + folder + "/"
        present = set()
        paginator = self.glue.get_paginator("get_partitions")
        for page in paginator.paginate(DatabaseName=self.database, TableName=name):
            present.update(tuple(p["Values"]) for p in page.get("Partitions", []))
        to_add = [values for values in sorted(wanted) if values not in present]
        to_remove = [values for values in sorted(present) if values not in wanted]
        for start in range(0, len(to_add), _CREATE_BATCH):
            inputs = [
                {"Values": list(values), "StorageDescriptor": {**descriptor, "Location": wanted[values]}}
                for values in to_add[start:start + _CREATE_BATCH]
            ]
            response = self.glue.batch_create_partition(DatabaseName=self.database, TableName=name, PartitionInputList=inputs)
            errors = [e for e in response.get("Errors", []) if e.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"]
            if errors:
                raise RuntimeError(f"could not add partitions to {self.database}.{name}: {errors[:3]}")
        for start in range(0, len(to_remove), _DELETE_BATCH):
            self.glue.batch_delete_partition(
                DatabaseName=self.database, TableName=name,
                PartitionsToDelete=[{"Values": list(values)} for values in to_remove[start:start + _DELETE_BATCH]],
            )
        update.partitions_added, update.partitions_removed = len(to_add), len(to_remove)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
