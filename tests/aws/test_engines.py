"""Glue, EMR and EMR Serverless engines against moto: job setup, job files, reattach on retry."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest

from dmscdc_provider.aws.artifacts import build_library_zip, library_files, publish_artifacts
from dmscdc_provider.aws.remote_engine import parse_job_ref, plan_uri_for, result_uri_for
from dmscdc_provider.aws.s3_storage import S3Storage
from dmscdc_provider.engines import RemoteMergeEngine, make_engine
from dmscdc_provider.engines.emr import EmrMergeEngine
from dmscdc_provider.engines.emr_serverless import EmrServerlessMergeEngine
from dmscdc_provider.engines.glue import GlueMergeEngine

from tests.aws.conftest import LAKE_BUCKET, REGION

ARTIFACTS = f"s3://{LAKE_BUCKET}/dmscdc-artifacts"
ROLE = "arn:aws:iam::123456789012:role/dmscdc-merge"


def engine_plan(attempt: str = "a1b2c3d4", plan_id: str = "0123456789abcdef") -> dict:
    staging = f"s3://{LAKE_BUCKET}/lake/_dmscdc_staging/sales/product/{plan_id}-{attempt}"
    return {"table": "sales.product", "plan_id": plan_id, "attempt_id": f"{plan_id}-{attempt}", "mode": "incremental",
            "files": [], "lake_table_path": f"s3://{LAKE_BUCKET}/lake/sales/product", "staging_path": staging,
            "primary_key": ["id"], "partition_key": [], "order_column": None}


def read_json(s3, uri: str) -> dict:
    bucket, key = uri[len("s3://"):].split("/", 1)
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def write_result(s3, plan: dict, status: str = "succeeded") -> None:
    bucket, key = result_uri_for(plan_uri_for(plan))[len("s3://"):].split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(
        {"status": status, "plan_id": plan["plan_id"], "attempt_id": plan["attempt_id"], "files_added": [],
         "files_removed": []}).encode())


@pytest.fixture
def glue_runs_stay_active():
    """Glue job runs stay STARTING/RUNNING until polled 10 times (moto's manual progression)."""
    from moto.moto_api import state_manager

    state_manager.set_transition(model_name="glue::job_run", transition={"progression": "manual", "times": 10})
    yield
    state_manager.unset_transition(model_name="glue::job_run")


def glue_engine(**settings) -> GlueMergeEngine:
    return GlueMergeEngine(role_arn=ROLE, artifacts_uri=ARTIFACTS, aws_conn_id=None, poll_interval=0, **settings)


# -- job files --------------------------------------------------------------------------------
def test_library_zip_holds_the_merge_package_and_the_entry_point():
    archive = zipfile.ZipFile(io.BytesIO(build_library_zip(library_files())))
    names = archive.namelist()
    assert {"dmscdc_spark/__init__.py", "dmscdc_spark/job.py", "dmscdc_spark/rules.py", "dmscdc_spark/submit.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert b"def run_merge" in archive.read("dmscdc_spark/job.py")


def test_library_zip_is_reproducible_so_unchanged_code_is_not_uploaded_again(s3):
    assert build_library_zip(library_files()) == build_library_zip(library_files())
    first = publish_artifacts(S3Storage(), ARTIFACTS)
    uploaded = s3.list_objects_v2(Bucket=LAKE_BUCKET, Prefix="dmscdc-artifacts/")["Contents"]
    second = publish_artifacts(S3Storage(), ARTIFACTS)
    assert first == second
    assert s3.list_objects_v2(Bucket=LAKE_BUCKET, Prefix="dmscdc-artifacts/")["Contents"] == uploaded
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in uploaded) == ["dmscdc_spark.zip", "glue_entry.py", "submit.py"]


def test_publishing_job_files_never_heads_a_key(s3):
    storage = S3Storage()
    operations = []
    storage.client.meta.events.register("before-call.s3", lambda model, **_: operations.append(model.name))

    publish_artifacts(storage, ARTIFACTS)
    publish_artifacts(storage, ARTIFACTS)

    assert set(operations) == {"PutObject"}, operations


def test_engines_are_registered_and_remote():
    engine = make_engine("glue", role_arn=ROLE, artifacts_uri=ARTIFACTS)
    assert isinstance(engine, GlueMergeEngine) and isinstance(engine, RemoteMergeEngine)
    assert isinstance(make_engine("emr", artifacts_uri=ARTIFACTS, cluster_name="c"), EmrMergeEngine)
    assert isinstance(make_engine("emr_serverless", application_id="a", execution_role_arn=ROLE,
                                  artifacts_uri=ARTIFACTS), EmrServerlessMergeEngine)


def test_lake_outside_s3_is_refused_for_a_remote_engine(s3):
    plan = {**engine_plan(), "staging_path": "/tmp/lake/_dmscdc_staging/sales/product/x"}
    with pytest.raises(ValueError, match="must be on S3"):
        glue_engine().submit(plan)


# -- Glue -------------------------------------------------------------------------------------
def test_glue_submit_creates_the_job_and_passes_the_plan(s3):
    plan = engine_plan()
    ref = parse_job_ref(glue_engine(worker_type="G.2X", number_of_workers=5).submit(plan))
    glue = boto3.client("glue", region_name=REGION)
    job = glue.get_job(JobName="dmscdc-merge")["Job"]
    assert job["GlueVersion"] == "5.1" and job["WorkerType"] == "G.2X" and job["NumberOfWorkers"] == 5
    assert job["Command"]["ScriptLocation"].endswith("/glue_entry.py")
    assert job["DefaultArguments"]["--extra-py-files"].endswith("/dmscdc_spark.zip")
    assert s3.head_object(Bucket=LAKE_BUCKET, Key=job["DefaultArguments"]["--extra-py-files"].split("/", 3)[3])
    arguments = glue.get_job_run(JobName="dmscdc-merge", RunId=ref["run_id"])["JobRun"]["Arguments"]
    assert arguments["--dmscdc_plan_id"] == plan["plan_id"] and arguments["--dmscdc_attempt_id"] == plan["attempt_id"]
    assert arguments["--dmscdc_plan"] == plan_uri_for(plan) == f"s3://{LAKE_BUCKET}/lake/_dmscdc_jobs/sales/product/{plan['attempt_id']}/plan.json"
    assert read_json(s3, arguments["--dmscdc_plan"]) == plan


def test_glue_retry_reattaches_to_the_running_run_of_the_same_plan(s3, glue_runs_stay_active):
    engine = glue_engine()
    first = parse_job_ref(engine.submit(engine_plan(attempt="11111111")))
    retried = parse_job_ref(engine.submit(engine_plan(attempt="22222222")))  # the retry plans a new attempt
    assert retried["run_id"] == first["run_id"]
    assert retried["attempt_id"] == first["attempt_id"]  # the attempt whose staged files the run writes
    runs = boto3.client("glue", region_name=REGION).get_job_runs(JobName="dmscdc-merge")["JobRuns"]
    assert len(runs) == 1


def test_glue_starts_a_new_run_for_another_plan_or_after_the_run_ended(s3):
    engine = glue_engine()
    first = parse_job_ref(engine.submit(engine_plan()))
    assert engine.wait(json.dumps(first)) == "succeeded"  # moto: STARTING -> RUNNING -> SUCCEEDED
    again = parse_job_ref(engine.submit(engine_plan(attempt="33333333")))
    assert again["run_id"] != first["run_id"]


def test_glue_run_returns_the_result_the_job_wrote(s3):
    plan = engine_plan()
    write_result(s3, plan)  # what dmscdc_spark.submit writes beside the plan
    assert glue_engine().run(plan)["status"] == "succeeded"


def test_glue_job_that_wrote_no_result_gives_a_failed_result_a_retry_may_heal(s3):
    engine, plan = glue_engine(), engine_plan()
    job_ref = engine.submit(plan)
    engine.wait(job_ref)
    result = engine.fetch_result(job_ref, plan)
    assert result["status"] == "failed" and "wrote no result" in result["error"]["problem"]
    assert result["error"]["kind"] == "infrastructure"
    assert result["attempt_id"] == plan["attempt_id"]


# -- EMR Serverless ---------------------------------------------------------------------------
@pytest.fixture
def application_id(s3):
    client = boto3.client("emr-serverless", region_name=REGION)
    return client.create_application(name="dmscdc", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]


def serverless_engine(application_id: str) -> EmrServerlessMergeEngine:
    return EmrServerlessMergeEngine(application_id=application_id, execution_role_arn=ROLE,
                                    artifacts_uri=ARTIFACTS, aws_conn_id=None, poll_interval=0,
                                    spark_submit_parameters="--conf spark.executor.cores=2")


def set_serverless_state(application_id: str, state: str) -> None:
    """moto finishes EMR Serverless runs at once; a test that needs a running one sets it."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.emrserverless.models import emrserverless_backends

    for job_run in emrserverless_backends[DEFAULT_ACCOUNT_ID][REGION].job_runs[application_id]:
        job_run.state = state


def test_serverless_start_uses_the_attempt_as_client_token_and_ships_the_library(application_id):
    plan = engine_plan()
    ref = parse_job_ref(serverless_engine(application_id).submit(plan))
    job_run = boto3.client("emr-serverless", region_name=REGION).get_job_run(
        applicationId=application_id, jobRunId=ref["job_run_id"])["jobRun"]
    driver = job_run["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"].endswith("/submit.py")
    assert driver["entryPointArguments"] == ["--plan", plan_uri_for(plan)]
    assert driver["sparkSubmitParameters"].startswith("--py-files s3://") and "dmscdc_spark.zip" in driver["sparkSubmitParameters"]
    assert job_run["name"] == f"dmscdc sales.product {plan['plan_id']} {plan['attempt_id']}"
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.emrserverless.models import emrserverless_backends

    (stored,) = emrserverless_backends[DEFAULT_ACCOUNT_ID][REGION].job_runs[application_id]
    assert stored.client_token == plan["attempt_id"]


def test_serverless_retry_reattaches_to_a_running_job_of_the_plan(application_id):
    engine = serverless_engine(application_id)
    first = parse_job_ref(engine.submit(engine_plan(attempt="11111111")))
    set_serverless_state(application_id, "RUNNING")
    retried = parse_job_ref(engine.submit(engine_plan(attempt="22222222")))
    assert (retried["job_run_id"], retried["attempt_id"]) == (first["job_run_id"], first["attempt_id"])
    assert retried["plan_uri"] == first["plan_uri"]
    assert engine.poll(json.dumps(retried)) == "running"


def test_serverless_poll_maps_states(application_id):
    engine = serverless_engine(application_id)
    job_ref = engine.submit(engine_plan())
    assert engine.poll(job_ref) == "succeeded"
    set_serverless_state(application_id, "FAILED")
    assert engine.poll(job_ref) == "failed"


# -- EMR on EC2 -------------------------------------------------------------------------------
@pytest.fixture
def cluster_id(s3):
    client = boto3.client("emr", region_name=REGION)
    return client.run_job_flow(
        Name="analytics", ReleaseLabel="emr-7.5.0", JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole",
        Instances={"MasterInstanceType": "m5.xlarge", "SlaveInstanceType": "m5.xlarge", "InstanceCount": 3,
                   "KeepJobFlowAliveWhenNoSteps": True},
    )["JobFlowId"]


def emr_engine() -> EmrMergeEngine:
    return EmrMergeEngine(artifacts_uri=ARTIFACTS, cluster_name="analytics", aws_conn_id=None, poll_interval=0)


def test_emr_adds_a_spark_submit_step_to_the_named_cluster(cluster_id):
    plan = engine_plan()
    ref = parse_job_ref(emr_engine().submit(plan))
    assert ref["cluster_id"] == cluster_id
    step = boto3.client("emr", region_name=REGION).describe_step(ClusterId=cluster_id, StepId=ref["step_id"])["Step"]
    assert step["ActionOnFailure"] == "CONTINUE"
    arguments = step["Config"]["Args"]
    assert arguments[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    assert arguments[arguments.index("--py-files") + 1].endswith("/dmscdc_spark.zip")
    assert arguments[-3].endswith("/submit.py") and arguments[-2:] == ["--plan", plan_uri_for(plan)]


def test_emr_retry_reattaches_to_the_pending_or_running_step(cluster_id):
    engine = emr_engine()
    first = parse_job_ref(engine.submit(engine_plan(attempt="11111111")))
    retried = parse_job_ref(engine.submit(engine_plan(attempt="22222222")))
    assert retried["step_id"] == first["step_id"] and retried["attempt_id"] == first["attempt_id"]
    assert len(boto3.client("emr", region_name=REGION).list_steps(ClusterId=cluster_id)["Steps"]) == 1
    assert engine.poll(json.dumps(retried)) == "running"


def test_emr_without_a_matching_cluster_is_a_clear_error(s3):
    with pytest.raises(RuntimeError, match="no active cluster named 'analytics'"):
        emr_engine().submit(engine_plan())


# -- OpenLineage parent job information (DmsCdcMergeOperator's openlineage_inject_parent_job_info) --
PARENT = {"spark.openlineage.parentJobNamespace": "default", "spark.openlineage.parentJobName": "dmscdc_sales.merge",
          "spark.openlineage.parentRunId": "01931a8c-7e1f-7c5a-9d2b-3f4e5a6b7c8d"}


def test_a_glue_run_carries_the_spark_properties_in_its_conf_argument_after_the_jobs_own(s3):
    engine = glue_engine(default_arguments={"--conf": "spark.sql.shuffle.partitions=8"})
    engine.spark_properties = PARENT
    ref = parse_job_ref(engine.submit(engine_plan()))
    arguments = boto3.client("glue", region_name=REGION).get_job_run(
        JobName="dmscdc-merge", RunId=ref["run_id"])["JobRun"]["Arguments"]
    assert arguments["--conf"] == ("spark.sql.shuffle.partitions=8 --conf spark.openlineage.parentJobNamespace=default"
                                   " --conf spark.openlineage.parentJobName=dmscdc_sales.merge"
                                   " --conf spark.openlineage.parentRunId=01931a8c-7e1f-7c5a-9d2b-3f4e5a6b7c8d")


def test_a_glue_run_without_spark_properties_has_no_conf_argument(s3):
    ref = parse_job_ref(glue_engine().submit(engine_plan()))
    arguments = boto3.client("glue", region_name=REGION).get_job_run(
        JobName="dmscdc-merge", RunId=ref["run_id"])["JobRun"]["Arguments"]
    assert "--conf" not in arguments


def test_an_emr_step_passes_the_spark_properties_to_spark_submit(cluster_id):
    engine = emr_engine()
    engine.spark_properties = PARENT
    ref = parse_job_ref(engine.submit(engine_plan()))
    arguments = boto3.client("emr", region_name=REGION).describe_step(
        ClusterId=cluster_id, StepId=ref["step_id"])["Step"]["Config"]["Args"]
    script = next(i for i, argument in enumerate(arguments) if argument.endswith("/submit.py"))
    conf = [arguments[i + 1] for i, argument in enumerate(arguments[:script]) if argument == "--conf"]
    assert conf == [f"{key}={value}" for key, value in PARENT.items()]


def test_an_emr_serverless_run_adds_the_spark_properties_to_its_spark_defaults(application_id):
    logs = {"monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": f"s3://{LAKE_BUCKET}/logs/"}}}
    engine = EmrServerlessMergeEngine(
        application_id=application_id, execution_role_arn=ROLE, artifacts_uri=ARTIFACTS, aws_conn_id=None,
        configuration_overrides={**logs, "applicationConfiguration": [
            {"classification": "spark-defaults", "properties": {"spark.executor.cores": "2"}}]})
    engine.spark_properties = PARENT
    ref = parse_job_ref(engine.submit(engine_plan()))
    job_run = boto3.client("emr-serverless", region_name=REGION).get_job_run(
        applicationId=application_id, jobRunId=ref["job_run_id"])["jobRun"]
    overrides = job_run["configurationOverrides"]
    assert overrides["monitoringConfiguration"] == logs["monitoringConfiguration"]
    assert overrides["applicationConfiguration"] == [
        {"classification": "spark-defaults", "properties": {"spark.executor.cores": "2", **PARENT}}]
    assert engine.configuration_overrides["applicationConfiguration"][0]["properties"] == {"spark.executor.cores": "2"}
