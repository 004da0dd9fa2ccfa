"""``dmscdc run --engine duckdb`` with raw and lake on S3 and the DynamoDB store, as a separate
process against moto's server: the in-process engine reads and writes S3 through pyarrow's
S3 client (``AWS_ENDPOINT_URL`` honoured), with no download at run time."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import boto3
import pyarrow as pa
import pyarrow.dataset as ds

from dmscdc_provider.arrow_fs import arrow_filesystem
from dmscdc_provider.dms_writer import cdc_file_name, write_dms_file

from tests.aws.conftest import LAKE_BUCKET, RAW_BUCKET, REGION
from tests.aws.test_cli_acceptance import moto_server, run_cli  # noqa: F401 - the fixture is used by name

RAW = f"s3://{RAW_BUCKET}/dms"
LAKE = f"s3://{LAKE_BUCKET}/lake"
STATE = "dynamodb://DMSCDC_Controller"
ROW = pa.schema([("id", pa.int64()), ("name", pa.string()), ("dept", pa.string()), ("updated", pa.timestamp("ms"))])
T0 = datetime(2024, 3, 1, 9, 0, 0, 250000)


def upload(s3, tmp_path, name: str, rows: list[dict]) -> None:
    local = write_dms_file(str(tmp_path / name), rows, ROW)
    s3.upload_file(local, RAW_BUCKET, f"dms/sales/orders/{name}")


def lake_rows() -> dict[int, tuple]:
    fs, path = arrow_filesystem(f"{LAKE}/sales/orders")
    table = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive",
                       exclude_invalid_files=False).to_table()
    return {r["id"]: (r["Op"], r["name"], r["dept"], r["updated"].replace(tzinfo=None)) for r in table.to_pylist()}


def lake_objects(s3) -> dict[str, str]:
    listed = s3.list_objects_v2(Bucket=LAKE_BUCKET, Prefix="lake/sales/orders/").get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


def run_merge() -> str:
    completed = run_cli("run", "--engine", "duckdb", "--duckdb-setting", "memory_limit=256MB",
                        "--raw", RAW, "--lake", LAKE, "--state", STATE)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def test_full_load_and_incremental_merges_on_s3_through_the_cli(moto_server, tmp_path):  # noqa: F811
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (RAW_BUCKET, LAKE_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    upload(s3, tmp_path, "LOAD00000001.parquet",
           [{"Op": "I", "id": i, "name": f"n{i}", "dept": "ab"[i % 2], "updated": T0} for i in range(1, 21)])
    assert run_cli("plan", "--raw", RAW, "--state", STATE).returncode == 0  # creates the store, registers
    configured = run_cli("configure", "sales.orders", "--raw", RAW, "--state", STATE, "--active",
                         "--primary-key", "id", "--partition-key", "dept")
    assert configured.returncode == 0, configured.stderr

    printed = run_merge()
    assert "sales.orders" in printed
    assert lake_rows() == {i: ("I", f"n{i}", "ab"[i % 2], T0) for i in range(1, 21)}
    assert sorted({key.split("/")[3] for key in lake_objects(s3)}) == ["dept=a", "dept=b"]

    before = lake_objects(s3)
    later = T0 + timedelta(hours=1, milliseconds=7)
    first = cdc_file_name(datetime(2024, 3, 2, 10, 0))
    upload(s3, tmp_path, first, [{"Op": "U", "id": 2, "name": "changed", "dept": "a", "updated": later},
                                 {"Op": "I", "id": 50, "name": "new", "dept": "a", "updated": later}])
    run_merge()
    untouched = {key: etag for key, etag in before.items() if "/dept=b/" in key}
    assert untouched and all(lake_objects(s3).get(key) == etag for key, etag in untouched.items()), \
        "a partition without changed keys keeps its objects"
    second = cdc_file_name(datetime(2024, 3, 2, 11, 0))
    upload(s3, tmp_path, second, [{"Op": "U", "id": 3, "name": "moved", "dept": "c", "updated": later},
                                  {"Op": "D", "id": 50, "name": "new", "dept": "a", "updated": later}])
    run_merge()

    expected = {i: ("I", f"n{i}", "ab"[i % 2], T0) for i in range(1, 21)}
    expected[2] = ("U", "changed", "a", later)
    expected[3] = ("U", "moved", "c", later)
    assert lake_rows() == expected
    after = lake_objects(s3)
    assert not any(key.endswith("/") for key in after), "no folder marker objects"
    assert not any("_dmscdc_staging" in key for key in after)
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName="DMSCDC_Controller", Key={"path": {"S": f"{RAW_BUCKET}/dms/sales/orders/"}})["Item"]
    assert item["LastIncrementalFile"]["S"].endswith(second)


def test_engine_made_by_the_hook_reaches_s3_through_the_task_connection(moto_server, tmp_path, monkeypatch):  # noqa: F811
    """The hook passes the task's connection; its endpoint (not the environment's) reaches S3."""
    from dmscdc_provider.hooks.dmscdc import DmsCdcHook

    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (RAW_BUCKET, LAKE_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    upload(s3, tmp_path, "LOAD00000001.parquet", [{"Op": "I", "id": 1, "name": "one", "dept": "a", "updated": T0}])
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AIRFLOW_CONN_DMSCDC_AWS", json.dumps(
        {"conn_type": "aws", "extra": {"endpoint_url": moto_server, "region_name": REGION}}))

    engine = DmsCdcHook(aws_conn_id="dmscdc_aws", region_name=REGION).make_engine("duckdb", {"memory_limit": "256MB"})
    assert (engine.aws_conn_id, engine.region_name) == ("dmscdc_aws", REGION)
    staging = f"{LAKE}/_dmscdc_staging/sales/orders/attempt-1"
    result = engine.run({
        "table": "sales.orders", "plan_id": "p", "attempt_id": "attempt-1", "mode": "full",
        "files": [{"path": f"{RAW}/sales/orders/LOAD00000001.parquet", "kind": "load", "size": 1}],
        "lake_table_path": f"{LAKE}/sales/orders", "staging_path": staging,
        "primary_key": ["id"], "partition_key": [],
    })
    assert result["status"] == "succeeded", result
    (added,) = result["files_added"]
    staged = boto3.client("s3", region_name=REGION, endpoint_url=moto_server).head_object(
        Bucket=LAKE_BUCKET, Key=f"lake/_dmscdc_staging/sales/orders/attempt-1/{added['path']}")
    assert staged["ContentLength"] == added["bytes"]
