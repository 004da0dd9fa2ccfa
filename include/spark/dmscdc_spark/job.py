"""The merge of one table: plan in, staged files and a result document out.

See docs/plan-and-result.md for both documents and docs/merge-semantics.md for the rules.
"""

from __future__ import annotations

import logging
import math
import re
import time
from datetime import datetime, timedelta, timezone

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dmscdc_spark import rules
from dmscdc_spark.errors import RAW_FILE_REMEDY, MergeInputError, failure_text, root_cause, unreadable_lake_file
from dmscdc_spark.io import (
    CsvFormat,
    HadoopFiles,
    StoredFile,
    file_name,
    is_csv,
    is_hidden,
    read_change_file,
    read_lake_file,
    read_lake_files,
    read_parquet_changes,
    relative_to,
    write_staged,
)
from dmscdc_spark.plan import MergePlan, empty_partition_value_warning
from dmscdc_spark.schema import TypeConflict, table_schema, unify_schemas, union_conformed

log = logging.getLogger(__name__)

# Session settings the merge relies on, set on whatever session runs it (local, Glue, EMR), so
# every run has them whatever the cluster's defaults. Partition values are read as strings and
# cast to the type the change data has (inference would turn "007" into 7); timestamps are
# written as INT64 micros, which Athena, Spectrum and DuckDB all read. Casts between timestamps
# with and without time zone happen in UTC, as in the in-process engine, never in the cluster's
# zone. Dates and timestamps before 1582-10-15 (sentinels such as 0001-01-01) are read and written
# as the proleptic Gregorian values Parquet specifies and every other reader uses, never rebased
# through the Julian calendar, and never refused.
SESSION_SETTINGS = {
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
    "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInRead": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInWrite": "CORRECTED",
}


class _ReadFilesOneByOne(Exception):
    """A one-scan read mixed files with and without an Op column (the latter hold inserts): the
    merge starts over reading each file on its own."""


# A rebuild from the LOAD files already in raw (--full-refresh) meets the old type there again;
# a DMS reload writes LOAD files in the new type, and the planner rebuilds from those alone.
TYPE_CHANGE_REMEDY = ("The column's type changed at the source: reload the table in DMS (reload-target) so "
                      "its LOAD files carry the new type, and the next run rebuilds the table from them "
                      "(changes older than the reload are not applied over it); or cast the column back in "
                      "the source. The table's state was left unchanged.")


def run_merge(spark: SparkSession, plan: dict) -> dict:
    """Merge one table's planned files into staged Parquet files and describe the outcome.

    :param spark: the session to run on (local, Glue or EMR).
    :param plan: a table plan document; see docs/plan-and-result.md.
    :return: a result document; ``status`` is ``succeeded`` or ``failed`` (bad input, with
        ``error`` naming table, file and remedy). Infrastructure failures raise.
    """
    started = time.monotonic()
    merge_plan = MergePlan.from_dict(plan)
    for key, value in SESSION_SETTINGS.items():
        spark.conf.set(key, value)
    files = HadoopFiles(spark)
    try:
        result = _TableMerge(spark, files, merge_plan).run()
    except MergeInputError as error:
        # The result says the cause in one line; the library's whole trace stays at debug level.
        log.debug("%s: %s", merge_plan.table, error, exc_info=error)
        files.delete_tree(merge_plan.staging_path)
        if merge_plan.history is not None:
            files.delete_tree(merge_plan.history["staging_path"])
        result = {"status": "failed", "error": error.to_dict()}
    result.update(
        table=merge_plan.table,
        plan_id=merge_plan.plan_id,
        attempt_id=merge_plan.attempt_id,
        mode=merge_plan.mode,
        seconds=round(time.monotonic() - started, 3),
    )
    return result


