"""Every AWS client of a task uses the task's connection and region, not boto3's environment.

The connection names eu-west-1 while AWS_DEFAULT_REGION says us-east-1: whatever a task creates
through ``DmsCdcHook`` (a Glue job run, an EMR Serverless job run, an EMR step, a DynamoDB
item, Glue catalog tables) must land in eu-west-1, and the merge trigger must poll there.
"""

from __future__ import annotations

import asyncio
import json

import boto3
import pytest

from dmscdc_provider.aws.remote_engine import parse_job_ref
from dmscdc_provider.hooks.dmscdc import DmsCdcHook
from dmscdc_provider.triggers.merge_job import DmsCdcMergeJobTrigger

from tests.aws.test_engines import ARTIFACTS, ROLE, engine_plan

CONNECTION_REGION = "eu-west-1"
ENVIRONMENT_REGION = "us-east-1"
CONN_ID = "dmscdc_eu"


@pytest.fixture
def connection_in_another_region(monkeypatch, s3):
    monkeypatch.setenv("AWS_DEFAULT_REGION", ENVIRONMENT_REGION)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(
        {"conn_type": "aws", "extra": {"region_name": CONNECTION_REGION}}))
    return DmsCdcHook(aws_conn_id=CONN_ID)


def client(service: str, region: str):
    return boto3.client(service, region_name=region)


def test_glue_job_run_lands_in_the_connections_region(connection_in_another_region):
    engine = connection_in_another_region.make_engine("glue", {"role_arn": ROLE, "artifacts_uri": ARTIFACTS})
    ref = parse_job_ref(engine.submit(engine_plan()))
    runs = client("glue", CONNECTION_REGION).get_job_runs(JobName="dmscdc-merge")["JobRuns"]
    assert [run["Id"] for run in runs] == [ref["run_id"]]
    assert client("glue", ENVIRONMENT_REGION).get_jobs()["Jobs"] == []


def test_emr_serverless_job_run_lands_in_the_connections_region(connection_in_another_region):
    application_id = client("emr-serverless", CONNECTION_REGION).create_application(
        name="dmscdc", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]
    engine = connection_in_another_region.make_engine(
        "emr_serverless", {"application_id": application_id, "execution_role_arn": ROLE, "artifacts_uri": ARTIFACTS})
    ref = parse_job_ref(engine.submit(engine_plan()))
    runs = client("emr-serverless", CONNECTION_REGION).list_job_runs(applicationId=application_id)["jobRuns"]
    assert [run["id"] for run in runs] == [ref["job_run_id"]]


def test_emr_step_lands_on_the_cluster_in_the_connections_region(connection_in_another_region):
    cluster_id = client("emr", CONNECTION_REGION).run_job_flow(
        Name="analytics", ReleaseLabel="emr-7.5.0", JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole",
        Instances={"MasterInstanceType": "m5.xlarge", "SlaveInstanceType": "m5.xlarge", "InstanceCount": 1,
                   "KeepJobFlowAliveWhenNoSteps": True},
    )["JobFlowId"]
    engine = connection_in_another_region.make_engine("emr", {"cluster_name": "analytics", "artifacts_uri": ARTIFACTS})
    ref = parse_job_ref(engine.submit(engine_plan()))
    assert ref["cluster_id"] == cluster_id
    steps = client("emr", CONNECTION_REGION).list_steps(ClusterId=cluster_id)["Steps"]
    assert [step["Id"] for step in steps] == [ref["step_id"]]


def test_merge_trigger_polls_the_job_in_the_connections_region(connection_in_another_region):
    settings = {"role_arn": ROLE, "artifacts_uri": ARTIFACTS}
    engine = connection_in_another_region.make_engine("glue", settings)
    plan = engine_plan()
    job_ref = engine.submit(plan)
    trigger = DmsCdcMergeJobTrigger(engine="glue", engine_settings=settings, job_ref=job_ref,
                                    attempt_id=plan["attempt_id"], poll_interval=0, aws_conn_id=CONN_ID)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    # moto's Glue run goes STARTING -> RUNNING -> SUCCEEDED as it is polled; a poll in the
    # environment's region would find no such run and fire an error.
    assert asyncio.run(first_event())["status"] == "succeeded"


def test_controller_store_and_glue_catalog_use_the_connections_region(connection_in_another_region):
    client("dynamodb", CONNECTION_REGION).create_table(
        TableName="DMSCDC_Controller", KeySchema=[{"AttributeName": "path", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "path", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    store = connection_in_another_region.open_store("dynamodb://DMSCDC_Controller")
    try:
        assert store.list() == []
    finally:
        store.close()
    connection_in_another_region.refresh_catalog(
        "glue_tables", "s3://dms-lake/lake", [], {"database": "dmscdc_lake"})
    assert client("glue", CONNECTION_REGION).get_database(Name="dmscdc_lake")
    assert client("glue", ENVIRONMENT_REGION).get_databases()["DatabaseList"] == []


def test_engine_settings_cannot_name_a_second_connection(connection_in_another_region):
    with pytest.raises(ValueError, match="aws_conn_id is the task's AWS connection"):
        connection_in_another_region.make_engine(
            "glue", {"role_arn": ROLE, "artifacts_uri": ARTIFACTS, "aws_conn_id": "other"})
