"""Operator: maintenance of a source's Iceberg tables (compact, expire, remove unreferenced files)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException

from dmscdc_provider.hooks.dmscdc import DmsCdcHook

if TYPE_CHECKING:
    from airflow.sdk import Context


class DmsCdcMaintainOperator(AwsBaseOperator[DmsCdcHook]):
    """Runs ``dmscdc maintain`` for the active Iceberg tables of a source (docs/table-formats.md):
    compaction commits through the controller like a merge, so it never races one.

    :param raw_root: where DMS writes (selects the source's tables).
    :param lake_root: where the lake tables live.
    :param state_uri: the controller store.
    :param tables: comma-separated globs on ``schema.table`` (empty: all tables).
    :param table_format: format of tables whose controller item names none.
    :param iceberg_catalog: catalog of the Iceberg tables.
    :param compact_below_bytes: data files smaller than this are compacted within their partition.
    :param expire_after_days: snapshots older than this are expired (never the current one).
    :param orphan_age_hours: files no snapshot names are removed once this old.
    """

    aws_hook_class = DmsCdcHook
    template_fields: Sequence[str] = aws_template_fields("tables")
    ui_color = "#d9ead3"

    def __init__(self, *, raw_root: str, lake_root: str, state_uri: str, tables: str | None = None,
                 table_format: str = "parquet", iceberg_catalog: str | None = None,
                 compact_below_bytes: int = 8 * 1024 * 1024, expire_after_days: float = 7.0,
                 orphan_age_hours: float = 24.0, **kwargs):
        super().__init__(**kwargs)
        self.raw_root, self.lake_root, self.state_uri, self.tables = raw_root, lake_root, state_uri, tables
        self.table_format, self.iceberg_catalog = table_format, iceberg_catalog
        self.compact_below_bytes = compact_below_bytes
        self.expire_after_days, self.orphan_age_hours = expire_after_days, orphan_age_hours

    def execute(self, context: Context) -> list[str]:
        from dmscdc_provider.table_formats.maintenance import maintain_table

        store = self.hook.open_store(self.state_uri)
        failures = []
        maintained = []
        try:
            planner = self.hook.planner(self.raw_root, self.lake_root, store, self.tables)
            states = [s for s in (store.get(p) for p in planner.selected_paths()) if s is not None and s.active]
            iceberg = [s for s in states if (s.table_format or self.table_format) == "iceberg"]
            if not iceberg:
                raise AirflowSkipException("no active Iceberg table in this source; nothing to maintain")
            for state in iceberg:
                try:
                    report = maintain_table(
                        state, self.lake_root, self.iceberg_catalog, store, self.hook.open_storage(self.lake_root),
                        compact_below_bytes=self.compact_below_bytes,
                        expire_after=timedelta(days=self.expire_after_days),
                        orphan_age=timedelta(hours=self.orphan_age_hours),
                        aws_conn_id=self.aws_conn_id, region_name=self.region_name)
                except Exception as error:  # one table's failure must not stop the others
                    self.log.error("%s: maintenance failed: %s", state.name, error)
                    failures.append(state.name)
                    continue
                self.log.info("%s", report.line())
                maintained.append(state.name)
        finally:
            store.close()
        if failures:
            raise AirflowException(f"maintenance failed for {', '.join(failures)} (see the log); the tables' data "
                                   "is unchanged by it; clear this task to try again")
        return maintained
