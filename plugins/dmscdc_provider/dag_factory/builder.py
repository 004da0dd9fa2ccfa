"""The dmscdc DAG of one source:

    wait_for_changes >> plan >> merge[schema.table ...] >> refresh_catalog >> summary

See docs/airflow.md for what each task does and docs/scheduling.md for which changes a run
applies.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import yaml
from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator
from airflow.sdk import DAG, AssetAlias, Param

# Supported: Airflow 3.0 (MWAA's oldest Airflow 3) to the newest. The Task SDK gained these
# names later (TriggerRule in 3.1, the timetables in 3.2); 3.0 has them in airflow core.
try:
    from airflow.sdk import TriggerRule
except ImportError:
    from airflow.utils.trigger_rule import TriggerRule
try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:
    from airflow.timetables.interval import CronDataIntervalTimetable

from dmscdc_provider.dag_factory.config import SourceConfig, SourceConfigError, load_source_config
from dmscdc_provider.dag_factory.schema import SOURCE_NAME_PATTERN
from dmscdc_provider.operators.catalog import DmsCdcRefreshCatalogOperator
from dmscdc_provider.operators.merge import DmsCdcMergeOperator
from dmscdc_provider.operators.maintain import DmsCdcMaintainOperator
from dmscdc_provider.operators.plan import DmsCdcPlanOperator
from dmscdc_provider.operators.summary import DmsCdcRunSummaryOperator
from dmscdc_provider.sensors.raw_files import DmsCdcNewFilesSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

CONFIG_ERROR_TAG = "config error"

# A plan task deferred for less than this can resume before the scheduler has processed the end of
# its previous try, and the scheduler then fails it ("finished with state success, but the task
# instance's state attribute is running"; the race of apache/airflow#71172).
PLAN_WAIT_CHECK_MIN_SECONDS = 30

# The trigger form sends null for an emptied list.
FULL_REFRESH_TEMPLATE = "{{ (params.full_refresh or []) | join(',') }}"


def lake_asset_alias(config: SourceConfig) -> AssetAlias:
    """The alias under which the refresh task emits one Asset event per lake table."""
    return AssetAlias(f"{config.dag_id}_lake")


def _doc(config: SourceConfig) -> str:
    """The DAG's documentation in the UI: what it keeps in sync, which files a run applies, and
    what to do when a table fails."""
    tables = ", ".join(f"`{glob.strip()}`" for glob in config.tables.split(",")) if config.tables else "every table"
    schedule = f"`{config.schedule}`" if config.schedule else "none (manual runs only)"
    return (f"{config.description}\n\n" if config.description else "") + f"""\
Keeps the lake `{config.lake}` in sync with the AWS DMS output `{config.raw}`.

| | |
| --- | --- |
| tables | {tables} (schema.table globs; tables found in the raw location register **inactive** in the controller until activated with `dmscdc configure`) |
| controller | `{config.state}` |
| engine | `{_engine_text(config)}` |
| catalog | `{config.catalog_mode}` |
| table format | `{config.table_format}`{f" (catalog `{config.iceberg_catalog}`)" if config.table_format == "iceberg" else ""} |
| schedule | {schedule} |
| config | `{config.path}` |

**Which files a run applies.** A run applies the CDC files *named* before its data interval end
(DMS names CDC files by the time they were written). A scheduled run covers its interval; a run
triggered from the UI has a logical date, and so an interval end: files named after it wait for
the next run. A run without a logical date (`airflow dags trigger` without `--logical-date`, the
API with `logical_date: null`) has no cutoff and applies every file present.

**Rebuilding tables.** Set the `full_refresh` param to `schema.table` globs to rebuild those
tables from their LOAD files, then apply their CDC files.

