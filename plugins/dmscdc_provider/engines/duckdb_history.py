"""The history table of a merge in the in-process engine (docs/merge-semantics.md, "History tables";
``dmscdc_spark.history`` applies the same rules in the Spark engine).

The history table ``<table>_history`` holds every version of each row with ``__start_at`` and
``__end_at`` (null: the current version). A merge rewrites only the history files that hold a
current version of a key it changes (of every key, on a full load: a reload compares the whole
table); closed versions in those files are copied as they are, and no other file is touched.

Per key, the merge lines up the events it knows, oldest first: the current version (if any),
then the run's changes (on a full load, the LOAD row at the load's time, or a delete at that
time for a current key the load no longer has). Each event has a time (the commit-time column,
else the time of its file); times never go backwards along the sequence (an earlier time takes
the one before it), and of several events of one key at one time the last stands for them all.
Then, walking the events: an insert or update opens a version unless the key has one whose
tracked columns are equal (then the current version takes the new values in place); opening a
version, or a delete, closes the current one at the event's time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq

from dmscdc_provider.engines import arrow_schema
from dmscdc_provider.table_formats import LakeFile
from dmscdc_spark.plan import END_AT, START_AT, HistoryColumns, HistoryPlan

VERSION_TIME = pa.timestamp("us")  # UTC wall-clock time, as the Spark engine's timestamp_ntz
_PHASE, _TIME, _AT = HistoryColumns.PHASE, HistoryColumns.TIME, HistoryColumns.AT
_OPENS, _NEXT, _VERSION = HistoryColumns.OPENS, HistoryColumns.NEXT, HistoryColumns.VERSION


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _utc(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    moment = dt.datetime.fromisoformat(text)
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


class HistoryMerge:
    """Maintains a table's history table alongside one merge (``_TableMerge``), on its connection.

    :param merge: the table's merge: its connection, files, plan and helpers.
    :param history: the engine plan's ``history`` section (docs/plan-and-result.md).
    """

    def __init__(self, merge, history: dict):
        self.merge, self.db, self.plan = merge, merge.db, merge.plan
        self.section = HistoryPlan.from_dict(history)
        self.file_times = [_utc(t) for t in self.section.file_times]

    # -- the history table's files ------------------------------------------------------------
    def _lake_files(self) -> list[LakeFile]:
        if self.section.lake_files is not None:
            return [LakeFile(f["path"], int(f["size"])) for f in self.section.lake_files]
        return self.merge.files.list_data_files(self.section.lake_table_path)

    def _files_with_current_versions(self, lake_files: list[LakeFile]) -> list[tuple[LakeFile, pq.FileMetaData]]:
        """Every file with a row group whose footer does not rule out a current version."""
        footers = self.merge._footers(lake_files, self.section.lake_table_path)
        holding = []
        for lake_file, metadata in zip(lake_files, footers):
            columns = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
            for index in range(metadata.num_row_groups):
                stats = metadata.row_group(index).column(columns[END_AT]).statistics if END_AT in columns else None
                if stats is None or not stats.has_null_count or stats.null_count > 0:
                    holding.append((lake_file, metadata))
                    break
        return holding

    # -- the merge ------------------------------------------------------------------------------
    def run(self, table_schema: pa.Schema, change_schema: pa.Schema, loads: list, has_cdc: bool) -> dict:
        """Stage the history files this merge rewrites and describe them as a result does.

        :param table_schema: the merged table's columns (``Op`` first).
        :param change_schema: the planned files' columns (as the ``changes`` table holds them).
        :param loads: the LOAD files of a full load.
        :param has_cdc: whether the ``changes`` and ``changed_keys`` tables exist.
        """
        plan, merge = self.plan, self.merge
        full = plan.mode == "full"
        lake_files = self._lake_files()
        if full:
            holding = self._files_with_current_versions(lake_files) if lake_files else []
        elif has_cdc:
            holding = merge._files_holding_keys(change_schema, self.section.lake_table_path, lake_files, open_only=END_AT)
        else:
            holding = []
        versions_schema = pa.schema(list(table_schema) + [pa.field(START_AT, VERSION_TIME), pa.field(END_AT, VERSION_TIME)])
        sources = [(f"{self.section.lake_table_path}/{f.relative_path}", merge._lake_file_schema(f, m, change_schema)) for f, m in holding]
        schema = merge._unify(
            [("the merged table", versions_schema)] + sources,
            "The history table and the table disagree on the column's type; rebuild both with a full load "
            "(`dmscdc run --full-refresh`) after moving the history table aside.")
        data = pa.schema([f for f in schema if f.name not in (START_AT, END_AT)])
        schema = pa.schema(list(data) + [pa.field(START_AT, VERSION_TIME), pa.field(END_AT, VERSION_TIME)])
        self._read_history_rows(holding, schema)
        self._collect_events(data, change_schema, loads, has_cdc, full)
        if holding or has_cdc:
            self._versions(data, change_schema)
        else:  # a first full load: one LOAD row per key (a snapshot), each its key's first version
            self.db.execute(f"CREATE TABLE history_versions AS SELECT {', '.join(_q(f.name) for f in data)}, "
                            f"{_TIME} AS {_q(START_AT)}, CAST(NULL AS TIMESTAMP) AS {_q(END_AT)} FROM history_events")
        names = ", ".join(_q(f.name) for f in schema)
        keys = self.plan.primary_key
        on = " AND ".join(f"h.{_q(k)} = c.{_q(k)}" for k in keys)
        # By partition (one file per partition value), then by key and time: a key's versions sit
        # together and files cover narrow key ranges, so the next merge's footers rule most out.
        order = " ORDER BY " + ", ".join(_q(c) for c in [*plan.partition_key, *keys, START_AT])
        query = self.db.sql(
            f"SELECT {names} FROM (SELECT h.* FROM history_rows h ANTI JOIN "
            f"(SELECT DISTINCT {', '.join(_q(k) for k in keys)} FROM history_events WHERE {_PHASE} = 0) c "
            f"ON {on} AND h.{_q(END_AT)} IS NULL) "
            f"UNION ALL SELECT {names} FROM history_versions{order}")
        from dmscdc_provider.engines.duckdb import StagedWriter

        written = StagedWriter(merge.files, replace(plan, staging_path=self.section.staging_path), schema).write_all([query])
        return {
            "rows_written": sum(f["rows"] for f in written),
            "files_added": written,
            "files_removed": [f.relative_path for f, _ in holding],
            "partition_column_types": {c: arrow_schema.hive_type(schema.field(c).type) for c in plan.partition_key},
        }

    def _read_history_rows(self, holding: list[tuple[LakeFile, pq.FileMetaData]], schema: pa.Schema) -> None:
        """The rows of the history files this merge rewrites (closed versions are copied)."""
        from dmscdc_provider.engines.duckdb import _empty

        self.db.execute(f"CREATE TABLE history_rows AS SELECT * FROM {_empty(schema)}")
        for lake_file, _ in holding:
            self.db.register("history_file", self.merge._read_lake_table(lake_file, schema, None, self.section.lake_table_path))
            self.db.execute("INSERT INTO history_rows SELECT * FROM history_file")
            self.db.unregister("history_file")

    def _time(self, change_schema: pa.Schema) -> str:
        """SQL for an event's time: the commit-time column's value as a UTC timestamp, else its file's time."""
        column = self.plan.commit_time_column
        if not column or column not in change_schema.names:
            return "f._dmscdc_file_time"
        data_type = change_schema.field(column).type
        if pa.types.is_timestamp(data_type) and data_type.tz:
            return f"timezone('UTC', e.{_q(column)})"
        return f"CAST(e.{_q(column)} AS TIMESTAMP)"

    def _collect_events(self, data: pa.Schema, change_schema: pa.Schema, loads: list, has_cdc: bool,
                        full: bool) -> None:
        """``history_events``: per affected key its current version (phase 0) and this run's events."""
        from dmscdc_provider.engines.duckdb import FILE_SEQ, OP, ROW_POS, _cast_list, _empty

        keys = ", ".join(_q(k) for k in self.plan.primary_key)
        times = pa.table({"_dmscdc_file_seq": pa.array(range(len(self.file_times)), pa.int32()),
                          "_dmscdc_file_time": pa.array(self.file_times, VERSION_TIME)})
        self.db.register("history_file_times", times)
        columns = ", ".join(_q(f.name) for f in data)
        self.db.execute(
            f"CREATE TABLE history_events AS SELECT {columns}, 0 AS {_PHASE}, 0 AS {FILE_SEQ}, "
            f"CAST(0 AS BIGINT) AS {ROW_POS}, CAST(NULL AS TIMESTAMP) AS {_TIME} FROM {_empty(data)}")
        def add_events(source: str) -> None:
            timed = (f"SELECT e.*, {self._time(change_schema)} AS {_TIME} FROM {source} e "
                     f"LEFT JOIN history_file_times f ON f._dmscdc_file_seq = e.{FILE_SEQ}")
            self.db.execute(f"INSERT INTO history_events SELECT {_cast_list(data, change_schema)}, 1, {FILE_SEQ}, "
                            f"{ROW_POS}, {_TIME} FROM ({timed})")

        if full:
            for change in loads:
                self.db.register("load_rows", self.merge._read_change_table(change, change_schema, True))
                add_events("load_rows")
                self.db.unregister("load_rows")
        if has_cdc:
            add_events("changes")
        current = (f"SELECT {columns}, 0 AS {_PHASE}, -1 AS {FILE_SEQ}, 0 AS {ROW_POS}, {_q(START_AT)} AS {_TIME} "
                   f"FROM history_rows WHERE {_q(END_AT)} IS NULL")
        if not full:
            current = (f"SELECT * FROM ({current}) h SEMI JOIN changed_keys USING ({keys})")
        self.db.execute(f"INSERT INTO history_events {current}")
        if full:
            # The reload is the table as it was at the load's time (its earliest commit time, else its
            # earliest LOAD file's): a current key it lacks was deleted then.
            load_time = next((t for t, entry in zip(self.file_times, self.plan.files) if entry["kind"] == "load"), None)
            gone = ", ".join(f"'D' AS {_q(OP)}" if f.name == OP else _q(f.name) for f in data)
            loaded = f"{_PHASE} = 1 AND {FILE_SEQ} >= 0 AND {FILE_SEQ} < {len(loads)}"
            self.db.execute(
                f"INSERT INTO history_events SELECT {gone}, 1, -1, -1, coalesce((SELECT min({_TIME}) FROM "
                f"history_events WHERE {loaded}), $load_time) FROM "
                f"(SELECT * FROM history_rows WHERE {_q(END_AT)} IS NULL) h ANTI JOIN "
                f"(SELECT {keys} FROM history_events WHERE {loaded}) l USING ({keys})", {"load_time": load_time})
        self.db.unregister("history_file_times")

    def _versions(self, data: pa.Schema, change_schema: pa.Schema) -> None:
        """``history_versions``: each affected key's versions from its current one on."""
        from dmscdc_provider.engines.duckdb import OP

        keys = ", ".join(_q(k) for k in self.plan.primary_key)
        sequence = [_PHASE] + self.merge._sequence(change_schema)
        oldest_first = ", ".join(f"{c} ASC NULLS FIRST" for c in sequence)
        newest_first = ", ".join(f"{c} DESC NULLS LAST" for c in sequence)
        op = _q(OP)
        differs = " OR ".join(f"{_q(c)} IS DISTINCT FROM lag({_q(c)}) OVER by_time" for c in self.section.tracked(data.names, self.plan))
        columns = ", ".join(_q(f.name) for f in data)
        self.db.execute(
            f"CREATE TABLE history_steps AS "
            f"WITH timed AS (SELECT *, max({_TIME}) OVER (PARTITION BY {keys} ORDER BY {oldest_first} "
            f"ROWS UNBOUNDED PRECEDING) AS {_AT} FROM history_events), "
            f"collapsed AS (SELECT * FROM timed QUALIFY row_number() OVER "
            f"(PARTITION BY {keys}, {_AT} ORDER BY {newest_first}) = 1), "
            f"flagged AS (SELECT *, {op} <> 'D' AND (lag({op}) OVER by_time IS NULL OR lag({op}) OVER by_time = 'D'"
            f"{' OR ' + differs if differs else ''}) AS {_OPENS}, lead({_AT}) OVER by_time AS {_NEXT} "
            f"FROM collapsed WINDOW by_time AS (PARTITION BY {keys} ORDER BY {_AT})) "
            f"SELECT *, sum(CASE WHEN {_OPENS} THEN 1 ELSE 0 END) OVER (PARTITION BY {keys} ORDER BY {_AT} "
            f"ROWS UNBOUNDED PRECEDING) AS {_VERSION} FROM flagged")
        self.db.execute(
            f"CREATE TABLE history_versions AS SELECT {columns}, _dmscdc_start AS {_q(START_AT)}, "
            f"{_NEXT} AS {_q(END_AT)} FROM (SELECT *, min({_AT}) OVER run AS _dmscdc_start, "
            f"row_number() OVER (PARTITION BY {keys}, {_VERSION} ORDER BY {_AT} DESC) AS _dmscdc_last "
            f"FROM history_steps WHERE {op} <> 'D' WINDOW run AS (PARTITION BY {keys}, {_VERSION})) "
            f"WHERE _dmscdc_last = 1")
