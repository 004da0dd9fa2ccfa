"""What the Glue, EMR and EMR Serverless engines share: job files on S3 and job references.

Per merge attempt the engine writes the engine plan to
``<lake>/_dmscdc_jobs/<schema>/<table>/<attempt_id>/plan.json``; the Spark job
(``dmscdc_spark.submit``) writes ``result.json`` beside it. ``_dmscdc_jobs`` starts with ``_``, so
readers and crawlers skip it; an S3 lifecycle rule can expire it (docs/aws.md).

A job reference is a JSON string naming the service's run and the attempt it runs. After a
retried Airflow task reattached to a run an earlier try started, that attempt differs from
the one the retry asked for: the result document's ``attempt_id`` is the one to commit.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod

from dmscdc_provider.aws.artifacts import SparkArtifacts, publish_artifacts
from dmscdc_provider.aws.s3_storage import S3Storage
from dmscdc_provider.runner import infrastructure_error

log = logging.getLogger(__name__)

JOBS_FOLDER = "_dmscdc_jobs"
PLAN_FILE_NAME = "plan.json"
RESULT_FILE_NAME = "result.json"  # dmscdc_spark.submit.RESULT_FILE_NAME
RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"


def job_folder(engine_plan: dict) -> str:
    """``<lake>/_dmscdc_jobs/<schema>/<table>/<attempt>``: outside every table folder, whichever
    table format the attempt stages for (the attempt is the staging path's last folder)."""
    schema, table = engine_plan["table"].split(".", 1)
    lake_table = engine_plan["lake_table_path"].rstrip("/")
    lake_root = lake_table[: -len(f"/{schema}/{table}")] if lake_table.endswith(f"/{schema}/{table}") else lake_table
    attempt = engine_plan["staging_path"].rstrip("/").rsplit("/", 1)[-1]
    return f"{lake_root}/{JOBS_FOLDER}/{schema}/{table}/{attempt}"


def plan_uri_for(engine_plan: dict) -> str:
    return f"{job_folder(engine_plan)}/{PLAN_FILE_NAME}"


def plan_uri_of_attempt(engine_plan: dict, attempt_id: str) -> str:
    """The plan URI of another attempt of the same plan (found running, to reattach to)."""
    staging = engine_plan["staging_path"].rstrip("/")
    own = engine_plan["attempt_id"]
    if staging.endswith("/" + own):
        staging = staging[: -len(own)] + attempt_id
    return plan_uri_for({**engine_plan, "staging_path": staging})


def result_uri_for(plan_uri: str) -> str:
    return plan_uri.rsplit("/", 1)[0] + "/" + RESULT_FILE_NAME


def run_name(engine_plan: dict) -> str:
    """The run/step name: table, plan and attempt, so a later try can find and reattach to it."""
    return f"dmscdc {engine_plan['table']} {engine_plan['plan_id']} {engine_plan['attempt_id']}"


def attempt_of_named_run(engine_plan: dict, name: str | None) -> str | None:
    """The attempt a run runs, if ``run_name`` named it for ``engine_plan``'s plan, else None."""
    parts = (name or "").split(" ")
    if len(parts) != 4 or parts[0] != "dmscdc" or parts[2] != engine_plan["plan_id"]:
        return None
    return parts[3]


def make_job_ref(engine: str, attempt_id: str, plan_uri: str, **ids: str) -> str:
    return json.dumps({"engine": engine, "attempt_id": attempt_id, "plan_uri": plan_uri, **ids}, sort_keys=True)


def parse_job_ref(job_ref: str) -> dict:
    return json.loads(job_ref)


class S3SparkJobEngine(ABC):
    """Base of the engines that run ``dmscdc_spark.submit`` as a remote Spark job with files on S3.

    :param artifacts_uri: ``s3://bucket/prefix`` where the job files are uploaded.
    :param aws_conn_id: Airflow AWS connection (None: boto3's default credential chain).
    :param region_name: AWS region (None: the connection's or the environment's).
    :param poll_interval: seconds between status checks while ``run`` waits.
    :param wait_timeout: seconds ``run`` waits for a job before giving up.
    """

    engine_name = "remote"

    def __init__(
        self,
        artifacts_uri: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        poll_interval: float = 30.0,
        wait_timeout: float = 6 * 3600.0,
    ):
        if not artifacts_uri or not artifacts_uri.startswith("s3://"):
            raise ValueError(f"{self.engine_name}: artifacts_uri must be an s3:// location, not {artifacts_uri!r}")
        self.artifacts_uri = artifacts_uri
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout
        self._storage: S3Storage | None = None
        self._artifacts: SparkArtifacts | None = None
        # Called with each job reference ``run`` submits or reattaches to (the operator's links
        # and on_kill); None outside Airflow.
        self.on_submitted = None
        # Spark properties the jobs this engine starts carry beyond their own settings (the
        # operator's OpenLineage parent job information); a job reattached to keeps its own.
        self.spark_properties: dict[str, str] = {}

    @property
    def storage(self) -> S3Storage:
        if self._storage is None:
            self._storage = S3Storage(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        return self._storage

    def artifacts(self) -> SparkArtifacts:
        """The job files on S3, uploaded on first use."""
        if self._artifacts is None:
            self._artifacts = publish_artifacts(self.storage, self.artifacts_uri)
        return self._artifacts

    def upload_plan(self, engine_plan: dict) -> str:
        plan_uri = plan_uri_for(engine_plan)
        if not (plan_uri.startswith("s3://") and engine_plan["staging_path"].startswith("s3://")):
            raise ValueError(
                f"{self.engine_name}: the lake must be on S3 for a remote Spark job, not {engine_plan['staging_path']}"
            )
        self.storage.write_bytes(plan_uri, json.dumps(engine_plan, sort_keys=True).encode(), "application/json")
        return plan_uri

    def spark_conf_arguments(self) -> list[str]:
        """``spark_properties`` as spark-submit arguments: ``["--conf", "key=value", ...]``."""
        return [argument for key, value in self.spark_properties.items() for argument in ("--conf", f"{key}={value}")]

    # -- RemoteMergeEngine --------------------------------------------------------------------
    def submit(self, engine_plan: dict) -> str:
        """Reattach to a running job of this plan, else upload the plan and start a job."""
        running = self.find_running(engine_plan)
        if running is not None:
            log.info("%s: reattaching to the running job %s instead of starting another", engine_plan["table"], running)
            return running
        artifacts = self.artifacts()
        plan_uri = self.upload_plan(engine_plan)
        return self.start(engine_plan, plan_uri, artifacts)

    def fetch_result(self, job_ref: str, engine_plan: dict) -> dict:
        """The job's result document; a ``failed`` one when the job wrote none."""
        ref = parse_job_ref(job_ref)
        result_uri = result_uri_for(ref["plan_uri"])
        # Listed first, not read and caught: a role whose s3:ListBucket is limited by prefix gets
        # 403, not 404, for a missing key.
        if self.storage.exists(result_uri):
            result = json.loads(self.storage.read_bytes(result_uri))
        else:
            state = self.poll(job_ref)
            reason = self.failure_reason(job_ref) if state == FAILED else f"it is {state}"
            return {
                "status": FAILED, "table": engine_plan["table"], "plan_id": engine_plan["plan_id"],
                "attempt_id": ref["attempt_id"],
                "error": infrastructure_error(
                    engine_plan["table"],
                    f"the {self.engine_name} job {self.describe(job_ref)} wrote no result ({reason})",
                    "see the job's log; the table's state is unchanged, run again"),
            }
        if result.get("plan_id") != engine_plan["plan_id"]:
            raise ValueError(
                f"{result_uri} belongs to plan {result.get('plan_id')}, not {engine_plan['plan_id']}"
            )
        return result

    def wait(self, job_ref: str) -> str:
        """Poll until the job ends; returns ``succeeded`` or ``failed``."""
        deadline = time.monotonic() + self.wait_timeout
        while True:
            state = self.poll(job_ref)
            if state != RUNNING:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.engine_name} job {self.describe(job_ref)} still running after {self.wait_timeout:.0f}s")
            time.sleep(self.poll_interval)

    def run(self, engine_plan: dict) -> dict:
        """Submit, wait and fetch the result of this plan attempt.

        A job of the same plan that an earlier, crashed caller started is waited for first:
        its staged files belong to its own attempt, which this caller is not committing.
        """
        for _ in range(3):
            job_ref = self.submit(engine_plan)
            if self.on_submitted is not None:
                self.on_submitted(job_ref)
            self.wait(job_ref)
            if parse_job_ref(job_ref)["attempt_id"] == engine_plan["attempt_id"]:
                return self.fetch_result(job_ref, engine_plan)
            log.info("%s: the earlier job %s ended; starting this attempt's own", engine_plan["table"], self.describe(job_ref))
        raise RuntimeError(f"{engine_plan['table']}: other jobs of plan {engine_plan['plan_id']} kept running")

    # -- per service --------------------------------------------------------------------------
    @abstractmethod
    def find_running(self, engine_plan: dict) -> str | None:
        """The job reference of a running job of ``engine_plan['plan_id']``, or None."""

    @abstractmethod
    def start(self, engine_plan: dict, plan_uri: str, artifacts: SparkArtifacts) -> str:
        """Start the job for this attempt; returns its job reference."""

    @abstractmethod
    def cancel(self, job_ref: str) -> None:
        """Ask the service to stop the job (the task running it was killed)."""

    # The service's job states: the one that means success, and those that mean it ended badly.
    success_state: str
    failed_states: frozenset[str]

    def poll(self, job_ref: str) -> str:
        """``running``, ``succeeded`` or ``failed``."""
        state = self.job_state(job_ref)
        if state == self.success_state:
            return SUCCEEDED
        if state in self.failed_states:
            return FAILED
        return RUNNING

    @abstractmethod
    def job_state(self, job_ref: str) -> str:
        """The service's state of the job (``RUNNING``, ``SUCCEEDED``, ...)."""

    @abstractmethod
    def failure_reason(self, job_ref: str) -> str:
        """The service's message for a failed job."""

    def describe(self, job_ref: str) -> str:
        ref = parse_job_ref(job_ref)
        return " ".join(f"{k}={v}" for k, v in sorted(ref.items()) if k not in ("engine", "plan_uri"))