class _TableMerge:
    def __init__(self, spark: SparkSession, files: HadoopFiles, plan: MergePlan):
        self.spark, self.files, self.plan = spark, files, plan
        self.csv_format = CsvFormat(plan.csv_delimiter, plan.csv_null_value)
        self.warnings: list[str] = []
        self.one_file_per_read = False

    # -- errors -------------------------------------------------------------------------------
    def _fail(self, file: str | None, problem: str, remedy: str) -> MergeInputError:
        return MergeInputError(self.plan.table, file, problem, remedy)

    def _fail_unreadable(self, error: Exception, candidates: list[str]) -> MergeInputError | None:
        """Map a Spark failure to the DMS file it names, if it names one of ``candidates``."""
        message = failure_text(error)
        for path in candidates:
            if path.rsplit("/", 1)[-1] in message:
                return self._fail(path, f"cannot read the file ({root_cause(error)})", RAW_FILE_REMEDY)
        return None

    def _lake_file_failed(self, error: Exception) -> MergeInputError | None:
        """A lake data file the failure names (its own staged files aside): one the merge listed
        or the plan pinned and that could not be read, most often because a run that committed
        the table meanwhile removed it."""
        root = self.plan.lake_table_path.rstrip("/")
        # Spark spells the table's folder with its own scheme (``file:/``, ``s3a://``).
        bare_root = root.split("://", 1)[-1]
        staging = self.plan.staging_path.rstrip("/").split("://", 1)[-1] + "/"
        for match in re.finditer(re.escape(bare_root) + r"/([^\n]+?\.parquet)", failure_text(error)):
            if not f"{bare_root}/{match.group(1)}".startswith(staging):
                return unreadable_lake_file(self.plan.table, f"{root}/{match.group(1)}", root_cause(error))
        return None

    # -- reading ------------------------------------------------------------------------------
    def _read_changes(self) -> tuple[DataFrame | None, DataFrame | None, T.StructType]:
        """LOAD rows and CDC rows, each conformed to one schema unified over all files."""
        planned = list(enumerate(self.plan.files))
        groups = {
            "LOAD": [(seq, f["path"]) for seq, f in planned if f["kind"] == "load"],
            "CDC": [(seq, f["path"]) for seq, f in planned if f["kind"] != "load"],
        }
        frames, schemas = {}, []
        for label, files in groups.items():
            if files:
                frames[label] = self._read_group(files)
                schemas.append((f"the {label} files", frames[label].schema))
        self._require_columns(schemas)
        schema = self._unify(schemas)
        return (
            union_conformed([frames["LOAD"]], schema) if "LOAD" in frames else None,
            union_conformed([frames["CDC"]], schema) if "CDC" in frames else None,
            schema,
        )

    def _read_group(self, files: list[tuple[int, str]]) -> DataFrame:
        """Parquet files in one scan when their names are distinct; otherwise (CSV, or a type
        that widens between files, which one Parquet scan cannot merge) one read per file."""
        names = [file_name(path) for _, path in files]
        one_scan = not self.one_file_per_read and not any(is_csv(path) for _, path in files)
        if one_scan and len(set(names)) == len(names):
            full_load = all(self.plan.files[seq]["kind"] == "load" for seq, _ in files)
            try:
                frame = read_parquet_changes(self.spark, [(path, seq) for seq, path in files], full_load=full_load)
                frame.schema  # noqa: B018 - resolves the schema now, so conflicts surface here
                return frame
            except Exception:  # a type that widens, or an unreadable file: the slow path tells which
                pass
        frames = [self._read_one(path, seq) for seq, path in files]
        schema = self._unify([(path, frame.schema) for (_, path), frame in zip(files, frames)])
        return union_conformed(frames, schema)

    def _read_one(self, path: str, seq: int) -> DataFrame:
        try:
            return read_change_file(self.spark, path, seq, self.csv_format)
        except Exception as error:  # Spark raises AnalysisException / Py4JJavaError
            raise self._fail_unreadable(error, [path]) or self._fail(
                path, f"cannot read the file ({root_cause(error)})",
                "Check that the file exists and is a DMS Parquet or CSV file.",
            ) from error

    def _schemas_by_file(self, label: str) -> list[tuple[str, T.StructType]]:
        """Per-file schemas of a group (``the LOAD files``), read only to name a culprit."""
        kind = "load" if "LOAD" in label else "cdc"
        return [
            (f["path"], self._read_one(f["path"], seq).schema)
            for seq, f in enumerate(self.plan.files)
            if (f["kind"] == "load") == (kind == "load")
        ]

    def _unify(self, sources: list[tuple[str, T.StructType]], remedy: str | None = None) -> T.StructType:
        try:
            return unify_schemas(sources)
        except TypeConflict as conflict:
            source = conflict.source
            if source.startswith("the "):  # a group: find the file that brought the type
                lake_files = [(label, schema) for label, schema in sources if not label.startswith("the ")]
                files = self._schemas_by_file("the LOAD files") + self._schemas_by_file("the CDC files")
                try:
                    unify_schemas(lake_files + files)
                except TypeConflict as precise:
                    conflict = precise
            raise self._fail(
                conflict.source, str(conflict),
                remedy or TYPE_CHANGE_REMEDY,
            ) from conflict

    def _require_columns(self, schemas: list[tuple[str, T.StructType]]) -> None:
        required = {"primary key": self.plan.primary_key, "partition key": self.plan.partition_key}
        for label, columns in required.items():
            for column in columns:
                for group, schema in schemas:
                    if column in schema.fieldNames():
                        continue
                    culprits = [(p, s) for p, s in self._schemas_by_file(group) if column not in s.fieldNames()]
                    path, file_schema = culprits[0] if culprits else (group, schema)
                    raise self._fail(
                        path, f"{label} column {column!r} does not exist "
                        f"(the file has {', '.join(c for c in file_schema.fieldNames() if not c.startswith('_dmscdc'))})",
                        f"Fix the table's {label} with `dmscdc configure {self.plan.table} "
                        f"--{label.replace(' ', '-')} ...`.",
                    )

    def _count_and_bound(self, cdc: DataFrame) -> tuple[list[tuple], dict, int | None]:
        """One pass over the CDC rows: rows per (file, Op), the min/max of each key column
        (the range ``_files_holding_keys`` pushes down) and the newest commit time (microseconds)."""
        key_columns = self.plan.primary_key
        types = {field.name: field.dataType for field in cdc.schema.fields}

        def bound(extreme: str, key: str):
            # An instant comes to Python as microseconds: as a datetime it would pass through the
            # driver's local zone, and in the hour a summer-time change repeats it comes back an
            # hour off (``_files_holding_keys`` turns it back into a timestamp).
            if isinstance(types[key], T.TimestampType):
                return F.unix_micros(getattr(F, extreme)(rules.column(key)))
            return getattr(F, extreme)(rules.column(key))

        groups = cdc.groupBy(rules.FILE_SEQ, rules.OP).agg(
            F.count(F.lit(1)).alias("count"),
            *[bound("min", k).alias(f"min_{i}") for i, k in enumerate(key_columns)],
            *[bound("max", k).alias(f"max_{i}") for i, k in enumerate(key_columns)],
            self._newest_commit_micros(cdc).alias("newest_commit"),
        ).collect()
        counts = [(r[rules.FILE_SEQ], r[rules.OP], r["count"]) for r in groups]
        newest_commit = max((r["newest_commit"] for r in groups if r["newest_commit"] is not None), default=None)
        bounds = {}
        for i, key in enumerate(key_columns):
            lows = [r[f"min_{i}"] for r in groups if r[f"min_{i}"] is not None]
            highs = [r[f"max_{i}"] for r in groups if r[f"max_{i}"] is not None]
            if lows and highs:
                bounds[key] = (min(lows), max(highs))
        return counts, bounds, newest_commit

    def _newest_commit_micros(self, changes: DataFrame) -> F.Column:
        """The newest commit time among ``changes`` in microseconds since the epoch (null without
        a commit-time column); text, as CSV carries it, is read as a timestamp, as
        ``rules.with_sequence`` reads it. Microseconds for the reason ``bound`` gives."""
        column = self.plan.commit_time_column
        if not column or column not in changes.columns:
            return F.lit(None).cast(T.LongType())
        value = rules.column(column)
        if isinstance(changes.schema[column].dataType, T.StringType):
            value = F.to_timestamp(value)
        return F.max(F.unix_micros(value.cast(T.TimestampType())))

    def _load_ops_by_file(self) -> list[tuple]:
        """Rows per (LOAD file, Op): a second pass, only when a LOAD file holds more than inserts."""
        loads = [(seq, f["path"]) for seq, f in enumerate(self.plan.files) if f["kind"] == "load"]
        frames = [self._read_one(path, seq) for seq, path in loads]
        frame = union_conformed(frames, self._unify([(path, f.schema) for (_, path), f in zip(loads, frames)]))
        return [(r[rules.FILE_SEQ], r[rules.OP], r["count"])
                for r in frame.groupBy(rules.FILE_SEQ, rules.OP).count().collect()]

    def _check_ops(self, counts: list[tuple[int | None, str | None, int]]) -> dict[str, int]:
        """Rows read by Op from ``(file_seq, op, count)``; an unknown or null Op fails the table."""
        for seq, op, count in sorted(counts, key=lambda c: (c[0] is None, c[0] or 0)):
            if op is None and seq is not None:
                path = self.plan.files[seq]["path"]
                if not is_csv(path) and rules.OP not in self.spark.read.parquet(path).columns:
                    raise _ReadFilesOneByOne()
                raise self._fail(
                    path, f"Op is null in {count} row(s)",
                    "DMS writes I, U or D in every row: the file is damaged or was not written by DMS. "
                    "Replace it with a good copy (same name) and run again; the table's state was left unchanged.",
                )
            if op not in rules.KNOWN_OPS:
                raise self._fail(
                    self.plan.files[seq]["path"] if seq is not None else None,
                    f"unknown Op value {op!r} in {count} row(s)",
                    "DMS writes only I, U and D; check the endpoint settings that produced this "
                    "file, then fix or remove the file.",
                )
        by_op = {known: 0 for known in rules.KNOWN_OPS}
        for _, op, count in counts:
            by_op[op] += count
        return by_op

    def _files_holding_keys(
        self, keys: DataFrame, key_types: dict[str, T.DataType], bounds: dict
    ) -> list[StoredFile]:
        """Lake files holding any of ``keys``, with their sizes, without reading the whole table.

        Only the key columns are read, behind a min/max range filter (``bounds``: column ->
        (min, max) of the changed keys) that Spark pushes into the Parquet reader: files and
        row groups whose footer statistics lie outside the range are skipped without reading
        data. On a key column that is also a partition column the range prunes partition
        folders before any file is opened. The exact match is a semi-join. The key columns'
        schema is given, so Spark runs no job to infer it, and the files come with their
        sizes, so the table is not listed file by file from the driver.
        """
        root = self.plan.lake_table_path.rstrip("/")
        if self.plan.lake_files is None and not self.files.exists(root):
            return []
        if self.plan.lake_files == []:
            return []
        key_columns = self.plan.primary_key

        def with_file(frame: DataFrame) -> DataFrame:
            return frame.select(*[rules.column(k) for k in key_columns],
                                F.col("_metadata.file_path").alias("_dmscdc_file"),
                                F.col("_metadata.file_size").alias("_dmscdc_size"))

        def scan(reader):
            if self.plan.lake_files is not None:  # the files the table format pins (Iceberg's snapshot)
                stored = read_lake_files(reader, root, [f["path"] for f in self.plan.lake_files], with_file)
            else:
                # The table folder, not a list of its files: Spark lists one folder on the driver,
                # where a long list of paths would cost a distributed listing job.
                stored = with_file(reader.parquet(root))
            # Partition values come from folder names (strings): read them as the key's type.
            stored = conform_partition_columns(stored, key_types, self.plan.partition_key, key_columns)
            for column, (low, high) in bounds.items():
                if isinstance(key_types[column], T.TimestampType):  # microseconds (``_count_and_bound``)
                    low, high = F.timestamp_micros(F.lit(int(low))), F.timestamp_micros(F.lit(int(high)))
                stored = stored.where(rules.column(column).between(low, high))
            stored = stored.select(*[rules.column(k).cast(key_types[k]).alias(k) for k in key_columns],
                                   "_dmscdc_file", "_dmscdc_size")
            hits = stored.join(keys, on=key_columns, how="left_semi").select("_dmscdc_file", "_dmscdc_size")
            return hits.distinct().collect()

        key_schema = T.StructType([T.StructField(k, key_types[k], True) for k in key_columns])
        try:
            found = scan(self.spark.read.schema(key_schema))
        except Exception:  # a key column whose type widened since the files were written
            found = scan(self.spark.read)
        root_qualified = self.files.qualified(root)
        holding = [StoredFile(relative_to(root_qualified, uri), size) for uri, size in found]
        # Hidden files (``_``/``.`` names) are invisible to readers and are never rewritten.
        return sorted((f for f in holding if not is_hidden(f.relative_path)), key=lambda f: f.relative_path)

    def _read_lake_files(self, stored: list[StoredFile], change_schema: T.StructType,
                         root: str | None = None) -> tuple[DataFrame, str]:
        """The rows of the lake files a merge rewrites, with their partition columns; one scan
        unless their types differ (a widened column), then one read per file. ``root``: their
        table folder (default: the plan's table)."""
        root = (root or self.plan.lake_table_path).rstrip("/")
        label = f"{root}/{stored[0].relative_path}" if len(stored) == 1 else f"the lake files under {root}"
        try:
            frame = read_lake_files(self.spark.read.option("mergeSchema", True), root,
                                    [f.relative_path for f in stored])
            frame.schema  # noqa: B018 - resolves the schema now, so conflicts surface here
        except Exception:
            frames = [read_lake_file(self.spark, root, f.relative_path) for f in stored]
            schema = self._unify([(f"{root}/{f.relative_path}", frame.schema) for f, frame in zip(stored, frames)])
            frame = union_conformed(frames, schema)
        types = {field.name: field.dataType for field in change_schema.fields}
        return conform_partition_columns(frame, types, self.plan.partition_key, self.plan.primary_key), label

    # -- the merge ----------------------------------------------------------------------------
    def run(self) -> dict:
        plan = self.plan
        if plan.mode not in ("full", "incremental"):
            raise ValueError(f"plan mode must be 'full' or 'incremental', not {plan.mode!r}")
        loads, cdc, change_schema = self._read_changes()
        if plan.order_column and plan.order_column not in change_schema.fieldNames():
            self.warnings.append(
                f"ordering column {plan.order_column!r} is in none of the files; "
                + ("the commit-time column decides" if plan.sequence_column(change_schema.fieldNames()) else
                   "file order and row position decide"))
        # CDC rows are read by three queries (counts and key bounds, the key scan, the write)
        # and are not cached: they are the size of the change, so re-reading them costs less
        # than building an in-memory cache that each query would then scan.
        try:
            return self._merge(loads, cdc, change_schema)
        except _ReadFilesOneByOne:
            self.one_file_per_read, self.warnings = True, []
            return self.run()
        except Exception as error:
            if isinstance(error, MergeInputError):
                raise
            mapped = (self._fail_unreadable(error, [f["path"] for f in plan.files])
                      or self._lake_file_failed(error) or self._find_unreadable())
            if mapped is not None:
                raise mapped from error
            raise

    def _find_unreadable(self) -> MergeInputError | None:
        """The first planned file that cannot be read through, when a failure did not name it (a
        task that failed while writing names only what it wrote). Runs only after a failure."""
        for seq, planned in enumerate(self.plan.files):
            try:
                frame = read_change_file(self.spark, planned["path"], seq, self.csv_format)
                # Every column, so each value is parsed (a count alone may skip the parsing); the
                # noop sink runs the read with no shuffle and no output, so a full disk that
                # failed the merge cannot fail the probe and be blamed on a file.
                (frame.select(F.hash(*[rules.column(c) for c in frame.columns]).alias("h"))
                 .write.format("noop").mode("overwrite").save())
            except Exception as error:  # noqa: BLE001 - any failure to read names this file
                return self._fail_unreadable(error, [planned["path"]]) or self._fail(
                    planned["path"], f"cannot read the file ({root_cause(error)})",
                    RAW_FILE_REMEDY,
                )
        return None

    def _merge(self, loads: DataFrame | None, cdc: DataFrame | None, change_schema: T.StructType) -> dict:
        """Base rows (what survives of the table) plus incoming rows (the newest changes).

        A full load's LOAD files are one snapshot of the source table, in which a primary key
        is unique, so LOAD rows are not de-duplicated among themselves: only keys that CDC
        files in the same plan change are replaced. That keeps a full load as cheap as copying
        the files.
        """
        plan = self.plan
        cdc_counts, bounds, newest_commit = [], {}, None
        if cdc is not None:
            cdc_counts, bounds, newest_commit = self._count_and_bound(cdc)
            self._check_ops(cdc_counts)
        load_ops = Observation("load_ops")
        load_rows_read = loads  # before the observation, which one action reports
        if loads is not None:
            # LOAD rows are counted while they are written: no extra pass over the table.
            loads = loads.observe(load_ops, *_op_counters(), self._newest_commit_micros(loads).alias("newest_commit"))
        keyed = bool(plan.primary_key)

        incoming: list[DataFrame] = []
        changed_keys = None
        if cdc is not None and keyed:
            changed_keys = cdc.select(*[rules.column(k) for k in plan.primary_key]).distinct()
        elif cdc is not None:
            incoming.append(rules.lake_rows(rules.inserts_only(cdc)))

        base: list[DataFrame] = []
        lake_sources: list[tuple[str, T.StructType]] = []
        prior = None  # the rows the changes start from (keep-on-null columns)
        if plan.mode == "full":
            replaced = self._lake_files()
            if loads is not None:
                load_rows = rules.lake_rows(rules.inserts_only(loads)) if not keyed else rules.lake_rows(loads)
                prior = load_rows
                if changed_keys is not None:
                    load_rows = rules.without_keys(load_rows, changed_keys, plan.primary_key)
                base.append(load_rows)
        else:
            replaced = []
            if changed_keys is not None:
                key_types = {k: change_schema[k].dataType for k in plan.primary_key}
                replaced = self._files_holding_keys(changed_keys, key_types, bounds)
            replaced += self._files_to_widen(replaced)
            if replaced:
                frame, label = self._read_lake_files(replaced, change_schema)
                prior = frame
                kept = rules.without_keys(frame, changed_keys, plan.primary_key) if changed_keys is not None else frame
                base.append(kept)
                lake_sources.append((label, frame.schema))
        sequenced = sequence = None
        if cdc is not None and keyed:
            sequenced, sequence = rules.with_sequence(cdc, plan.order_column, plan.commit_time_column)
            keep = [c for c in plan.keep_on_null if c in cdc.columns and c not in plan.primary_key]
            if keep:
                prior_rows = None
                if prior is not None:
                    prior_rows = prior.select(*[rules.column(k) for k in plan.primary_key], *[rules.column(c) if c in prior.columns else
                                                                   F.lit(None).alias(c) for c in keep])
                    prior_rows = prior_rows.join(changed_keys, on=plan.primary_key, how="left_semi")
                sequenced = rules.keep_values_on_null(sequenced, plan.primary_key, sequence, keep, prior_rows)
            newest = rules.latest_change_per_key(sequenced, plan.primary_key, sequence)
            incoming.append(rules.lake_rows(rules.live_rows(newest)))

        # The table's types first, then the lake files': they win ties, and every file this merge
        # writes carries them, rewritten or not (docs/merge-semantics.md, "Columns and types").
        table_columns = ("the table's column types", table_schema(plan.column_types))
        schema = self._unify([table_columns] + lake_sources + [("the changes", change_schema)])
        schema = T.StructType([f for f in schema.fields if f.name not in rules.INTERNAL_COLUMNS])
        written = Observation("written")
        # Rows written to the default folder from an empty string, per text partition column outside
        # the primary key (where the folder reads back as null).
        empty_text = [c for c in plan.partition_key
                      if c not in plan.primary_key and isinstance(schema[c].dataType, T.StringType)]
        output = rules.lake_rows(union_conformed(base + incoming, schema)).observe(
            written, F.count(F.lit(1)).alias("rows"),
            *[F.count(F.when(rules.column(c) == "", 1)).alias(f"empty_{i}") for i, c in enumerate(empty_text)])

        input_bytes = sum(f.size for f in replaced if plan.mode != "full") + sum(
            int(f.get("size") or 0) for f in plan.files)
        file_count = output_file_count(input_bytes, plan.target_file_bytes, self.spark.sparkContext.defaultParallelism)
        write_staged(output, plan.staging_path, plan.partition_key, file_count, plan.max_records_per_file)
        observed_written = written.get
        rows_written = observed_written["rows"]
        self.warnings += [empty_partition_value_warning(c, observed_written[f"empty_{i}"])
                          for i, c in enumerate(empty_text) if observed_written[f"empty_{i}"]]
        load_counts = []
        if loads is not None:
            observed = load_ops.get
            if observed["not_inserts"]:  # LOAD rows are inserts; find what else is there, and where
                load_counts = self._load_ops_by_file()
                if observed["null_ops"] and not any(op is None for _, op, _ in load_counts):
                    raise _ReadFilesOneByOne()  # the nulls were files without an Op column
            else:
                load_counts = [(None, "I", observed["rows"])]
            newest_commit = max((t for t in (newest_commit, observed["newest_commit"]) if t is not None), default=None)
        rows_read = self._check_ops(cdc_counts + load_counts)
        skipped = {"U": 0, "D": 0} if keyed else {
            "U": sum(c for _, op, c in cdc_counts if op == "U"), "D": sum(c for _, op, c in cdc_counts if op == "D")}
        # A write of no rows leaves one empty file (Spark keeps the schema); the table needs none.
        added = self._staged_files() if rows_written else []
        history = None
        if plan.history is not None:
            from dmscdc_spark.history import HistoryMerge

            history = HistoryMerge(self, plan.history).run(
                schema, change_schema, load_rows_read if plan.mode == "full" else None, sequenced, sequence, changed_keys)
        return {
            "status": "succeeded",
            "rows_read": rows_read,
            "skipped": skipped,
            "rows_written": rows_written,
            "files_added": added,
            "files_removed": [f.relative_path for f in replaced],
            "partition_column_types": {c: schema[c].dataType.simpleString() for c in plan.partition_key},
            "warnings": self.warnings,
            **({"newest_commit_time": _iso_utc(newest_commit)} if newest_commit is not None else {}),
            **({"history": history} if history is not None else {}),
        }

    def _files_to_widen(self, rewritten: list[StoredFile]) -> list[StoredFile]:
        """The plan's ``widen_files`` the merge does not rewrite for a changed key: rewritten too."""
        wanted = set(self.plan.widen_files) - {stored.relative_path for stored in rewritten}
        if not wanted:
            return []
        return [stored for stored in self._lake_files() if stored.relative_path in wanted]

    def _lake_files(self) -> list[StoredFile]:
        """The table's current data files: those the plan pins (Iceberg), else the table folder's."""
        if self.plan.lake_files is not None:
            return [StoredFile(f["path"], int(f["size"])) for f in self.plan.lake_files]
        return self.files.list_data_files(self.plan.lake_table_path)

    def _staged_files(self) -> list[dict]:
        """Staged data files, relative to the staging folder, with their sizes."""
        return [{"path": f.relative_path, "bytes": f.size}
                for f in self.files.list_data_files(self.plan.staging_path)]


