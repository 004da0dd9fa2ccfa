"""``GlueContext``: Glue's wrapper of the SparkContext; the entry script only takes its session."""

from __future__ import annotations

from pyspark.sql import SparkSession


class GlueContext:
    def __init__(self, spark_context):
        self.spark_session = SparkSession(spark_context)
