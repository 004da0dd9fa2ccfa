"""The pre-merge input check: every planned file against the others and against the lake.

It runs once per merge attempt, before any engine reads a row or stages a file
(``runner.start_attempt``), so the command line, the Airflow merge task and every engine
(local Spark, Glue, EMR, EMR Serverless, the in-process engine) share one set of rules. It
reads Parquet footers only (schema and row-group statistics) and, of a CSV file, its header
and its key and ``Op`` columns (CSV has no footer; a CDC file is the size of the change).

A file fails its table when (docs/bad-input.md):

- it cannot be read: zero bytes, truncated, not Parquet, malformed CSV;
- two of its columns, or one of its columns and one of the table's (in the files before it, the
  lake's files or the table's Iceberg schema), have names that differ only in case (``Id`` and
  ``id``): Athena and Glue match column names case-insensitively, so one table cannot hold both;
- a primary or partition key column is missing from it;
- a column's type cannot be reconciled with the type the same column has in the files
  before it or in the lake (``wider_type``): a key that turns from int to string, text vs
  number, a decimal that cannot hold both scales within 38 digits;
- a primary key value or an ``Op`` is null (files without an ``Op`` column hold inserts);
- a partition value cannot be a folder name (``hive_paths.folder_problem``: a NUL character,
  a name longer than a file system allows, the name of Hive's null partition);
- the table's commit-time column is missing, null, not a timestamp, or text that does not
  parse as one (``YYYY-MM-DD HH:MM:SS[.ffffff]``, as DMS writes it in CSV).

What it reads it also hands on (``InputCheck``): the table's column types, which every file the
merge writes carries, and the lake files the merge widens a column of, which it rewrites
(docs/merge-semantics.md, "Columns and types").

The engines keep their own cheap checks (unknown ``Op`` values, which need the rows); the
type rule they apply when they combine files is this module's ``wider_type``
(``dmscdc_spark.schema.wider_type`` follows it for Spark types).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dmscdc_provider.arrow_fs import ArrowFiles
from dmscdc_provider.engines import arrow_schema, hive_paths
from dmscdc_provider.engines.arrow_schema import type_name as spark_name
from dmscdc_provider.plan import TablePlan
from dmscdc_provider.table_formats import LakeFile, TableFormat, TableFormatName
from dmscdc_provider.report import one_line

log = logging.getLogger(__name__)

OP = "Op"
# Lake footers are read in parallel: on S3 each is one or two ranged GETs.
FOOTER_READERS = 16
# Rows of a text partition column read at a time to check its values.
PARTITION_BATCH_ROWS = 64 * 1024

@dataclass(frozen=True)
class InputProblem(Exception):
    """A planned file the merge cannot apply exactly: table, file, column, cause and remedy."""

    table: str
    file: str | None
    column: str | None
    problem: str
    remedy: str

    def __str__(self) -> str:
        where = f" in {self.file}" if self.file else ""
        return f"{self.table}: {self.problem}{where}. {self.remedy}"

    def to_error(self) -> dict:
        """The ``error`` of a failed result (docs/plan-and-result.md)."""
        return {"table": self.table, "file": self.file, "column": self.column,
                "problem": self.problem, "remedy": self.remedy}


def as_read(data_type: pa.DataType) -> pa.DataType:
    """The type an engine reads a Parquet column as (Spark's reading of unsigned integers,
    large and dictionary-encoded strings)."""
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    if pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return pa.string()
    if pa.types.is_large_binary(data_type) or pa.types.is_binary_view(data_type):
        return pa.binary()
    unsigned = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(),
                pa.uint64(): pa.decimal128(20, 0)}
    if data_type in unsigned:
        return unsigned[data_type]
    if pa.types.is_decimal(data_type):
        return pa.decimal128(data_type.precision, data_type.scale) if data_type.precision <= 38 else data_type
    if pa.types.is_date64(data_type):
        return pa.date32()
    return data_type


def wider_type(existing: pa.DataType, incoming: pa.DataType) -> pa.DataType | None:
    """The type that holds every value of both, or None when there is none: the in-process
    engine's rule (``arrow_schema.wider_type``) on the types as the engines read them.

    :param existing: the column's type so far (the lake's first: it wins ties such as
        timestamps with or without a time zone).
    :param incoming: the column's type in the next file.
    """
    return arrow_schema.wider_type(as_read(existing), as_read(incoming))


def type_name(data_type: pa.DataType) -> str:
    data_type = as_read(data_type)
    if pa.types.is_decimal(data_type):
        return f"decimal({data_type.precision},{data_type.scale})"
    return str(data_type)


@dataclass(frozen=True)
class InputCheck:
    """What the check finds: the first problem (None when every file can be applied), the
    table's column types by Spark name, which every file the merge writes carries, and the lake
    files it rewrites because it widens one of their columns (the engine plan's ``column_types``
    and ``widen_files``)."""

    problem: InputProblem | None
    column_types: dict[str, str]
    widen_files: list[str]  # relative to the table


def check_plan_inputs(
    plan: TablePlan, table_format: "TableFormat", aws_conn_id: str | None = None, region_name: str | None = None
) -> InputCheck:
    """Check a table plan's files (and, for an incremental merge, the lake's footers, and the
    column types the table format holds the table to).

    :param table_format: the table's format: its current data files and schema rules.
    :param aws_conn_id: Airflow AWS connection for ``s3://`` files (None: boto3's chain).
    :param region_name: AWS region.
    :return: the first problem found, in plan order, or none; the table's column types and the
        lake files the merge widens a column of.
    """
    try:
        lake_files = table_format.data_files(plan) if plan.mode == "incremental" else []
        column_types, widen_files = _PlanCheck(plan, ArrowFiles(aws_conn_id, region_name), lake_files,
                                               table_format).run()
    except InputProblem as problem:
        log.warning("%s", problem)
        return InputCheck(problem, {}, [])
    return InputCheck(None, column_types, widen_files)


@dataclass(frozen=True)
class _UnfitPartitionValue:
    """A partition value no folder name can hold, and why."""

    column: str
    value: str
    problem: str


@dataclass(frozen=True)
class _FileFacts:
    """What the check learns of one file: its columns (as read), null counts of key, Op and
    commit-time columns, the first partition value no folder name can hold, and the commit times
    when the file holds them as text."""

    schema: pa.Schema
    null_counts: dict[str, int]
    unfit_partition_value: _UnfitPartitionValue | None = None
    commit_time_text: pa.ChunkedArray | None = None


_CASE_INSENSITIVE = "Athena and Glue match column names case-insensitively, so one table cannot hold both"

_REPLACE = ("Replace it with a good copy of the file DMS wrote (same name), or reload the table in "
            "DMS (reload-target), then run again; the table's state is unchanged.")


class _PlanCheck:
    def __init__(self, plan: TablePlan, files: ArrowFiles, lake_files: list[LakeFile], table_format: "TableFormat"):
        self.plan, self.files, self.lake_files, self.table_format = plan, files, lake_files, table_format
        self.lake_footers: list[tuple[str, pa.Schema]] | None = None  # ``_lake_footers``, once read
        self.key_columns = list(plan.primary_key)
        self.required = {**{c: "partition key" for c in plan.partition_key}, **{c: "primary key" for c in plan.primary_key}}

    def fail(self, file: str | None, column: str | None, problem: str, remedy: str) -> InputProblem:
        return InputProblem(self.plan.table, file, column, problem, remedy)

    # -- the check ------------------------------------------------------------------------------
    def run(self) -> tuple[dict[str, str], list[str]]:
        """Check the plan; return the table's column types (Spark names: the table format's
        schema (Iceberg), else the lake files' (an incremental merge), partition columns aside)
        and the lake files whose columns the merge widens (``_files_to_widen``)."""
        if self.plan.history is not None and not self.plan.primary_key:
            raise self.fail(None, None, "a history table needs a primary key: its versions are the versions of a key",
                            f"Set the key (`dmscdc configure {self.plan.table} --primary-key ...`) or stop keeping "
                            f"history (`--no-history`); the table's state is unchanged.")
        schemas = []
        for entry in self.plan.files:  # each file on its own first: the likeliest culprit
            path = entry["path"]
            facts = self._read(path)
            self._refuse_case_twins(path, facts.schema)
            self._refuse_time_of_day(path, facts.schema)
            self._require_columns(path, facts.schema)
            self._refuse_nulls(path, facts)
            self._refuse_unfit_partition_value(path, facts.unfit_partition_value)
            self._check_commit_times(path, facts)
            schemas.append((path, facts.schema))
        # Then together, in plan order, after the lake (an incremental merge keeps its files).
        seen = self._lake_columns() if self.plan.mode == "incremental" else {}
        fixed = self.table_format.column_types(self.plan)
        table_types = {**{name: data_type for name, (data_type, _) in seen.items()}, **fixed}
        # The table's column names so far by their lowercase spelling: the table format's schema,
        # the lake files', then each planned file's in plan order.
        spelled = {name.lower(): (name, f"the table's {self.table_format.name.value} schema") for name in fixed}
        spelled.update({name.lower(): (name, source) for name, (_, source) in seen.items()})
        for path, schema in schemas:
            for field in schema:
                self._refuse_other_spelling(spelled, path, field.name)
                conflict = _widen(seen, field.name, field.type, path)
                if conflict is not None:
                    raise self._type_conflict(path, field.name, *conflict, field.type)
                if field.name in fixed:
                    self._check_format_allows(path, field.name, fixed[field.name], field.type)
        self._refuse_unknown_setting_columns([name for _, schema in schemas for name in schema.names],
                                             [*seen, *fixed])
        column_types = {name: spark_name(arrow_schema.spark_view(data_type)) for name, data_type in table_types.items()}
        return column_types, ([] if fixed else self._files_to_widen(seen))

    def _refuse_unknown_setting_columns(self, file_columns: list[str], table_columns: list[str]) -> None:
        """A column setting naming a column neither the planned files nor the lake table have is a
        misspelling that would otherwise change nothing, silently: the table fails instead."""
        settings = [("--keep-on-null", self.plan.keep_on_null)]
        if self.plan.history is not None:
            settings += [("--history-columns", self.plan.history.get("columns") or []),
                         ("--history-except", self.plan.history.get("except") or [])]
        known = {*file_columns, *table_columns, *self.plan.partition_key}
        for option, names in settings:
            unknown = [name for name in names if name not in known]
            if unknown and self.plan.mode != "incremental":
                # A reload's lake columns were not read yet: only a setting that needs them reads them.
                known.update(name for _, schema in self._lake_footers() for name in schema.names)
                unknown = [name for name in unknown if name not in known]
            if unknown:
                files_have = ", ".join(dict.fromkeys(file_columns))
                raise self.fail(
                    None, unknown[0],
                    f"{option} names column(s) {', '.join(map(repr, unknown))} that neither the planned files nor "
                    f"the lake table have (the files have {files_have})",
                    f"Fix the setting with `dmscdc configure {self.plan.table} {option} ...` (spelled as the files "
                    f"spell the columns), then run again; the table's state is unchanged.")

    def _files_to_widen(self, merged: dict[str, tuple[pa.DataType, str]]) -> list[str]:
        """Lake files with a column of another type than the merge writes (int where it writes
        bigint): rewritten by the merge, so every file of a Parquet folder has one type per
        column, as readers without schema merging (Spark's default) need. Iceberg needs none:
        its readers read older files through the table's promoted schema."""
        written = {name: arrow_schema.spark_view(data_type) for name, (data_type, _) in merged.items()}
        prefix = self.plan.lake_table_path.rstrip("/") + "/"
        return [label[len(prefix):] for label, schema in self.lake_footers or []
                if any(field.name in written and arrow_schema.spark_view(as_read(field.type)) != written[field.name]
                       for field in schema if field.name not in self.plan.partition_key)]

    def _check_format_allows(self, path: str, column: str, current: pa.DataType, incoming: pa.DataType) -> None:
        """The type the merge writes must be one the table format can give the column."""
        widened = wider_type(current, incoming)
        if widened is not None and self.table_format.allows_type_change(current, widened):
            return
        # No type holds both (text and number): in a full load, which reads no lake file, only
        # the schema can tell.
        target = spark_name(widened if widened is not None else arrow_schema.spark_view(as_read(incoming)))
        raise self.fail(
            path, column,
            f"column {column!r} is {spark_name(incoming)} here but {spark_name(current)} in the table's "
            f"{self.table_format.name.value} schema, which cannot change a column from {spark_name(current)} to "
            f"{target} (Iceberg promotes int to bigint, float to double and a decimal's precision only)",
            "Cast the column in the source (a DMS transformation rule), or replace the table: drop it from the "
            "Iceberg catalog and rebuild it with `dmscdc run --full-refresh`. The table's state is unchanged.")

    def _type_conflict(self, source, column, existing, where, incoming) -> InputProblem:
        role = f"{self.required[column]} column" if column in self.required else "column"
        cause = (f"{role} {column!r} is {type_name(incoming)} here but {type_name(existing)} in {where}")
        if pa.types.is_decimal(as_read(existing)) and pa.types.is_decimal(as_read(incoming)):
            cause += (f"; no decimal holds both within {arrow_schema.MAX_DECIMAL_PRECISION} digits, so values would "
                      "be lost")
        return self.fail(
            source, column, cause,
            "If the source column's type changed, reload the table in DMS (reload-target): the next "
            "run rebuilds the table from the new LOAD files and skips the CDC files the reload "
            "supersedes, this one included. If this file is wrong, replace it with a corrected copy "
            "(same name). The table's state is unchanged.",
        )

    def _refuse_case_twins(self, path: str, schema: pa.Schema) -> None:
        """Two columns of one file whose names differ only in case."""
        first_spelling: dict[str, str] = {}
        for name in schema.names:
            other = first_spelling.setdefault(name.lower(), name)
            if other != name:
                raise self.fail(
                    path, name, f"columns {other!r} and {name!r} differ only in case; {_CASE_INSENSITIVE}",
                    "Drop or rename one of them at the source or with a DMS transformation rule (remove-column, "
                    "rename), then replace this file with a corrected copy (same name) or reload the table in DMS "
                    "(reload-target); the table's state is unchanged.")

    def _refuse_time_of_day(self, path: str, schema: pa.Schema) -> None:
        """A time-of-day column (Parquet TIME, Arrow time32/time64): Spark 3.5 cannot read one and
        Athena has no such column type, so no engine could merge it the same way."""
        for field in schema:
            if pa.types.is_time(field.type):
                raise self.fail(
                    path, field.name, f"column {field.name!r} is a time of day ({field.type}), which Spark and "
                    "Athena cannot read from Parquet",
                    "Have DMS write it as text with a transformation rule (change-data-type to string) and reload "
                    "the table in DMS (reload-target), or replace this file with a corrected copy (same name); "
                    "the table's state is unchanged.")

    def _refuse_other_spelling(self, spelled: dict[str, tuple[str, str]], path: str, column: str) -> None:
        """A file's column spelled otherwise than the same column before it (lake or earlier file)."""
        known, source = spelled.setdefault(column.lower(), (column, path))
        if known == column:
            return
        iceberg = self.table_format.name == TableFormatName.ICEBERG
        raise self.fail(
            path, column,
            f"column {column!r} here and column {known!r} in {source} differ only in case; {_CASE_INSENSITIVE}",
            f"Spell the column as before with a DMS transformation rule (rename, or convert-lowercase), and "
            f"replace this file with a corrected copy (same name); or, if the source renamed the column, reload "
            f"the table in DMS (reload-target) so the next run rebuilds it from LOAD files with the new name"
            + (" (drop the table from the Iceberg catalog first: its schema keeps old columns)" if iceberg else "")
            + ". The table's state is unchanged.")

    def _require_columns(self, path: str, schema: pa.Schema) -> None:
        for column, role in self.required.items():
            if column not in schema.names:
                other = next((name for name in schema.names if name.lower() == column.lower()), None)
                if other is not None:
                    raise self.fail(
                        path, column,
                        f"{role} column {column!r} does not exist; the file has {other!r}, which differs only in "
                        f"case ({_CASE_INSENSITIVE})",
                        f"Spell the column as before with a DMS transformation rule (rename, or convert-lowercase) "
                        f"and replace this file with a corrected copy (same name); or configure the new spelling "
                        f"(`dmscdc configure {self.plan.table} --{role.replace(' ', '-')} ...`) and reload the table "
                        f"in DMS (reload-target). The table's state is unchanged.")
                raise self.fail(
                    path, column,
                    f"{role} column {column!r} does not exist (the file has {', '.join(schema.names)})",
                    f"Fix the table's {role} with `dmscdc configure {self.plan.table} "
                    f"--{role.replace(' ', '-')} ...`, then run again; the table's state is unchanged.",
                )

    def _refuse_nulls(self, path: str, facts: _FileFacts) -> None:
        for column in self.key_columns:
            if facts.null_counts.get(column):
                raise self.fail(
                    path, column,
                    f"primary key column {column!r} is null in {facts.null_counts[column]} row(s); "
                    "the lake keeps one row per key and a null is no key",
                    f"DMS output never has a null in the source's primary key: if {column!r} is not "
                    f"it, set the right key (`dmscdc configure {self.plan.table} --primary-key ...`) "
                    f"and rebuild the table (`dmscdc run --full-refresh {self.plan.table}`); otherwise "
                    f"the file is damaged. {_REPLACE}",
                )
        if facts.null_counts.get(OP):
            raise self.fail(
                path, OP, f"Op is null in {facts.null_counts[OP]} row(s); DMS writes I, U or D in every row",
                f"The file is damaged or was not written by DMS. {_REPLACE}",
            )

    def _refuse_unfit_partition_value(self, path: str, unfit: _UnfitPartitionValue | None) -> None:
        if unfit is None:
            return
        shown = repr(unfit.value[:40]) + (f" ({len(unfit.value)} characters)" if len(unfit.value) > 40 else "")
        raise self.fail(
            path, unfit.column, f"partition column {unfit.column!r} has the value {shown}, which {unfit.problem}",
            "Map such values to ones a folder can hold with a DMS transformation rule on the column and reload the "
            f"table in DMS (reload-target), or partition the table by another column (`dmscdc configure "
            f"{self.plan.table} --partition-key ...`, then `dmscdc run --full-refresh {self.plan.table}`); the "
            "table's state is unchanged.",
        )

    def _check_commit_times(self, path: str, facts: _FileFacts) -> None:
        """The commit-time column orders changes and times history versions: every row needs one."""
        column = self.plan.commit_time_column
        if not column:
            return
        remedy = (f"Check the DMS endpoint's TimestampColumnName and the table's setting (`dmscdc configure "
                  f"{self.plan.table} --commit-time-column ...`, or --no-commit-time-column); if the file is "
                  f"damaged: {_REPLACE}")
        if column not in facts.schema.names:
            raise self.fail(path, column, f"commit-time column {column!r} does not exist (the file has "
                            f"{', '.join(facts.schema.names)})", remedy)
        data_type = as_read(facts.schema.field(column).type)
        if not (pa.types.is_timestamp(data_type) or pa.types.is_date(data_type) or pa.types.is_string(data_type)):
            raise self.fail(path, column, f"commit-time column {column!r} is {type_name(data_type)}, not a timestamp",
                            remedy)
        if facts.null_counts.get(column):
            raise self.fail(path, column, f"commit-time column {column!r} is null in "
                            f"{facts.null_counts[column]} row(s); changes without a commit time cannot be ordered",
                            remedy)
        if facts.commit_time_text is not None:
            bad = _unparsable_times(facts.commit_time_text)
            if bad is not None:
                raise self.fail(path, column, f"commit-time column {column!r} holds {bad[1]} value(s) that are not "
                                f"a timestamp, such as {bad[0]!r}", remedy)

    # -- the lake -------------------------------------------------------------------------------
    def _lake_footers(self) -> list[tuple[str, pa.Schema]]:
        """(path, schema) of each readable visible lake file, read once."""
        if self.lake_footers is not None:
            return self.lake_footers
        uri_prefix = self.plan.lake_table_path.rstrip("/") + "/"
        lake_files = [uri_prefix + lake_file.relative_path for lake_file in self.lake_files]

        def footer(label: str) -> tuple[str, pa.Schema] | None:
            try:
                with self.files.open_input(label) as handle:
                    return label, pq.ParquetFile(handle).schema_arrow
            except (pa.ArrowException, OSError) as error:
                # Not input: a merge whose changes never touch the file never opens it either
                # (partition pruning, footer ranges); one that does reports it.
                log.warning("%s: cannot read the footer of lake file %s (%s); its types are not checked",
                            self.plan.table, label, _first_line(error))
                return None

        self.lake_footers = []
        if lake_files:
            with ThreadPoolExecutor(min(FOOTER_READERS, len(lake_files))) as pool:
                self.lake_footers = [read for read in pool.map(footer, lake_files) if read is not None]
        return self.lake_footers

    def _lake_columns(self) -> dict[str, tuple[pa.DataType, str]]:
        """Column types over the lake table's visible files (footers), partition columns aside:
        they live in folder names, not in the files."""
        seen: dict[str, tuple[pa.DataType, str]] = {}
        partition = set(self.plan.partition_key)
        for label, schema in self._lake_footers():
            for column in self.key_columns:
                if column not in partition and column not in schema.names:
                    raise self.fail(label, column, f"primary key column {column!r} is missing from this lake file",
                                    self._rebuild_remedy())
            for field in schema:
                conflict = None if field.name in partition else _widen(seen, field.name, field.type, label)
                if conflict is not None:
                    raise self.fail(
                        label, field.name,
                        f"the lake's files disagree on column {field.name!r}: {type_name(field.type)} here, "
                        f"{type_name(conflict[0])} in {conflict[1]}", self._rebuild_remedy())
        return seen

    def _rebuild_remedy(self) -> str:
        return (f"Rebuild the table from its LOAD files: `dmscdc run --full-refresh {self.plan.table}` "
                "(the DAG's full_refresh param); the table's state is unchanged.")

    # -- reading one planned file ---------------------------------------------------------------
    def _read(self, path: str) -> _FileFacts:
        filesystem, local = self.files.resolve(path)
        try:
            if path.endswith((".csv", ".csv.gz")):
                return self._read_csv(filesystem, local)
            return self._read_parquet(filesystem, local)
        except InputProblem:
            raise
        except FileNotFoundError as error:
            # Listed at planning, gone now: no copy can fix a pinned plan that names it.
            raise self.fail(path, None, f"the file was removed from raw after planning ({_first_line(error)})",
                            "Plan again from raw as it is now: run again (in Airflow, clear the run's plan task "
                            "with downstream); the table's state is unchanged.") from error
        except (pa.ArrowException, OSError) as error:
            cause = _first_line(error)
            if not path.endswith((".csv", ".csv.gz")) and "magic bytes not found" in cause:
                # Arrow's words for a truncated file or one of another format, said plainly first.
                cause = f"it is not a Parquet file, or a truncated one: {cause}"
            raise self.fail(path, None, f"cannot read the file ({cause})", _REPLACE) from error

    def _checked_columns(self, names: list[str]) -> list[str]:
        commit_time = [self.plan.commit_time_column] if self.plan.commit_time_column else []
        return [c for c in [*self.key_columns, OP, *commit_time] if c in names]

    def _text_partition_columns(self, schema: pa.Schema) -> list[str]:
        """Partition columns whose values are text (a number, date or time always fits a folder)."""
        return [c for c in self.plan.partition_key
                if c in schema.names and pa.types.is_string(as_read(schema.field(c).type))]

    def _read_parquet(self, filesystem: pafs.FileSystem, path: str) -> _FileFacts:
        with filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            checked = self._checked_columns(schema.names)
            counts, unknown = _footer_null_counts(parquet.metadata, checked)
            if unknown:  # a writer that left the statistics out: read just those columns
                table = parquet.read(columns=unknown)
                counts.update({c: table.column(c).null_count for c in unknown})
            # One column at a time, a batch at a time: a LOAD file can be large.
            unfit = _first_unfit_partition_value(
                (column, batch.column(0)) for column in self._text_partition_columns(schema)
                for batch in parquet.iter_batches(columns=[column], batch_size=PARTITION_BATCH_ROWS))
            commit_time = self.plan.commit_time_column
            text = None
            if commit_time in schema.names and pa.types.is_string(as_read(schema.field(commit_time).type)):
                text = parquet.read(columns=[commit_time]).column(commit_time)
        return _FileFacts(schema, counts, unfit, text)

    def _read_csv(self, filesystem: pafs.FileSystem, path: str) -> _FileFacts:
        parse = pa_csv.ParseOptions(delimiter=self.plan.csv_delimiter, newlines_in_values=True)
        with filesystem.open_input_stream(path) as stream:
            names = pa_csv.open_csv(stream, parse_options=parse).schema.names
        checked = self._checked_columns(names)
        # CSV carries no types: every column is text, as every engine reads it.
        schema = pa.schema([(name, pa.string()) for name in names])
        text_columns = self._text_partition_columns(schema)
        convert = pa_csv.ConvertOptions(
            include_columns=list(dict.fromkeys(checked + text_columns)) or names[:1],
            column_types={c: pa.string() for c in names},
            null_values=[self.plan.csv_null_value], strings_can_be_null=True,
            quoted_strings_can_be_null=False)
        with filesystem.open_input_stream(path) as stream:
            table = pa_csv.read_csv(stream, parse_options=parse, convert_options=convert)
        unfit = _first_unfit_partition_value((c, chunk) for c in text_columns for chunk in table.column(c).chunks)
        commit_time = self.plan.commit_time_column
        text = table.column(commit_time) if commit_time in checked else None
        return _FileFacts(schema, {c: table.column(c).null_count for c in checked}, unfit, text)


def _first_unfit_partition_value(columns) -> _UnfitPartitionValue | None:
    """The first value no folder name can hold among ``(column, text array)`` pairs. Arrow picks
    the few values that might not fit (a NUL, the null folder's name, or long enough that escaping,
    which at most triples a byte, could pass the limit), in one pass with no hashing;
    ``hive_paths.folder_problem`` judges those."""
    for column, values in columns:
        values = values.cast(pa.string())
        room = hive_paths.MAX_FOLDER_NAME_BYTES - len(f"{hive_paths.escape(column)}=".encode("utf-8"))
        suspect = pc.or_(pc.or_(pc.match_substring(values, "\x00"),
                                pc.equal(values, hive_paths.DEFAULT_PARTITION_NAME)),
                         pc.greater(pc.binary_length(values), room // 3))
        for value in pc.unique(values.filter(suspect)).to_pylist():
            problem = hive_paths.folder_problem(column, value)
            if problem is not None:
                return _UnfitPartitionValue(column, value, problem)
    return None


def _unparsable_times(values: pa.ChunkedArray) -> tuple[str, int] | None:
    """The first text that is not a timestamp as the engines read one, and how many there are."""
    import duckdb

    with duckdb.connect() as connection:
        connection.register("times", pa.table({"t": values}))
        first, count = connection.execute(
            "SELECT any_value(t), count(*) FROM times WHERE t IS NOT NULL AND TRY_CAST(t AS TIMESTAMP) IS NULL"
        ).fetchone()
    return (first, count) if count else None


def _widen(seen: dict[str, tuple[pa.DataType, str]], column: str, incoming: pa.DataType,
           source: str) -> tuple[pa.DataType, str] | None:
    """Widen ``seen[column]`` (type so far, file that brought it) by ``incoming``; returns the
    type so far and its file when no type holds both (``seen`` is then unchanged)."""
    known = seen.get(column)
    if known is None:
        seen[column] = (as_read(incoming), source)
        return None
    widened = wider_type(known[0], incoming)
    if widened is None:
        return known
    seen[column] = (widened, known[1])
    return None


def _footer_null_counts(metadata: pq.FileMetaData, columns: list[str]) -> tuple[dict[str, int], list[str]]:
    """Null counts of top-level ``columns`` from row-group statistics, and the columns whose
    statistics lack a null count."""
    index = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    counts: dict[str, int] = {}
    unknown = []
    for column in columns:
        if column not in index:
            unknown.append(column)
            continue
        total = 0
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(index[column]).statistics
            if statistics is None or not statistics.has_null_count:
                unknown.append(column)
                break
            total += statistics.null_count
        else:
            counts[column] = total
    return counts, unknown


def _first_line(error: BaseException) -> str:
    """The error's cause in one line, kept short enough for a table's failure block."""
    return one_line(error)[:300]
