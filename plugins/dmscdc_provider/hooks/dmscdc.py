"""DmsCdcHook: opens what a dmscdc task works with (controller store, storage, merge engine).

Every dmscdc operator, sensor and trigger reaches the core library through this hook, so the
AWS connection of the task (``aws_conn_id``, ``region_name``) is the one place credentials
come from. Nothing is opened in the constructor; the connection is handed to the factories
that take one (``s3://`` storage, ``dynamodb://`` stores, the Glue and EMR engines, AWS catalog
modes), which open AWS clients only when used; a local pipeline never touches AWS.
"""

from __future__ import annotations

import importlib
import inspect
from datetime import datetime
from functools import partial

from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

from dmscdc_provider.catalog import catalog_refresher
from dmscdc_provider.engines import ENGINE_CLASSES, MergeEngine, make_engine
from dmscdc_provider.engines.choice import EngineConfig
from dmscdc_provider.planner import Planner, PlanningReport
from dmscdc_provider.state.base import ControllerStore, open_store
from dmscdc_provider.storage import Storage, open_storage

# What factories that call AWS accept, as the Amazon provider's hooks name them.
CONNECTION_ARGUMENTS = ("aws_conn_id", "region_name")


def _accepted(factory) -> set[str]:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return set()
    return {name for name in CONNECTION_ARGUMENTS if name in parameters}


class DmsCdcHook(AwsGenericHook):
    """Opens dmscdc's controller store, storage and merge engines with the task's AWS connection.

    :param aws_conn_id: the Airflow connection for AWS credentials (``None``: boto3's default chain).
    :param region_name: AWS region; default from the connection or boto3.
    """

    hook_name = "dmscdc"

    def _connection_kwargs(self, factory, given: dict | None = None) -> dict:
        """The task's connection for the arguments ``factory`` takes and ``given`` lacks."""
        values = {"aws_conn_id": self.aws_conn_id, "region_name": self.region_name}
        return {name: values[name] for name in _accepted(factory) if name not in (given or {})}

    def open_store(self, uri: str) -> ControllerStore:
        """The controller store for ``uri`` (``sqlite:///PATH``, a path, ``dynamodb://TABLE``)."""
        return open_store(uri, **self._connection_kwargs(open_store))

    def open_storage(self, uri: str) -> Storage:
        """The storage for a raw or lake location."""
        return open_storage(uri, **self._connection_kwargs(open_storage))

    def make_engine(self, name: str, settings: dict | None = None) -> MergeEngine:
        """The merge engine called ``name`` (see ``dmscdc_provider.engines.ENGINE_CLASSES``)."""
        settings = dict(settings or {})
        if name in ENGINE_CLASSES:
            module_name, class_name = ENGINE_CLASSES[name].split(":")
            engine_class = getattr(importlib.import_module(module_name), class_name)
            settings.update(self._connection_kwargs(engine_class, settings))
        return make_engine(name, **settings)

    def refresh_catalog(self, mode: str, lake_root: str, tables: list[str], settings: dict | None = None) -> list[str]:
        """Refresh the catalog of ``mode`` (see ``dmscdc_provider.catalog.CATALOG_REFRESHERS``)
        for ``tables``; returns the tables it made queryable."""
        refresher = catalog_refresher(mode)
        settings = dict(settings or {})
        return refresher(lake_root, list(tables), **settings, **self._connection_kwargs(refresher, settings))

    def planner(
        self,
        raw_root: str,
        lake_root: str,
        store: ControllerStore,
        tables: str | None = None,
        csv_delimiter: str = ",",
        csv_null_value: str = "NULL",
        engines: EngineConfig | None = None,
    ) -> Planner:
        """A planner over ``raw_root`` that writes plans for ``lake_root``; with ``engines``, each
        plan names its engine (Parquet footers are read with the task's connection)."""
        choose_engine = None
        if engines is not None:
            choose_engine = partial(engines.choose, aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        return Planner(raw_root, lake_root, store, self.open_storage(raw_root), tables or None,
                       csv_delimiter, csv_null_value, choose_engine)

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
