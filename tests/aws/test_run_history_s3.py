"""The run history on an S3 lake: one Parquet object per merge under ``_dmscdc/runs/day=.../``."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pyarrow.parquet as pq

from dmscdc_provider.aws.s3_storage import S3Storage
from dmscdc_provider.observability.runs import append_run
from dmscdc_provider.plan import TablePlan
from dmscdc_provider.runner import TableOutcome

from tests.aws.conftest import LAKE_BUCKET, REGION


def test_a_merge_record_is_one_parquet_object_in_the_day_partition_of_an_s3_lake(s3):
    plan = TablePlan(table="sales.orders", state_path="dms-raw/dms/sales/orders/", base_version=3,
                     mode="incremental", files=[{"path": "s3://dms-raw/dms/sales/orders/x.parquet", "kind": "cdc",
                                                 "size": 10}],
                     lake_root=f"s3://{LAKE_BUCKET}/lake", primary_key=["id"], partition_key=[],
                     new_last_full_load_date="2024-03-01 09:00:00", new_last_incremental_file="x.parquet",
                     engine="duckdb")
    committed_at = datetime(2026, 12, 6, 6, 30, tzinfo=timezone.utc)
    outcome = TableOutcome("sales.orders", "succeeded", plan.plan_id, summary={
        "attempt_id": f"{plan.plan_id}-abcd", "rows_written": 5,
        "figures": {"committed_at": committed_at.isoformat(), "lag_seconds": 12.5, "rows_updated": 2}})

    path = append_run(S3Storage(region_name=REGION), plan, outcome)

    assert path.startswith(f"s3://{LAKE_BUCKET}/lake/_dmscdc/runs/day=2026-12-06/20261206T063000000000-sales.orders-")
    listed = s3.list_objects_v2(Bucket=LAKE_BUCKET, Prefix="lake/_dmscdc/runs/")["Contents"]
    assert len(listed) == 1
    body = s3.get_object(Bucket=LAKE_BUCKET, Key=listed[0]["Key"])["Body"].read()
    [record] = pq.read_table(io.BytesIO(body)).to_pylist()
    assert (record["table"], record["status"], record["lag_seconds"], record["rows_updated"]) == (
        "sales.orders", "succeeded", 12.5, 2)
    assert record["committed_at"] == committed_at
