"""The local engine: the merge on a SparkSession in this process (laptops, CI, self-hosted workers)."""

from __future__ import annotations

from dmscdc_provider.engines import MergeCrashed


class LocalSparkEngine:
    """Runs the merge in this process.

    :param master: Spark master, ``local[2]`` by default.
    :param spark_conf: extra Spark settings.
    :param session: an existing SparkSession to use instead of creating one.
    """

    def __init__(self, master: str = "local[2]", spark_conf: dict | None = None, session=None):
        self.master = master
        self.spark_conf = spark_conf or {}
        self._session = session

    @property
    def session(self):
        if self._session is None:
            from dmscdc_spark.session import local_session

            self._session = local_session(self.master, self.spark_conf)
        return self._session

    def run(self, engine_plan: dict) -> dict:
        from dmscdc_spark import run_merge
        from dmscdc_spark.errors import root_cause

        try:
            return run_merge(self.session, engine_plan)
        except Exception as error:  # a Py4J wrapper around a Java trace: keep its innermost cause
            raise MergeCrashed(root_cause(error)) from error
