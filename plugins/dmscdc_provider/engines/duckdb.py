"""The in-process engine: the merge of one table in this Python process, DuckDB over Arrow.

No JVM: it starts in milliseconds and runs inside an Airflow worker (MWAA included). Files are
read and written through ``pyarrow.fs`` (local, ``file://``, ``s3://`` through the S3 client in
the pyarrow wheel); DuckDB gets Arrow streams and tables, never a path, so no DuckDB extension
is installed at run time. Same plan in, same staged files and result document out as the Spark
engine (docs/plan-and-result.md, docs/merge-semantics.md, docs/engines.md).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dmscdc_provider.arrow_fs import ArrowFiles
from dmscdc_provider.engines import arrow_schema, hive_paths
from dmscdc_spark.errors import RAW_FILE_REMEDY, MergeInputError, unreadable_lake_file
from dmscdc_spark.plan import MergePlan, empty_partition_value_warning
from dmscdc_provider.engines.arrow_schema import TypeConflict, unify_schemas
from dmscdc_provider.table_formats import LakeFile
from dmscdc_provider.report import one_line

log = logging.getLogger(__name__)

OP = "Op"
FILE_SEQ = "_dmscdc_file_seq"
ROW_POS = "_dmscdc_row_pos"
KNOWN_OPS = ("I", "U", "D")
# Rows per Arrow batch read from a DMS or lake file, and per row group written: big enough
# that per-batch overhead vanishes, small enough that a batch of a wide table stays in tens of MB.
BATCH_ROWS = 128 * 1024
ROW_GROUP_ROWS = 256 * 1024
# Input (LOAD files, rewritten lake files) is read into Arrow in groups of whole row groups of
# about this many uncompressed bytes (two groups at a time: one written, the next read): DuckDB
# scans an in-memory Arrow table in parallel, many times faster than a stream.
REWRITE_GROUP_BYTES = 128 * 1024 * 1024
# Footers of lake files are read in parallel: on S3 each one is a round trip.
FOOTER_THREADS = 16

DEFAULT_MEMORY_LIMIT = "1GB"
DEFAULT_TARGET_FILE_BYTES = 32 * 1024 * 1024


class DuckDBMergeEngine:
    """Merges a table in this process with DuckDB and pyarrow (no JVM, no run-time downloads).

    :param memory_limit: DuckDB's memory limit (``"1GB"``); past it, joins, sorts and stored
        rows spill to ``temp_directory``. Arrow batches in flight come on top (a few tens of MB).
    :param temp_directory: where DuckDB spills; default a fresh folder in the system's temp
        folder, removed after each merge.
    :param threads: DuckDB worker threads (default: one per core).
    :param target_file_bytes: size of the files written when the plan does not set one. Smaller
        than the Spark engine's 128 MiB: a merge rewrites whole files, so in a worker the cost of
        an update follows the size of the files that hold it.
    :param aws_conn_id: Airflow AWS connection for ``s3://`` raw and lake (None: boto3's chain).
    :param region_name: AWS region for S3.
    """

    def __init__(
        self,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        temp_directory: str | None = None,
        threads: int | None = None,
        target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES,
        aws_conn_id: str | None = None,
        region_name: str | None = None,
    ):
        self.memory_limit = str(memory_limit)
        self.temp_directory = temp_directory
        self.threads = int(threads) if threads else None
        self.target_file_bytes = int(target_file_bytes)
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    def run(self, engine_plan: dict) -> dict:
        """Merge one table's planned files into staged Parquet files and describe the outcome."""
        started = time.monotonic()
        plan = MergePlan.from_dict({"target_file_bytes": self.target_file_bytes, **engine_plan})
        files = ArrowFiles(self.aws_conn_id, self.region_name)
        spill = self.temp_directory or tempfile.mkdtemp(prefix="dmscdc-duckdb-")
        try:
            with self._connect(spill) as connection:
                result = _TableMerge(connection, files, plan).run()
        except MergeInputError as error:
            _discard_staged(files, plan)
            result = {"status": "failed", "error": error.to_dict()}
        except (duckdb.OutOfMemoryException, MemoryError) as error:
            _discard_staged(files, plan)
            result = {"status": "failed", "error": {
                "table": plan.table, "file": None,
                "problem": f"the merge needs more memory than the duckdb engine's memory_limit "
                           f"{self.memory_limit} ({_first_line(error)})",
                "remedy": "Raise the engine's memory_limit (--duckdb-setting memory_limit=4GB), give "
                          "temp_directory a folder with more free space, or merge this table with a "
                          "Spark engine; the table's state was left unchanged.",
            }}
        finally:
            if self.temp_directory is None:
                shutil.rmtree(spill, ignore_errors=True)
        result.update(table=plan.table, plan_id=plan.plan_id, attempt_id=plan.attempt_id, mode=plan.mode,
                      seconds=round(time.monotonic() - started, 3))
        if result["status"] == "succeeded":
            log.info("%s: %s merge in process read %d file(s), rewrote %d lake file(s), staged %d row(s) "
                     "in %d file(s) in %.1f s", plan.table, plan.mode, len(plan.files), len(result["files_removed"]),
                     result["rows_written"], len(result["files_added"]), result["seconds"])
        return result

    def _connect(self, spill: str) -> duckdb.DuckDBPyConnection:
        config = {
            "memory_limit": self.memory_limit,
            "temp_directory": spill,
            # Output order is set by the queries themselves; not keeping insertion order lets
            # DuckDB stream and spill with less memory.
            "preserve_insertion_order": False,
            # Nothing is fetched at run time (MWAA workers often have no internet): no extension
            # is installed or loaded; Arrow does all file and S3 access.
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
        if self.threads:
            config["threads"] = self.threads
        return utc_connection(":memory:", config=config)


def utc_connection(database: str = ":memory:", **options) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose casts between TIMESTAMP and TIMESTAMPTZ (and the zone it shows
    TIMESTAMPTZ values in) are UTC, as in the Spark engine, whatever the host's zone: DuckDB
    otherwise takes the zone from the host (``TZ``) and shifts a naive 12:00 to 15:00Z in Sao Paulo.

    :param options: ``duckdb.connect``'s (``config``, ``read_only``); ``TimeZone`` is not a
        connect option, so it is set on the open connection.
    """
    connection = duckdb.connect(database, **options)
    try:
        connection.execute("SET TimeZone = 'UTC'")
    except BaseException:
        connection.close()
        raise
    return connection


def _discard_staged(files: ArrowFiles, plan: MergePlan) -> None:
    files.delete_tree(plan.staging_path)
    if plan.history is not None:
        files.delete_tree(plan.history["staging_path"])


def _first_line(error: BaseException) -> str:
    """The error's cause in one line, kept short enough for a table's failure block."""
    return one_line(error)[:300]


# -- files ------------------------------------------------------------------------------------

def is_csv(path: str) -> bool:
    return path.endswith((".csv", ".csv.gz"))


@dataclass
class ChangeFile:
    """One planned DMS file: its position in the plan and its columns as the merge sees them."""

    seq: int
    path: str
    kind: str
    schema: pa.Schema  # spark_view types, ``Op`` included (added as "I" when the file has none)
    has_op: bool
    row_group_bytes: list[int] | None = None  # Parquet: each row group's uncompressed size


# -- the merge --------------------------------------------------------------------------------

class _TableMerge:
    """One table's merge on one DuckDB connection: read, check, find the files to rewrite, write."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, files: ArrowFiles, plan: MergePlan):
        self.db, self.files, self.plan = connection, files, plan
        self.warnings: list[str] = []
        self._stream_error: MergeInputError | None = None

    # -- errors -----------------------------------------------------------------------------
    def _fail(self, file: str | None, problem: str, remedy: str) -> MergeInputError:
        return MergeInputError(self.plan.table, file, problem, remedy)

    def _unreadable(self, path: str, error: Exception) -> MergeInputError:
        """A DMS file that cannot be read."""
        return self._fail(path, f"cannot read the file ({_first_line(error)})", RAW_FILE_REMEDY)

    def _unreadable_lake_file(self, path: str, error: Exception) -> MergeInputError:
        """One of the table's own files that cannot be read: DMS cannot write it again."""
        return unreadable_lake_file(self.plan.table, path, _first_line(error))

    def _unify(self, sources: list[tuple[str, pa.Schema]], remedy: str | None = None) -> pa.Schema:
        try:
            return unify_schemas(sources)
        except TypeConflict as conflict:
            raise self._fail(
                conflict.source, str(conflict),
                remedy or "Cast the column in the source, or rebuild the table in the new type with a "
                "full load (`dmscdc run --full-refresh`); the table's state was left unchanged.",
            ) from conflict

    # -- reading DMS files ------------------------------------------------------------------
    def _describe(self, seq: int, entry: dict) -> ChangeFile:
        path = entry["path"]
        try:
            if is_csv(path):
                names = self._csv_header(path)
                schema = pa.schema([pa.field(name, pa.string()) for name in names])
                row_group_bytes = None
            else:
                with self.files.open_input(path) as handle:
                    parquet = pq.ParquetFile(handle)
                    schema = arrow_schema.spark_view_schema(parquet.schema_arrow)
                    row_group_bytes = _row_group_bytes(parquet.metadata)
        except (OSError, pa.ArrowException, ValueError) as error:
            raise self._unreadable(path, error) from error
        has_op = OP in schema.names
        if not has_op:
            schema = pa.schema([pa.field(OP, pa.string())] + list(schema))
        return ChangeFile(seq, path, entry["kind"], schema, has_op, row_group_bytes)

    def _csv_header(self, path: str) -> list[str]:
        with self.files.open_stream(path) as stream:
            head = stream.read(1 << 20).decode("utf-8", errors="replace")
        header = next(csv.reader(io.StringIO(head), delimiter=self.plan.csv_delimiter), None)
        if not header:
            raise ValueError("the file has no header row (set addColumnName=true on the DMS endpoint)")
        return header

    def _raw_batches(self, change: ChangeFile, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The file's rows in file order, as written (types as the file has them)."""
        if is_csv(change.path):
            names = [n for n in change.schema.names if change.has_op or n != OP]
            wanted = [n for n in names if columns is None or n in columns]
            options = pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                null_values=[self.plan.csv_null_value], strings_can_be_null=True,
                quoted_strings_can_be_null=False, include_columns=wanted or names[:1])
            parse = pacsv.ParseOptions(delimiter=self.plan.csv_delimiter, quote_char='"', double_quote=True,
                                       newlines_in_values=True)
            read = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=8 << 20)
            with self.files.open_stream(change.path) as stream:
                yield from pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=options)
        else:
            with self.files.open_input(change.path) as handle:
                parquet = pq.ParquetFile(handle)
                present = [n for n in (columns or parquet.schema_arrow.names) if n in parquet.schema_arrow.names]
                yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=present or None, use_threads=True)

    def _read_change_table(self, change: ChangeFile, schema: pa.Schema, with_position: bool,
                           row_groups: list[int] | None = None) -> pa.Table:
        """The file's rows in file order (of ``row_groups`` only, if given), conformed to
        ``schema``; ``with_position`` adds the file's place in the plan and each row's place in
        the file (what orders changes to one key)."""
        try:
            if is_csv(change.path):
                # A CSV file of a header alone yields no batch: its columns are all text.
                columns = pa.schema([f for f in change.schema if change.has_op or f.name != OP])
                table = pa.Table.from_batches(list(self._raw_batches(change)), schema=columns)
            else:
                table = self._read_parquet(change.path, row_groups)
        except (OSError, pa.ArrowException) as error:
            raise self._unreadable(change.path, error) from error
        rows = table.num_rows
        if not change.has_op:
            table = table.append_column(OP, pa.repeat(pa.scalar("I", pa.string()), rows))
        table = self._conform(table, schema, change.path)
        if with_position:
            table = table.append_column(FILE_SEQ, pa.repeat(pa.scalar(change.seq, pa.int32()), rows))
            table = table.append_column(ROW_POS, _positions(0, rows))
        return table

    def _conform(self, rows, schema: pa.Schema, path: str):
        try:
            return arrow_schema.conform_batch(rows, schema)
        except pa.ArrowInvalid as error:
            raise self._fail(
                path, f"a value does not fit the table's column type ({_first_line(error)})",
                "Rebuild the table in the new type with a full load (`dmscdc run --full-refresh`); the "
                "table's state was left unchanged.",
            ) from error

    def _ops_by_file(self, changes: list[ChangeFile]) -> tuple[list[tuple[int, object, int]], str | None]:
        """``(file_seq, Op, rows)`` from the ``Op`` column alone (read before anything else), and
        the newest commit time of those rows (ISO UTC; None without a commit-time column), read
        in the same pass."""
        counts = []
        commit_time = self.plan.commit_time_column
        newest = None
        for change in changes:
            timed = commit_time if commit_time in change.schema.names else None
            try:
                tally: dict = {}
                columns = [OP] if change.has_op else [change.schema.names[1]]
                for batch in self._raw_batches(change, columns + ([timed] if timed else [])):
                    if change.has_op:
                        for entry in pc.value_counts(batch.column(OP)).to_pylist():
                            tally[entry["values"]] = tally.get(entry["values"], 0) + entry["counts"]
                    else:
                        tally["I"] = tally.get("I", 0) + batch.num_rows
                    batch_newest = self._newest_time(batch, timed) if timed else None
                    if batch_newest and (newest is None or batch_newest > newest):
                        newest = batch_newest
            except (OSError, pa.ArrowException, duckdb.ConversionException) as error:
                raise self._unreadable(change.path, error) from error
            counts += [(change.seq, op, rows) for op, rows in tally.items()]
        return counts, newest.replace(tzinfo=dt.timezone.utc).isoformat() if newest else None

    def _newest_time(self, batch: pa.RecordBatch, column: str) -> dt.datetime | None:
        """The newest value of a commit-time column in ``batch`` as a UTC wall-clock time; text
        (as CSV carries it) is read as a timestamp, as ``_sequence`` reads it."""
        data_type = batch.schema.field(column).type
        value = (f"timezone('UTC', {_q(column)})" if pa.types.is_timestamp(data_type) and data_type.tz
                 else f"CAST({_q(column)} AS TIMESTAMP)")
        return self.db.from_arrow(pa.Table.from_batches([batch])).aggregate(f"max({value})").fetchall()[0][0]

    def _check_ops(self, counts: list[tuple[int, object, int]]) -> dict[str, int]:
        """Rows read by Op; an unknown (or missing) Op fails the table, naming the file."""
        for seq, op, rows in sorted(counts, key=lambda c: c[0]):
            if op is None:  # the same words as the Spark engine and the input check
                raise self._fail(
                    self.plan.files[seq]["path"], f"Op is null in {rows} row(s)",
                    "DMS writes I, U or D in every row: the file is damaged or was not written by DMS. "
                    "Replace it with a good copy (same name) and run again; the table's state was left unchanged.",
                )
            if op not in KNOWN_OPS:
                raise self._fail(
                    self.plan.files[seq]["path"], f"unknown Op value {op!r} in {rows} row(s)",
                    "DMS writes only I, U and D; check the endpoint settings that produced this file, "
                    "then fix or remove the file.",
                )
        by_op = {op: 0 for op in KNOWN_OPS}
        for _, op, rows in counts:
            by_op[op] += rows
        return by_op

    def _require_columns(self, groups: dict[str, list[ChangeFile]]) -> None:
        """Key columns must be in the files (of each group: LOAD files, CDC files)."""
        required = {"primary key": self.plan.primary_key, "partition key": self.plan.partition_key}
        for label, columns in required.items():
            for column in columns:
                for changes in groups.values():
                    if not changes or any(column in c.schema.names for c in changes):
                        continue
                    culprit = changes[0]
                    raise self._fail(
                        culprit.path, f"{label} column {column!r} does not exist (the file has "
                        f"{', '.join(n for n in culprit.schema.names if culprit.has_op or n != OP)})",
                        f"Fix the table's {label} with `dmscdc configure {self.plan.table} "
                        f"--{label.replace(' ', '-')} ...`.",
                    )

    # -- the lake -----------------------------------------------------------------------------
    def _lake_files(self) -> list[LakeFile]:
        """The table's current data files: those the plan pins (Iceberg), else the table folder's."""
        if self.plan.lake_files is not None:
            return [LakeFile(f["path"], int(f["size"])) for f in self.plan.lake_files]
        return self.files.list_data_files(self.plan.lake_table_path)

    def _footers(self, lake_files: list[LakeFile], root: str | None = None) -> list[pq.FileMetaData]:
        root = (root or self.plan.lake_table_path).rstrip("/")

        def footer(lake_file: LakeFile) -> pq.FileMetaData:
            path = f"{root}/{lake_file.relative_path}"
            try:
                with self.files.open_input(path) as handle:
                    return pq.ParquetFile(handle).metadata
            except (OSError, pa.ArrowException) as error:
                raise self._unreadable_lake_file(path, error) from error

        with ThreadPoolExecutor(max_workers=FOOTER_THREADS) as pool:
            return list(pool.map(footer, lake_files))

    def _lake_file_schema(self, lake_file: LakeFile, metadata: pq.FileMetaData, change_schema: pa.Schema) -> pa.Schema:
        """A lake file's columns as read: its own, plus its partition columns (typed as the changes)."""
        schema = arrow_schema.spark_view_schema(metadata.schema.to_arrow_schema())
        for column in lake_file.partition_text:
            if column not in schema.names:
                data_type = change_schema.field(column).type if column in change_schema.names else pa.string()
                schema = schema.append(pa.field(column, data_type))
        return schema

    def _files_holding_keys(self, change_schema: pa.Schema, root: str | None = None,
                            lake_files: list[LakeFile] | None = None,
                            open_only: str | None = None) -> list[tuple[LakeFile, pq.FileMetaData]]:
        """Lake files holding a changed key, found from folder names and footers, then the key
        columns of the row groups the footers cannot rule out.

        :param root: the table folder (default: the plan's table); ``lake_files`` its files.
        :param open_only: a column whose null marks the rows that count (a history table's
            ``__end_at``: its current versions); row groups without a null there are skipped.
        """
        if lake_files is None:
            lake_files = self._lake_files()
        if not lake_files:
            return []
        keys = self.plan.primary_key
        key_types = {k: change_schema.field(k).type for k in keys}
        extremes = self.db.sql(
            "SELECT " + ", ".join(f"min({_q(k)}), max({_q(k)})" for k in keys) + " FROM changed_keys").fetchall()[0]
        bounds = {k: (extremes[2 * i], extremes[2 * i + 1]) for i, k in enumerate(keys)}

        def outside(value_low, value_high, column) -> bool:
            low, high = bounds[column]
            if low is None or value_low is None or value_high is None:
                return False
            try:
                return _comparable(value_high) < _comparable(low) or _comparable(value_low) > _comparable(high)
            except TypeError:
                return False

        # Partition folders first: a folder outside the range is never opened.
        def folder_outside(lake_file: LakeFile) -> bool:
            for column, text in lake_file.partition_text.items():
                if column not in keys:
                    continue
                try:
                    value = hive_paths.typed_value(text, key_types[column], in_primary_key=True)
                except pa.ArrowException:
                    continue  # a folder value the key's type cannot hold: let the file decide
                if value is None or outside(value, value, column):  # a null key matches nothing
                    return True
            return False

        candidates = [lake_file for lake_file in lake_files if not folder_outside(lake_file)]
        footers = self._footers(candidates, root)
        row_groups: list[tuple[LakeFile, pq.FileMetaData, list[int]]] = []
        for lake_file, metadata in zip(candidates, footers):
            columns = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
            keep = []
            for index in range(metadata.num_row_groups):
                group = metadata.row_group(index)
                inside = True
                if open_only is not None and open_only in columns:
                    stats = group.column(columns[open_only]).statistics
                    inside = stats is None or not stats.has_null_count or stats.null_count > 0
                for column in keys if inside else ():
                    if column in lake_file.partition_text:
                        continue
                    if column not in columns:
                        inside = False  # no key column: every key is null, none matches
                        break
                    stats = group.column(columns[column]).statistics
                    if stats is not None and stats.has_min_max and outside(stats.min, stats.max, column):
                        inside = False
                        break
                if inside:
                    keep.append(index)
            if keep:
                row_groups.append((lake_file, metadata, keep))
        if not row_groups:
            return []
        return self._exact_matches(row_groups, key_types, root, open_only)

    def _files_to_widen(self, rewritten: list[LakeFile]) -> list[tuple[LakeFile, pq.FileMetaData]]:
        """The plan's ``widen_files`` the merge does not rewrite for a changed key: rewritten too."""
        wanted = set(self.plan.widen_files) - {lake_file.relative_path for lake_file in rewritten}
        if not wanted:
            return []
        lake_files = [lake_file for lake_file in self._lake_files() if lake_file.relative_path in wanted]
        return list(zip(lake_files, self._footers(lake_files)))

    def _exact_matches(self, row_groups, key_types: dict, root: str | None = None,
                       open_only: str | None = None) -> list[tuple[LakeFile, pq.FileMetaData]]:
        keys = self.plan.primary_key
        root = (root or self.plan.lake_table_path).rstrip("/")
        key_schema = pa.schema([pa.field(k, key_types[k]) for k in keys] + [pa.field("_dmscdc_file", pa.int32())])

        def batches():
            for number, (lake_file, _, groups) in enumerate(row_groups):
                path = f"{root}/{lake_file.relative_path}"
                folder_values = lake_file.partition_text
                try:
                    with self.files.open_input(path) as handle:
                        parquet = pq.ParquetFile(handle)
                        in_file = [k for k in keys if k not in folder_values and k in parquet.schema_arrow.names]
                        marker = [open_only] if open_only in parquet.schema_arrow.names else []
                        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=groups,
                                                          columns=in_file + marker):
                            if marker:  # only the rows that count
                                batch = batch.filter(pc.is_null(batch.column(open_only))).drop_columns(marker)
                            for column in keys:
                                if column in folder_values:
                                    value = hive_paths.typed_value(folder_values[column], key_types[column],
                                                                   in_primary_key=True)
                                    batch = batch.append_column(column, pa.repeat(pa.scalar(value, key_types[column]), batch.num_rows))
                            batch = batch.append_column("_dmscdc_file", pa.repeat(pa.scalar(number, pa.int32()), batch.num_rows))
                            yield arrow_schema.conform_batch(batch, key_schema)
                except (OSError, pa.ArrowException) as error:
                    self._stream_error = self._unreadable_lake_file(path, error)
                    raise

        # Key columns only, so a stream: DuckDB reads it once, as the semi-join consumes it.
        self.db.register("lake_keys", pa.RecordBatchReader.from_batches(key_schema, batches()))
        using = ", ".join(_q(k) for k in keys)
        found = self.db.sql(
            f"SELECT DISTINCT _dmscdc_file FROM lake_keys SEMI JOIN changed_keys USING ({using})").fetchall()
        self.db.unregister("lake_keys")
        numbers = sorted(number for (number,) in found)
        return [(row_groups[n][0], row_groups[n][1]) for n in numbers]

    def _read_parquet(self, path: str, row_groups: list[int] | None, columns: list[str] | None = None) -> pa.Table:
        """The file's rows (of ``row_groups`` only, if given; of the ``columns`` it has, if given)."""
        with self.files.open_input(path) as handle:
            parquet = pq.ParquetFile(handle, pre_buffer=True)  # coalesced reads: fewer S3 requests
            if columns is not None:
                columns = [c for c in columns if c in parquet.schema_arrow.names]
            if row_groups is None:
                return parquet.read(columns=columns, use_threads=True)
            return parquet.read_row_groups(row_groups, columns=columns, use_threads=True)

    def _read_lake_table(self, lake_file: LakeFile, schema: pa.Schema, row_groups: list[int] | None = None,
                         root: str | None = None) -> pa.Table:
        """The rows of a lake file the merge rewrites (of ``row_groups`` only, if given), with its
        partition columns, conformed to ``schema``; ``root``: its table folder (default the plan's)."""
        path = f"{(root or self.plan.lake_table_path).rstrip('/')}/{lake_file.relative_path}"
        try:
            table = self._read_parquet(path, row_groups, schema.names)
            for column, text in lake_file.partition_text.items():
                if column in table.schema.names or column not in schema.names:
                    continue
                data_type = schema.field(column).type
                in_key = column in self.plan.primary_key
                value = pa.scalar(hive_paths.typed_value(text, data_type, in_primary_key=in_key), data_type)
                table = table.append_column(column, pa.repeat(value, table.num_rows))
        except (OSError, pa.ArrowException) as error:
            raise self._unreadable_lake_file(path, error) from error
        return self._conform(table, schema, path)

    def _load_changes(self, changes: list[ChangeFile], schema: pa.Schema) -> None:
        """The CDC rows, conformed to ``schema``, into the ``changes`` table (which spills past
        the memory limit); one file in Arrow memory at a time."""
        self.db.execute(f"CREATE TABLE changes AS SELECT * FROM {_empty(with_order_columns(schema))}")
        for change in changes:
            self.db.register("change_rows", self._read_change_table(change, schema, with_position=True))
            self.db.execute("INSERT INTO changes SELECT * FROM change_rows")
            self.db.unregister("change_rows")

    # -- the merge ----------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        except duckdb.Error as error:
            # An Arrow stream that failed inside a query: the error it recorded names the file.
            if self._stream_error is not None and not isinstance(error, duckdb.OutOfMemoryException):
                raise self._stream_error from error
            raise

    def _run(self) -> dict:
        plan = self.plan
        if plan.mode not in ("full", "incremental"):
            raise ValueError(f"plan mode must be 'full' or 'incremental', not {plan.mode!r}")
        described = [self._describe(seq, entry) for seq, entry in enumerate(plan.files)]
        loads = [c for c in described if c.kind == "load"]
        cdc = [c for c in described if c.kind != "load"]
        self._require_columns({"load": loads, "cdc": cdc})
        change_schema = self._unify([(c.path, c.schema) for c in loads + cdc])
        if plan.order_column and plan.order_column not in change_schema.names:
            self.warnings.append(
                f"ordering column {plan.order_column!r} is in none of the files; "
                + ("the commit-time column decides" if plan.sequence_column(change_schema.names) else
                   "file order and row position decide"))
        counts, newest_commit_time = self._ops_by_file(described)
        rows_read = self._check_ops(counts)
        keyed = bool(plan.primary_key)
        skipped = {"U": 0, "D": 0} if keyed else {
            op: sum(n for seq, o, n in counts if o == op and plan.files[seq]["kind"] != "load") for op in ("U", "D")}

        if cdc:
            self._load_changes(cdc, change_schema)
            if keyed:
                keys = ", ".join(_q(k) for k in plan.primary_key)
                self.db.execute(f"CREATE TABLE changed_keys AS SELECT DISTINCT {keys} FROM changes")
            else:
                self.db.execute(f"CREATE TABLE incoming AS SELECT * FROM changes WHERE {_q(OP)} = 'I'")

        replaced: list[LakeFile] = []
        replaced_row_groups: list[list[int]] = []
        lake_sources: list[tuple[str, pa.Schema]] = []
        holding: list[tuple[LakeFile, pq.FileMetaData]] = []
        if plan.mode == "full":
            replaced = self._lake_files()
        else:
            holding = self._files_holding_keys(change_schema) if cdc and keyed else []
            holding += self._files_to_widen([lake_file for lake_file, _ in holding])
            replaced = [lake_file for lake_file, _ in holding]
            replaced_row_groups = [_row_group_bytes(metadata) for _, metadata in holding]
            root = plan.lake_table_path.rstrip("/")
            lake_sources = [(f"{root}/{f.relative_path}", self._lake_file_schema(f, m, change_schema))
                            for f, m in holding]
        if cdc and keyed:
            self._keep_values_on_null(change_schema, loads, holding)
            self._newest_changes(change_schema)

        # The table's types first, then the lake files': they win ties, and every file this merge
        # writes carries them, rewritten or not (docs/merge-semantics.md, "Columns and types").
        table_columns = ("the table's column types", arrow_schema.table_schema(plan.column_types))
        schema = self._unify([table_columns] + lake_sources + [(c.path, c.schema) for c in loads + cdc],
                             "The lake file and the new changes disagree on the column's type; rebuild the "
                             "table in the new type with a full load (`dmscdc run --full-refresh`).")
        schema = pa.schema([schema.field(OP)] + [f for f in schema if f.name != OP])
        queries = self._output_queries(schema, loads, change_schema, list(zip(replaced, replaced_row_groups)),
                                       keyed, bool(cdc))
        writer = StagedWriter(self.files, plan, schema)
        written = writer.write_all(queries)
        self.warnings += [empty_partition_value_warning(c, rows) for c, rows in writer.empty_text_rows.items() if rows]
        history = None
        if plan.history is not None:
            from dmscdc_provider.engines.duckdb_history import HistoryMerge

            history = HistoryMerge(self, plan.history).run(schema, change_schema, loads, bool(cdc))
        return {
            "status": "succeeded",
            "rows_read": rows_read,
            "skipped": skipped,
            "rows_written": sum(f["rows"] for f in written),
            "files_added": written,
            "files_removed": [f.relative_path for f in replaced],
            "partition_column_types": {c: arrow_schema.hive_type(schema.field(c).type) for c in plan.partition_key},
            "warnings": self.warnings,
            **({"newest_commit_time": newest_commit_time} if newest_commit_time else {}),
            **({"history": history} if history is not None else {}),
        }

    def _newest_changes(self, change_schema: pa.Schema) -> None:
        """``changed_keys`` (every key a CDC row names) and ``incoming`` (per key the newest
        change, if it is not a delete)."""
        plan = self.plan
        keys = ", ".join(_q(k) for k in plan.primary_key)
        newest_first = ", ".join(f"{c} DESC NULLS LAST" for c in self._sequence(change_schema))
        self.db.execute(
            f"CREATE TABLE incoming AS SELECT * FROM changes "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {newest_first}) = 1 AND {_q(OP)} <> 'D'")

    def _keep_values_on_null(self, change_schema: pa.Schema, loads: list[ChangeFile],
                             holding: list[tuple[LakeFile, pq.FileMetaData]]) -> None:
        """In ``changes``, a null that an update carries in a keep-on-null column becomes the value
        the key had: the last one an earlier change of this plan gave it since its last insert or
        delete, else (no insert or delete before it in this plan) the lake's value (of the LOAD
        rows, in a full load). Inserts keep their nulls."""
        plan = self.plan
        keep = [c for c in plan.keep_on_null if c in change_schema.names and c not in plan.primary_key]
        if not keep:
            return
        keys = ", ".join(_q(k) for k in plan.primary_key)
        oldest_first = ", ".join(f"{c} ASC NULLS FIRST" for c in self._sequence(change_schema))
        op = _q(OP)
        since_insert = (f"sum(CASE WHEN {op} <> 'U' THEN 1 ELSE 0 END) OVER (PARTITION BY {keys} ORDER BY "
                        f"{oldest_first} ROWS UNBOUNDED PRECEDING)")
        filled = ", ".join(
            f"CASE WHEN {op} = 'U' THEN last_value(CASE WHEN {op} <> 'D' THEN {_q(c)} END IGNORE NULLS) OVER run "
            f"ELSE {_q(c)} END AS {_q(c)}" for c in keep)
        self.db.execute(
            f"CREATE TABLE kept AS SELECT * REPLACE ({filled}) FROM "
            f"(SELECT *, {since_insert} AS _dmscdc_since_insert FROM changes) "
            f"WINDOW run AS (PARTITION BY {keys}, _dmscdc_since_insert ORDER BY {oldest_first} "
            f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)")
        unknown = " OR ".join(f"{_q(c)} IS NULL" for c in keep)
        self.db.execute(f"CREATE TABLE keys_needing_lake AS SELECT DISTINCT {keys} FROM kept "
                        f"WHERE _dmscdc_since_insert = 0 AND {op} = 'U' AND ({unknown})")
        prior_schema = pa.schema([change_schema.field(c) for c in [*plan.primary_key, *keep]])
        if self.db.sql("SELECT count(*) FROM keys_needing_lake").fetchall()[0][0]:
            self.db.register("prior_stream", pa.RecordBatchReader.from_batches(
                prior_schema, self._prior_batches(prior_schema, loads, holding)))
            self.db.execute(f"CREATE TABLE prior AS SELECT * FROM prior_stream SEMI JOIN keys_needing_lake USING ({keys})")
            self.db.unregister("prior_stream")
        else:
            self.db.execute(f"CREATE TABLE prior AS SELECT * FROM {_empty(prior_schema)}")
        from_lake = ", ".join(
            f"CASE WHEN k._dmscdc_since_insert = 0 AND k.{op} = 'U' THEN coalesce(k.{_q(c)}, p.{_q(c)}) "
            f"ELSE k.{_q(c)} END AS {_q(c)}" for c in keep)
        on = " AND ".join(f"k.{_q(c)} = p.{_q(c)}" for c in plan.primary_key)
        self.db.execute("DROP TABLE changes")
        self.db.execute(f"CREATE TABLE changes AS SELECT k.* EXCLUDE (_dmscdc_since_insert) REPLACE ({from_lake}) "
                        f"FROM kept k LEFT JOIN prior p ON {on}")
        self.db.execute("DROP TABLE kept")

    def _prior_batches(self, schema: pa.Schema, loads: list[ChangeFile],
                       holding: list[tuple[LakeFile, pq.FileMetaData]]) -> Iterator[pa.RecordBatch]:
        """``schema``'s columns of the rows the merge starts from: the LOAD files of a full load,
        else the lake files holding changed keys."""
        if self.plan.mode == "full":
            for change in loads:
                try:
                    for batch in self._raw_batches(change, schema.names):
                        yield self._conform(batch, schema, change.path)
                except (OSError, pa.ArrowException) as error:
                    self._stream_error = self._unreadable(change.path, error)
                    raise
            return
        for lake_file, _ in holding:
            for batch in self._read_lake_table(lake_file, schema).to_batches():
                yield batch

    def _sequence(self, change_schema: pa.Schema) -> list[str]:
        """SQL expressions that order changes, most significant first: the order column where the
        files carry it, else the commit-time column (text, as CSV carries it, read as a timestamp),
        then file order and row position."""
        column = self.plan.sequence_column(change_schema.names)
        if column is None:
            return [FILE_SEQ, ROW_POS]
        expression = _q(column)
        if column != self.plan.order_column and pa.types.is_string(change_schema.field(column).type):
            expression = f"CAST({expression} AS TIMESTAMP)"
        return [expression, FILE_SEQ, ROW_POS]

    def _output_queries(self, schema: pa.Schema, loads: list[ChangeFile], change_schema: pa.Schema,
                        replaced: list[tuple[LakeFile, list[int]]], keyed: bool, has_cdc: bool) -> Iterator:
        """Base rows (the LOAD files, or what survives of the rewritten lake files) plus the
        incoming rows, sorted by partition; one query per group of about ``REWRITE_GROUP_BYTES``
        of input (whole row groups; files are split between groups), so Arrow memory stays
        bounded however many and however large the files a merge reads.

        :param replaced: the lake files to rewrite, each with its row groups' sizes.
        """
        plan = self.plan
        using = ", ".join(_q(k) for k in plan.primary_key)
        without_changed = f" ANTI JOIN changed_keys USING ({using})" if keyed and has_cdc else ""
        order = f" ORDER BY {', '.join(_partition_order(schema, plan.partition_key))}" if plan.partition_key else ""
        incoming = f"SELECT {_cast_list(schema, change_schema)} FROM incoming" if has_cdc else None
        if plan.mode == "full":
            only_inserts = "" if keyed else f" WHERE {_q(OP)} = 'I'"
            # CSV has no row groups: a CSV file is read whole (its size on disk stands for its size).
            sizes = [(c, c.row_group_bytes or [int(plan.files[c.seq].get("size") or 0)]) for c in loads]
            base = f"SELECT {_cast_list(schema, change_schema)} FROM base_rows{without_changed}{only_inserts}"

            def read(piece) -> pa.Table:
                change, row_groups = piece
                return self._read_change_table(change, change_schema, False, row_groups if change.row_group_bytes else None)
        else:
            sizes = replaced
            base = f"SELECT {', '.join(_q(f.name) for f in schema)} FROM base_rows{without_changed}"

            def read(piece) -> pa.Table:
                lake_file, row_groups = piece
                return self._read_lake_table(lake_file, schema, row_groups)
        sources = _pieces(sizes, REWRITE_GROUP_BYTES)
        groups = _groups(sources, REWRITE_GROUP_BYTES)
        # One file per partition value needs all of a partition's rows in one sorted query: with
        # several groups, a partitioned table's rows are first collected in DuckDB (which spills).
        collect = bool(plan.partition_key) and len(groups) > 1
        # The next group is read while the current one is written (both release the GIL).
        with ThreadPoolExecutor(max_workers=1) as reader:
            pending = reader.submit(_read_group, read, groups[0]) if groups else None
            for number, group in enumerate(groups, start=1):
                self.db.register("base_rows", pending.result())
                pending = reader.submit(_read_group, read, groups[number]) if number < len(groups) else None
                last = number == len(groups)
                if collect:
                    self.db.execute(f"{'CREATE TABLE base AS' if number == 1 else 'INSERT INTO base'} {base}")
                else:
                    yield self.db.sql((f"{base} UNION ALL {incoming}" if last and incoming else base) + order)
                self.db.unregister("base_rows")  # the writer has drained the query: free the group
        if collect:
            yield self.db.sql(("SELECT * FROM base" + (f" UNION ALL {incoming}" if incoming else "")) + order)
        elif incoming and not groups:
            yield self.db.sql(incoming + order)

