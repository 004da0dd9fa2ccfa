"""Trigger that waits in the triggerer until DMS has written new files for an active table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from dmscdc_provider.hooks.dmscdc import DmsCdcHook


def parse_instant(value: str | None) -> datetime | None:
    """An ISO-8601 instant (naive means UTC), or None for an empty value."""
    if not value or value == "None":
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class DmsCdcNewFilesTrigger(BaseTrigger):
    """Lists the raw location every ``poke_interval`` seconds until an active table has work.

    Fires once: ``{"status": "found", "tables": [...]}``, ``{"status": "timeout"}`` when
    ``timeout_at`` passes first, or ``{"status": "error", "message": ...}``.

    :param raw_root: where DMS writes (``<raw_root>/<schema>/<table>/``).
    :param state_uri: the controller store.
    :param tables: comma-separated globs on ``schema.table`` (empty: all tables).
    :param cdc_before: ISO instant; only CDC files named before it count.
    :param full_refresh: globs of tables a run rebuilds (they count as having work).
    :param poke_interval: seconds between listings.
    :param timeout_at: ISO instant after which the trigger gives up.
    :param aws_conn_id: the Airflow connection for AWS credentials.
    :param region_name: AWS region.
    """

    def __init__(
        self,
        *,
        raw_root: str,
        state_uri: str,
        tables: str | None = None,
        cdc_before: str | None = None,
        full_refresh: list[str] | tuple[str, ...] = (),
        poke_interval: float = 60.0,
        timeout_at: str | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
    ):
        super().__init__()
        self.raw_root = raw_root
        self.state_uri = state_uri
        self.tables = tables
        self.cdc_before = cdc_before
        self.full_refresh = list(full_refresh)
        self.poke_interval = float(poke_interval)
        self.timeout_at = timeout_at
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "raw_root": self.raw_root,
                "state_uri": self.state_uri,
                "tables": self.tables,
                "cdc_before": self.cdc_before,
                "full_refresh": self.full_refresh,
                "poke_interval": self.poke_interval,
                "timeout_at": self.timeout_at,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
            },
        )

    def hook(self) -> DmsCdcHook:
        return DmsCdcHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def _tables_with_changes(self) -> list[str]:
        return self.hook().tables_with_changes(
            self.raw_root, self.state_uri, self.tables, parse_instant(self.cdc_before), tuple(self.full_refresh))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = parse_instant(self.timeout_at)
        while True:
            try:
                # Listing and the controller store are blocking calls: keep them off the event loop.
                tables = await asyncio.to_thread(self._tables_with_changes)
            except Exception as error:
                yield TriggerEvent({"status": "error", "message": f"cannot check {self.raw_root}: {error}"})
                return
            if tables:
                yield TriggerEvent({"status": "found", "tables": tables})
                return
            remaining = None if deadline is None else (deadline - datetime.now(timezone.utc)).total_seconds()
            if remaining is not None and remaining <= 0:
                yield TriggerEvent({"status": "timeout", "timeout_at": self.timeout_at})
                return
            await asyncio.sleep(self.poke_interval if remaining is None else min(self.poke_interval, remaining))
