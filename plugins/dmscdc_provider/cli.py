"""The ``dmscdc`` command line: the same library calls the Airflow DAG makes.

    dmscdc run       --raw PATH --lake PATH [--state URI] [--catalog PATH] [--tables GLOB] [--engine auto|...]
    dmscdc plan      --raw PATH [--state URI] [--tables GLOB] [--lake PATH] [--engine auto|...]
    dmscdc tables    --raw PATH [--state URI]
    dmscdc status    --raw PATH [--state URI] [--tables GLOB] [--freshness-slo [GLOB=]DURATION ...] [--json]
    dmscdc configure SCHEMA.TABLE --raw PATH [--state URI] [--active|--inactive] ...
    dmscdc query     "SQL" [--catalog PATH] [--as-of SNAPSHOT|TIME --lake PATH --iceberg-catalog URI]
    dmscdc maintain  --raw PATH --lake PATH [--state URI] [--tables GLOB] [--table-format F] [--iceberg-catalog URI]
    dmscdc snapshots SCHEMA.TABLE --lake PATH [--iceberg-catalog URI]
    dmscdc rollback  SCHEMA.TABLE --to SNAPSHOT --raw PATH --lake PATH [--state URI] [--iceberg-catalog URI]
    dmscdc demo      [--workdir DIR]
    dmscdc demo-source --raw PATH [--state URI] [--changes]
    dmscdc mwaa-bundle --out DIR [--sources DIR] [--dags DIR] [--airflow-version V]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from datetime import datetime, timezone

from dmscdc_provider.catalog import (
    CATALOG_REFRESHERS, CatalogError, catalog_refresher, catalog_views, default_catalog_path, iceberg_views, query)
from dmscdc_provider import OLDEST_SUPPORTED_AIRFLOW
from dmscdc_provider.engines import EngineUnavailable
from dmscdc_provider.engines.choice import (
    AUTO, DEFAULT_INPROCESS_MAX_BYTES, IN_PROCESS_ENGINE, EngineConfig, engine_names, parse_size, spark_engine_names)
from dmscdc_provider.planner import Planner, PlanningReport, controller_path
from dmscdc_provider.report import describe_failure, one_line, outcome_line
from dmscdc_provider.plan import HISTORY_SUFFIX
from dmscdc_provider.state.base import ControllerStore, StateError, TableState, history_tracking, open_store
from dmscdc_provider.storage import open_storage
from dmscdc_provider.table_formats import DEFAULT_TABLE_FORMAT, TableFormatError, TableFormatName

DEFAULT_STATE_ENV = "DMSCDC_STATE"
DEFAULT_STATE_FILE = "dmscdc_state.sqlite"


def default_state_uri() -> str:
    """``$DMSCDC_STATE``, else ``sqlite:///<current folder>/dmscdc_state.sqlite``."""
    return os.environ.get(DEFAULT_STATE_ENV) or f"sqlite://{os.path.abspath(DEFAULT_STATE_FILE)}"


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit code 2."""


def _state_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state", default=None,
        help="controller store: sqlite:///ABS/PATH, a file path, or dynamodb://TABLE "
        f"(default: ${DEFAULT_STATE_ENV} or ./{DEFAULT_STATE_FILE})",
    )


def _raw_options(parser: argparse.ArgumentParser, csv: bool = True) -> None:
    parser.add_argument("--raw", required=True, help="where DMS writes: <raw>/<schema>/<table>/")
    _state_option(parser)
    parser.add_argument("--tables", help="comma-separated globs on schema.table (default: all)")
    if not csv:
        return
    parser.add_argument("--csv-delimiter", default=",", help="DMS csvDelimiter (default ',')")
    parser.add_argument("--csv-null-value", default="NULL", help="DMS csvNullValue (default 'NULL')")


def _iceberg_catalog_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iceberg-catalog", default=None, metavar="URI",
                        help="catalog of Iceberg tables: sqlite:///PATH, or glue://DATABASE on AWS "
                        "(default: $DMSCDC_ICEBERG_CATALOG or sqlite:///./dmscdc_iceberg.sqlite)")


def _format_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table-format", default=DEFAULT_TABLE_FORMAT.value,
                        choices=[f.value for f in TableFormatName],
                        help="format of tables whose controller item names none: parquet (a folder of files, "
                        "the default) or iceberg (one atomic snapshot per merge); see docs/table-formats.md")
    _iceberg_catalog_option(parser)


def _iceberg_catalog(args) -> str:
    from dmscdc_provider.table_formats.iceberg import default_iceberg_catalog

    return args.iceberg_catalog or default_iceberg_catalog()


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default=AUTO, choices=engine_names(),
                        help="auto (default): per table, duckdb in this process when the merge reads less "
                        "than --inprocess-max-bytes, else the Spark engine; or one engine for every table")
    parser.add_argument("--spark-engine", default=None, choices=spark_engine_names(),
                        help="the Spark engine auto uses for large tables (default: local)")
    parser.add_argument("--inprocess-max-bytes", default=None, type=parse_size, metavar="SIZE",
                        help="auto merges a table in-process when it reads less than this, e.g. 512MB, 2GiB "
                        f"(default: {DEFAULT_INPROCESS_MAX_BYTES >> 30}GiB)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmscdc", description="Keep a Parquet lake in sync with AWS DMS output.")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"],
                        help="what dmscdc's own log shows on stderr; debug adds the full trace of a "
                        "failed merge (default: warning)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="merge new DMS files into the lake, table by table")
    _raw_options(run)
    run.add_argument("--lake", required=True, help="lake location; tables at <lake>/<schema>/<table>/")
    run.add_argument("--catalog", default=None,
                     help=f"DuckDB catalog file to refresh (default: ${'DMSCDC_CATALOG'} or ./dmscdc_catalog.duckdb)")
    run.add_argument("--full-refresh", action="append", default=[], metavar="GLOB",
                     help="rebuild matching tables from their LOAD files, then CDC (repeatable)")
    run.add_argument("--cdc-before", type=_utc_instant, metavar="ISO-TIME",
                     help="apply only CDC files named before this UTC time")
    _format_options(run)
    _engine_options(run)
    run.add_argument("--engine-setting", action="append", default=[], metavar="KEY=VALUE",
                     help="Spark engine setting, e.g. artifacts_uri=s3://... role_arn=... (repeatable; "
                     "values are read as JSON when they parse, so numbers and true/false work)")
    run.add_argument("--duckdb-setting", action="append", default=[], metavar="KEY=VALUE",
                     help="in-process engine setting, e.g. memory_limit=2GB temp_directory=/tmp/x threads=2 "
                     "(repeatable)")
    run.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                     help="extra Spark setting for the local engine (repeatable)")
    run.add_argument("--catalog-mode", choices=["none", *sorted(CATALOG_REFRESHERS)], default=None,
                     help="catalog to refresh after merging (default: duckdb for a local lake, none for s3://)")
    run.add_argument("--catalog-setting", action="append", default=[], metavar="KEY=VALUE",
                     help="catalog mode setting, e.g. database=lake for glue_tables (repeatable)")

    plan = commands.add_parser("plan", help="print the plans a run would execute (JSON); registers new tables only")
    _raw_options(plan)
    plan.add_argument("--lake", default="LAKE",
                      help="lake location to put in the plans, whose footers auto reads (default: a placeholder, "
                      "no lake files)")
    _format_options(plan)
    _engine_options(plan)

    tables = commands.add_parser("tables", help="show each table's configuration and watermarks")
    _raw_options(tables, csv=False)
    tables.add_argument("--json", action="store_true", help="print controller items as JSON")

    status = commands.add_parser(
        "status", help="one line per table: lag at its last merge, backlog in raw now, how far behind; "
        "exit 1 when a table is over its freshness objective")
    _raw_options(status, csv=False)
    status.add_argument("--freshness-slo", action="append", default=[], metavar="[GLOB=]DURATION",
                        help="how far behind raw a table may be (90s, 15m, 2h, 1d); GLOB=DURATION for the tables "
                        "a schema.table glob matches; repeatable, the first that matches a table decides")
    status.add_argument("--table-format", default=DEFAULT_TABLE_FORMAT.value, choices=[f.value for f in TableFormatName],
                        help="format shown for tables whose controller item names none (the runs' default)")
    status.add_argument("--json", action="store_true", help="print one JSON document per table, as a list")

    configure = commands.add_parser("configure", help="activate a table and set its keys")
    configure.add_argument("table", metavar="SCHEMA.TABLE")
    configure.add_argument("--raw", required=True)
    _state_option(configure)
    active = configure.add_mutually_exclusive_group()
    active.add_argument("--active", dest="active", action="store_true", default=None)
    active.add_argument("--inactive", dest="active", action="store_false")
    primary = configure.add_mutually_exclusive_group()
    primary.add_argument("--primary-key", metavar="A,B", help="key columns (updates and deletes are applied)")
    primary.add_argument("--no-primary-key", action="store_true", help="inserts only")
    partition = configure.add_mutually_exclusive_group()
    partition.add_argument("--partition-key", metavar="C", help="lake partition columns")
    partition.add_argument("--no-partition-key", action="store_true", help="one partition")
    order = configure.add_mutually_exclusive_group()
    order.add_argument("--order-column", metavar="COL", help="column that orders changes, e.g. AR_H_CHANGE_SEQ")
    order.add_argument("--no-order-column", action="store_true", help="order by file and row position")
    commit_time = configure.add_mutually_exclusive_group()
    commit_time.add_argument("--commit-time-column", metavar="COL",
                             help="the column DMS fills with each change's commit time (the endpoint's "
                             "TimestampColumnName): orders changes when no order column is set, and times the "
                             "versions of the history table; a null or unparsable value fails the table")
    commit_time.add_argument("--no-commit-time-column", action="store_true", help="no commit-time column")
    keep = configure.add_mutually_exclusive_group()
    keep.add_argument("--keep-on-null", metavar="A,B",
                      help="columns whose null in an update keeps the value the lake has (inserts keep their "
                      "nulls): LOB columns in DMS limited-LOB mode, PostgreSQL TOAST columns; a name that is no column "
                      "fails the table's input check")
    keep.add_argument("--no-keep-on-null", action="store_true", help="a null in an update is applied as null")
    history = configure.add_mutually_exclusive_group()
    history.add_argument("--history", dest="history", action="store_true", default=None,
                         help="also keep <schema>.<table>_history: every version of each row with __start_at and "
                         "__end_at (null: current)")
    history.add_argument("--no-history", dest="history", action="store_false",
                         help="stop maintaining the history table (it is kept as it is)")
    tracked = configure.add_mutually_exclusive_group()
    tracked.add_argument("--history-columns", metavar="A,B",
                         help="a change to these columns opens a new version; other changes rewrite the current "
                         "version in place (default: every column; a name that is no column fails the table's input check)")
    tracked.add_argument("--history-except", metavar="C,D", help="every column but these opens a new version (a name that is no column fails the "
                         "table's input check)")
    configure.add_argument("--table-format", choices=[f.value for f in TableFormatName],
                           help="this table's format (default: the run's --table-format); a Parquet table "
                           "switched to iceberg is converted in place by its next merge (no file rewritten)")
    configure.add_argument("--create", action="store_true",
                           help="register the table even though raw has no folder for it yet")
    configure.add_argument("--json", action="store_true", help="print the controller item as JSON")

    query_cmd = commands.add_parser("query", help="run SQL against the local DuckDB catalog")
    query_cmd.add_argument("sql")
    query_cmd.add_argument("--catalog", default=None)
    query_cmd.add_argument("--as-of", metavar="SNAPSHOT|TIME",
                           help="read Iceberg tables as of a snapshot id or an ISO time (needs --lake)")
    query_cmd.add_argument("--lake", help="the lake, for --as-of")
    _iceberg_catalog_option(query_cmd)

    maintain = commands.add_parser(
        "maintain", help="Iceberg tables: compact small files, expire old snapshots, remove files no snapshot names "
                    "(history tables: expire and remove, not compacted)")
    _raw_options(maintain, csv=False)
    maintain.add_argument("--lake", required=True)
    _format_options(maintain)
    maintain.add_argument("--compact-below", type=parse_size, default=None, metavar="SIZE",
                          help="merge data files smaller than this within their partition, 0 for none (default 8MiB)")
    maintain.add_argument("--expire-after-days", type=float, default=7.0,
                          help="expire snapshots older than this many days; the current one stays (default 7)")
    maintain.add_argument("--orphan-age-hours", type=float, default=24.0,
                          help="remove files no snapshot names once they are this old: younger ones may belong "
                          "to a merge in progress (default 24)")

    snapshots = commands.add_parser("snapshots", help="list an Iceberg table's snapshots: time, plan, rows, watermark")
    snapshots.add_argument("table", metavar="SCHEMA.TABLE")
    snapshots.add_argument("--lake", required=True)
    _iceberg_catalog_option(snapshots)
    snapshots.add_argument("--json", action="store_true")

    rollback = commands.add_parser(
        "rollback", help="make an older snapshot of an Iceberg table current and move its watermark and its history "
             "table (the snapshot the same merge committed) back with it")
    rollback.add_argument("table", metavar="SCHEMA.TABLE")
    rollback.add_argument("--to", required=True, metavar="SNAPSHOT", help="snapshot id (see `dmscdc snapshots`)")
    rollback.add_argument("--raw", required=True)
    rollback.add_argument("--lake", required=True)
    _state_option(rollback)
    _iceberg_catalog_option(rollback)

    demo = commands.add_parser("demo", help="build the blog's sample database, load it, apply changes, show the lake")
    demo.add_argument("--workdir", default=None, help="where raw, lake, state and catalog go (default: a new temp folder)")

    demo_source = commands.add_parser(
        "demo-source", help="write the demo's DMS files and configure its tables, for a scheduler to load")
    demo_source.add_argument("--raw", required=True, help="where to write the DMS files")
    _state_option(demo_source)
    demo_source.add_argument("--changes", action="store_true", help="also write the blog's change batch")

    bundle = commands.add_parser("mwaa-bundle", help="write dags/, plugins.zip and requirements.txt for Amazon MWAA")
    bundle.add_argument("--out", required=True, help="folder to write the bundle to (created)")
    bundle.add_argument("--sources", default=None,
                        help="folder of source YAML configs to ship as dags/sources/ (default: the dags folder's)")
    bundle.add_argument("--dags", default=None, help="dags folder to ship (default: the repository's dags/)")
    bundle.add_argument("--airflow-version", default=OLDEST_SUPPORTED_AIRFLOW,
                        help=f"the MWAA environment's Airflow version, for the constraints line "
                             f"(default: {OLDEST_SUPPORTED_AIRFLOW}, the oldest supported)")
    return parser


def _utc_instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _columns(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        logging.getLogger("py4j").setLevel(logging.WARNING)  # py4j talks at INFO about every call
    try:
        return COMMANDS[args.command](args)
    except (CliError, StateError, TableFormatError, FileNotFoundError, ValueError, EngineUnavailable) as error:
        print(f"dmscdc {args.command}: {error}", file=sys.stderr)
        return 2


def _store(args) -> ControllerStore:
    return open_store(args.state or default_state_uri())


def _planner(args, store: ControllerStore, lake: str, engines: EngineConfig | None = None) -> Planner:
    """The planner for ``--raw``; ``--tables`` that selects no table folder there is an error."""
    table_format = getattr(args, "table_format", DEFAULT_TABLE_FORMAT.value)
    planner = Planner(args.raw, lake, store, open_storage(args.raw), args.tables,
                      getattr(args, "csv_delimiter", ","), getattr(args, "csv_null_value", "NULL"),
                      choose_engine=engines.choose if engines else None, table_format=table_format,
                      iceberg_catalog=_iceberg_catalog(args) if hasattr(args, "iceberg_catalog") else None)
    if args.tables and not planner.discover():
        everything = Planner(args.raw, lake, store, planner.storage).discover()
        names = ", ".join(f"{schema}.{table}" for schema, table in everything) or "none"
        raise CliError(f"--tables {args.tables} matches no table under {args.raw} (tables there: {names})")
    return planner


def _engine_config(args) -> EngineConfig:
    """The run's engine choice and settings from ``--engine`` and the flags that go with it."""
    spark_settings = _settings(getattr(args, "engine_setting", []), "--engine-setting")
    spark_conf = getattr(args, "spark_conf", [])
    if args.inprocess_max_bytes is not None and args.engine != AUTO:
        raise CliError(f"--inprocess-max-bytes is for --engine auto, not --engine {args.engine}")
    try:
        config = EngineConfig(
            engine=args.engine, spark_engine=args.spark_engine,
            inprocess_max_bytes=DEFAULT_INPROCESS_MAX_BYTES if args.inprocess_max_bytes is None
            else args.inprocess_max_bytes,
            spark_settings=spark_settings,
            duckdb_settings=_settings(getattr(args, "duckdb_setting", []), "--duckdb-setting"))
    except ValueError as error:
        raise CliError(str(error)) from error
    if spark_conf:
        if config.spark != "local" or config.engine == IN_PROCESS_ENGINE:
            raise CliError("--spark-conf is for the local engine; a remote engine takes --engine-setting")
        config = replace(config, spark_settings={
            **config.spark_settings, "spark_conf": dict(item.split("=", 1) for item in spark_conf)})
    return config


