"""Switching from the blog's Glue stack: the planner over S3 continues from a DMSCDC_Controller
table exactly as the blog's controller leaves it."""

from __future__ import annotations

from datetime import datetime, timezone

import boto3
import pyarrow as pa
import pytest

from dmscdc_provider.dms_writer import write_dms_file
from dmscdc_provider.planner import Planner
from dmscdc_provider.runner import complete_attempt, start_attempt
from dmscdc_provider.aws.s3_storage import S3Storage
from dmscdc_provider.state.dynamodb import DynamoDBControllerStore

from tests.aws.conftest import LAKE_BUCKET, RAW_BUCKET, REGION, set_last_modified
from tests.aws.test_dynamodb_store import TABLE, blog_item, create_blog_table

RAW = f"s3://{RAW_BUCKET}/dms/"
LAKE = f"s3://{LAKE_BUCKET}/lake"
LOADED_AT = datetime(2024, 3, 1, 9, 0, 0, tzinfo=timezone.utc)
SCHEMA = pa.schema([("id", pa.int32()), ("name", pa.string())])

RAW_FILES = {
    "sales/product": ["LOAD00000001.parquet", "20240302-100000000.parquet", "20240302-110000000.parquet",
                      "20240302-120000000.parquet"],
    # DatePartitionEnabled: CDC files under date folders
    "sales/store": ["LOAD00000001.parquet", "2024/03/02/20240302-100000000.parquet",
                    "2024/03/03/20240303-090000000.parquet"],
    "sales/productorder": ["LOAD00000001.parquet", "20240302-100000000.parquet"],
    "sales/customer": ["LOAD00000001.parquet", "LOAD00000002.parquet", "20240302-100000000.parquet"],
    "hr/employee": ["LOAD00000001.parquet"],
}


@pytest.fixture
def aws(moto_server):
    """AWS over moto's server: the merge's input check reads footers with Arrow's S3 client."""
    yield


def upload_raw_files(s3, tmp_path) -> None:
    """Real DMS Parquet files (Op column, as the blog's endpoint writes them) in the raw bucket."""
    for folder, names in RAW_FILES.items():
        for name in names:
            local = write_dms_file(str(tmp_path / folder / name), [{"Op": "I", "id": 1, "name": "a"}], SCHEMA)
            key = f"dms/{folder}/{name}"
            s3.upload_file(local, RAW_BUCKET, key)
            if name.startswith("LOAD"):
                set_last_modified(RAW_BUCKET, key, LOADED_AT)


def blog_controller(product_watermark: str = f"{RAW_BUCKET}/dms/sales/product/20240302-110000000.parquet") -> None:
    """The controller as the blog leaves it: product and store loaded by Glue, productorder
    inactive, customer activated but never loaded, hr.employee not discovered yet."""
    create_blog_table()
    loaded = {"ActiveFlag": "true", "PrimaryKey": "id", "LastFullLoadDate": "2024-03-01 09:00:00"}
    items = [
        blog_item(f"{RAW_BUCKET}/dms/sales/product/", **loaded, LastIncrementalFile=product_watermark),
        blog_item(f"{RAW_BUCKET}/dms/sales/store/", **loaded,
                  LastIncrementalFile=f"{RAW_BUCKET}/dms/sales/store/2024/03/02/20240302-100000000.parquet"),
        blog_item(f"{RAW_BUCKET}/dms/sales/productorder/"),
        blog_item(f"{RAW_BUCKET}/dms/sales/customer/", ActiveFlag="true", PrimaryKey="id"),
    ]
    client = boto3.client("dynamodb", region_name=REGION)
    for item in items:
        client.put_item(TableName=TABLE, Item=item)


@pytest.fixture
def blog_deployment(s3, tmp_path):
    upload_raw_files(s3, tmp_path)
    blog_controller()
    return Planner(RAW, LAKE, DynamoDBControllerStore(TABLE), S3Storage())


def file_names(plan) -> list[str]:
    return [entry["path"].split(f"s3://{RAW_BUCKET}/dms/", 1)[1] for entry in plan.files]


