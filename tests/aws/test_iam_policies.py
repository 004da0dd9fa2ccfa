"""Least privilege: the orchestrator and the Spark job do their work with only the documented policies.

moto's server enforces IAM here: every request after the setup is signed with an IAM user's key
and checked against that user's policy. The orchestrator user holds docs/iam-policy.json and
plans, publishes the job files, submits Glue and EMR Serverless runs, commits and refreshes the
Glue tables; the job user holds docs/iam-policy-spark-job.json and runs the merges on local
Spark through S3A, as the Glue / EMR Serverless job would.

moto checks S3 actions against S3 resource ARNs, but it hands every other service's check the
resource ``*`` and evaluates no condition keys (``s3:prefix``, ``iam:PassedToService``); it
would deny every statement that names them. So the policies are loaded as written, and only
for moto the non-S3 statements get ``Resource: *`` and conditions are dropped: the actions
are checked exactly, the S3 resources too. moto also miscomputes the SigV4 signature of a request
with a repeated query parameter (EMR Serverless ListJobRuns ``states``), so signatures are not
compared; the key still has to be the user's, and the policy check runs on every request.
And moto authorizes a batch delete (DeleteObjects) as ``s3:DeleteObject`` on the bucket ARN, where
AWS checks each key: statements that grant ``s3:DeleteObject`` also name their buckets for moto.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow as pa
import pytest

from dmscdc_provider.aws.glue_catalog import refresh_glue_tables
from dmscdc_provider.aws.remote_engine import parse_job_ref
from dmscdc_provider.aws.s3_storage import S3Storage
from dmscdc_provider.dms_writer import write_dms_file
from dmscdc_provider.engines.emr import EmrMergeEngine
from dmscdc_provider.engines.emr_serverless import EmrServerlessMergeEngine
from dmscdc_provider.engines.glue import GlueMergeEngine
from dmscdc_provider.planner import Planner
from dmscdc_provider.runner import complete_attempt, start_attempt
from dmscdc_provider.state.dynamodb import DynamoDBControllerStore
from dmscdc_spark.s3a import cached_jars

from tests.aws.conftest import LAKE_BUCKET, RAW_BUCKET, REGION, set_last_modified
from tests.aws.test_blog_continuation import LOADED_AT
from tests.aws.conftest import free_port
from tests.aws.test_dynamodb_store import TABLE, blog_item, create_blog_table

DOCS = Path(__file__).resolve().parents[2] / "docs"
ACCOUNT_ID = "123456789012"
RAW = f"s3://{RAW_BUCKET}/dms"
LAKE = f"s3://{LAKE_BUCKET}/lake"
ARTIFACTS = f"s3://{LAKE_BUCKET}/dmscdc-artifacts"
DATABASE = "dmscdc_sales"
JOB_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/dmscdc-spark-job"
SCHEMA = pa.schema([("id", pa.int32()), ("name", pa.string())])


def policy_for_moto(name: str, application_id: str) -> str:
    """A docs/ policy with this deployment's names, adapted to what moto can evaluate (see above)."""
    text = (DOCS / name).read_text()
    for placeholder, value in {
        "RAW_BUCKET": RAW_BUCKET, "RAW_PREFIX": "dms", "LAKE_BUCKET": LAKE_BUCKET, "LAKE_PREFIX": "lake",
        "ARTIFACTS_PREFIX": "dmscdc-artifacts", "REGION": REGION, "ACCOUNT_ID": ACCOUNT_ID,
        "APPLICATION_ID": application_id, "LAKE_DATABASE": DATABASE, "CLUSTER_ID": "j-NONE",
        "KMS_KEY_ID": "00000000-0000-0000-0000-000000000000",
    }.items():
        text = text.replace(placeholder, value)
    policy = json.loads(text)
    for statement in policy["Statement"]:
        statement.pop("Condition", None)
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if not all(resource.startswith("arn:aws:s3:::") for resource in resources):
            statement["Resource"] = "*"
        elif "s3:DeleteObject" in statement["Action"]:
            statement["Resource"] = resources + sorted({resource.split("/", 1)[0] for resource in resources})
    return json.dumps(policy)


def user_with_policy(iam, name: str, policy: str) -> dict:
    """Environment variables that sign as a new IAM user holding only ``policy``."""
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


