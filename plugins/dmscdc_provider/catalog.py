"""The local catalog: a DuckDB file with one view per lake table, the way Athena sees the lake.

Views read the table's Parquet files when queried (``read_parquet`` with hive partitions
and ``union_by_name`` for schema drift), so a view stays current after every merge; the
refresh only adds views for new tables. Staging folders start with ``_`` and are outside
every table folder, so views never see a merge in progress.
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
                   aws_conn_id: str | None = None, region_name: str | None = None) -> list[str]:
    """The ``duckdb`` catalog mode: create or replace ``schema.table`` views for the lake tables
    that have data files; returns the tables it covers.

    :param lake_root: the lake location (a local path or ``file://`` URI).
    :param tables: ``schema.table`` names.
    :param path: the DuckDB file, created if missing (default: ``$DMSCDC_CATALOG`` or
        ./dmscdc_catalog.duckdb).
    :param aws_conn_id: taken like every refresher's; a DuckDB catalog covers a local lake.
    :param region_name: taken like every refresher's.
    """
    import duckdb

    path = path or default_catalog_path()
    lake_root = local_path(lake_root)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        return _create_views(duckdb.connect(path), lake_root, tables)
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


def _create_views(connection, lake_root: str, tables: list[str]) -> list[str]:
    covered = []
    with connection:
        for name in sorted(tables):
            schema, table = name.split(".", 1)
            if not _has_parquet(os.path.join(lake_root, schema, table)):
                continue
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_identifier(schema)}")
            connection.execute(
                f"CREATE OR REPLACE VIEW {_quote_identifier(schema)}.{_quote_identifier(table)} AS "
                f"SELECT * FROM read_parquet({_quote_literal(table_glob(lake_root, schema, table))}, "
                "hive_partitioning = true, union_by_name = true)"
            )
            covered.append(name)
    return covered


def _has_parquet(folder: str) -> bool:
    for _root, _dirs, names in os.walk(folder):
        if any(n.endswith(".parquet") and not is_hidden(n) for n in names):
            return True
    return False


def query(catalog_path: str, sql: str) -> tuple[list[str], list[tuple]]:
    """Run SQL against the catalog; returns column names and rows."""
    import duckdb

    with duckdb.connect(catalog_path, read_only=True) as connection:
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
