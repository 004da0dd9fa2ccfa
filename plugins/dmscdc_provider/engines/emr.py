"""The EMR on EC2 engine: each table's merge is a step on a long-running cluster.

The blog recommends this for teams that already run EMR. Steps are added through the Amazon
provider's ``EmrHook``; the cluster is named or given by id. Each step is named after table,
plan and attempt, so a retried Airflow task finds a step of its plan that is still pending or
running and reattaches to it. Steps use ``ActionOnFailure=CONTINUE``: a failed merge never
stops a shared cluster. Tables merge in parallel only up to the cluster's
``StepConcurrencyLevel``; further steps wait in ``PENDING``.
"""

from __future__ import annotations

import logging

from dmscdc_provider.aws.artifacts import SparkArtifacts
from dmscdc_provider.aws.remote_engine import (
    S3SparkJobEngine,
    attempt_of_named_run,
    make_job_ref,
    parse_job_ref,
    plan_uri_of_attempt,
    run_name,
)

log = logging.getLogger(__name__)

ACTIVE_STATES = ["PENDING", "RUNNING"]
FAILED_STATES = frozenset({"CANCEL_PENDING", "CANCELLED", "FAILED", "INTERRUPTED"})
USABLE_CLUSTER_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]


class EmrMergeEngine(S3SparkJobEngine):
    """Runs merges as spark-submit steps on an EMR cluster.

    :param artifacts_uri: ``s3://bucket/prefix`` for the entry point and library zip.
    :param cluster_id: the cluster (``j-...``); or
    :param cluster_name: the name of a single active cluster.
    :param spark_submit_args: extra spark-submit arguments, e.g. ``["--conf", "spark.executor.cores=2"]``.
    :param execution_role_arn: runtime role of the steps (clusters with runtime roles enabled).
    :param aws_conn_id: the Airflow AWS connection of every client (None: boto3's default chain).
    :param region_name: AWS region (None: the connection's or the environment's).
    :param poll_interval: seconds between status checks while ``run`` waits.
    :param wait_timeout: seconds ``run`` waits for a job before giving up.
    """

    engine_name = "emr"
    success_state = "COMPLETED"
    failed_states = FAILED_STATES

    def __init__(
        self,
        artifacts_uri: str,
        cluster_id: str | None = None,
        cluster_name: str | None = None,
        spark_submit_args: list[str] | None = None,
        execution_role_arn: str | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        poll_interval: float = 30.0,
        wait_timeout: float = 6 * 3600.0,
    ):
        super().__init__(artifacts_uri, aws_conn_id=aws_conn_id, region_name=region_name,
                         poll_interval=poll_interval, wait_timeout=wait_timeout)
        if not (cluster_id or cluster_name):
            raise ValueError("emr: give cluster_id or cluster_name")
        self._cluster_id = cluster_id
        self.cluster_name = cluster_name
        self.spark_submit_args = list(spark_submit_args or [])
        self.execution_role_arn = execution_role_arn
        self._hook = None

    def hook(self):
        from airflow.providers.amazon.aws.hooks.emr import EmrHook

        if self._hook is None:
            # emr_conn_id=None: steps need no job-flow template connection.
            self._hook = EmrHook(emr_conn_id=None, aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        return self._hook

    @property
    def cluster_id(self) -> str:
        if self._cluster_id is None:
            found = self.hook().get_cluster_id_by_name(self.cluster_name, USABLE_CLUSTER_STATES)
            if found is None:
                raise RuntimeError(f"emr: no active cluster named {self.cluster_name!r}")
            self._cluster_id = found
        return self._cluster_id

    def find_running(self, engine_plan: dict) -> str | None:
        paginator = self.hook().conn.get_paginator("list_steps")
        for page in paginator.paginate(ClusterId=self.cluster_id, StepStates=ACTIVE_STATES):
            for step in page.get("Steps", []):
                attempt_id = attempt_of_named_run(engine_plan, step.get("Name"))
                if attempt_id:
                    return make_job_ref("emr", attempt_id, plan_uri_of_attempt(engine_plan, attempt_id),
                                        cluster_id=self.cluster_id, step_id=step["Id"])
        return None

    def step(self, engine_plan: dict, plan_uri: str, artifacts: SparkArtifacts) -> dict:
        arguments = [
            "spark-submit", "--deploy-mode", "cluster",
            "--py-files", artifacts.library_zip,
            *self.spark_submit_args,
            *self.spark_conf_arguments(),
            artifacts.job_script, "--plan", plan_uri,
        ]
        return {
            "Name": run_name(engine_plan),
            "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": arguments},
        }

    def start(self, engine_plan: dict, plan_uri: str, artifacts: SparkArtifacts) -> str:
        step_ids = self.hook().add_job_flow_steps(
            job_flow_id=self.cluster_id,
            steps=[self.step(engine_plan, plan_uri, artifacts)],
            execution_role_arn=self.execution_role_arn,
        )
        log.info("%s: added EMR step %s to %s", engine_plan["table"], step_ids[0], self.cluster_id)
        return make_job_ref("emr", engine_plan["attempt_id"], plan_uri, cluster_id=self.cluster_id, step_id=step_ids[0])

    def cancel(self, job_ref: str) -> None:
        ref = parse_job_ref(job_ref)
        self.hook().conn.cancel_steps(ClusterId=ref["cluster_id"], StepIds=[ref["step_id"]])

    def _step(self, job_ref: str) -> dict:
        ref = parse_job_ref(job_ref)
        return self.hook().conn.describe_step(ClusterId=ref["cluster_id"], StepId=ref["step_id"])["Step"]

    def job_state(self, job_ref: str) -> str:
        return self._step(job_ref)["Status"]["State"]

    def failure_reason(self, job_ref: str) -> str:
        status = self._step(job_ref)["Status"]
        details = status.get("FailureDetails") or {}
        message = details.get("Message") or details.get("Reason") or (status.get("StateChangeReason") or {}).get("Message")
        log_file = details.get("LogFile")
        return f"{status['State']}: {message or 'no message'}" + (f" (log: {log_file})" if log_file else "")
