"""A small DMS source + lake for tests: write DMS files, configure tables, run, read the lake."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

import pyarrow as pa

from dmscdc_provider.dms_writer import cdc_file_name, load_file_name, write_dms_file
from dmscdc_provider.engines.duckdb import utc_connection
from dmscdc_provider.planner import Planner, controller_path
from dmscdc_provider.runner import run_source
from dmscdc_provider.state.base import TableState
from dmscdc_provider.state.sqlite import SqliteControllerStore
from dmscdc_provider.storage import LocalStorage

START = datetime(2024, 3, 1, 9, 0, 0, tzinfo=timezone.utc)


class LakeHarness:
    """One raw folder, one lake folder and one SQLite controller under ``root``; tables in
    ``table_format`` (Iceberg tables in a SQLite catalog under ``root``)."""

    def __init__(self, root, engine, table_format: str = "parquet"):
        self.root = str(root)
        self.table_format = table_format
        self.iceberg_catalog = f"sqlite:///{os.path.join(self.root, 'iceberg.sqlite')}"
        self.raw = os.path.join(self.root, "raw")
        self.lake = os.path.join(self.root, "lake")
        os.makedirs(self.raw, exist_ok=True)
        self.store = SqliteControllerStore(os.path.join(self.root, "state.sqlite"))
        self.storage = LocalStorage()
        self.engine = engine
        self.clock = START

    # -- writing what DMS writes --------------------------------------------------------------
    def tick(self, seconds: int = 60) -> datetime:
        self.clock += timedelta(seconds=seconds)
        return self.clock

    def table_dir(self, table: str) -> str:
        return os.path.join(self.raw, *table.split("."))

    def load(self, table: str, rows: list[dict], schema: pa.Schema, counter: int = 1,
             modified: datetime | None = None, extension: str = "parquet", **options) -> str:
        path = os.path.join(self.table_dir(table), load_file_name(counter, extension))
        return write_dms_file(path, rows, schema, modified=modified or self.clock, **options)

    def cdc(self, table: str, rows: list[dict], schema: pa.Schema, at: datetime | None = None,
            folder: str = "", name: str | None = None, extension: str = "parquet", **options) -> str:
        at = at or self.tick()
        file_name = name or cdc_file_name(at, extension=extension)
        path = os.path.join(self.table_dir(table), folder, file_name)
        return write_dms_file(path, rows, schema, modified=at, **options)

    # -- controller -----------------------------------------------------------------------------
    def path_of(self, table: str) -> str:
        schema, name = table.split(".")
        return controller_path(self.raw, schema, name)

    def configure(self, table: str, primary_key=(), partition_key=(), order_column=None, active=True,
                  commit_time_column=None, keep_on_null=(), history=None) -> None:
        schema, name = table.split(".")
        path = self.path_of(table)
        if self.store.get(path) is None:
            self.store.register(TableState(path=path, schema=schema, table=name))
        self.store.update(path, active=active, primary_key=tuple(primary_key),
                          partition_key=tuple(partition_key), order_column=order_column,
                          commit_time_column=commit_time_column, keep_on_null=tuple(keep_on_null), history=history)

    def state(self, table: str) -> TableState:
        return self.store.get(self.path_of(table))

    # -- running --------------------------------------------------------------------------------
    def planner(self, tables: str | None = None, **options) -> Planner:
        return Planner(self.raw, self.lake, self.store, self.storage, tables, table_format=self.table_format,
                       iceberg_catalog=self.iceberg_catalog, **options)

    def run(self, tables: str | None = None, **options):
        """Plan and merge every active table; returns the SourceRun."""
        planner_options = {k: options.pop(k) for k in ("csv_delimiter", "csv_null_value") if k in options}
        return run_source(self.planner(tables, **planner_options), self.engine, self.storage, **options)

    def run_ok(self, tables: str | None = None, **options):
        result = self.run(tables, **options)
        assert not result.report.problems, result.report.problems
        for outcome in result.outcomes:
            assert outcome.succeeded, outcome.to_dict()
        return result

    # -- reading the lake -------------------------------------------------------------------------
    def table_path(self, table: str) -> str:
        return os.path.join(self.lake, *table.split("."))

    def iceberg_table(self, table: str):
        """The table as any Iceberg reader opens it: catalog ``dmscdc``, warehouse the lake, namespace
        the DMS schema, table the DMS table name."""
        from pyiceberg.catalog.sql import SqlCatalog
        from pyiceberg.exceptions import NoSuchTableError

        catalog = SqlCatalog("dmscdc", uri=self.iceberg_catalog, warehouse=self.lake)
        try:
            return catalog.load_table(tuple(table.split(".")))
        except NoSuchTableError:
            return None

    def rows(self, table: str, order_by: str = "id") -> list[dict]:
        """The lake table as a reader sees it: DuckDB over the visible Parquet files, or pyiceberg's
        scan of the current Iceberg snapshot; zone-aware timestamps in UTC, as Athena shows them,
        whatever this host's zone."""
        if self.table_format == "iceberg":
            iceberg = self.iceberg_table(table)
            if iceberg is None or iceberg.current_snapshot() is None:
                return []
            with utc_connection() as connection:
                connection.register("snapshot", iceberg.scan().to_arrow())
                cursor = connection.execute(f"SELECT * FROM snapshot ORDER BY {order_by}")
                columns = [d[0] for d in cursor.description]
                return [dict(zip(columns, row)) for row in cursor.fetchall()]
        if not self.data_files(table):
            return []
        glob = f"{self.table_path(table)}/**/*.parquet"
        with utc_connection() as connection:
            cursor = connection.execute(
                f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true) "
                f"ORDER BY {order_by}"
            )
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def data_files(self, table: str) -> dict[str, tuple[int, str]]:
        """Visible data files (of the current snapshot, for Iceberg): relative path -> (mtime_ns,
        sha256 of the bytes)."""
        root = self.table_path(table)
        found = {}
        if self.table_format == "iceberg":
            from dmscdc_provider.table_formats.iceberg import current_data_files

            iceberg = self.iceberg_table(table)
            for data_file in current_data_files(iceberg) if iceberg is not None else []:
                path = data_file.file_path
                with open(path, "rb") as handle:
                    found[os.path.relpath(path, root)] = (os.stat(path).st_mtime_ns,
                                                          hashlib.sha256(handle.read()).hexdigest())
            return found
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
            for name in names:
                if name.startswith(("_", ".")):
                    continue
                path = os.path.join(folder, name)
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                found[os.path.relpath(path, root)] = (os.stat(path).st_mtime_ns, digest)
        return found

    def unpublished_files(self, table: str) -> list[str]:
        """Data files an attempt left that readers do not see: under the staging folder (Parquet
        format), or under the table folder but in no snapshot (Iceberg)."""
        from dmscdc_provider.plan import STAGING_FOLDER

        found = []
        for root in (os.path.join(self.lake, STAGING_FOLDER, *table.split(".")), self.table_path(table)):
            for folder, _, names in os.walk(root):
                found += [os.path.join(folder, n) for n in names if n.endswith(".parquet")]
        published = {os.path.join(self.table_path(table), p) for p in self.data_files(table)}
        return sorted(p for p in found if p not in published)

    def visible_files_everywhere(self) -> list[str]:
        """Every file a reader of the lake would list (names not starting with _ or .)."""
        found = []
        for folder, dirs, names in os.walk(self.lake):
            dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
            found += [os.path.join(folder, n) for n in names if not n.startswith(("_", "."))]
        return sorted(found)


def bad_and_good_tables(root, engine, schema: pa.Schema, table_format: str = "parquet") -> LakeHarness:
    """``s.bad`` and ``s.good`` keyed by ``id`` and loaded with row 1 ("one"); ``s.good`` has a
    good change waiting, so a test can show that it merges whatever happens to ``s.bad``."""
    lake = LakeHarness(root, engine, table_format)
    for table in ("s.bad", "s.good"):
        lake.configure(table, primary_key=["id"])
        lake.load(table, [{"Op": "I", "id": 1, "name": "one"}], schema)
    lake.run_ok()
    lake.cdc("s.good", [{"Op": "U", "id": 1, "name": "good change"}], schema)
    return lake
