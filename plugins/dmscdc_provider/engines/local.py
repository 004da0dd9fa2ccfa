"""The local engine: the merge on a SparkSession in this process (laptops, CI, self-hosted workers)."""

from __future__ import annotations


class LocalSparkEngine:
    """Runs the merge in this process.

    :param master: Spark master, ``local[2]`` by default.
    :param spark_conf: extra Spark settings.
    :param session: an existing SparkSession to use instead of creating one.
    :param aws_conn_id: the task's AWS connection; Spark's S3A connector takes credentials from
        its own chain (environment, instance role), so only the region is handed on.
    :param region_name: the region of an ``s3://`` lake, for S3A (``fs.s3a.endpoint.region``).
    """

    def __init__(self, master: str = "local[2]", spark_conf: dict | None = None, session=None,
                 aws_conn_id: str | None = None, region_name: str | None = None):
        self.master = master
        self.spark_conf = dict(spark_conf or {})
        if region_name:
            self.spark_conf.setdefault("spark.hadoop.fs.s3a.endpoint.region", region_name)
        self._session = session

    @property
    def session(self):
        if self._session is None:
            from dmscdc_spark.session import local_session

            self._session = local_session(self.master, self.spark_conf)
        return self._session

    def run(self, engine_plan: dict) -> dict:
        from dmscdc_spark import run_merge

        return run_merge(self.session, engine_plan)
