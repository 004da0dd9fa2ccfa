"""The local engine: the merge on a SparkSession in this process (laptops, CI, self-hosted workers)."""

from __future__ import annotations


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

        return run_merge(self.session, engine_plan)