def _row_group_bytes(metadata: pq.FileMetaData) -> list[int]:
    return [metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)]


def _pieces(files: list[tuple[object, list[int]]], budget: int) -> list[tuple[tuple[object, list[int]], int]]:
    """Each file as runs of consecutive row groups of at most ``budget`` bytes (a larger row
    group alone): ``((file, row_group_indices), bytes)``."""
    pieces = []
    for source, sizes in files:
        start = 0
        while start < len(sizes) or (start == 0 and not sizes):
            end, total = start, 0
            while end < len(sizes) and (end == start or total + sizes[end] <= budget):
                total += sizes[end]
                end += 1
            pieces.append(((source, list(range(start, end))), total))
            if not sizes:
                break
            start = end
    return pieces


def _read_group(read, group: list) -> pa.Table:
    return pa.concat_tables([read(source) for source in group])


def _groups(sources: list[tuple[object, int]], budget: int) -> list[list]:
    """Consecutive sources in groups of at most ``budget`` bytes (a bigger source alone)."""
    groups, size = [], 0
    for source, source_bytes in sources:
        if not groups or size + source_bytes > budget:
            groups.append([])
            size = 0
        groups[-1].append(source)
        size += source_bytes
    return groups


def _empty(schema: pa.Schema) -> str:
    """A SQL row source with ``schema``'s columns and no rows."""
    return "(SELECT " + ", ".join(
        f"CAST(NULL AS {arrow_schema.duckdb_type(f.type)}) AS {_q(f.name)}" for f in schema) + " LIMIT 0)"


