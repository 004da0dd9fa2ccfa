"""The local engine: the merge on a SparkSession in this process (laptops, CI, self-hosted workers)."""

from __future__ import annotations

from dmscdc_provider.engines import EngineUnavailable, MergeCrashed


def plan_uris(engine_plan: dict) -> list[str]:
    """Every location a merge of this plan reads or writes."""
    files = [entry["path"] for entry in engine_plan["files"]]
    return [engine_plan["lake_table_path"], engine_plan["staging_path"], *files]


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

    def progress_note(self) -> str | None:
        """What Spark is doing now (active stages and their finished tasks), for progress lines."""
        if self._session is None:
            return None
        tracker = self._session.sparkContext.statusTracker()
        stages = [info for info in map(tracker.getStageInfo, tracker.getActiveStageIds()) if info is not None]
        if not stages:
            return None
        return "Spark " + "; ".join(
            f"stage {stage.stageId} ({stage.name.split(' at ')[0]}): {stage.numCompletedTasks} of "
            f"{stage.numTasks} tasks done" for stage in sorted(stages, key=lambda stage: stage.stageId))

    def run(self, engine_plan: dict) -> dict:
        from dmscdc_spark import run_merge
        from dmscdc_spark.s3a import S3AUnavailable, cached_jars, is_s3_uri, jars_missing_error, require_s3

        s3_uri = next((uri for uri in plan_uris(engine_plan) if is_s3_uri(uri)), None)
        if s3_uri is not None:
            if self._session is None and cached_jars() is None:  # say so before starting a JVM
                raise EngineUnavailable(str(jars_missing_error(s3_uri)))
            try:
                require_s3(self.session, s3_uri)
            except S3AUnavailable as error:
                raise EngineUnavailable(str(error)) from None
        from dmscdc_spark.errors import root_cause

        try:
            return run_merge(self.session, engine_plan)
        except Exception as error:  # a Py4J wrapper around a Java trace: keep its innermost cause
            raise MergeCrashed(root_cause(error)) from error
