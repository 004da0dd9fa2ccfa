"""The Glue engine: each table's merge is a run of one Glue Spark job.

The job (``dmscdc-merge`` by default) is created, or updated when its settings or the
uploaded job files change, through the Amazon provider's ``GlueJobHook``. A run gets the plan
as ``--dmscdc_plan`` and carries ``--dmscdc_plan_id`` / ``--dmscdc_attempt_id``, so a retried
Airflow task finds a run of its plan that is still going and reattaches to it instead of
starting a second one (apache/airflow#59075 is that failure with the stock operator).
"""

from __future__ import annotations

import logging

from dmscdc_provider.aws.artifacts import SparkArtifacts
from dmscdc_provider.aws.remote_engine import (
    S3SparkJobEngine,
    make_job_ref,
    parse_job_ref,
)

log = logging.getLogger(__name__)

ACTIVE_STATES = {"STARTING", "RUNNING", "WAITING"}
FAILED_STATES = frozenset({"FAILED", "STOPPED", "TIMEOUT", "ERROR", "EXPIRED"})
PLAN_ARGUMENT = "--dmscdc_plan"
PLAN_ID_ARGUMENT = "--dmscdc_plan_id"
ATTEMPT_ARGUMENT = "--dmscdc_attempt_id"
TABLE_ARGUMENT = "--dmscdc_table"
# GetJobRuns lists newest first; a run of this plan that still runs is among the recent ones.
RUN_PAGES_SEARCHED = 5