def _settings(items: list[str], flag: str) -> dict:
    """``KEY=VALUE`` pairs; a value that parses as JSON (a number, true, a list) is taken as such."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} takes KEY=VALUE, not {item!r}")
        try:
            settings[key] = json.loads(value)
        except ValueError:
            settings[key] = value
    return settings


def cmd_run(args) -> int:
    from dmscdc_provider.engines.choice import RunEngines
    from dmscdc_provider.runner import run_source

    engine_config = _engine_config(args)
    try:
        engines = RunEngines(engine_config)
    except TypeError as error:
        raise CliError(f"engine settings: {error}") from error
    remote_lake = "://" in args.lake and not args.lake.startswith("file:")
    catalog_mode = args.catalog_mode or ("none" if remote_lake else "duckdb")
    catalog_settings = _settings(args.catalog_setting, "--catalog-setting")
    if catalog_mode == "duckdb":
        catalog_settings.setdefault("path", args.catalog or default_catalog_path())
    store = _store(args)
    planner = _planner(args, store, args.lake, engine_config)
    print(f"dmscdc run: raw {args.raw} -> lake {args.lake}", flush=True)
    engine_of_table = {}

    def started(index, total, plan):
        engine_of_table[plan.table] = plan.engine
        print(f"[{index}/{total}] {plan.table}: {plan.mode} merge of {len(plan.files)} file(s) "
              f"on {plan.engine} ({plan.engine_reason}) ...", flush=True)

    def done(index, total, outcome):
        print(f"[{index}/{total}] {outcome.table}: {outcome_line(outcome)}", flush=True)

    result = run_source(planner, engines.for_plan, open_storage(args.lake), cdc_before=args.cdc_before,
                        full_refresh=tuple(args.full_refresh), on_table_start=started, on_table_done=done)
    report = result.report
    for name in result.finished_commits:
        print(f"{name}: finished the commit a crashed run had recorded")
    for name in report.registered:
        print(f"{name}: new table, registered inactive; activate it with "
              f"`dmscdc configure {name} --raw {args.raw} --active --primary-key ...`")
    for name in report.inactive:
        if name not in report.registered:
            print(f"{name}: inactive, skipped")
    for name in report.up_to_date:
        print(f"{name}: no new files")
    for problem in report.problems:
        print(f"{problem.table}: FAILED to plan: {problem.problem}", file=sys.stderr)
    for warning in report.warnings:
        print(f"{warning.table}: warning: {warning.problem}", file=sys.stderr)

    merged = [o.table for o in result.outcomes if o.succeeded]
    catalog_failure = None
    # DuckDB views are recreated on every run (cheap), so a refresh that failed (a locked
    # catalog file) is caught up by the next run even when it merges nothing.
    if catalog_mode != "none" and (merged or catalog_mode == "duckdb"):
        selected = [store.get(path) for path in planner.selected_paths()]
        active = [state for state in selected if state is not None and state.active]
        # Iceberg tables are in their own catalog (Glue on AWS, at once); the DuckDB catalog views them.
        # A table's history table (<table>_history) is catalogued beside it, in its format.
        with_history = [(s, name) for s in active for name in
                        ([s.name, s.name + HISTORY_SUFFIX] if s.history is not None else [s.name])]
        iceberg = [name for s, name in with_history
                   if (s.table_format or args.table_format) == TableFormatName.ICEBERG]
        tables = [name for _, name in with_history if name not in iceberg]
        if catalog_mode == "duckdb":
            catalog_settings.update(iceberg_tables=iceberg, iceberg_catalog=_iceberg_catalog(args))
        where = catalog_settings.get("path") or catalog_settings.get("database") or catalog_settings.get("crawler_name")
        try:
            refreshed = catalog_refresher(catalog_mode)(args.lake, tables, **catalog_settings)
            print(f"catalog {catalog_mode} {where}: {len(refreshed)} table(s) ({', '.join(refreshed)})")
        except Exception as error:  # the merges are committed; say what failed and go on to the summary
            problem, remedy = ((error.problem, error.remedy) if isinstance(error, CatalogError) else
                               (one_line(error), "check the catalog settings, then run again"))
            catalog_failure = (f"catalog {catalog_mode} {where}: FAILED (the merges are committed)\n"
                               f"  {'cause:':<8}{problem}\n  {'remedy:':<8}{remedy}")
    _print_summary(result.outcomes, engine_of_table)
    failed = [o for o in result.outcomes if not o.succeeded]
    for outcome in failed:
        print(describe_failure(outcome), file=sys.stderr)
    if catalog_failure:
        print(catalog_failure, file=sys.stderr)
    store.close()
    if result.store_failed or catalog_failure:
        return 2
    return 0 if result.succeeded else 1


def _print_summary(outcomes, engine_of_table: dict) -> None:
    if not outcomes:
        print("summary: nothing to merge")
        return
    header = (f"{'table':<32} {'engine':<14} {'status':<10} {'files':>5} {'I':>8} {'U':>8} {'D':>8} "
              f"{'written':>9} {'+files':>6} {'-files':>6} {'secs':>7}")
    print("summary:")
    print(header)
    for o in outcomes:
        s = o.summary or {}
        read = s.get("rows_read", {})
        print(f"{o.table:<32} {engine_of_table.get(o.table) or '':<14} {o.status:<10} "
              f"{s.get('files_read', ''):>5} {read.get('I', ''):>8} "
              f"{read.get('U', ''):>8} {read.get('D', ''):>8} {s.get('rows_written', ''):>9} "
              f"{s.get('files_added', ''):>6} {s.get('files_removed', ''):>6} {o.seconds:>7.1f}")


def cmd_plan(args) -> int:
    engine_config = _engine_config(args)
    store = _store(args)
    report = _planner(args, store, args.lake, engine_config).plan()
    print(json.dumps({
        "plans": [p.to_dict() for p in report.plans],
        "registered": report.registered,
        "inactive": report.inactive,
        "up_to_date": report.up_to_date,
        "problems": [{"table": p.table, "problem": p.problem} for p in report.problems],
        "warnings": [{"table": w.table, "warning": w.problem} for w in report.warnings],
    }, indent=2))
    store.close()
    return 1 if report.problems else 0


def cmd_tables(args) -> int:
    store = _store(args)
    planner = _planner(args, store, "LAKE")
    states = sorted(planner.register_new(PlanningReport()), key=lambda s: s.name)
    for problem in planner.ambiguous_folder_problems():
        print(f"{problem.table}: not registered: {problem.problem}", file=sys.stderr)
    if args.json:
        print(json.dumps([s.to_item() for s in states], indent=2))
    else:
        print(f"{'table':<28} {'active':<6} {'primary key':<16} {'partition':<14} {'order':<10} {'format':<8} "
              f"{'LastFullLoadDate':<20} LastIncrementalFile")
        for s in states:
            last = (s.last_incremental_file or "null").rsplit("/", 1)[-1]
            pending = "  (commit pending)" if s.pending_commit else ""
            print(f"{s.name:<28} {str(s.active).lower():<6} {','.join(s.primary_key) or 'null':<16} "
                  f"{','.join(s.partition_key) or 'null':<14} {s.order_column or '-':<10} {s.table_format or '-':<8} "
                  f"{s.last_full_load_date:<20} {last}{pending}")
    store.close()
    return 0


def cmd_status(args) -> int:
    from dmscdc_provider.observability.freshness import FreshnessObjectives
    from dmscdc_provider.observability.status import STATUS_HEADER, status_line, table_status
    from dmscdc_provider.planner import table_matches

    try:
        objectives = FreshnessObjectives.from_options(args.freshness_slo)
    except ValueError as error:
        raise CliError(f"--freshness-slo: {error}") from error
    store = _store(args)
    try:
        states = [s for s in store.list() if s.path == controller_path(args.raw, s.schema, s.table)
                  and table_matches(s.name, args.tables)]
    finally:
        store.close()
    if args.tables and not states:
        raise CliError(f"--tables {args.tables} matches no registered table of {args.raw}")
    storage, now = open_storage(args.raw), datetime.now(timezone.utc)
    documents = [table_status(state, args.raw, storage, now, objectives, args.table_format)
                 for state in sorted(states, key=lambda s: s.name)]
    if args.json:
        print(json.dumps(documents, indent=2))
    else:
        print(STATUS_HEADER)
        for document in documents:
            print(status_line(document))
        if not documents:
            print(f"(no table of {args.raw} is registered; `dmscdc tables --raw {args.raw}` registers them)")
    over = [d["table"] for d in documents if d["over_slo"]]
    if over:
        print(f"over the freshness objective: {', '.join(over)}", file=sys.stderr)
    return 1 if over else 0


def cmd_configure(args) -> int:
    if "." not in args.table:
        raise CliError(f"table must be SCHEMA.TABLE, not {args.table!r}")
    schema, table = args.table.split(".", 1)
    store = _store(args)
    path = controller_path(args.raw, schema, table)
    if store.get(path) is None:
        if not args.create and (schema, table) not in Planner(args.raw, "LAKE", store, open_storage(args.raw)).discover():
            raise CliError(f"{args.table} is not a table folder under {args.raw} and has no controller item; "
                           "check the name with `dmscdc tables`, or pass --create to configure it before "
                           "DMS writes its first file")
        store.register(TableState(path=path, schema=schema, table=table))
    changes = {}
    if args.active is not None:
        changes["active"] = args.active
    if args.primary_key or args.no_primary_key:
        changes["primary_key"] = () if args.no_primary_key else _columns(args.primary_key)
    if args.partition_key or args.no_partition_key:
        changes["partition_key"] = () if args.no_partition_key else _columns(args.partition_key)
    if args.order_column or args.no_order_column:
        changes["order_column"] = None if args.no_order_column else args.order_column
    if args.commit_time_column or args.no_commit_time_column:
        changes["commit_time_column"] = None if args.no_commit_time_column else args.commit_time_column
    if args.keep_on_null or args.no_keep_on_null:
        changes["keep_on_null"] = () if args.no_keep_on_null else _columns(args.keep_on_null)
    if args.history is False:
        if args.history_columns or args.history_except:
            raise CliError("--no-history takes no --history-columns or --history-except")
        changes["history"] = None
    elif args.history or args.history_columns or args.history_except:
        changes["history"] = history_tracking(_columns(args.history_columns or ""), _columns(args.history_except or ""))
    if args.table_format:
        changes["table_format"] = args.table_format
    state = store.update(path, **changes) if changes else store.get(path)
    if args.json:
        print(json.dumps(state.to_item(), indent=2))
    else:
        print(f"{state.name}: {'active' if state.active else 'inactive'}, primary key "
              f"{','.join(state.primary_key) or 'null'}, partition key {','.join(state.partition_key) or 'null'}"
              + (f", ordered by {state.order_column}" if state.order_column else "")
              + (f", commit time in {state.commit_time_column}" if state.commit_time_column else "")
              + (f", keeps {','.join(state.keep_on_null)} on null" if state.keep_on_null else "")
              + (f", history in {state.name}_history" + _tracked_text(state.history) if state.history is not None else "")
              + (f", {state.table_format} format" if state.table_format else ""))
    store.close()
    return 0


def _tracked_text(history: dict) -> str:
    if history.get("columns"):
        return f" (tracking {','.join(history['columns'])})"
    if history.get("except"):
        return f" (tracking all but {','.join(history['except'])})"
    return ""


def cmd_query(args) -> int:
    catalog = args.catalog or default_catalog_path()
    if not os.path.exists(catalog):
        raise CliError(f"no catalog at {catalog}; run `dmscdc run` first or pass --catalog")
    import duckdb

    views = None
    if args.as_of:
        if not args.lake:
            raise CliError("--as-of needs --lake (where the Iceberg tables are)")
        views = iceberg_views(args.lake, catalog_views(catalog), _iceberg_catalog(args), args.as_of)
    try:
        columns, rows = query(catalog, args.sql, views)
    except duckdb.Error as error:
        raise CliError(f"{str(error).splitlines()[0]} (catalog {catalog})") from error
    print_rows(columns, rows)
    return 0


def print_rows(columns: list[str], rows: list[tuple]) -> None:
    texts = [[("NULL" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in texts]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in texts:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _iceberg_table(args):
    from dmscdc_provider.table_formats.iceberg import IcebergFormat

    if "." not in args.table:
        raise CliError(f"table must be SCHEMA.TABLE, not {args.table!r}")
    schema, table = args.table.split(".", 1)
    loaded = IcebergFormat(open_storage(args.lake), _iceberg_catalog(args)).load(args.lake, schema, table)
    if loaded is None:
        raise CliError(f"{args.table} is no Iceberg table in {_iceberg_catalog(args)} (lake {args.lake})")
    return loaded


def cmd_snapshots(args) -> int:
    from dmscdc_provider.table_formats.iceberg import snapshot_rows

    rows = snapshot_rows(_iceberg_table(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_rows(["snapshot_id", "committed_at", "operation", "plan_id", "rows_written", "total_records",
                "last_incremental_file", "current"],
               [(r["snapshot_id"], r["committed_at"], r["operation"], r["plan_id"], r["rows_written"],
                 r["total_records"], (r["last_incremental_file"] or "").rsplit("/", 1)[-1] or None,
                 "*" if r["current"] else ("" if r["in_history"] else "rolled back")) for r in rows])
    return 0


def cmd_maintain(args) -> int:
    from datetime import timedelta

    from dmscdc_provider.table_formats.maintenance import DEFAULT_COMPACT_BELOW_BYTES, maintain_table

    store = _store(args)
    try:
        planner = _planner(args, store, args.lake)
        states = [s for s in (store.get(p) for p in planner.selected_paths()) if s is not None and s.active]
        iceberg = [s for s in states if (s.table_format or args.table_format) == TableFormatName.ICEBERG]
        if not iceberg:
            print("dmscdc maintain: no active Iceberg table selected; nothing to do")
            return 0
        for state in iceberg:
            report = maintain_table(
                state, args.lake, _iceberg_catalog(args), store, open_storage(args.lake),
                compact_below_bytes=DEFAULT_COMPACT_BELOW_BYTES if args.compact_below is None else args.compact_below,
                expire_after=timedelta(days=args.expire_after_days),
                orphan_age=timedelta(hours=args.orphan_age_hours))
            print(report.line(), flush=True)
    finally:
        store.close()
    return 0


def cmd_rollback(args) -> int:
    from dmscdc_provider.table_formats.iceberg import rollback_table

    from dmscdc_provider.table_formats.iceberg import IcebergFormat

    table = _iceberg_table(args)
    schema, name = args.table.split(".", 1)
    history_table = IcebergFormat(open_storage(args.lake), _iceberg_catalog(args)).load(
        args.lake, schema, name + HISTORY_SUFFIX)
    store = _store(args)
    try:
        state = store.get(controller_path(args.raw, schema, name))
        if state is None:
            raise CliError(f"{args.table} has no controller item under {args.raw}")
        restored = rollback_table(table, store, state, args.to, history_table)
    finally:
        store.close()
    history = (f"; {args.table}{HISTORY_SUFFIX} is at snapshot {restored.last_run['history_rolled_back_to']}"
               if history_table is not None else "")
    print(f"{args.table}: snapshot {args.to} is current{history}; watermark LastFullLoadDate "
          f"{restored.last_full_load_date}, "
          f"LastIncrementalFile {(restored.last_incremental_file or 'null').rsplit('/', 1)[-1]}; "
          "the next run applies the DMS files after it again")
    return 0


def cmd_demo(args) -> int:
    from dmscdc_provider.demo import run_demo

    return run_demo(args.workdir)


def cmd_demo_source(args) -> int:
    from dmscdc_provider.demo import prepare_demo_source

    for line in prepare_demo_source(args.raw, args.state or default_state_uri(), args.changes) or ["nothing to do"]:
        print(f"dmscdc demo-source: {line}")
    return 0


def cmd_mwaa_bundle(args) -> int:
    from dmscdc_provider.mwaa import build_bundle

    for path in build_bundle(args.out, dags=args.dags, sources=args.sources, airflow_version=args.airflow_version):
        print(f"dmscdc mwaa-bundle: wrote {path}")
    return 0


COMMANDS = {
    "run": cmd_run,
    "plan": cmd_plan,
    "tables": cmd_tables,
    "status": cmd_status,
    "configure": cmd_configure,
    "query": cmd_query,
    "maintain": cmd_maintain,
    "snapshots": cmd_snapshots,
    "rollback": cmd_rollback,
    "demo": cmd_demo,
    "demo-source": cmd_demo_source,
    "mwaa-bundle": cmd_mwaa_bundle,
}

if __name__ == "__main__":
    sys.exit(main())
