"""The merge task and its remote Spark job: console links (Extra Links) and on_kill, under moto."""

from __future__ import annotations

import os

import boto3
import pytest

from dmscdc_provider.aws.remote_engine import make_job_ref, parse_job_ref
from dmscdc_provider.get_provider_info import get_provider_info
from dmscdc_provider.links import (
    DmsCdcEmrServerlessJobRunLink,
    DmsCdcEmrStepLink,
    DmsCdcGlueJobRunLink,
    persist_job_link,
)
from dmscdc_provider.operators.merge import DmsCdcMergeOperator
from fakes import FakeTaskInstance, make_context

from tests.aws.test_engines import engine_plan

REGION = "eu-west-1"
BUCKET = "dms-lake"
ROLE = "arn:aws:iam::123456789012:role/dmscdc-spark-job"


@pytest.fixture
def aws(monkeypatch):
    from moto import mock_aws

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield boto3.client("emr-serverless", region_name=REGION).create_application(
            name="dmscdc", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]


def serverless_merge_task(application_id: str) -> DmsCdcMergeOperator:
    return DmsCdcMergeOperator(
        task_id="merge", plan={}, state_uri="dynamodb://DMSCDC_Controller", engine="emr_serverless",
        engine_settings={"application_id": application_id, "execution_role_arn": ROLE,
                         "artifacts_uri": f"s3://{BUCKET}/dmscdc-artifacts", "poll_interval": 0},
        aws_conn_id=None, region_name=REGION)


def test_killing_the_merge_task_cancels_its_emr_serverless_job_run(aws):
    op = serverless_merge_task(aws)
    engine = op.hook.make_engine(op.engine, op.engine_settings)
    context = make_context(ti=FakeTaskInstance())
    job_ref = engine.submit(engine_plan())
    op._job_submitted(context, engine, job_ref)

    op.on_kill()

    job_run = boto3.client("emr-serverless", region_name=REGION).get_job_run(
        applicationId=aws, jobRunId=parse_job_ref(job_ref)["job_run_id"])["jobRun"]
    assert job_run["state"] == "CANCELLED"


def test_a_waiting_remote_engine_reports_the_job_it_submitted(aws):
    engine = serverless_merge_task(aws).hook.make_engine("emr_serverless", serverless_merge_task(aws).engine_settings)
    seen = []
    engine.on_submitted = seen.append

    result = engine.run(engine_plan())

    assert [parse_job_ref(ref)["attempt_id"] for ref in seen] == [result["attempt_id"]]


def test_the_merge_task_links_its_emr_serverless_job_run_in_the_console(aws):
    op = serverless_merge_task(aws)
    ti = FakeTaskInstance()
    job_ref = op.hook.make_engine(op.engine, op.engine_settings).submit(engine_plan())

    op._job_submitted(make_context(ti=ti), None, job_ref)

    stored = ti.pushed[DmsCdcEmrServerlessJobRunLink.key]
    assert DmsCdcEmrServerlessJobRunLink().format_link(**stored) == (
        f"https://console.aws.amazon.com/emr/home?region={REGION}#/serverless/applications/{aws}"
        f"/job-runs/{parse_job_ref(job_ref)['job_run_id']}")


@pytest.mark.parametrize("job_ref, link, url", [
    (make_job_ref("glue", "p-a", "s3://b/plan.json", job_name="dmscdc-merge", run_id="jr_1"), DmsCdcGlueJobRunLink,
     f"https://console.aws.amazon.com/gluestudio/home?region={REGION}#/job/dmscdc-merge/run/jr_1"),
    (make_job_ref("emr", "p-a", "s3://b/plan.json", cluster_id="j-1", step_id="s-2"), DmsCdcEmrStepLink,
     f"https://console.aws.amazon.com/emr/home?region={REGION}#/clusterDetails/j-1/steps/s-2"),
])
def test_glue_runs_and_emr_steps_are_linked_by_their_ids(job_ref, link, url):
    op = DmsCdcMergeOperator(task_id="merge", plan={}, state_uri="x", aws_conn_id=None, region_name=REGION)
    ti = FakeTaskInstance()

    persist_job_link(make_context(ti=ti), job_ref, op.hook)

    assert list(ti.pushed) == [link.key]
    assert link().format_link(**ti.pushed[link.key]) == url


def test_the_provider_registers_the_merge_task_links():
    import importlib

    registered = []
    for path in get_provider_info()["extra-links"]:
        module, name = path.rsplit(".", 1)
        registered.append(getattr(importlib.import_module(module), name))

    assert {type(link) for link in DmsCdcMergeOperator.operator_extra_links} == set(registered)


def test_the_merge_task_links_survive_dag_serialization():
    from airflow.sdk import DAG
    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow before 3.2 names it SerializedDAG
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization

    with DAG("dmscdc_links", schedule=None) as dag:
        DmsCdcMergeOperator(task_id="merge", plan={"table": "sales.product"}, state_uri="x", engine="glue")

    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task("merge")

    assert set(restored.extra_links) == {"Glue job run", "EMR Serverless job run", "EMR step"}
    assert tuple(restored.template_fields) == tuple(DmsCdcMergeOperator.template_fields)
