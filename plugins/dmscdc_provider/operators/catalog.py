"""Operator: refresh the catalog for the tables whose merge succeeded, and emit their Assets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.sdk import Asset, AssetAlias

from dmscdc_provider.hooks.dmscdc import DmsCdcHook
from dmscdc_provider.operators.merge import OUTCOME_KEY
from dmscdc_provider.plan import HISTORY_SUFFIX
from dmscdc_provider.runner import SUCCEEDED

if TYPE_CHECKING:
    from airflow.sdk import Context


def lake_table_uri(lake_root: str, table: str) -> str:
    """The Asset URI of a lake table: ``s3://bucket/lake/schema/table`` or ``file:///abs/lake/schema/table``."""
    schema, name = table.split(".", 1)
    root = lake_root.rstrip("/") if "://" in lake_root else "file://" + os.path.abspath(lake_root)
    return f"{root}/{schema}/{name}"


def lake_table_asset(lake_root: str, table: str) -> Asset:
    """The Asset downstream DAGs schedule on: ``schedule=[Asset("s3://bucket/lake/sales/product")]``."""
    return Asset(lake_table_uri(lake_root, table))


def pull_outcomes(context: Context, merge_task_id: str) -> list[dict]:
    """The outcome every merge instance of this run pushed (failed ones included)."""
    pulled = context["ti"].xcom_pull(task_ids=merge_task_id, key=OUTCOME_KEY)
    if pulled is None:
        return []
    # One mapped instance comes back as the value itself, several as a list.
    return [pulled] if isinstance(pulled, dict) else [o for o in pulled if o]


def asset_event_extra(outcome: dict) -> dict:
    """What a lake table's Asset event tells a consumer: which merge, how much changed, the
    table's new watermark (by controller attribute names) and the merge's figures (lag, backlog,
    rows by kind; docs/observability.md)."""
    summary = outcome.get("summary") or {}
    return {
        "table": outcome["table"],
        "plan_id": outcome["plan_id"],
        "rows_written": summary.get("rows_written", 0),
        "files_added": summary.get("files_added", 0),
        "files_removed": summary.get("files_removed", 0),
        "watermark": outcome.get("watermark"),
        "figures": summary.get("figures"),
    }


class DmsCdcRefreshCatalogOperator(AwsBaseOperator[DmsCdcHook]):
    """Makes the tables merged in this run queryable, and emits one Asset event per table.

    Meant to run when some merges failed (``trigger_rule="all_done"``): it covers exactly the
    tables whose merge succeeded, and skips itself when none did. Asset events go to every
    ``AssetAlias`` among the task's ``outlets``, one per lake table (see ``lake_table_asset``),
    with ``asset_event_extra`` as their extra.

    An event announces one merge once: after a failed table is fixed and its merge instance
    cleared (with downstream), this task runs again and announces only that table. It learns
    which merges of the run it already announced from the alias's events, so the alias must
    also be among its ``inlets`` (without that, every merged table is announced again).

    :param lake_root: where the lake tables live.
    :param catalog_mode: ``duckdb`` locally; AWS modes register in
        ``dmscdc_provider.catalog.CATALOG_REFRESHERS``.
    :param catalog_settings: the mode's settings (``path`` for ``duckdb``).
    :param merge_task_id: the mapped merge task of this DAG.
    """

    aws_hook_class = DmsCdcHook
    template_fields: Sequence[str] = aws_template_fields("lake_root", "catalog_mode", "catalog_settings")
    template_fields_renderers = {"catalog_settings": "json"}
    ui_color = "#f3eefb"

    def __init__(
        self,
        *,
        lake_root: str,
        catalog_mode: str = "duckdb",
        catalog_settings: dict | None = None,
        iceberg_catalog: str | None = None,
        merge_task_id: str = "merge",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.lake_root = lake_root
        self.iceberg_catalog = iceberg_catalog
        self.catalog_mode = catalog_mode
        self.catalog_settings = catalog_settings or {}
        self.merge_task_id = merge_task_id

    def execute(self, context: Context) -> list[str]:
        outcomes = sorted((o for o in pull_outcomes(context, self.merge_task_id) if o["status"] == SUCCEEDED),
                          key=lambda o: o["table"])
        merged = [o["table"] for o in outcomes]
        if not merged:
            raise AirflowSkipException("no table merged in this run; the catalog is unchanged")
        by_format: dict[str, list[str]] = {}
        for outcome in outcomes:
            tables = by_format.setdefault(outcome.get("table_format") or "parquet", [])
            tables.append(outcome["table"])
            if (outcome.get("summary") or {}).get("history"):  # its history table, committed with it
                tables.append(outcome["table"] + HISTORY_SUFFIX)
        refreshed = self.hook.refresh_lake_catalog(self.catalog_mode, self.lake_root, by_format,
                                                   self.catalog_settings, self.iceberg_catalog)
        self.log.info("%s catalog: refreshed %s", self.catalog_mode, ", ".join(refreshed) or "nothing")
        for alias in (outlet for outlet in self.outlets if isinstance(outlet, AssetAlias)):
            announced = self._announced(context, alias)
            for outcome in outcomes:
                if (outcome["table"], outcome["plan_id"]) in announced:
                    self.log.info("%s: already announced by an earlier try of this task", outcome["table"])
                    continue
                extra = asset_event_extra(outcome)
                context["outlet_events"][alias].add(lake_table_asset(self.lake_root, outcome["table"]), extra=extra)
                self.log.info("%s: Asset event for %s: %s", outcome["table"],
                              lake_table_uri(self.lake_root, outcome["table"]), extra)
        return merged

    def _announced(self, context: Context, alias: AssetAlias) -> set[tuple[str, str]]:
        """``(table, plan_id)`` of the events earlier tries of this task emitted in this DAG run."""
        if alias not in (self.inlets or []):
            return set()
        ti = context["ti"]
        events = context["inlet_events"][alias]
        # This run's events come after it was due; the bound keeps the query to recent events.
        # Airflow 3.0 has no bound (its accessor returns every event of the alias as a list).
        run_after = getattr(context.get("dag_run"), "run_after", None)
        if run_after is not None and hasattr(events, "after"):
            events = events.after(run_after.isoformat())
        return {
            ((event.extra or {}).get("table"), (event.extra or {}).get("plan_id"))
            for event in events
            if (event.source_dag_id, event.source_run_id, event.source_task_id) == (ti.dag_id, ti.run_id, ti.task_id)
        }
