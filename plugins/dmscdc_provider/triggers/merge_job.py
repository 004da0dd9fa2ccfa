"""Trigger that waits in the triggerer for a remote merge job (Glue, EMR, EMR Serverless)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from dmscdc_provider.hooks.dmscdc import DmsCdcHook

RUNNING = "running"


class DmsCdcMergeJobTrigger(BaseTrigger):
    """Polls ``engine.poll(job_ref)`` until the job of one merge attempt has ended.

    Fires ``{"status": "succeeded"|"failed", "job_ref", "attempt_id"}``, or
    ``{"status": "error", "message", ...}`` when polling itself fails or the job is still
    running after ``max_attempts`` checks (the deadline; the job is left to the service, and
    a retry of the task reattaches to it).

    :param engine: the engine name (``dmscdc_provider.engines.ENGINE_CLASSES``).
    :param engine_settings: the engine's settings (JSON-serialisable, as in the DAG's YAML).
    :param job_ref: what ``engine.submit`` returned.
    :param attempt_id: the merge attempt the job runs; handed back to the operator.
    :param poll_interval: seconds between polls.
    :param max_attempts: checks before giving up; None waits as long as the job runs.
    :param aws_conn_id: the Airflow connection for AWS credentials.
    :param region_name: AWS region.
    """

    def __init__(
        self,
        *,
        engine: str,
        engine_settings: dict,
        job_ref: str,
        attempt_id: str,
        poll_interval: float = 30.0,
        max_attempts: int | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
    ):
        super().__init__()
        self.engine = engine
        self.engine_settings = engine_settings
        self.job_ref = job_ref
        self.attempt_id = attempt_id
        self.poll_interval = float(poll_interval)
        self.max_attempts = max_attempts
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "engine": self.engine,
                "engine_settings": self.engine_settings,
                "job_ref": self.job_ref,
                "attempt_id": self.attempt_id,
                "poll_interval": self.poll_interval,
                "max_attempts": self.max_attempts,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        reference = {"job_ref": self.job_ref, "attempt_id": self.attempt_id}
        try:
            hook = DmsCdcHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
            engine = await asyncio.to_thread(hook.make_engine, self.engine, self.engine_settings)
            attempt = 0
            while True:
                attempt += 1
                status = await asyncio.to_thread(engine.poll, self.job_ref)
                self.log.info("%s job %s (attempt %s): %s (check %d of %s)", self.engine, self.job_ref,
                              self.attempt_id, status, attempt, self.max_attempts or "unlimited")
                if status != RUNNING:
                    yield TriggerEvent({"status": status, **reference})
                    return
                if self.max_attempts is not None and attempt >= self.max_attempts:
                    yield TriggerEvent({"status": "error", "message": (
                        f"{self.engine} job {self.job_ref} still running after {attempt} checks "
                        f"{self.poll_interval:.0f}s apart; it was not stopped, a retry reattaches to it"),
                        **reference})
                    return
                await asyncio.sleep(self.poll_interval)
        except Exception as error:
            yield TriggerEvent({"status": "error", "message": f"cannot poll job {self.job_ref}: {error}", **reference})