**When a table fails.** Only that table's `merge` instance fails (named `schema.table`); its
lake files and controller state stay where they were, and the other tables merge. The log names
the table, the file, the cause and what to do. Fix the file (or the configuration) named there
(replace a bad file with a good copy of the same name), then **clear the failed `merge` instance**
(with downstream): it repeats exactly that table's plan. If you removed a planned file, clear the
run's **`plan`** task instead: it plans every table again from raw as it is now. A failed run does
not hold later runs: the next run plans the failed table again from its watermark.
"""


def _engine_text(config: SourceConfig) -> str:
    if config.engine == "auto":
        return f"auto: duckdb under {config.inprocess_max_bytes:,} bytes read, else {config.engine_config.spark}"
    return config.engine


def build_source_dag(config: SourceConfig, on_failure_callback=None) -> DAG:
    """The DAG for one source config.

    :param on_failure_callback: the DAG's failure callback(s) (Airflow's ``on_failure_callback``):
        called when a run fails, a table over its freshness objective included.
    """
    aws = {"aws_conn_id": config.aws_conn_id, "region_name": config.region_name}
    sensor = config.wait_for_changes
    merge = config.merge
    with DAG(
        dag_id=config.dag_id,
        description=config.description or f"dmscdc: DMS output {config.raw} -> lake {config.lake}",
        doc_md=_doc(config),
        schedule=CronDataIntervalTimetable(config.schedule, timezone="UTC") if config.schedule else None,
        start_date=config.start_date,
        catchup=config.catchup,
        # Scheduled and manual runs of one source never overlap; backfill runs are ordered by
        # the plan task's wait for the runs before it.
        max_active_runs=1,
        default_args={"owner": config.owner},
        params={
            # "null" in the type keeps the trigger form from marking the list as required.
            "full_refresh": Param(
                [], type=["null", "array"], items={"type": "string"},
                title="Full refresh",
                description="Optional. schema.table globs (one per line, e.g. sales.product or sales.*) to "
                "rebuild from their LOAD files, then their CDC files. Empty: apply new files only.",
            ),
        },
        tags=["dmscdc", config.source, *config.tags],
        on_failure_callback=on_failure_callback,
    ) as dag:
        wait_for_changes = DmsCdcNewFilesSensor(
            task_id="wait_for_changes",
            raw_root=config.raw,
            state_uri=config.state,
            tables=config.tables,
            full_refresh=FULL_REFRESH_TEMPLATE,
            deferrable=sensor.mode == "deferrable",
            mode="reschedule" if sensor.mode == "reschedule" else "poke",
            poke_interval=sensor.poke_interval,
            timeout=sensor.timeout,
            # No new files before the timeout: the run ends skipped, not failed.
            soft_fail=True,
            **aws,
        )
        plan = DmsCdcPlanOperator(
            task_id="plan",
            raw_root=config.raw,
            lake_root=config.lake,
            state_uri=config.state,
            tables=config.tables,
            full_refresh=FULL_REFRESH_TEMPLATE,
            csv_delimiter=config.csv_delimiter,
            csv_null_value=config.csv_null_value,
            engine=config.engine,
            spark_engine=config.spark_engine,
            inprocess_max_bytes=config.inprocess_max_bytes,
            table_format=config.table_format,
            iceberg_catalog=config.iceberg_catalog,
            table_settings=config.table_settings,
            # Runs of a source plan and merge one at a time, in logical-date order: the plan task
            # waits (deferred, with a log line per check) while an earlier run runs or a later one is
            # merging, and fails saying what to do after one sensor timeout. Airflow counts a
            # backfill's runs apart from the DAG's max_active_runs, so this is what orders them
            # (docs/scheduling.md). A failed run holds nothing: the next run plans its tables again.
            wait_timeout=sensor.timeout,
            wait_check_interval=max(PLAN_WAIT_CHECK_MIN_SECONDS, min(sensor.poke_interval, 60)),
            **aws,
        )
        merged = DmsCdcMergeOperator.partial(
            task_id="merge",
            source=config.source,
            glue_catalog=config.catalog_settings if config.catalog_mode == "glue_tables" else None,
            state_uri=config.state,
            engine=config.engine,
            spark_engine=config.spark_engine,
            engine_settings=config.engine_settings,
            duckdb_settings=config.duckdb_settings,
            deferrable=merge.deferrable,
            poll_interval=merge.poll_interval,
            retries=merge.retries,
            retry_delay=timedelta(seconds=merge.retry_delay_seconds),
            max_active_tis_per_dagrun=merge.max_parallel,
            **({"pool": merge.pool} if merge.pool else {}),
            pool_slots=merge.pool_slots,
            map_index_template="{{ task.plan['table'] }}",
            **aws,
        ).expand_kwargs(plan.output)
        refresh_catalog = DmsCdcRefreshCatalogOperator(
            task_id="refresh_catalog",
            lake_root=config.lake,
            catalog_mode=config.catalog_mode,
            catalog_settings=config.catalog_settings,
            iceberg_catalog=config.iceberg_catalog,
            # The tables that merged become queryable even when another table failed; with
            # none merged the operator skips itself (Airflow 3.0 has no all_done_min_one_success).
            trigger_rule=TriggerRule.ALL_DONE,
            outlets=[lake_asset_alias(config)],
            # Read back to announce each merge once when a cleared table merges later.
            inlets=[lake_asset_alias(config)],
            **aws,
        )
        summary = DmsCdcRunSummaryOperator(task_id="summary", trigger_rule=TriggerRule.ALL_DONE,
                                           freshness_slo=config.freshness_slo)
        wait_for_changes >> plan >> merged >> refresh_catalog
        if config.maintenance.enabled:
            maintain = DmsCdcMaintainOperator(
                task_id="maintain",
                raw_root=config.raw,
                lake_root=config.lake,
                state_uri=config.state,
                tables=config.tables,
                table_format=config.table_format,
                iceberg_catalog=config.iceberg_catalog,
                compact_below_bytes=config.maintenance.compact_below_bytes,
                expire_after_days=config.maintenance.expire_after_days,
                orphan_age_hours=config.maintenance.orphan_age_hours,
                # After the run's merges, whatever became of them: compaction conflicts with no merge.
                trigger_rule=TriggerRule.ALL_DONE,
                **aws,
            )
            refresh_catalog >> maintain >> summary
        else:
            refresh_catalog >> summary
        [wait_for_changes, plan, merged] >> summary
    return dag


class SourceConfigErrorOperator(BaseOperator):
    """The one task of a source whose config cannot build a DAG: fails, without retries, with the error.

    :param message: the config error, naming the file and the key.
    """

    ui_color = "#fbe3e3"

    def __init__(self, *, message: str, **kwargs):
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Context) -> None:
        raise AirflowFailException(self.message)


def config_error_dag(dag_id: str, path: str, message: str) -> DAG:
    """Stands in for the DAG of a source file that cannot be built, so the error shows in the UI
    under that source while the other sources' DAGs load (see docs/airflow.md)."""
    with DAG(
        dag_id=dag_id,
        description=f"CONFIG ERROR in {os.path.basename(path)}; this source does not run. {message}",
        doc_md=f"**The source config `{path}` cannot build a DAG**, so this source does not run:\n\n"
        f"```\n{message}\n```\n\nFix the file; the next DAG parse replaces this DAG with the source's DAG.",
        schedule=None,
        start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
        tags=["dmscdc", CONFIG_ERROR_TAG],
    ) as dag:
        SourceConfigErrorOperator(task_id="config_error", message=message, retries=0)
    return dag


