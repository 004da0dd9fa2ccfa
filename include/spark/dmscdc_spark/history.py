"""The history table of a merge in the Spark engine: the rules of docs/merge-semantics.md,
"History tables", as the in-process engine applies them (its module docstring has the walk).

Versions are timed in UTC wall-clock time (``timestamp_ntz``), as the in-process engine writes
them, so either engine continues the other's history table.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pyspark.sql import DataFrame, Observation, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dmscdc_spark import rules
from dmscdc_spark.io import StoredFile, is_hidden, read_lake_files, relative_to, write_staged
from dmscdc_spark.plan import END_AT, START_AT, HistoryColumns, HistoryPlan

_PHASE, _SEQUENCE, _TIME, _AT = HistoryColumns.PHASE, HistoryColumns.SEQUENCE, HistoryColumns.TIME, HistoryColumns.AT
_OPENS, _NEXT, _VERSION = HistoryColumns.OPENS, HistoryColumns.NEXT, HistoryColumns.VERSION


def _wall_clock(text: str | None) -> str | None:
    """An ISO instant as UTC wall-clock text, which Spark casts to ``timestamp_ntz``."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(sep=" ")


class HistoryMerge:
    """Maintains a table's history table alongside one Spark merge (``job._TableMerge``)."""

    def __init__(self, merge, history: dict):
        self.merge, self.spark, self.plan = merge, merge.spark, merge.plan
        self.section = HistoryPlan.from_dict(history)
        self.file_times = [_wall_clock(t) for t in self.section.file_times]

    # -- the history table's files ------------------------------------------------------------
    def _holding(self, changed_keys: DataFrame | None) -> list[StoredFile]:
        """History files holding a current version of a changed key (of any key: ``changed_keys`` None)."""
        if self.section.lake_files == [] or (self.section.lake_files is None and not self.merge.files.list_data_files(self.section.lake_table_path)):
            return []
        keys = self.plan.primary_key

        def with_file(frame: DataFrame) -> DataFrame:
            return frame.select(*[rules.column(k) for k in keys], END_AT, F.col("_metadata.file_path").alias("_dmscdc_file"),
                                F.col("_metadata.file_size").alias("_dmscdc_size"))

        if self.section.lake_files is not None:
            stored = read_lake_files(self.spark.read, self.section.lake_table_path, [f["path"] for f in self.section.lake_files], with_file)
        else:
            stored = with_file(self.spark.read.parquet(self.section.lake_table_path))
        current = stored.where(F.col(END_AT).isNull())
        if changed_keys is not None:
            current = current.join(changed_keys, on=keys, how="left_semi")
        found = current.select("_dmscdc_file", "_dmscdc_size").distinct().collect()
        root = self.merge.files.qualified(self.section.lake_table_path)
        holding = [StoredFile(relative_to(root, uri), size) for uri, size in found]
        return sorted((f for f in holding if not is_hidden(f.relative_path)), key=lambda f: f.relative_path)

    # -- the merge ------------------------------------------------------------------------------
    def run(self, table_schema: T.StructType, change_schema: T.StructType, loads: DataFrame | None,
            events: DataFrame | None, sequence: str | None, changed_keys: DataFrame | None) -> dict:
        """Stage the history files this merge rewrites and describe them as a result does.

        :param table_schema: the merged table's columns (``Op`` first).
        :param loads: a full load's LOAD rows (with file and row positions).
        :param events: the CDC rows, keep-on-null values filled, with their sequence column.
        :param sequence: the column of ``events`` that orders changes before file and row position.
        :param changed_keys: the keys the CDC rows name.
        """
        plan, merge = self.plan, self.merge
        full = plan.mode == "full"
        holding = self._holding(None if full else changed_keys) if (full or changed_keys is not None) else []
        times = [T.StructField(START_AT, T.TimestampNTZType(), True), T.StructField(END_AT, T.TimestampNTZType(), True)]
        sources = [("the merged table", T.StructType(list(table_schema.fields) + times))]
        rows = None
        if holding:
            frame, label = merge._read_lake_files(holding, change_schema, self.section.lake_table_path)
            rows = frame
            sources.append((label, frame.schema))
        unified = merge._unify(sources, "The history table and the table disagree on the column's type; rebuild "
                               "both with a full load (`dmscdc run --full-refresh`) after moving the history table aside.")
        data = T.StructType([f for f in unified.fields if f.name not in (START_AT, END_AT)])
        schema = T.StructType(list(data.fields) + times)
        empty = self.spark.createDataFrame([], schema)
        rows = rules_conform(rows, schema) if rows is not None else empty

        collected = self._events(data, change_schema, rows, loads, events, sequence, changed_keys, full)
        if holding or events is not None:
            versions = self._versions(collected, data)
        else:  # a first full load: one LOAD row per key (a snapshot), each its key's first version
            versions = collected.select(*[rules.column(c) for c in data.fieldNames()], F.col(_TIME).alias(START_AT),
                                        F.lit(None).cast(T.TimestampNTZType()).alias(END_AT))
        keys = plan.primary_key
        replaced_keys = collected.where(F.col(_PHASE) == 0).select(*[rules.column(k) for k in keys]).distinct()
        kept = rows.where(F.col(END_AT).isNotNull()).unionByName(
            rows.where(F.col(END_AT).isNull()).join(replaced_keys, on=keys, how="left_anti"))
        written = Observation("history_written")
        output = kept.select(*[rules.column(c) for c in schema.fieldNames()]).unionByName(
            versions.select(*[rules.column(c) for c in schema.fieldNames()])).observe(
            written, F.count(F.lit(1)).alias("rows"))
        from dmscdc_spark.job import output_file_count

        input_bytes = sum(f.size for f in holding) + sum(int(f.get("size") or 0) for f in plan.files)
        write_staged(output, self.section.staging_path, plan.partition_key,
                     output_file_count(input_bytes, plan.target_file_bytes, self.spark.sparkContext.defaultParallelism),
                     plan.max_records_per_file)
        rows_written = written.get["rows"]
        added = [{"path": f.relative_path, "bytes": f.size}
                 for f in merge.files.list_data_files(self.section.staging_path)] if rows_written else []
        return {
            "rows_written": rows_written,
            "files_added": added,
            "files_removed": [f.relative_path for f in holding],
            "partition_column_types": {c: schema[c].dataType.simpleString() for c in plan.partition_key},
        }

    def _time(self, frame: DataFrame, change_schema: T.StructType) -> F.Column:
        """An event's time: the commit-time column in UTC wall-clock time, else its file's time."""
        column = self.plan.commit_time_column
        if column and column in change_schema.fieldNames():
            data_type = change_schema[column].dataType
            value = F.to_timestamp(rules.column(column)) if isinstance(data_type, T.StringType) else rules.column(column)
            return value.cast(T.TimestampNTZType())  # the session's time zone is UTC
        return F.col("_dmscdc_file_time")

    def _with_file_times(self, frame: DataFrame) -> DataFrame:
        times = self.spark.createDataFrame(
            [(seq, text) for seq, text in enumerate(self.file_times)],
            T.StructType([T.StructField(rules.FILE_SEQ, T.IntegerType()), T.StructField("_dmscdc_file_text", T.StringType())]))
        times = times.select(rules.FILE_SEQ, F.col("_dmscdc_file_text").cast(T.TimestampNTZType()).alias("_dmscdc_file_time"))
        return frame.join(F.broadcast(times), on=rules.FILE_SEQ, how="left")

    def _events(self, data: T.StructType, change_schema: T.StructType, rows: DataFrame, loads: DataFrame | None,
                events: DataFrame | None, sequence: str | None, changed_keys: DataFrame | None, full: bool) -> DataFrame:
        """Per affected key its current version (phase 0) and this run's events (phase 1)."""
        keys = self.plan.primary_key
        extra = [_PHASE, _SEQUENCE, rules.FILE_SEQ, rules.ROW_POS, _TIME]

        sequence_type = (dict(events.dtypes).get(sequence) if events is not None and sequence else None) or "string"

        def shaped(frame: DataFrame, phase: int, sequence_column: F.Column, time: F.Column) -> DataFrame:
            frame = (frame.withColumn(_TIME, time.cast(T.TimestampNTZType()))
                     .withColumn(_SEQUENCE, sequence_column.cast(sequence_type))
                     .withColumn(_PHASE, F.lit(phase)))
            return rules_conform(frame, data, extra)

        parts = []
        if full and loads is not None:
            timed = self._with_file_times(loads)
            sequence_of_loads = rules.column(sequence) if sequence and sequence in loads.columns else F.lit(None)
            parts.append(shaped(timed, 1, sequence_of_loads, self._time(timed, change_schema)))
        if events is not None:
            timed = self._with_file_times(events)
            parts.append(shaped(timed, 1, rules.column(sequence) if sequence else F.lit(None), self._time(timed, change_schema)))
        current = rows.where(F.col(END_AT).isNull())
        if not full and changed_keys is not None:
            current = current.join(changed_keys, on=keys, how="left_semi")
        parts.append(shaped(current.withColumn(rules.FILE_SEQ, F.lit(-1)).withColumn(rules.ROW_POS, F.lit(0)),
                            0, F.lit(None), F.col(START_AT)))
        if full and loads is not None:
            # The reload is the table as it was at the load's time: a current key it lacks was deleted then.
            load_keys = parts[0].select(*[rules.column(k) for k in keys])
            earliest = parts[0].agg(F.min(_TIME)).collect()[0][0]
            fallback = next((t for t, entry in zip(self.file_times, self.plan.files) if entry["kind"] == "load"), None)
            when = F.lit(earliest.isoformat(sep=" ") if earliest is not None else fallback)
            gone = (rows.where(F.col(END_AT).isNull()).join(load_keys, on=keys, how="left_anti")
                    .withColumn(rules.OP, F.lit("D")).withColumn(rules.FILE_SEQ, F.lit(-1))
                    .withColumn(rules.ROW_POS, F.lit(-1)))
            parts.append(shaped(gone, 1, F.lit(None), when))
        result = parts[0]
        for part in parts[1:]:
            result = result.unionByName(part)
        return result

    def _versions(self, events: DataFrame, data: T.StructType) -> DataFrame:
        keys = self.plan.primary_key
        order = [_PHASE, _SEQUENCE, rules.FILE_SEQ, rules.ROW_POS]
        upto = Window.partitionBy(*[rules.column(k) for k in keys]).orderBy(*[rules.column(c).asc_nulls_first() for c in order]).rowsBetween(
            Window.unboundedPreceding, Window.currentRow)
        timed = events.withColumn(_AT, F.max(_TIME).over(upto))
        newest_at_time = Window.partitionBy(*[rules.column(k) for k in keys], _AT).orderBy(*[rules.column(c).desc_nulls_last() for c in order])
        collapsed = (timed.withColumn("_dmscdc_rank", F.row_number().over(newest_at_time))
                     .where(F.col("_dmscdc_rank") == 1).drop("_dmscdc_rank"))
        by_time = Window.partitionBy(*[rules.column(k) for k in keys]).orderBy(_AT)
        op, previous = F.col(rules.OP), F.lag(rules.OP).over(by_time)
        opens = previous.isNull() | (previous == "D")
        for column in self.section.tracked(data.fieldNames(), self.plan, rules.OP):
            opens = opens | ~F.col(column).eqNullSafe(F.lag(column).over(by_time))
        steps = (collapsed.withColumn(_OPENS, (op != "D") & opens)
                 .withColumn(_NEXT, F.lead(_AT).over(by_time))
                 .withColumn(_VERSION, F.sum(F.when(F.col(_OPENS), 1).otherwise(0)).over(
                     by_time.rowsBetween(Window.unboundedPreceding, Window.currentRow))))
        run = Window.partitionBy(*[rules.column(k) for k in keys], _VERSION)
        last = Window.partitionBy(*[rules.column(k) for k in keys], _VERSION).orderBy(F.col(_AT).desc())
        upserts = steps.where(op != "D")
        return (upserts.withColumn(START_AT, F.min(_AT).over(run))
                .withColumn("_dmscdc_last", F.row_number().over(last))
                .where(F.col("_dmscdc_last") == 1)
                .select(*data.fieldNames(), START_AT, F.col(_NEXT).alias(END_AT)))


def rules_conform(frame: DataFrame, schema: T.StructType, extra: list[str] = ()) -> DataFrame:
    """``schema``'s columns (cast, or null where missing), then the ``extra`` columns as they are."""
    columns = [F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) if f.name in frame.columns
               else F.lit(None).cast(f.dataType).alias(f.name) for f in schema.fields]
    return frame.select(*columns, *extra)
