"""The local catalog: a DuckDB file with one view per lake table, the way Athena sees the lake.

Views of Parquet-format tables read the table's Parquet files when queried (``read_parquet``
with hive partitions and ``union_by_name`` for schema drift), so a view stays current after
every merge; the refresh only adds views for new tables. Staging folders start with ``_`` and
are outside every table folder, so views never see a merge in progress.

Views of Iceberg tables read the data files of the table's current snapshot (or an older one,
``iceberg_view_sql``), listed from the Iceberg metadata: no DuckDB extension is downloaded, and
a view shows one snapshot whole. Every refresh (every ``dmscdc run``) points them at the newest.
"""

from __future__ import annotations

import os

from dmscdc_provider.storage import is_hidden, local_path

DEFAULT_CATALOG_ENV = "DMSCDC_CATALOG"
DEFAULT_CATALOG_FILE = "dmscdc_catalog.duckdb"


def default_catalog_path() -> str:
    """``$DMSCDC_CATALOG``, else ``dmscdc_catalog.duckdb`` in the current folder."""
    return os.environ.get(DEFAULT_CATALOG_ENV) or os.path.abspath(DEFAULT_CATALOG_FILE)


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def table_glob(lake_root: str, schema: str, table: str) -> str:
    return f"{lake_root.rstrip('/')}/{schema}/{table}/**/*.parquet"


def refresh_duckdb(lake_root: str, tables: list[str], path: str | None = None,
                   aws_conn_id: str | None = None, region_name: str | None = None,
                   iceberg_tables: list[str] = (), iceberg_catalog: str | None = None) -> list[str]:
    """The ``duckdb`` catalog mode: create or replace ``schema.table`` views for the lake tables
    that have data files; returns the tables it covers.

    :param lake_root: the lake location (a local path or ``file://`` URI).
    :param tables: ``schema.table`` names.
    :param path: the DuckDB file, created if missing (default: ``$DMSCDC_CATALOG`` or
        ./dmscdc_catalog.duckdb).
    :param aws_conn_id: taken like every refresher's; a DuckDB catalog covers a local lake.
    :param region_name: taken like every refresher's.
    :param iceberg_tables: ``schema.table`` names of Iceberg tables (viewed at their current snapshot).
    :param iceberg_catalog: their catalog (``sqlite:///PATH``).
    """
    import duckdb

    from dmscdc_provider.engines.duckdb import utc_connection

    path = path or default_catalog_path()
    lake_root = local_path(lake_root)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        iceberg_sql = iceberg_views(lake_root, iceberg_tables, iceberg_catalog) if iceberg_tables else {}
        return _create_views(utc_connection(path), lake_root, tables, iceberg_sql)
    except duckdb.Error as error:
        cause = next((line for line in str(error).splitlines() if line.strip()), str(error))
        raise CatalogError(
            f"cannot refresh the DuckDB catalog {path}: {cause}",
            "close the other program holding the catalog file (a DuckDB shell, a notebook, "
            "`dmscdc query` in progress), then run again: every run recreates the views of all "
            "active tables",
        ) from error


class CatalogError(Exception):
    """The catalog could not be refreshed; the lake itself is fine.

    :param problem: what failed, naming the catalog.
    :param remedy: what to do about it.
    """

    def __init__(self, problem: str, remedy: str):
        super().__init__(f"{problem}; {remedy}")
        self.problem, self.remedy = problem, remedy


def _create_views(connection, lake_root: str, tables: list[str], iceberg_sql: dict[str, str]) -> list[str]:
    covered = []
    with connection:
        for name in sorted(set(tables) | set(iceberg_sql)):
            schema, table = name.split(".", 1)
            if name in iceberg_sql:
                select = iceberg_sql[name]
            elif _has_parquet(os.path.join(lake_root, schema, table)):
                select = parquet_select([table_glob(lake_root, schema, table)])
            else:
                continue
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_identifier(schema)}")
            connection.execute(f"CREATE OR REPLACE VIEW {_quote_identifier(schema)}.{_quote_identifier(table)} AS {select}")
            covered.append(name)
        _create_runs_view(connection, lake_root)
    return covered


RUNS_VIEW = "_dmscdc.runs"


def _create_runs_view(connection, lake_root: str) -> None:
    """``_dmscdc.runs``: the lake's run history (observability.runs), once it has a record."""
    from dmscdc_provider.observability.runs import runs_glob, runs_root

    if not _has_parquet(runs_root(lake_root)):
        return
    connection.execute(f"CREATE SCHEMA IF NOT EXISTS {RUNS_VIEW.split('.')[0]}")
    connection.execute(f"CREATE OR REPLACE VIEW {RUNS_VIEW} AS {parquet_select([runs_glob(lake_root)])}")


def parquet_select(paths: list[str], partition_types: dict[str, str] | None = None) -> str:
    """A SELECT over Parquet files (or globs) with hive partition columns and schema drift.

    :param partition_types: partition column -> DuckDB type (default: DuckDB guesses from the
        folder names).
    """
    listed = ", ".join(_quote_literal(p) for p in paths)
    typed = ""
    if partition_types:
        typed = ", hive_types = {" + ", ".join(
            f"{_quote_literal(c)}: {_quote_literal(t)}" for c, t in partition_types.items()) + "}"
    return f"SELECT * FROM read_parquet([{listed}], hive_partitioning = true, union_by_name = true{typed})"