@pytest.fixture
def enforcing_moto(monkeypatch, tmp_path):
    """moto's server with a DMS raw folder, a controller table and two users; IAM enforced after setup."""
    import requests
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequestBase
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)

    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (RAW_BUCKET, LAKE_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    changes = {"LOAD00000001.parquet": [{"Op": "I", "id": 1, "name": "a"}, {"Op": "I", "id": 2, "name": "b"}],
               "20240302-100000000.parquet": [{"Op": "U", "id": 1, "name": "a2"}, {"Op": "D", "id": 2, "name": "b"}]}
    for table in ("product", "store"):
        for name, rows in changes.items():
            local = write_dms_file(str(tmp_path / table / name), rows, SCHEMA)
            s3.upload_file(local, RAW_BUCKET, f"dms/sales/{table}/{name}")
        set_last_modified(RAW_BUCKET, f"dms/sales/{table}/LOAD00000001.parquet", LOADED_AT)
    create_blog_table()
    for table in ("product", "store"):
        boto3.client("dynamodb", region_name=REGION).put_item(TableName=TABLE, Item=blog_item(
            f"{RAW_BUCKET}/dms/sales/{table}/", ActiveFlag="true", PrimaryKey="id"))
    application_id = boto3.client("emr-serverless", region_name=REGION).create_application(
        name="dmscdc", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]
    boto3.client("emr", region_name=REGION).run_job_flow(
        Name="dmscdc", ReleaseLabel="emr-7.5.0", JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole",
        Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True})
    iam = boto3.client("iam", region_name=REGION)
    users = {
        "orchestrator": user_with_policy(iam, "dmscdc-orchestrator", policy_for_moto("iam-policy.json", application_id)),
        "job": user_with_policy(iam, "dmscdc-spark-job", policy_for_moto("iam-policy-spark-job.json", application_id)),
    }
    monkeypatch.setattr(IAMRequestBase, "check_signature", lambda self: None)
    previous = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # the server runs in this process: enforce from here on
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield endpoint, application_id, users
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = previous
        requests.post(f"{endpoint}/moto-api/reset", timeout=30)
        server.stop()


def act_as(monkeypatch, credentials: dict) -> None:
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches the credentials it found first
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)