def _positions(first: int, rows: int) -> pa.Array:
    """``first, first + 1, ...``: each row's place in its file."""
    return pc.add(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), rows)), first - 1)


def with_order_columns(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(FILE_SEQ, pa.int32())).append(pa.field(ROW_POS, pa.int64()))


def _cast_list(schema: pa.Schema, source: pa.Schema) -> str:
    """``schema``'s columns from a table of ``source``'s columns: cast, or null where missing."""
    columns = []
    for column in schema:
        sql_type = arrow_schema.duckdb_type(column.type)
        if column.name in source.names:
            same = source.field(column.name).type == column.type
            columns.append(_q(column.name) if same else f"CAST({_q(column.name)} AS {sql_type}) AS {_q(column.name)}")
        else:
            columns.append(f"CAST(NULL AS {sql_type}) AS {_q(column.name)}")
    return ", ".join(columns)


def _partition_order(schema: pa.Schema, partition_key: list[str]) -> list[str]:
    """The ORDER BY that brings each partition folder's rows together. SQL holds -0.0 equal to
    0.0, but their folders differ (``x=-0.0``, ``x=0.0``, as Spark writes them): a floating
    column's sign orders them apart."""
    order = []
    for column in partition_key:
        order.append(_q(column))
        if pa.types.is_floating(schema.field(column).type):
            order.append(f"signbit({_q(column)})")
    return order


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _comparable(value):
    """Footer statistics and DuckDB values compared alike: instants as naive UTC."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


# -- writing ------------------------------------------------------------------------------------

class StagedWriter:
    """Writes the merged rows under the staging folder the way the Spark engine does: Snappy
    Parquet, INT64 microsecond timestamps, hive partition folders, ``part-NNNNN-<uuid>.c000``
    names; a new file past ``target_file_bytes`` or ``max_records_per_file``."""

    def __init__(self, files: ArrowFiles, plan: MergePlan, schema: pa.Schema):
        self.files, self.plan = files, plan
        self.schema = schema  # Op first, partition columns included
        self.partition_key = list(plan.partition_key)
        self.file_schema = pa.schema([f for f in schema if f.name not in self.partition_key])
        self.run_id = uuid.uuid4()
        self.written: list[dict] = []
        # Rows written to the default folder from an empty string, per text partition column
        # outside the primary key (where the folder reads back as null).
        self.empty_text_rows = {c: 0 for c in self.partition_key
                                if c not in plan.primary_key and pa.types.is_string(schema.field(c).type)}
        self._writer = None
        self._sink = None
        self._current: dict | None = None
        self._folder: str | None = None
        self._bytes_per_row: float | None = None  # written Parquet bytes per row, to size files
        self._dictionary_columns: list[str] | None = None

    def write_all(self, relations: Iterator) -> list[dict]:
        """Write the rows of each query in turn; a partition's rows may come from several."""
        try:
            for relation in relations:
                for batch in relation.to_arrow_reader(ROW_GROUP_ROWS):
                    if batch.num_rows:
                        self._write(batch.cast(self.schema) if batch.schema != self.schema else batch)
        finally:
            self._close()
        return self.written

    def _write(self, batch: pa.RecordBatch) -> None:
        if not self.partition_key:
            self._write_in_folder("", batch)
            return
        for start, end in _runs(batch, self.partition_key):
            run = batch.slice(start, end - start)
            values = {c: run.column(c)[0].as_py() for c in self.partition_key}
            for column in self.empty_text_rows:
                if values[column] == "":
                    self.empty_text_rows[column] += run.num_rows
            folder = "/".join(hive_paths.folder(c, values[c], run.schema.field(c).type) for c in self.partition_key)
            self._write_in_folder(folder, run)

    def _write_in_folder(self, folder: str, batch: pa.RecordBatch) -> None:
        if folder != self._folder:
            self._close()
            self._folder = folder
        data = pa.RecordBatch.from_arrays([batch.column(f.name) for f in self.file_schema], schema=self.file_schema)
        if self._dictionary_columns is None:
            self._dictionary_columns = _repetitive_columns(data)
        if self._bytes_per_row is None and data.num_rows:
            # A first guess (Snappy Parquet is a few times smaller than Arrow), then measured.
            self._bytes_per_row = max(1.0, data.nbytes / data.num_rows / 4)
        offset = 0
        while offset < data.num_rows:
            if self._writer is None:
                self._open(folder)
            room = self.plan.max_records_per_file - self._current["rows"]
            fits = math.ceil(max(0, self.plan.target_file_bytes - self._sink.tell()) / self._bytes_per_row)
            piece = data.slice(offset, max(1, min(room, fits, data.num_rows - offset)))
            self._writer.write_batch(piece, row_group_size=ROW_GROUP_ROWS)
            self._current["rows"] += piece.num_rows
            offset += piece.num_rows
            self._bytes_per_row = max(1.0, self._sink.tell() / self._current["rows"])
            if self._current["rows"] >= self.plan.max_records_per_file or self._sink.tell() >= self.plan.target_file_bytes:
                self._close()

    def _open(self, folder: str) -> None:
        name = f"part-{len(self.written):05d}-{self.run_id}.c000.snappy.parquet"
        relative = f"{folder}/{name}" if folder else name
        self._sink = self.files.open_output(f"{self.plan.staging_path.rstrip('/')}/{relative}")
        self._writer = pq.ParquetWriter(self._sink, self.file_schema, compression="snappy",
                                        use_dictionary=self._dictionary_columns,
                                        coerce_timestamps="us", allow_truncated_timestamps=True,
                                        store_decimal_as_integer=True)
        self._current = {"path": relative, "rows": 0, "bytes": 0}

    def _close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._current["bytes"] = self._sink.tell()
        self._sink.close()
        self.written.append(self._current)
        self._writer = self._sink = self._current = None


