"""The dmscdc DAG of one source:

    wait_for_changes >> plan >> merge[schema.table ...] >> refresh_catalog >> summary

See docs/airflow.md for what each task does and docs/scheduling.md for which changes a run
applies.
"""

from __future__ import annotations

import glob
import os
from datetime import timedelta

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

from dmscdc_provider.dag_factory.config import SourceConfig, load_source_config
from dmscdc_provider.operators.catalog import DmsCdcRefreshCatalogOperator
from dmscdc_provider.operators.merge import DmsCdcMergeOperator
from dmscdc_provider.operators.plan import DmsCdcPlanOperator
from dmscdc_provider.operators.summary import DmsCdcRunSummaryOperator
from dmscdc_provider.sensors.raw_files import DmsCdcNewFilesSensor

FULL_REFRESH_TEMPLATE = "{{ params.full_refresh | join(',') }}"


def lake_asset_alias(config: SourceConfig) -> AssetAlias:
    """The alias under which the refresh task emits one Asset event per lake table."""
    return AssetAlias(f"{config.dag_id}_lake")


def _doc(config: SourceConfig) -> str:
    return (
        f"{config.description}\n\n" if config.description else ""
    ) + (
        f"Keeps the lake `{config.lake}` in sync with the DMS output `{config.raw}` "
        f"(controller `{config.state}`, engine `{_engine_text(config)}`, catalog `{config.catalog_mode}`).\n\n"
        f"Built from `{config.path}`. A run applies the CDC files named before its data interval end; "
        "set the `full_refresh` param to rebuild tables from their LOAD files."
    )


def _engine_text(config: SourceConfig) -> str:
    if config.engine == "auto":
        return f"auto: duckdb under {config.inprocess_max_bytes:,} bytes read, else {config.engine_config.spark}"
    return config.engine


def build_source_dag(config: SourceConfig) -> DAG:
    """The DAG for one source config."""
    aws = {"aws_conn_id": config.aws_conn_id, "region_name": config.region_name}
    sensor = config.wait_for_changes
    merge = config.merge
    with DAG(
        dag_id=config.dag_id,
        description=f"dmscdc: DMS output {config.raw} -> lake {config.lake}",
        doc_md=_doc(config),
        schedule=CronDataIntervalTimetable(config.schedule, timezone="UTC") if config.schedule else None,
        start_date=config.start_date,
        catchup=config.catchup,
        # Scheduled and manual runs of one source never overlap; backfill runs are ordered by
        # the plan task's depends_on_past.
        max_active_runs=1,
        default_args={"owner": config.owner},
        params={
            "full_refresh": Param(
                [], type="array", items={"type": "string"},
                description="schema.table globs to rebuild from their LOAD files, then CDC (e.g. sales.product)",
            ),
        },
        tags=["dmscdc", config.source, *config.tags],
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
            # Runs apply changes in logical-date order: a run plans only after the previous
            # run's plan and everything downstream of it (merges, catalog, summary) finished
            # well. Airflow counts a backfill's runs apart from the DAG's max_active_runs, so
            # this, not max_active_runs, is what orders backfill and catch-up runs
            # (docs/scheduling.md).
            depends_on_past=True,
            wait_for_downstream=True,
            **aws,
        )
        merged = DmsCdcMergeOperator.partial(
            task_id="merge",
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
            map_index_template="{{ task.plan['table'] }}",
            **aws,
        ).expand_kwargs(plan.output)
        refresh_catalog = DmsCdcRefreshCatalogOperator(
            task_id="refresh_catalog",
            lake_root=config.lake,
            catalog_mode=config.catalog_mode,
            catalog_settings=config.catalog_settings,
            # The tables that merged become queryable even when another table failed; with
            # none merged the operator skips itself (Airflow 3.0 has no all_done_min_one_success).
            trigger_rule=TriggerRule.ALL_DONE,
            outlets=[lake_asset_alias(config)],
            **aws,
        )
        summary = DmsCdcRunSummaryOperator(task_id="summary", trigger_rule=TriggerRule.ALL_DONE)
        wait_for_changes >> plan >> merged >> refresh_catalog >> summary
        [wait_for_changes, plan, merged] >> summary
    return dag


def dags_from_folder(folder: str) -> dict[str, DAG]:
    """One DAG per ``*.yaml`` / ``*.yml`` in ``folder``, by dag_id, in file name order."""
    dags: dict[str, DAG] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml")) + glob.glob(os.path.join(folder, "*.yml"))):
        config = load_source_config(path)
        if config.dag_id in dags:
            raise ValueError(f"{path}: source {config.source!r} is defined twice in {folder}")
        dags[config.dag_id] = build_source_dag(config)
    return dags