def _error_dag_id(path: str, taken: dict) -> str:
    """``dmscdc_<source>`` when the broken file still names a usable source, else one named after the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            source = (yaml.safe_load(handle) or {}).get("source")
    except (OSError, yaml.YAMLError, AttributeError):
        source = None
    if isinstance(source, str) and re.match(SOURCE_NAME_PATTERN, source) and f"dmscdc_{source}" not in taken:
        return f"dmscdc_{source}"
    stem = re.sub(r"[^A-Za-z0-9_]", "_", os.path.splitext(os.path.basename(path))[0])
    return f"dmscdc_config_error_{stem}"


def dags_from_folder(folder: str, on_failure_callback=None) -> dict[str, DAG]:
    """One DAG per ``*.yaml`` / ``*.yml`` in ``folder``, by dag_id, in file name order.

    :param on_failure_callback: every source DAG's failure callback(s) (``build_source_dag``).

    A file that cannot build its DAG (a schema error, a source defined twice, a DAG Airflow
    rejects) becomes a ``config_error_dag`` and is logged; the other sources still load.
    """
    dags: dict[str, DAG] = {}
    failed: list[tuple[str, str]] = []
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml")) + glob.glob(os.path.join(folder, "*.yml"))):
        try:
            config = load_source_config(path)
            if config.dag_id in dags:
                raise SourceConfigError(f"{path}: source {config.source!r} is defined twice in {folder}")
            dags[config.dag_id] = build_source_dag(config, on_failure_callback)
        except Exception as error:  # one broken file must not hide the other sources' DAGs
            message = str(error) if isinstance(error, SourceConfigError) else f"{path}: {type(error).__name__}: {error}"
            log.error("dmscdc source config error: %s", message)
            failed.append((path, message))
    for path, message in failed:  # after the good ones, so a broken file never takes a working DAG's id
        dag_id = _error_dag_id(path, dags)
        dags[dag_id] = config_error_dag(dag_id, path, message)
    return dags
