"""A plan too large for an XCom passes by reference to a document in the lake's S3 bucket."""

from __future__ import annotations

from dmscdc_provider.plan import TablePlan, plan_from_message, plan_message
from dmscdc_provider.storage import open_storage

from tests.aws.conftest import LAKE_BUCKET, REGION


def backlog_plan(lake_root: str, files: int) -> TablePlan:
    return TablePlan(
        table="sales.store", state_path="s3://dms-raw/raw/sales/store", base_version=3, mode="incremental",
        files=[{"path": f"s3://dms-raw/raw/sales/store/20240302-1000{i:05d}.parquet", "kind": "cdc", "size": 1024}
               for i in range(files)],
        lake_root=lake_root, primary_key=["id"], partition_key=[], new_last_full_load_date="2024-03-01 09:00:00",
        new_last_incremental_file=f"s3://dms-raw/raw/sales/store/20240302-1000{files - 1:05d}.parquet")


def test_a_backlog_plan_is_stored_in_the_lake_bucket_and_read_back_unchanged(s3):
    lake_root = f"s3://{LAKE_BUCKET}/lake"
    storage = open_storage(lake_root, region_name=REGION)
    plan = backlog_plan(lake_root, files=500)

    message = plan_message(plan, storage)

    assert message["plan_uri"] == f"{lake_root}/_dmscdc_plans/sales/store/{plan.plan_id}.json"
    assert message["file_count"] == 500 and len(str(message)) < 300
    assert s3.head_object(Bucket=LAKE_BUCKET, Key=f"lake/_dmscdc_plans/sales/store/{plan.plan_id}.json")[
        "ContentType"] == "application/json"
    assert plan_from_message(message, lambda uri: open_storage(uri, region_name=REGION)) == plan