class GlueMergeEngine(S3SparkJobEngine):
    """Runs merges as Glue job runs.

    :param role_arn: IAM role the job runs as (docs/iam-policy.json).
    :param artifacts_uri: ``s3://bucket/prefix`` for the job's script and library zip.
    :param job_name: the Glue job; created or updated on submit.
    :param glue_version: Glue version (``5.1``: Spark 3.5, Python 3.11).
    :param worker_type: ``G.1X``, ``G.2X``, ...
    :param number_of_workers: workers per run.
    :param max_concurrent_runs: runs of the job at once (tables merged in parallel).
    :param timeout_minutes: Glue's timeout of one run.
    :param default_arguments: extra job arguments, e.g. ``{"--enable-auto-scaling": "true"}``.
    :param job_kwargs: extra ``CreateJob`` fields (``Connections``, ``SecurityConfiguration``, ``Tags``).
    :param aws_conn_id: the Airflow AWS connection of every client (None: boto3's default chain).
    :param region_name: AWS region (None: the connection's or the environment's).
    :param poll_interval: seconds between status checks while ``run`` waits.
    :param wait_timeout: seconds ``run`` waits for a job before giving up.
    """

    engine_name = "glue"
    success_state = "SUCCEEDED"
    failed_states = FAILED_STATES

    def __init__(
        self,
        role_arn: str,
        artifacts_uri: str,
        job_name: str = "dmscdc-merge",
        glue_version: str = "5.1",
        worker_type: str = "G.1X",
        number_of_workers: int = 2,
        max_concurrent_runs: int = 10,
        timeout_minutes: int = 120,
        default_arguments: dict[str, str] | None = None,
        job_kwargs: dict | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        poll_interval: float = 30.0,
        wait_timeout: float = 6 * 3600.0,
    ):
        super().__init__(artifacts_uri, aws_conn_id=aws_conn_id, region_name=region_name,
                         poll_interval=poll_interval, wait_timeout=wait_timeout)
        self.role_arn = role_arn
        self.job_name = job_name
        self.glue_version = glue_version
        self.worker_type = worker_type
        self.number_of_workers = number_of_workers
        self.max_concurrent_runs = max_concurrent_runs
        self.timeout_minutes = timeout_minutes
        self.default_arguments = default_arguments or {}
        self.job_kwargs = job_kwargs or {}
        self._job_ready_for: SparkArtifacts | None = None
        self._hook = None

    def hook(self, artifacts: SparkArtifacts | None = None):
        """A ``GlueJobHook`` for the job; with ``artifacts``, one that can create or update it."""
        from airflow.providers.amazon.aws.hooks.glue import GlueJobHook

        if artifacts is None:
            if self._hook is None:  # one boto3 client per engine: creating one costs a model load
                self._hook = GlueJobHook(job_name=self.job_name, aws_conn_id=self.aws_conn_id, region_name=self.region_name)
            return self._hook
        return GlueJobHook(
            job_name=self.job_name,
            desc="dmscdc: merge DMS changes into one data lake table",
            concurrent_run_limit=self.max_concurrent_runs,
            script_location=artifacts.glue_script,
            iam_role_arn=self.role_arn,
            update_config=True,
            create_job_kwargs=self.job_definition(artifacts),
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
        )

    def job_definition(self, artifacts: SparkArtifacts) -> dict:
        """The ``CreateJob`` fields beyond what ``GlueJobHook`` sets (name, role, concurrency)."""
        return {
            "Command": {"Name": "glueetl", "ScriptLocation": artifacts.glue_script, "PythonVersion": "3"},
            "GlueVersion": self.glue_version,
            "WorkerType": self.worker_type,
            "NumberOfWorkers": self.number_of_workers,
            "Timeout": self.timeout_minutes,
            "DefaultArguments": {
                "--job-language": "python",
                "--extra-py-files": artifacts.library_zip,
                "--enable-continuous-cloudwatch-log": "true",
                **self.default_arguments,
            },
            **self.job_kwargs,
        }

    def ensure_job(self, artifacts: SparkArtifacts) -> None:
        """Create the Glue job, or update it when its definition changed (once per engine)."""
        if self._job_ready_for != artifacts:
            self.hook(artifacts).create_or_update_glue_job()
            self._job_ready_for = artifacts

    def find_running(self, engine_plan: dict) -> str | None:
        client = self.hook().conn
        token = None
        for _ in range(RUN_PAGES_SEARCHED):
            kwargs = {"JobName": self.job_name, "MaxResults": 200}
            if token:
                kwargs["NextToken"] = token
            try:
                page = client.get_job_runs(**kwargs)
            except client.exceptions.EntityNotFoundException:
                return None  # no job yet, so no run of it
            for job_run in page.get("JobRuns", []):
                arguments = job_run.get("Arguments") or {}
                if job_run.get("JobRunState") in ACTIVE_STATES and arguments.get(PLAN_ID_ARGUMENT) == engine_plan["plan_id"]:
                    return make_job_ref(
                        "glue", arguments.get(ATTEMPT_ARGUMENT, ""), arguments[PLAN_ARGUMENT],
                        job_name=self.job_name, run_id=job_run["Id"],
                    )
            token = page.get("NextToken")
            if not token:
                return None
        return None

    def start(self, engine_plan: dict, plan_uri: str, artifacts: SparkArtifacts) -> str:
        self.ensure_job(artifacts)
        arguments = {
            PLAN_ARGUMENT: plan_uri,
            PLAN_ID_ARGUMENT: engine_plan["plan_id"],
            ATTEMPT_ARGUMENT: engine_plan["attempt_id"],
            TABLE_ARGUMENT: engine_plan["table"],
        }
        if self.spark_properties:
            # Glue takes Spark properties in one ``--conf`` argument: "k=v --conf k2=v2"; a run's
            # arguments replace the job's default ones of the same name.
            conf = " --conf ".join(f"{key}={value}" for key, value in self.spark_properties.items())
            own = self.default_arguments.get("--conf")
            arguments["--conf"] = f"{own} --conf {conf}" if own else conf
        response = self.hook().conn.start_job_run(JobName=self.job_name, Arguments=arguments)
        log.info("%s: started Glue job run %s of %s", engine_plan["table"], response["JobRunId"], self.job_name)
        return make_job_ref("glue", engine_plan["attempt_id"], plan_uri, job_name=self.job_name, run_id=response["JobRunId"])

    def cancel(self, job_ref: str) -> None:
        ref = parse_job_ref(job_ref)
        self.hook().conn.batch_stop_job_run(JobName=ref["job_name"], JobRunIds=[ref["run_id"]])

    def _job_run(self, job_ref: str) -> dict:
        ref = parse_job_ref(job_ref)
        return self.hook().conn.get_job_run(JobName=ref["job_name"], RunId=ref["run_id"])["JobRun"]

    def job_state(self, job_ref: str) -> str:
        return self._job_run(job_ref)["JobRunState"]

    def failure_reason(self, job_ref: str) -> str:
        job_run = self._job_run(job_ref)
        return f"{job_run['JobRunState']}: {job_run.get('ErrorMessage') or 'no message'}"
