"""Merge engines: where the merge of one table runs (in this process, or Spark here or on AWS).

Every engine takes the engine plan document (``TablePlan.engine_plan``) and returns the
engine's result document (docs/plan-and-result.md); publishing and the state commit stay
with the caller (runner.py). Engines that run Spark elsewhere (Glue, EMR, EMR Serverless)
also implement ``RemoteMergeEngine`` so an Airflow operator can submit, defer and collect.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable


class EngineUnavailable(Exception):
    """The engine cannot run any plan here (e.g. local Spark without the S3A jars for an ``s3://`` lake).

    Raised before anything is staged; a run stops at once instead of failing every table the
    same way. The message is one line that says what to install.
    """


class MergeCrashed(Exception):
    """The merge failed for a reason other than its input; the message is the cause in one line,
    the original error its ``__cause__``."""


@runtime_checkable
class MergeEngine(Protocol):
    """Runs one merge to the end and returns its result document."""

    def run(self, engine_plan: dict) -> dict: ...


@runtime_checkable
class RemoteMergeEngine(MergeEngine, Protocol):
    """A merge engine whose Spark job runs elsewhere and can be waited on without a worker.

    ``submit`` must be idempotent for one ``attempt_id``: when a job for it is already
    running it returns that job's reference instead of starting a second one.
    """

    def submit(self, engine_plan: dict) -> str:
        """Start (or find) the job for this plan attempt; returns a JSON-serialisable job reference."""

    def poll(self, job_ref: str) -> str:
        """``running``, ``succeeded`` or ``failed``."""

    def fetch_result(self, job_ref: str, engine_plan: dict) -> dict:
        """The result document the job wrote (or a ``failed`` document describing the job's failure)."""

    def cancel(self, job_ref: str) -> None:
        """Ask the service to stop the job (the task running it was killed)."""


# name -> "module:Class"; classes are imported only when an engine is made, so parsing a DAG
# never imports pyspark or an AWS SDK module it does not need.
ENGINE_CLASSES = {
    "duckdb": "dmscdc_provider.engines.duckdb:DuckDBMergeEngine",
    "local": "dmscdc_provider.engines.local:LocalSparkEngine",
    "glue": "dmscdc_provider.engines.glue:GlueMergeEngine",
    "emr": "dmscdc_provider.engines.emr:EmrMergeEngine",
    "emr_serverless": "dmscdc_provider.engines.emr_serverless:EmrServerlessMergeEngine",
}


def make_engine(name: str, **settings) -> MergeEngine:
    """Build the engine called ``name`` with its settings (from the DAG's YAML or CLI flags)."""
    try:
        target = ENGINE_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(sorted(ENGINE_CLASSES))}") from None
    module_name, class_name = target.split(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(**settings)
