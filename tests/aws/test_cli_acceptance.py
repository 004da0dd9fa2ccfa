"""``dmscdc plan --raw s3://... --state dynamodb://DMSCDC_Controller`` against a local AWS emulator.

The CLI runs as a separate process that reaches moto's server through ``AWS_ENDPOINT_URL``,
as it would reach any local emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3

from tests.aws.conftest import LAKE_BUCKET, RAW_BUCKET, REGION
from tests.aws.test_blog_continuation import blog_controller, upload_raw_files
from tests.aws.test_dynamodb_store import TABLE


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmscdc_provider.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


def test_plan_continues_from_the_blog_controller_and_registers_new_tables(moto_server, tmp_path):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=RAW_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    upload_raw_files(s3, tmp_path)
    blog_controller()

    completed = run_cli("plan", "--raw", f"s3://{RAW_BUCKET}/dms/", "--state", f"dynamodb://{TABLE}",
                        "--lake", f"s3://{LAKE_BUCKET}/lake")

    assert completed.returncode == 0, completed.stderr
    printed = json.loads(completed.stdout)
    plans = {plan["table"]: plan for plan in printed["plans"]}
    assert [f["path"] for f in plans["sales.product"]["files"]] == [
        f"s3://{RAW_BUCKET}/dms/sales/product/20240302-120000000.parquet"]
    assert plans["sales.product"]["new_last_incremental_file"] == f"{RAW_BUCKET}/dms/sales/product/20240302-120000000.parquet"
    assert plans["sales.product"]["lake_root"] == f"s3://{LAKE_BUCKET}/lake"
    assert printed["registered"] == ["hr.employee"]
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"path": {"S": f"{RAW_BUCKET}/dms/hr/employee/"}})["Item"]
    assert item["ActiveFlag"] == {"S": "false"} and item["PrimaryKey"] == {"S": "null"}


def test_plan_creates_a_missing_controller_table(moto_server, tmp_path):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=RAW_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    upload_raw_files(s3, tmp_path)

    completed = run_cli("plan", "--raw", f"s3://{RAW_BUCKET}/dms/", "--state", "dynamodb://NewController")

    assert completed.returncode == 0, completed.stderr
    assert len(json.loads(completed.stdout)["registered"]) == 5
    table = boto3.client("dynamodb", region_name=REGION).describe_table(TableName="NewController")["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_demo_source_writes_the_dms_files_to_s3_and_nothing_locally(moto_server, tmp_path):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=RAW_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    raw = f"s3://{RAW_BUCKET}/dms"

    completed = subprocess.run(
        [sys.executable, "-m", "dmscdc_provider.cli", "demo-source", "--raw", raw, "--state",
         f"dynamodb://{TABLE}", "--changes"], capture_output=True, text=True, env=dict(os.environ), timeout=120,
        cwd=tmp_path)

    assert completed.returncode == 0, completed.stderr
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=RAW_BUCKET, Prefix="dms/")["Contents"])
    assert "dms/sales/product/LOAD00000001.parquet" in keys
    assert len([k for k in keys if "/2024/" in k]) == 3  # the change batch, one file per table
    assert list(tmp_path.iterdir()) == []  # no local "s3:" folder
    assert boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"path": {"S": f"{RAW_BUCKET}/dms/sales/product/"}})["Item"]["ActiveFlag"] == {"S": "true"}