def run_spark_jobs(plan_uris: list[str], credentials: dict) -> subprocess.CompletedProcess:
    """The Spark job, as Glue / EMR Serverless would run it: local Spark, S3 through S3A, the job's role."""
    script = (
        "import sys\n"
        "from dmscdc_spark.session import local_session\n"
        "from dmscdc_spark.submit import run_job\n"
        "spark = local_session('local[2]', {'spark.sql.shuffle.partitions': '2'})\n"
        "for plan_uri in sys.argv[1:]:\n"
        "    run_job(spark, plan_uri)\n"
    )
    env = {**os.environ, **credentials}
    env.pop("AWS_SESSION_TOKEN", None)
    return subprocess.run([sys.executable, "-c", script, *plan_uris], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.skipif(cached_jars() is None, reason="the S3A jars are installed by `make setup`")
def test_plan_submit_merge_commit_and_catalog_need_nothing_beyond_the_documented_policies(
        enforcing_moto, monkeypatch):
    endpoint, application_id, users = enforcing_moto
    act_as(monkeypatch, users["orchestrator"])
    store, storage = DynamoDBControllerStore(TABLE), S3Storage()
    with pytest.raises(Exception, match="AccessDenied"):  # enforcement is on: the raw files are not the orchestrator's to delete
        boto3.client("s3", region_name=REGION).delete_object(Bucket=RAW_BUCKET, Key="dms/sales/product/LOAD00000001.parquet")

    report = Planner(RAW, LAKE, store, storage).plan()
    plans = {plan.table: plan for plan in report.plans}
    assert sorted(plans) == ["sales.product", "sales.store"], report
    engines = {
        "sales.product": GlueMergeEngine(role_arn=JOB_ROLE, artifacts_uri=ARTIFACTS, aws_conn_id=None,
                                         region_name=REGION),
        "sales.store": EmrServerlessMergeEngine(application_id=application_id, execution_role_arn=JOB_ROLE,
                                                artifacts_uri=ARTIFACTS, aws_conn_id=None, region_name=REGION),
    }
    submitted = {}
    for table, plan in plans.items():
        attempt_id = start_attempt(plan, store, storage).attempt_id
        engine_plan = plan.engine_plan(attempt_id)
        job_ref = engines[table].submit(engine_plan)
        engines[table].poll(job_ref)
        submitted[table] = (attempt_id, engine_plan, job_ref)

    # The service fetches the job files with the job's role.
    job_s3 = boto3.client("s3", region_name=REGION, aws_access_key_id=users["job"]["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=users["job"]["AWS_SECRET_ACCESS_KEY"])
    artifacts = engines["sales.product"].artifacts()
    for uri in (artifacts.glue_script, artifacts.job_script, artifacts.library_zip):
        job_s3.get_object(Bucket=LAKE_BUCKET, Key=uri.split("/", 3)[3])["Body"].read()
    job = run_spark_jobs([parse_job_ref(ref)["plan_uri"] for _, _, ref in submitted.values()], users["job"])
    assert job.returncode == 0, job.stderr[-4000:]
    assert "AccessDenied" not in job.stderr

    for table, (attempt_id, engine_plan, job_ref) in submitted.items():
        result = engines[table].fetch_result(job_ref, engine_plan)
        outcome = complete_attempt(plans[table], attempt_id, result, store, storage)
        assert outcome.succeeded, outcome
    refreshed = refresh_glue_tables(LAKE, sorted(plans), database=DATABASE, region_name=REGION)

    assert refreshed == ["sales.product", "sales.store"]
    glue = boto3.client("glue", region_name=REGION)
    assert glue.get_table(DatabaseName=DATABASE, Name="product")["Table"]["StorageDescriptor"]["Location"] \
        == f"{LAKE}/sales/product/"
    assert store.get(f"{RAW_BUCKET}/dms/sales/store/").last_run["plan_id"] == plans["sales.store"].plan_id


def test_emr_steps_and_cancelling_runs_need_nothing_beyond_the_orchestrator_policy(enforcing_moto, monkeypatch):
    endpoint, application_id, users = enforcing_moto
    act_as(monkeypatch, users["orchestrator"])
    store, storage = DynamoDBControllerStore(TABLE), S3Storage()
    plan = Planner(RAW, LAKE, store, storage).plan().plans[0]
    emr = EmrMergeEngine(artifacts_uri=ARTIFACTS, cluster_name="dmscdc", aws_conn_id=None, region_name=REGION)
    serverless = EmrServerlessMergeEngine(application_id=application_id, execution_role_arn=JOB_ROLE,
                                          artifacts_uri=ARTIFACTS, aws_conn_id=None, region_name=REGION)

    step = emr.submit(plan.engine_plan(f"{plan.plan_id}-emr00001"))
    assert emr.poll(step) in ("running", "succeeded")
    job_run = serverless.submit(plan.engine_plan(f"{plan.plan_id}-serverless"))
    serverless.cancel(job_run)

    cancelled = boto3.client("emr-serverless", region_name=REGION).get_job_run(
        applicationId=application_id, jobRunId=parse_job_ref(job_run)["job_run_id"])["jobRun"]
    assert cancelled["state"] == "CANCELLED"


def test_iceberg_merge_in_the_worker_commits_to_glue_with_only_the_orchestrator_policy(
        enforcing_moto, monkeypatch, tmp_path):
    """``dmscdc run --table-format iceberg --iceberg-catalog glue://...`` with the DuckDB engine,
    as an MWAA worker runs it: planning, the merge, pyiceberg's table creation and snapshot
    commits (Glue GetTable / CreateTable / UpdateTable, metadata files on S3) and the controller
    commit, signed as the orchestrator."""
    endpoint, application_id, users = enforcing_moto
    act_as(monkeypatch, users["orchestrator"])

    done = subprocess.run(
        [sys.executable, "-m", "dmscdc_provider.cli", "run", "--raw", RAW, "--state", f"dynamodb://{TABLE}",
         "--lake", LAKE, "--engine", "duckdb", "--table-format", "iceberg", "--iceberg-catalog", f"glue://{DATABASE}",
         "--catalog-mode", "glue_tables", "--catalog-setting", f"database={DATABASE}"],
        capture_output=True, text=True, env=dict(os.environ), cwd=tmp_path, timeout=300)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "AccessDenied" not in done.stdout + done.stderr
    glue = boto3.client("glue", region_name=REGION)
    for name in ("product", "store"):
        parameters = glue.get_table(DatabaseName=DATABASE, Name=name)["Table"]["Parameters"]
        assert parameters["table_type"] == "ICEBERG"
        assert parameters["metadata_location"].startswith(f"{LAKE}/sales/{name}/metadata/")
    store = DynamoDBControllerStore(TABLE)
    assert store.get(f"{RAW_BUCKET}/dms/sales/product/").last_incremental_file.endswith("20240302-100000000.parquet")


@pytest.mark.skipif(cached_jars() is None, reason="the S3A jars are installed by `make setup`")
def test_iceberg_spark_job_writes_its_data_files_and_the_orchestrator_commits_them_within_the_policies(
        enforcing_moto, monkeypatch, tmp_path):
    """An Iceberg table merged by the Glue job: the job writes its data files where they stay
    (``<table>/data/<attempt>/``, not ``_dmscdc_staging/``), with the job role; the orchestrator
    commits the snapshot to the Glue catalog."""
    endpoint, application_id, users = enforcing_moto
    act_as(monkeypatch, users["orchestrator"])
    store, storage = DynamoDBControllerStore(TABLE), S3Storage()
    plans = {plan.table: plan for plan in Planner(RAW, LAKE, store, storage, table_format="iceberg",
                                                  iceberg_catalog=f"glue://{DATABASE}").plan().plans}
    engine = GlueMergeEngine(role_arn=JOB_ROLE, artifacts_uri=ARTIFACTS, aws_conn_id=None, region_name=REGION)
    submitted = {}
    for table, plan in plans.items():
        started = start_attempt(plan, store, storage)
        job_ref = engine.submit(started.engine_plan)
        submitted[table] = (started.attempt_id, started.engine_plan, job_ref)
        assert plan.staging_path(started.attempt_id).startswith(f"{LAKE}/sales/{plan.table_name}/data/")

    job = run_spark_jobs([parse_job_ref(ref)["plan_uri"] for _, _, ref in submitted.values()], users["job"])
    assert job.returncode == 0, job.stderr[-4000:]
    assert "AccessDenied" not in job.stderr

    for table, (attempt_id, engine_plan, job_ref) in submitted.items():
        outcome = complete_attempt(plans[table], attempt_id, engine.fetch_result(job_ref, engine_plan), store, storage)
        assert outcome.succeeded, outcome
    glue = boto3.client("glue", region_name=REGION)
    for name in ("product", "store"):
        parameters = glue.get_table(DatabaseName=DATABASE, Name=name)["Table"]["Parameters"]
        assert parameters["table_type"] == "ICEBERG"

    # An incremental merge: the job reads the snapshot's data files (pinned in its plan) through
    # S3A and rewrites the one holding the changed key; the commit replaces it in a new snapshot.
    # DMS writes the change with its own role: straight into moto's backend, past enforcement.
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    local = write_dms_file(str(tmp_path / "change.parquet"), [{"Op": "U", "id": 1, "name": "a3"}], SCHEMA)
    with open(local, "rb") as handle:
        s3_backends[DEFAULT_ACCOUNT_ID]["global"].put_object(
            RAW_BUCKET, "dms/sales/product/20240303-100000000.parquet", handle.read())
    plan, = Planner(RAW, LAKE, store, storage, tables="sales.product", table_format="iceberg",
                    iceberg_catalog=f"glue://{DATABASE}").plan().plans
    started = start_attempt(plan, store, storage)
    assert [f["path"].split("/")[0] for f in started.engine_plan["lake_files"]] == ["data"]
    job_ref = engine.submit(started.engine_plan)
    job = run_spark_jobs([parse_job_ref(job_ref)["plan_uri"]], users["job"])
    assert job.returncode == 0, job.stderr[-4000:]
    outcome = complete_attempt(plan, started.attempt_id, engine.fetch_result(job_ref, started.engine_plan), store, storage)
    assert outcome.succeeded, outcome
    from dmscdc_provider.table_formats.iceberg import IcebergFormat

    product = IcebergFormat(storage, f"glue://{DATABASE}", region_name=REGION).load(LAKE, "sales", "product")
    assert len(product.snapshots()) == 2
    assert product.scan().to_arrow().to_pylist() == [{"Op": "U", "id": 1, "name": "a3"}]