def _repetitive_columns(batch: pa.RecordBatch, sample_rows: int = 8192) -> list[str]:
    """Columns worth dictionary encoding: few distinct values in a sample. Trying a dictionary on
    a column of unique values (ids, notes, timestamps) and falling back costs most of a write."""
    sample = batch.slice(0, sample_rows)
    if not sample.num_rows:
        return []
    return [name for name, column in zip(sample.schema.names, sample.columns)
            if pc.count_distinct(column, mode="all").as_py() <= sample.num_rows // 2]


def _runs(batch: pa.RecordBatch, columns: list[str]) -> list[tuple[int, int]]:
    """``(start, end)`` of the runs of equal partition values in a batch sorted by them."""
    rows = batch.num_rows
    if rows <= 1:
        return [(0, rows)]
    changes = None
    for column in columns:
        values = batch.column(column)
        if pa.types.is_floating(values.type):
            # By their bits: -0.0 and 0.0 have folders of their own, and a NaN equals itself.
            values = values.view(pa.int64() if values.type.bit_width == 64 else pa.int32())
        before, after = values.slice(0, rows - 1), values.slice(1)
        differs = pc.fill_null(pc.not_equal(before, after), False)
        null_edge = pc.xor(pc.is_null(before), pc.is_null(after))
        step = pc.or_(differs, null_edge)
        changes = step if changes is None else pc.or_(changes, step)
    starts = [0] + [i + 1 for i in pc.indices_nonzero(changes).to_pylist()] + [rows]
    return list(zip(starts[:-1], starts[1:]))
