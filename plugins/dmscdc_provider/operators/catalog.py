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


class DmsCdcRefreshCatalogOperator(AwsBaseOperator[DmsCdcHook]):
    """Makes the tables merged in this run queryable, and emits one Asset event per table.

    Meant to run when some merges failed (``trigger_rule="all_done"``): it covers exactly the
    tables whose merge succeeded, and skips itself when none did. Asset events go to every ``AssetAlias``
    among the task's ``outlets``, one per lake table (see ``lake_table_asset``).

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
        merge_task_id: str = "merge",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.lake_root = lake_root
        self.catalog_mode = catalog_mode
        self.catalog_settings = catalog_settings or {}
        self.merge_task_id = merge_task_id

    def execute(self, context: Context) -> list[str]:
        merged = sorted(o["table"] for o in pull_outcomes(context, self.merge_task_id) if o["status"] == SUCCEEDED)
        if not merged:
            raise AirflowSkipException("no table merged in this run; the catalog is unchanged")
        refreshed = self.hook.refresh_catalog(self.catalog_mode, self.lake_root, merged, self.catalog_settings)
        self.log.info("%s catalog: refreshed %s", self.catalog_mode, ", ".join(refreshed) or "nothing")
        for alias in (outlet for outlet in self.outlets if isinstance(outlet, AssetAlias)):
            for table in merged:
                context["outlet_events"][alias].add(lake_table_asset(self.lake_root, table), extra={"table": table})
        return merged
