"""Sensor: wait until DMS has written new files for an active table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, AirflowSkipException, conf
from airflow.sdk.bases.sensor import PokeReturnValue

from dmscdc_provider.hooks.dmscdc import DmsCdcHook
from dmscdc_provider.planner import FullRefreshGlobError
from dmscdc_provider.triggers.raw_files import DmsCdcNewFilesTrigger, parse_instant

if TYPE_CHECKING:
    from airflow.sdk import Context


class RawFilesCheckError(Exception):
    """Checking the raw location failed. Deliberately not an AirflowException, so ``soft_fail``
    (meant for "nothing new arrived") never turns a broken store or bucket into a skip."""


def split_globs(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Globs given as a list or as one comma-separated string (a rendered template)."""
    if not value:
        return ()
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(part.strip() for part in parts if part and part.strip())


def interval_end(context: Context) -> datetime | None:
    """The run's data interval end: CDC files named at or after it belong to later runs."""
    value = context.get("data_interval_end")
    return value.astimezone(timezone.utc) if value is not None else None


def describe_cutoff(cdc_before: datetime | None, explicit: bool = False) -> str:
    """Which CDC files a run applies, as a sentence for its log (docs/scheduling.md).

    :param explicit: the cutoff was given as the ``cdc_before`` argument, not taken from the run.
    """
    if cdc_before is None:
        return ("This run has no data interval (it was triggered without a logical date), "
                "so it applies every CDC file present.")
    source = "given as the cdc_before argument" if explicit else "the end of its data interval"
    return (f"This run applies the CDC files named before {cdc_before.isoformat()}, {source}; "
            "files named at or after it are left for later runs.")


class DmsCdcNewFilesSensor(AwsBaseSensor[DmsCdcHook]):
    """Waits until an active table has new DMS files (or a requested full refresh).

    Returns (XCom) the names of the tables with work. With ``soft_fail=True`` the task ends
    *skipped* when nothing arrives before ``timeout``; errors (an unreadable store or bucket)
    always fail it.

    :param raw_root: where DMS writes (``<raw_root>/<schema>/<table>/``).
    :param state_uri: the controller store (``sqlite:///PATH``, ``dynamodb://TABLE``).
    :param tables: comma-separated globs on ``schema.table`` (empty: all tables).
    :param cdc_before: ISO instant; only CDC files named before it count. Empty: the run's
        ``data_interval_end`` (no bound for a run without a data interval).
    :param full_refresh: globs of tables the run rebuilds; they count as having work.
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    """

    aws_hook_class = DmsCdcHook
    template_fields: Sequence[str] = aws_template_fields("raw_root", "state_uri", "tables", "cdc_before", "full_refresh")
    ui_color = "#e8f4e8"

    def __init__(
        self,
        *,
        raw_root: str,
        state_uri: str,
        tables: str | None = None,
        cdc_before: str | None = None,
        full_refresh: str | Sequence[str] = (),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.raw_root = raw_root
        self.state_uri = state_uri
        self.tables = tables
        self.cdc_before = cdc_before
        self.full_refresh = full_refresh
        self.deferrable = deferrable

    def _cdc_before(self, context: Context) -> datetime | None:
        return parse_instant(self.cdc_before) if self.cdc_before else interval_end(context)

    def poke(self, context: Context) -> PokeReturnValue:
        cdc_before = self._cdc_before(context)
        try:
            tables = self.hook.tables_with_changes(
                self.raw_root, self.state_uri, self.tables, cdc_before, split_globs(self.full_refresh))
        except FullRefreshGlobError as error:  # fails the run before anything is planned or merged
            raise RawFilesCheckError(f"{error} (the run's full_refresh param)") from None
        except Exception as error:
            raise RawFilesCheckError(f"cannot check {self.raw_root} against {self.state_uri}: {error}") from error
        if tables:
            self.log.info("New work for %s. %s", ", ".join(tables), describe_cutoff(cdc_before))
        else:
            self.log.info("No new DMS files for active tables yet. %s", describe_cutoff(cdc_before))
        return PokeReturnValue(is_done=bool(tables), xcom_value=tables)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        cdc_before = self._cdc_before(context)
        timeout_at = datetime.now(timezone.utc) + timedelta(seconds=self.timeout)
        self.defer(
            trigger=DmsCdcNewFilesTrigger(
                raw_root=self.raw_root,
                state_uri=self.state_uri,
                tables=self.tables,
                cdc_before=cdc_before.isoformat() if cdc_before else None,
                full_refresh=list(split_globs(self.full_refresh)),
                poke_interval=self.poke_interval,
                timeout_at=timeout_at.isoformat(),
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
            ),
            method_name="execute_complete",
            # The trigger ends itself at timeout_at with a clear event; this is the backstop.
            timeout=timedelta(seconds=self.timeout + self.poke_interval + 60),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[str]:
        event = event or {}
        status = event.get("status")
        if status == "found":
            self.log.info("new work for %s", ", ".join(event["tables"]))
            return event["tables"]
        if status == "timeout":
            message = f"no new DMS files for active tables under {self.raw_root} before {event.get('timeout_at')}"
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        raise RawFilesCheckError(event.get("message") or f"unexpected trigger event {event!r}")
