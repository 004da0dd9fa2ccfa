"""DmsCdcHook: opens what a dmscdc task works with (controller store, storage, merge engine).

Every dmscdc operator, sensor and trigger reaches the core library through this hook, so the
AWS connection of the task (``aws_conn_id``, ``region_name``) is the one place credentials
come from. Nothing is opened in the constructor; ``aws_conn_id`` and ``region_name`` are passed
explicitly to every factory (stores, storage, every engine, every catalog refresher), which
open AWS clients only when used; a local pipeline never touches AWS.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

from dmscdc_provider.catalog import catalog_refresher
from dmscdc_provider.engines import MergeEngine, make_engine
from dmscdc_provider.engines.choice import EngineConfig
from dmscdc_provider.planner import Planner, PlanningReport
from dmscdc_provider.state.base import ControllerStore, open_store
from dmscdc_provider.storage import Storage, open_storage


class DmsCdcHook(AwsGenericHook):
    """Opens dmscdc's controller store, storage and merge engines with the task's AWS connection.

    :param aws_conn_id: the Airflow connection for AWS credentials (``None``: boto3's default chain).
    :param region_name: AWS region; default from the connection or boto3.
    """

    hook_name = "dmscdc"

    def open_store(self, uri: str) -> ControllerStore:
        """The controller store for ``uri`` (``sqlite:///PATH``, a path, ``dynamodb://TABLE``)."""
        return open_store(uri, aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def open_storage(self, uri: str) -> Storage:
        """The storage for a raw or lake location."""
        return open_storage(uri, aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def make_engine(self, name: str, settings: dict | None = None) -> MergeEngine:
        """The merge engine called ``name`` (see ``dmscdc_provider.engines.ENGINE_CLASSES``)
        with the task's connection; ``settings`` must not name one of its own."""
        _refuse_connection_settings(f"engine {name}", settings)
        return make_engine(name, aws_conn_id=self.aws_conn_id, region_name=self.region_name, **(settings or {}))

    def refresh_catalog(self, mode: str, lake_root: str, tables: list[str], settings: dict | None = None) -> list[str]:
        """Refresh the catalog of ``mode`` (see ``dmscdc_provider.catalog.CATALOG_REFRESHERS``)
        for ``tables``; returns the tables it made queryable."""
        _refuse_connection_settings(f"catalog {mode}", settings)
        refresher = catalog_refresher(mode)
        return refresher(lake_root, list(tables), aws_conn_id=self.aws_conn_id, region_name=self.region_name,
                         **(settings or {}))

    def refresh_lake_catalog(self, mode: str, lake_root: str, tables_by_format: dict[str, list[str]],
                             settings: dict | None = None, iceberg_catalog: str | None = None) -> list[str]:
        """Refresh the catalog for tables of both formats: Iceberg tables are in their own
        catalog already (Glue: readable by Athena at once), so only the DuckDB catalog adds
        views of them; the other modes cover the Parquet-format tables."""
        settings = dict(settings or {})
        iceberg = tables_by_format.get("iceberg", [])
        if mode == "duckdb" and iceberg:
            settings.update(iceberg_tables=iceberg, iceberg_catalog=iceberg_catalog)
        parquet = tables_by_format.get("parquet", [])
        if not parquet and mode != "duckdb":
            return []
        return self.refresh_catalog(mode, lake_root, parquet, settings)

    def planner(
        self,
        raw_root: str,
        lake_root: str,
        store: ControllerStore,
        tables: str | None = None,
        csv_delimiter: str = ",",
        csv_null_value: str = "NULL",
        engines: EngineConfig | None = None,
        table_format: str = "parquet",
        iceberg_catalog: str | None = None,
        table_settings: dict[str, dict] | None = None,
    ) -> Planner:
        """A planner over ``raw_root`` that writes plans for ``lake_root``; with ``engines``, each
        plan names its engine (Parquet footers are read with the task's connection)."""
        choose_engine = None
        if engines is not None:
            choose_engine = partial(engines.choose, aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        return Planner(raw_root, lake_root, store, self.open_storage(raw_root), tables or None,
                       csv_delimiter, csv_null_value, choose_engine, table_format=table_format,
                       iceberg_catalog=iceberg_catalog, table_settings=table_settings)

    def tables_with_changes(
        self,
        raw_root: str,
        state_uri: str,
        tables: str | None = None,
        cdc_before: datetime | None = None,
        full_refresh: tuple[str, ...] = (),
    ) -> list[str]:
        """Active tables that a run would work on now: new LOAD or CDC files, a requested full
        refresh, or a table folder that cannot be listed (the run reports it).

        Registers tables seen for the first time (inactive), as planning does.
        """
        store = self.open_store(state_uri)
        try:
            report: PlanningReport = self.planner(raw_root, "unused://lake", store, tables).plan(
                cdc_before=cdc_before, full_refresh=full_refresh)
        finally:
            store.close()
        return sorted({plan.table for plan in report.plans} | {problem.table for problem in report.problems})


def _refuse_connection_settings(what: str, settings: dict | None) -> None:
    """A task has one AWS connection: its ``aws.conn_id`` / ``aws.region``, never a setting."""
    named = sorted({"aws_conn_id", "region_name"} & set(settings or {}))
    if named:
        raise ValueError(f"{what}: {', '.join(named)} is the task's AWS connection (the source's aws: section), "
                         "not an engine or catalog setting")
