"""Test code that plays AWS Glue and EMR Serverless for the MWAA-in-a-box test.

moto records the job runs the DAG starts (through the real boto3 calls of the engines) but runs
nothing. ``SparkJobService`` does what the service would: it reads each new run moto recorded
(the script location, ``--extra-py-files`` / ``--py-files``, the arguments), downloads those
files from moto's S3, runs the script in a separate process on local Spark (the project's venv
has pyspark) against the same S3 through Spark's S3A connector, and then marks the run
succeeded or failed in moto. Runs stay RUNNING until then, as on AWS.

The service runs in the test process, beside moto's ``ThreadedMotoServer``, so it can hold and
finish runs in moto's backends.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3

HERE = Path(__file__).resolve().parent
GLUE_RUNTIME = HERE / "glue_runtime"


def spark_submit_args(environ: dict) -> str:
    """``PYSPARK_SUBMIT_ARGS`` for local Spark reading and writing ``s3://`` through S3A, with the
    jars ``make setup`` cached and the endpoint, region and credentials of ``environ``
    (``dmscdc_spark.s3a``, as the local engine uses them)."""
    from dmscdc_spark.s3a import fetch_jars, s3a_settings

    conf = {**s3a_settings(fetch_jars(), environ), "spark.sql.shuffle.partitions": "2",
            "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
    parts = ["--master", "local[2]"]
    for key, value in conf.items():
        parts += ["--conf", f"{key}={value}"]
    return shlex.join(parts) + " pyspark-shell"


@dataclass
class JobRecord:
    """One job run the service ran: what moto recorded and how the Spark process ended."""

    service: str
    run_id: str
    script: str
    py_files: str
    arguments: list[str]
    returncode: int | None = None
    output: str = ""


@dataclass
class SparkJobService:
    """Runs the Glue and EMR Serverless job runs moto records (see the module docstring).

    :param endpoint: moto's server URL.
    :param region: the region the engines use.
    :param workdir: where downloaded job files go.
    """

    endpoint: str
    region: str
    workdir: Path
    ran: list[JobRecord] = field(default_factory=list)
    _seen: set = field(default_factory=set)
    _hold_next: bool = False
    _held: object = None
    _release: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "SparkJobService":
        from moto.moto_api import state_manager
        import moto.emrserverless.models as emr_serverless_models

        # A run stays active until the service finishes it (moto would finish it on its own).
        state_manager.set_transition(model_name="glue::job_run", transition={"progression": "manual", "times": 10**9})
        self._serverless_initial_state = emr_serverless_models.JOB_STATUS
        emr_serverless_models.JOB_STATUS = "RUNNING"
        self._thread = threading.Thread(target=self._loop, name="spark-job-service", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        from moto.moto_api import state_manager
        import moto.emrserverless.models as emr_serverless_models

        self._stop.set()
        self._thread.join(timeout=600)
        state_manager.unset_transition(model_name="glue::job_run")
        emr_serverless_models.JOB_STATUS = self._serverless_initial_state

    def hold_next_run(self) -> None:
        """Leave the next new run running, as a long job would, until ``release``; later runs run."""
        self._hold_next = True

    def release(self) -> None:
        self._release.set()

    # -- what moto recorded ---------------------------------------------------------------------
    def active_runs(self) -> list[tuple[str, object]]:
        """``(service, run)`` of every run moto holds as active."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.emrserverless.models import emrserverless_backends
        from moto.glue.models import glue_backends

        found = []
        for job in list(glue_backends[DEFAULT_ACCOUNT_ID][self.region].jobs.values()):
            found += [("glue", run) for run in list(job.job_runs) if run._status in ("STARTING", "RUNNING")]
        for runs in list(emrserverless_backends[DEFAULT_ACCOUNT_ID][self.region].job_runs.values()):
            found += [("emr_serverless", run) for run in list(runs) if run.state == "RUNNING"]
        return found

    def all_runs(self) -> list[tuple[str, object]]:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.emrserverless.models import emrserverless_backends
        from moto.glue.models import glue_backends

        found = [("glue", run) for job in glue_backends[DEFAULT_ACCOUNT_ID][self.region].jobs.values()
                 for run in job.job_runs]
        found += [("emr_serverless", run) for runs in emrserverless_backends[DEFAULT_ACCOUNT_ID][self.region].job_runs.values()
                  for run in runs]
        return found

    # -- running jobs ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            for service, run in self.active_runs():
                if run is self._held:
                    if self._release.is_set():
                        self._held = None
                        self._run(service, run)
                elif id(run) not in self._seen:
                    self._seen.add(id(run))
                    if self._hold_next:
                        self._hold_next, self._held = False, run
                    else:
                        self._run(service, run)
            time.sleep(0.5)

    def _run(self, service: str, run) -> None:
        if service == "glue":
            record = self._glue_job(run)
        else:
            record = self._serverless_job(run)
        folder = self.workdir / record.run_id
        folder.mkdir(parents=True, exist_ok=True)
        script = self._download(record.script, folder)
        py_files = self._download(record.py_files, folder)
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": self.region,
            "PYTHONPATH": os.pathsep.join([str(py_files), str(GLUE_RUNTIME)]),
            "PYSPARK_PYTHON": sys.executable,
        }
        env["PYSPARK_SUBMIT_ARGS"] = spark_submit_args(env)
        done = subprocess.run([sys.executable, str(script), *record.arguments], env=env, cwd=folder,
                              capture_output=True, text=True, timeout=600)
        record.returncode, record.output = done.returncode, (done.stdout + done.stderr)[-6000:]
        self.ran.append(record)
        if service == "glue":
            run.status = "SUCCEEDED" if done.returncode == 0 else "FAILED"
        else:
            run.state = "SUCCESS" if done.returncode == 0 else "FAILED"

    def _glue_job(self, run) -> JobRecord:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.glue.models import glue_backends

        job = glue_backends[DEFAULT_ACCOUNT_ID][self.region].jobs[run.job_name]
        arguments = {**job.default_arguments, **(run.arguments or {})}
        flat = [item for name, value in (run.arguments or {}).items() for item in (name, value)]
        return JobRecord("glue", run.job_run_id, job.command["ScriptLocation"], arguments["--extra-py-files"], flat)

    def _serverless_job(self, run) -> JobRecord:
        driver = run.job_driver["sparkSubmit"]
        parameters = shlex.split(driver.get("sparkSubmitParameters", ""))
        py_files = parameters[parameters.index("--py-files") + 1]
        return JobRecord("emr_serverless", run.id, driver["entryPoint"], py_files, list(driver.get("entryPointArguments", [])))

    def _download(self, uri: str, folder: Path) -> Path:
        bucket, key = uri[len("s3://"):].split("/", 1)
        target = folder / key.rsplit("/", 1)[-1]
        boto3.client("s3", region_name=self.region, endpoint_url=self.endpoint).download_file(bucket, key, str(target))
        return target
