"""The local SparkSession dmscdc runs on outside Glue and EMR."""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

from dmscdc_spark.job import SESSION_SETTINGS
from dmscdc_spark.s3a import cached_jars, s3a_settings

LOG_SETTINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")

# Small shuffles: a merge's shuffled data is the size of the change, not of the table. The
# merge's own settings (UTC, exact ancient dates) from the start, for anything read before it.
LOCAL_DEFAULTS = {
    **SESSION_SETTINGS,
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{LOG_SETTINGS}",
}


def local_session(master: str = "local[2]", conf: dict | None = None) -> SparkSession:
    """Get or create the process's local session with dmscdc's defaults and ``conf`` on top.

    When the S3A jars are cached (``make setup``), the session reads and writes ``s3://`` and
    ``s3a://`` through them (see ``dmscdc_spark.s3a``).
    """
    builder = SparkSession.builder.master(master).appName("dmscdc")
    jars = cached_jars()
    s3a = s3a_settings(jars) if jars else {}
    for key, value in {**LOCAL_DEFAULTS, **s3a, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
