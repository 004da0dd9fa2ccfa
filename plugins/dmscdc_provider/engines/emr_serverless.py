"""The EMR Serverless engine: each table's merge is a job run on an EMR Serverless application.

The run is named after table, plan and attempt, and its client token is the attempt id
(``<plan_id>-<suffix>``): a repeated ``StartJobRun`` call for one attempt is idempotent, and
a retried Airflow task, which plans a new attempt of the same plan, first looks for a run of
the plan that is still going and reattaches to it. A token of the plan alone would be wrong:
after a failed run, the retry's start would return the failed run again.
"""

from __future__ import annotations

import copy
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

ACTIVE_STATES = ["SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "QUEUED"]
FAILED_STATES = frozenset({"FAILED", "CANCELLING", "CANCELLED"})


class EmrServerlessMergeEngine(S3SparkJobEngine):
    """Runs merges as EMR Serverless Spark job runs.

    :param application_id: the Spark application (release 7.x: Spark 3.5).
    :param execution_role_arn: IAM role the job runs as.
    :param artifacts_uri: ``s3://bucket/prefix`` for the entry point and library zip.
    :param spark_submit_parameters: extra spark-submit options, e.g. ``--conf spark.executor.cores=2``.
    :param configuration_overrides: ``configurationOverrides`` of StartJobRun (log locations ...).
    :param execution_timeout_minutes: EMR Serverless's timeout of one run.
    :param aws_conn_id: the Airflow AWS connection of every client (None: boto3's default chain).
    :param region_name: AWS region (None: the connection's or the environment's).
    :param poll_interval: seconds between status checks while ``run`` waits.
    :param wait_timeout: seconds ``run`` waits for a job before giving up.
    """

    engine_name = "emr_serverless"
    success_state = "SUCCESS"
    failed_states = FAILED_STATES

    def __init__(
        self,
        application_id: str,
        execution_role_arn: str,
        artifacts_uri: str,
        spark_submit_parameters: str = "",
        configuration_overrides: dict | None = None,
        execution_timeout_minutes: int = 120,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        poll_interval: float = 30.0,
        wait_timeout: float = 6 * 3600.0,
    ):
        super().__init__(artifacts_uri, aws_conn_id=aws_conn_id, region_name=region_name,
                         poll_interval=poll_interval, wait_timeout=wait_timeout)
        self.application_id = application_id
        self.execution_role_arn = execution_role_arn
        self.spark_submit_parameters = spark_submit_parameters
        self.configuration_overrides = configuration_overrides or {}
        self.execution_timeout_minutes = execution_timeout_minutes
        self._client = None

    @property
    def client(self):
        from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook

        if self._client is None:
            self._client = EmrServerlessHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).conn
        return self._client

    def find_running(self, engine_plan: dict) -> str | None:
        client = self.client
        pages = client.get_paginator("list_job_runs").paginate(applicationId=self.application_id, states=ACTIVE_STATES)
        try:
            job_runs = [job_run for page in pages for job_run in page.get("jobRuns", [])]
        except client.exceptions.ResourceNotFoundException:
            return None  # StartJobRun names the missing application clearly
        for job_run in job_runs:
            attempt_id = attempt_of_named_run(engine_plan, job_run.get("name"))
            if attempt_id:
                return make_job_ref("emr_serverless", attempt_id, plan_uri_of_attempt(engine_plan, attempt_id),
                                    application_id=self.application_id, job_run_id=job_run["id"])
        return None

    def job_driver(self, plan_uri: str, artifacts: SparkArtifacts) -> dict:
        parameters = f"--py-files {artifacts.library_zip}"
        if self.spark_submit_parameters:
            parameters += " " + self.spark_submit_parameters
        return {"sparkSubmit": {
            "entryPoint": artifacts.job_script,
            "entryPointArguments": ["--plan", plan_uri],
            "sparkSubmitParameters": parameters,
        }}

    def run_configuration_overrides(self) -> dict:
        """``configuration_overrides`` with ``spark_properties`` added to its ``spark-defaults``
        (where a value needs no quoting, as it would in ``sparkSubmitParameters``)."""
        if not self.spark_properties:
            return self.configuration_overrides
        overrides = copy.deepcopy(self.configuration_overrides)
        classifications = overrides.setdefault("applicationConfiguration", [])
        defaults = next((c for c in classifications if c.get("classification") == "spark-defaults"), None)
        if defaults is None:
            defaults = {"classification": "spark-defaults", "properties": {}}
            classifications.append(defaults)
        defaults.setdefault("properties", {}).update(self.spark_properties)
        return overrides

    def start(self, engine_plan: dict, plan_uri: str, artifacts: SparkArtifacts) -> str:
        kwargs = {}
        overrides = self.run_configuration_overrides()
        if overrides:
            kwargs["configurationOverrides"] = overrides
        response = self.client.start_job_run(
            applicationId=self.application_id,
            clientToken=engine_plan["attempt_id"],
            executionRoleArn=self.execution_role_arn,
            name=run_name(engine_plan),
            jobDriver=self.job_driver(plan_uri, artifacts),
            executionTimeoutMinutes=self.execution_timeout_minutes,
            **kwargs,
        )
        log.info("%s: started EMR Serverless job run %s", engine_plan["table"], response["jobRunId"])
        return make_job_ref("emr_serverless", engine_plan["attempt_id"], plan_uri,
                            application_id=self.application_id, job_run_id=response["jobRunId"])

    def cancel(self, job_ref: str) -> None:
        ref = parse_job_ref(job_ref)
        self.client.cancel_job_run(applicationId=ref["application_id"], jobRunId=ref["job_run_id"])

    def _job_run(self, job_ref: str) -> dict:
        ref = parse_job_ref(job_ref)
        return self.client.get_job_run(applicationId=ref["application_id"], jobRunId=ref["job_run_id"])["jobRun"]

    def job_state(self, job_ref: str) -> str:
        return self._job_run(job_ref)["state"]

    def failure_reason(self, job_ref: str) -> str:
        job_run = self._job_run(job_ref)
        return f"{job_run['state']}: {job_run.get('stateDetails') or 'no details'}"