def iceberg_views(lake_root: str, tables: list[str], iceberg_catalog: str | None,
                  as_of: str | None = None) -> dict[str, str]:
    """``schema.table`` -> the SELECT over the data files of each Iceberg table's snapshot: the
    current one; with ``as_of`` an ISO time, the last one committed by then (no rows for a table
    created later); with ``as_of`` a snapshot id, that snapshot for the table that has it (the
    others are left out, so they stay current). Tables without a snapshot are left out.

    :raises TableFormatError: ``as_of`` is a snapshot id no table has.
    """
    from dmscdc_provider.storage import LocalStorage
    from dmscdc_provider.table_formats import TableFormatError
    from dmscdc_provider.table_formats.iceberg import IcebergFormat, snapshot_data_files

    iceberg = IcebergFormat(LocalStorage(), iceberg_catalog)
    views = {}
    for name in tables:
        schema, table = name.split(".", 1)
        loaded = iceberg.load(lake_root, schema, table)
        if loaded is None or (as_of and as_of.isdigit() and loaded.snapshot_by_id(int(as_of)) is None):
            continue
        try:
            files = snapshot_data_files(loaded, as_of)
        except TableFormatError:
            if as_of and not as_of.isdigit():  # the table had no snapshot yet at that time
                views[name] = _empty_select(loaded)
                continue
            raise
        if files is not None:
            # An empty snapshot still has the table's columns.
            views[name] = _iceberg_select(loaded, [local_path(f) for f in files]) if files else _empty_select(loaded)
    if as_of and as_of.isdigit() and not views:
        raise TableFormatError(f"no Iceberg table has snapshot {as_of} (see `dmscdc snapshots SCHEMA.TABLE`)")
    return views


def _iceberg_select(table, paths: list[str]) -> str:
    """A SELECT over an Iceberg table's data files that reads its text identity partition columns
    as the snapshot records them: as text (not DuckDB's guess from the folder names, which reads
    ``123`` as a number), and the default folder of a text primary-key column as the empty string
    (``hive_paths.typed_value``)."""
    import pyarrow as pa
    from pyiceberg.io.pyarrow import schema_to_pyarrow
    from pyiceberg.transforms import IdentityTransform

    from dmscdc_provider.engines.arrow_schema import spark_view
    from dmscdc_provider.table_formats.iceberg import PRIMARY_KEY_PROPERTY

    schema = table.schema()
    primary_key = table.properties.get(PRIMARY_KEY_PROPERTY, "").split(",")
    text_columns = [schema.find_field(field.source_id).name for field in table.spec().fields
                    if isinstance(field.transform, IdentityTransform)
                    and pa.types.is_string(spark_view(schema_to_pyarrow(schema.find_field(field.source_id).field_type)))]
    select = parquet_select(paths, {column: "VARCHAR" for column in text_columns})
    empty_keys = [column for column in text_columns if column in primary_key]
    if not empty_keys:
        return select
    replaced = ", ".join(f"coalesce({_quote_identifier(c)}, '') AS {_quote_identifier(c)}" for c in empty_keys)
    return f"SELECT * REPLACE ({replaced}) FROM ({select})"


def _empty_select(table) -> str:
    columns = ", ".join(f"NULL AS {_quote_identifier(field.name)}" for field in table.schema().fields)
    return f"SELECT {columns} WHERE false"


def _has_parquet(folder: str) -> bool:
    for _root, _dirs, names in os.walk(folder):
        if any(n.endswith(".parquet") and not is_hidden(n) for n in names):
            return True
    return False


def query(catalog_path: str, sql: str, views: dict[str, str] | None = None) -> tuple[list[str], list[tuple]]:
    """Run SQL against the catalog; returns column names and rows.

    :param views: ``schema.table`` -> a SELECT that replaces that view for this query (an Iceberg
        table as of an older snapshot); the catalog file itself is not changed.
    """
    from dmscdc_provider.engines.duckdb import utc_connection

    if not views:
        with utc_connection(catalog_path, read_only=True) as connection:
            return _fetch(connection, sql)
    with utc_connection(":memory:") as connection:
        connection.execute(f"ATTACH {_quote_literal(catalog_path)} AS lake_catalog (READ_ONLY)")
        defined = connection.execute(
            "SELECT schema_name, view_name, sql FROM duckdb_views() WHERE database_name = 'lake_catalog'").fetchall()
        connection.execute("DETACH lake_catalog")
        for schema, table, definition in defined:
            name = f"{schema}.{table}"
            select = views.get(name) or definition.split(" AS ", 1)[1].rstrip(";")
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_identifier(schema)}")
            connection.execute(f"CREATE VIEW {_quote_identifier(schema)}.{_quote_identifier(table)} AS {select}")
        return _fetch(connection, sql)


def catalog_views(catalog_path: str) -> list[str]:
    """The ``schema.table`` views of a DuckDB catalog."""
    from dmscdc_provider.engines.duckdb import utc_connection

    with utc_connection(catalog_path, read_only=True) as connection:
        return [f"{s}.{t}" for s, t in connection.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall()]


def _fetch(connection, sql: str) -> tuple[list[str], list[tuple]]:
    cursor = connection.execute(sql)
    columns = [d[0] for d in cursor.description] if cursor.description else []
    return columns, cursor.fetchall()


# mode -> "module:function"; a refresher takes (lake_root, tables, aws_conn_id=, region_name=,
# **settings) and returns the tables it made queryable. Imported only when used, like the engines.
CATALOG_REFRESHERS = {
    "duckdb": "dmscdc_provider.catalog:refresh_duckdb",
    "glue_tables": "dmscdc_provider.aws.glue_catalog:refresh_glue_tables",
    "glue_crawler": "dmscdc_provider.aws.crawler:refresh_with_crawler",
}


def catalog_refresher(mode: str):
    """The refresh function of a catalog mode (the DAG's YAML ``catalog.mode``)."""
    import importlib

    try:
        target = CATALOG_REFRESHERS[mode]
    except KeyError:
        raise ValueError(f"unknown catalog mode {mode!r}; choose one of {', '.join(sorted(CATALOG_REFRESHERS))}") from None
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)
