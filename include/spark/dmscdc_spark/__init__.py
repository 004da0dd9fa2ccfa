"""dmscdc merge engine: pure PySpark, runs unchanged on local Spark, AWS Glue and EMR.

The engine takes a per-table plan (a JSON document, see ``docs/plan-and-result.md``),
merges the DMS change files it names into the lake table's Parquet files and returns a
result document. It never touches the controller state and never publishes anything:
it only writes staged files under the plan's ``staging_path`` (a ``_``-prefixed folder
that readers skip). Publishing and the state commit belong to the caller.

Importing the package imports no pyspark: the Airflow side (MWAA workers have no Spark)
imports it only to find its files and upload them for Glue or EMR. ``run_merge`` loads the
job module on first use.
"""

from __future__ import annotations

__all__ = ["run_merge"]


def __getattr__(name: str):
    if name == "run_merge":
        from dmscdc_spark.job import run_merge

        return run_merge
    raise AttributeError(f"module 'dmscdc_spark' has no attribute {name!r}")
