"""A source's YAML config: what one dmscdc DAG runs, read and checked at DAG parse time.

Strings may use ``${VAR}`` or ``${VAR:-default}``: values come from the environment of the
process that parses the DAG (dag processor, scheduler, worker), so one file serves a laptop,
docker-compose and MWAA. Parsing does no I/O beyond reading the file (docs/airflow.md).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import yaml

from dmscdc_provider.dag_factory.schema import coerce_types, schema_errors, source_schema
from dmscdc_provider.engines.choice import AUTO, DEFAULT_INPROCESS_MAX_BYTES, EngineConfig, parse_size
from dmscdc_provider.observability.freshness import FreshnessObjectives

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
# SourceConfig fields that the YAML spells differently (sections, engine/catalog mappings).
_BUILT_FIELDS = {"path", "iceberg_catalog", "engine_settings", "spark_engine", "inprocess_max_bytes", "duckdb_settings", "catalog_mode", "catalog_settings", "aws_conn_id", "region_name",
                 "csv_delimiter", "csv_null_value", "freshness_slo"}


class SourceConfigError(ValueError):
    """A source config that cannot build a DAG; the message names the file and the key."""


@dataclass(frozen=True)
class SensorConfig:
    """``wait_for_changes``: how the sensor waits.

    :param mode: ``poke``, ``reschedule`` (frees the worker between checks) or ``deferrable``
        (waits in the triggerer).
    :param poke_interval: seconds between listings.
    :param timeout: seconds to wait for new files before the run ends skipped.
    """

    mode: str = "reschedule"
    poke_interval: float = 60.0
    timeout: float = 3300.0


@dataclass(frozen=True)
class MergeConfig:
    """``merge``: retries per table and how many tables merge at once.

    :param retries: retries of one table's merge instance.
    :param retry_delay_seconds: wait before a retry.
    :param max_parallel: merge instances of one run that may run at the same time.
    :param pool: the Airflow pool every merge instance runs in (None: ``default_pool``); one pool
        shared by several sources caps their concurrent merges together.
    :param pool_slots: slots of the pool one merge instance takes.
    :param deferrable: with a remote engine, wait for the Spark job in the triggerer.
    :param poll_interval: seconds between job status checks of a remote engine.
    """

    retries: int = 2
    retry_delay_seconds: float = 300.0
    max_parallel: int = 4
    pool: str | None = None
    pool_slots: int = 1
    deferrable: bool = False
    poll_interval: float = 30.0


@dataclass(frozen=True)
class MaintenanceConfig:
    """``maintenance``: an optional ``maintain`` task for the source's Iceberg tables, after the
    catalog refresh of every run (docs/table-formats.md).

    :param enabled: add the task.
    :param compact_below_bytes: data files smaller than this are compacted (a size: 8MiB).
    :param expire_after_days: snapshots older than this are expired.
    :param orphan_age_hours: files no snapshot names are removed once this old.
    """

    enabled: bool = False
    compact_below_bytes: int = 8 * 1024 * 1024
    expire_after_days: float = 7.0
    orphan_age_hours: float = 24.0


@dataclass(frozen=True)
class SourceConfig:
    """One source database: where DMS writes, where the lake is, and how its DAG runs.

    :param source: short name; the DAG is ``dmscdc_<source>``.
    :param raw: where DMS writes (``<raw>/<schema>/<table>/``).
    :param lake: where the lake tables go (``<lake>/<schema>/<table>/``).
    :param state: the controller store URI (``sqlite:///PATH``, ``dynamodb://TABLE``).
    :param tables: comma-separated globs on ``schema.table``; empty: every table.
    :param schedule: cron expression or preset; a run applies CDC files named before its
        data interval end. Empty: manual runs only.
    :param engine: ``auto`` (per table: in-process under ``inprocess_max_bytes``, else
        ``spark_engine``), or one engine for every table (``duckdb``, ``local``, ``glue``,
        ``emr``, ``emr_serverless``); ``engine_settings`` are the Spark engine's settings and
        ``duckdb_settings`` the in-process engine's (docs/engines.md).
    :param catalog_mode: ``duckdb`` for a local lake; ``glue_tables`` (the default for an
        ``s3://`` lake) or ``glue_crawler``.
    :param table_format: ``parquet`` (default) or ``iceberg`` for tables whose controller item
        names none (docs/table-formats.md).
    :param table_settings: YAML ``table_settings``: glob on ``schema.table`` -> change semantics
        that override the controller item's (``commit_time_column``, ``keep_on_null``,
        ``history``, ``history_columns``, ``history_except``; docs/airflow.md).
    :param iceberg_catalog: YAML ``iceberg.catalog``: ``sqlite:///PATH`` (default for a local
        lake: ``<lake>/_dmscdc_iceberg.sqlite``) or ``glue://DATABASE`` (default for an S3 lake:
        the catalog database, else ``dmscdc_<source>``).
    :param freshness_slo: ``schema.table`` glob -> seconds a table may be behind raw after a run;
        the YAML takes one duration for every table (``freshness_slo: 1h``) or a mapping of globs to
        durations, the first that matches a table deciding (docs/observability.md).
    """

    source: str
    raw: str
    lake: str
    state: str
    path: str = ""
    description: str = ""
    tables: str | None = None
    schedule: str | None = None
    start_date: datetime = datetime(2024, 1, 1, tzinfo=timezone.utc)
    catchup: bool = False
    engine: str = AUTO
    engine_settings: dict = field(default_factory=dict)
    spark_engine: str | None = None
    inprocess_max_bytes: int = DEFAULT_INPROCESS_MAX_BYTES
    duckdb_settings: dict = field(default_factory=dict)
    catalog_mode: str = "duckdb"
    catalog_settings: dict = field(default_factory=dict)
    table_format: str = "parquet"
    iceberg_catalog: str | None = None
    table_settings: dict = field(default_factory=dict)
    wait_for_changes: SensorConfig = field(default_factory=SensorConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None
    csv_delimiter: str = ","
    csv_null_value: str = "NULL"
    owner: str = "dmscdc"
    tags: tuple[str, ...] = ()
    freshness_slo: dict[str, float] = field(default_factory=dict)

    @property
    def dag_id(self) -> str:
        return f"dmscdc_{self.source}"

    @property
    def engine_config(self) -> EngineConfig:
        return EngineConfig(self.engine, self.spark_engine, self.inprocess_max_bytes,
                            self.engine_settings, self.duckdb_settings)


def expand_variables(value: Any, where: str = "") -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML document."""
    if isinstance(value, dict):
        return {key: expand_variables(item, f"{where}.{key}" if where else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_variables(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group("name"), match.group("default")
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is not None:
            return default
        raise SourceConfigError(f"{where}: environment variable {name} is not set and has no default (${{{name}:-...}})")

    return _VARIABLE.sub(substitute, value)


def _named(document: dict, key: str, default_name: str, name_key: str) -> Any:
    """``engine: local`` or ``engine: {name: local, settings: {...}}``, as the mapping form
    (anything else is left for the schema check to report)."""
    value = document.get(key)
    if value is None:
        return {name_key: default_name}
    if isinstance(value, str):
        return {name_key: value}
    if isinstance(value, dict):
        return {name_key: default_name, **value}
    return value


def _on_s3(lake: Any) -> bool:
    return str(lake or "").startswith(("s3://", "s3a://"))


def _engine(engine: dict, path: str) -> dict:
    """The checked ``engine`` mapping (``{name: auto, spark_engine: glue, inprocess_max_bytes: 1GiB,
    settings: {...}, duckdb_settings: {...}}``) as SourceConfig fields, its keys checked together."""
    try:
        config = EngineConfig(
            engine=str(engine.get("name") or AUTO),
            spark_engine=engine.get("spark_engine"),
            inprocess_max_bytes=parse_size(engine.get("inprocess_max_bytes", DEFAULT_INPROCESS_MAX_BYTES)),
            spark_settings=dict(engine.get("settings") or {}),
            duckdb_settings=dict(engine.get("duckdb_settings") or {}),
        )
    except ValueError as error:
        raise SourceConfigError(f"{path}: engine: {error}") from None
    return {"engine": config.engine, "spark_engine": config.spark_engine,
            "inprocess_max_bytes": config.inprocess_max_bytes, "engine_settings": config.spark_settings,
            "duckdb_settings": config.duckdb_settings}


def _catalog(catalog: dict, document: dict, path: str) -> tuple[str, dict]:
    """The checked ``catalog`` mapping: duckdb for a local lake, glue_tables (database
    ``dmscdc_<source>``) for S3 (the default mode comes from ``_named``).

    A DuckDB catalog file cannot describe an ``s3://`` lake for anyone but this worker, so that
    combination is refused instead of refreshing nothing.
    """
    mode, settings = str(catalog["mode"]), dict(catalog.get("settings") or {})
    if mode == "duckdb" and _on_s3(document["lake"]):
        raise SourceConfigError(
            f"{path}: catalog.mode duckdb is for a local lake, and lake {document['lake']} is on S3; "
            "use catalog.mode glue_tables (the default for S3) or glue_crawler")
    if mode == "glue_tables":
        settings.setdefault("database", f"dmscdc_{document['source']}".lower())
    return mode, settings


def _iceberg_catalog(iceberg: dict, document: dict, catalog_settings: dict) -> str:
    """``iceberg.catalog``, else a SQLite catalog beside a local lake's tables (a ``_`` name, which
    readers skip) or, for an S3 lake, the Glue database the catalog refresh uses."""
    if iceberg.get("catalog"):
        return str(iceberg["catalog"])
    if _on_s3(document["lake"]):
        return f"glue://{catalog_settings.get('database') or ('dmscdc_' + document['source']).lower()}"
    from dmscdc_provider.storage import local_path

    return f"sqlite:///{local_path(str(document['lake']).rstrip('/'))}/_dmscdc_iceberg.sqlite"


def _table_settings(settings: dict, path: str) -> dict:
    """The checked ``table_settings``: ``history_columns`` and ``history_except`` exclude each other."""
    for pattern, table in settings.items():
        if (table or {}).get("history_columns") and (table or {}).get("history_except"):
            raise SourceConfigError(f"{path}: table_settings.{pattern}: a history table tracks either "
                                    "history_columns or every column but history_except, not both")
    return {pattern: dict(table or {}) for pattern, table in settings.items()}


def _start_date(value: Any, path: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    try:
        return _start_date(datetime.fromisoformat(str(value)), path)
    except ValueError:
        raise SourceConfigError(f"{path}: start_date {value!r} is not a date (YYYY-MM-DD)") from None


def parse_source_config(document: dict, path: str = "<config>") -> SourceConfig:
    """A SourceConfig from a parsed YAML document (variables not yet expanded), checked against
    the source schema (``schema.source_schema``); errors name the file and every bad key."""
    if not isinstance(document, dict):
        raise SourceConfigError(f"{path}: a source config is a YAML mapping")
    try:
        document = expand_variables(dict(document))
    except SourceConfigError as error:
        raise SourceConfigError(f"{path}: {error}") from None
    document["engine"] = _named(document, "engine", AUTO, "name")
    document["catalog"] = _named(document, "catalog", "glue_tables" if _on_s3(document.get("lake")) else "duckdb",
                                 "mode")
    schema = source_schema(SensorConfig, MergeConfig, set(SourceConfig.__dataclass_fields__) - _BUILT_FIELDS)
    document = coerce_types(document, schema)
    problems = schema_errors(document, schema)
    if problems:
        raise SourceConfigError(f"{path}: " + "; ".join(problems))
    engine = _engine(document.pop("engine"), path)
    catalog_mode, catalog_settings = _catalog(document.pop("catalog"), document, path)
    sensor = SensorConfig(**(document.pop("wait_for_changes", None) or {}))
    merge = MergeConfig(**(document.pop("merge", None) or {}))
    maintenance_document = dict(document.pop("maintenance", None) or {})
    if "compact_below_bytes" in maintenance_document:
        try:
            maintenance_document["compact_below_bytes"] = parse_size(maintenance_document["compact_below_bytes"])
        except ValueError as error:
            raise SourceConfigError(f"{path}: maintenance.compact_below_bytes: {error}") from None
    maintenance = MaintenanceConfig(**maintenance_document)
    iceberg_catalog = _iceberg_catalog(document.pop("iceberg", None) or {}, document, catalog_settings)
    try:
        freshness_slo = FreshnessObjectives.parse(document.pop("freshness_slo", None)).to_dict()
    except ValueError as error:
        raise SourceConfigError(f"{path}: freshness_slo: {error}") from None
    table_settings = _table_settings(document.pop("table_settings", None) or {}, path)
    aws = document.pop("aws", None) or {}
    csv = document.pop("csv", None) or {}
    if "start_date" in document:
        document["start_date"] = _start_date(document["start_date"], path)
    if "tags" in document:
        document["tags"] = tuple(document["tags"] or ())
    for key in ("raw", "lake"):
        document[key] = str(document[key]).rstrip("/")
    return SourceConfig(
        **document,
        path=path,
        **engine,
        catalog_mode=catalog_mode,
        catalog_settings=catalog_settings,
        iceberg_catalog=iceberg_catalog,
        table_settings=table_settings,
        wait_for_changes=sensor,
        merge=merge,
        maintenance=maintenance,
        aws_conn_id=aws.get("conn_id", "aws_default"),
        region_name=aws.get("region_name"),
        csv_delimiter=str(csv.get("delimiter", ",")),
        csv_null_value=str(csv.get("null_value", "NULL")),
        freshness_slo=freshness_slo,
    )


def load_source_config(path: str) -> SourceConfig:
    """Read and check one ``<source>.yaml``."""
    with open(path, encoding="utf-8") as handle:
        try:
            document = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise SourceConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_source_config(document, path)