def test_plans_start_right_after_the_blogs_watermark(blog_deployment):
    report = blog_deployment.plan()
    plans = {plan.table: plan for plan in report.plans}
    assert sorted(plans) == ["sales.customer", "sales.product", "sales.store"]
    assert plans["sales.product"].mode == "incremental"
    assert file_names(plans["sales.product"]) == ["sales/product/20240302-120000000.parquet"]
    assert plans["sales.store"].mode == "incremental"
    assert file_names(plans["sales.store"]) == ["sales/store/2024/03/03/20240303-090000000.parquet"]
    assert report.inactive == ["hr.employee", "sales.productorder"]


def test_table_activated_but_never_loaded_gets_a_full_load(blog_deployment):
    plans = {plan.table: plan for plan in blog_deployment.plan().plans}
    customer = plans["sales.customer"]
    assert customer.mode == "full"
    assert file_names(customer)[:2] == ["sales/customer/LOAD00000001.parquet", "sales/customer/LOAD00000002.parquet"]
    assert customer.new_last_full_load_date == "2024-03-01 09:00:00"


def test_new_table_is_registered_inactive_in_the_blog_layout(blog_deployment):
    report = blog_deployment.plan()
    assert report.registered == ["hr.employee"]
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"path": {"S": f"{RAW_BUCKET}/dms/hr/employee/"}})["Item"]
    assert {k: v["S"] for k, v in item.items() if k in blog_item("b/p/s/t/")} == {
        "path": f"{RAW_BUCKET}/dms/hr/employee/", "bucket": RAW_BUCKET, "prefix": "dms/hr/", "folder": "employee/",
        "PrimaryKey": "null", "PartitionKey": "null", "LastFullLoadDate": "1900-01-01 00:00:00",
        "LastIncrementalFile": f"{RAW_BUCKET}/dms/hr/employee/0.parquet", "ActiveFlag": "false",
    }


@pytest.mark.parametrize("watermark", [
    f"{RAW_BUCKET}/dms/sales/product/20240302-110000000.parquet",  # what the blog writes: bucket/key
    "dms/sales/product/20240302-110000000.parquet",  # a bare key
    "20240302-110000000.parquet",  # a bare file name, as the blog's docs describe the field
    f"s3://{RAW_BUCKET}/dms/sales/product/20240302-110000000.parquet",
])
def test_every_form_of_last_incremental_file_means_the_same_file(s3, tmp_path, watermark):
    upload_raw_files(s3, tmp_path)
    blog_controller(product_watermark=watermark)
    planner = Planner(RAW, LAKE, DynamoDBControllerStore(TABLE), S3Storage(), tables="sales.product")
    (plan,) = planner.plan().plans
    assert file_names(plan) == ["sales/product/20240302-120000000.parquet"]


def test_commit_on_s3_publishes_files_and_writes_the_blogs_watermark_form(blog_deployment, s3):
    store, lake = blog_deployment.store, S3Storage()
    plan = next(p for p in blog_deployment.plan().plans if p.table == "sales.product")
    attempt = start_attempt(plan, store, lake).attempt_id
    staged_key = plan.staging_path(attempt).split(f"s3://{LAKE_BUCKET}/", 1)[1] + "/part-00000.parquet"
    s3.put_object(Bucket=LAKE_BUCKET, Key=staged_key, Body=b"merged")  # what the Spark job staged
    result = {"status": "succeeded", "rows_read": {"I": 1, "U": 0, "D": 0}, "rows_written": 1,
              "files_added": [{"path": "part-00000.parquet", "rows": 1, "bytes": 6}], "files_removed": []}

    outcome = complete_attempt(plan, attempt, result, store, lake)

    assert outcome.succeeded
    assert s3.get_object(Bucket=LAKE_BUCKET, Key="lake/sales/product/part-00000.parquet")["Body"].read() == b"merged"
    assert s3.list_objects_v2(Bucket=LAKE_BUCKET, Prefix="lake/_dmscdc_staging/")["KeyCount"] == 0
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"path": {"S": f"{RAW_BUCKET}/dms/sales/product/"}})["Item"]
    assert item["LastIncrementalFile"] == {"S": f"{RAW_BUCKET}/dms/sales/product/20240302-120000000.parquet"}
    assert item["out_path"] == {"S": "dms-lake/lake"}  # the blog's own attribute survives
    assert "PendingCommit" not in item
    assert "sales.product" in blog_deployment.plan().up_to_date