# Below this much input per file, splitting the output over more cores costs more than it saves.
MIN_BYTES_PER_OUTPUT_FILE = 8 * 1024 * 1024


def output_file_count(input_bytes: int, target_file_bytes: int, parallelism: int) -> int:
    """Files to write: about ``target_file_bytes`` each, but never fewer than the cores can
    write in parallel unless the data is too small to be worth splitting."""
    by_size = math.ceil(input_bytes / target_file_bytes)
    by_cores = min(parallelism, math.ceil(input_bytes / MIN_BYTES_PER_OUTPUT_FILE))
    count = max(1, by_size, by_cores)
    if count > parallelism:  # whole rounds of tasks: 3 tasks on 2 cores take as long as 4
        count = math.ceil(count / parallelism) * parallelism
    return count


def _iso_utc(micros: int) -> str:
    """Microseconds since the epoch as an ISO UTC time."""
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)).isoformat()


def _op_counters() -> list:
    """What the write of LOAD rows observes: rows, rows that are not inserts, rows with a null Op."""
    op = F.col(rules.OP)
    return [F.count(F.lit(1)).alias("rows"),
            F.count(F.when(op.isNull() | (op != "I"), 1)).alias("not_inserts"),
            F.count(F.when(op.isNull(), 1)).alias("null_ops")]


def conform_partition_columns(
    frame: DataFrame, types: dict[str, T.DataType], partition_key: list[str], primary_key: list[str]
) -> DataFrame:
    """Cast partition columns read from folder names (strings) to the type the data has
    (``types``: column -> type). The default folder of a text primary-key column holds the
    empty string (a key is never null; Spark reads the folder as null): it is matched and
    written back as such (dmscdc_provider's ``hive_paths.typed_value``)."""
    for column in partition_key:
        if column in frame.columns and column in types:
            value = rules.column(column).cast(types[column])
            if column in primary_key and isinstance(types[column], T.StringType):
                value = F.coalesce(value, F.lit(""))
            frame = frame.withColumn(column, value)
    return frame
