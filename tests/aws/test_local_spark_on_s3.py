"""``dmscdc run --engine local`` with raw and lake on ``s3://``: local Spark through S3A.

The CLI runs as a separate process (its own JVM with the S3A jars ``make setup`` cached) against
moto's server, the way it would run against any S3 endpoint.
"""

from __future__ import annotations

import io

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmscdc_provider.dms_writer import write_dms_file
from dmscdc_spark.s3a import S3A_JARS, cached_jars

from tests.aws.conftest import LAKE_BUCKET, RAW_BUCKET, REGION, set_last_modified
from tests.aws.test_blog_continuation import LOADED_AT
from tests.aws.test_cli_acceptance import moto_server, run_cli  # noqa: F401  (fixture)

SCHEMA = pa.schema([("id", pa.int32()), ("name", pa.string())])
RAW = f"s3://{RAW_BUCKET}/dms/"
LAKE = f"s3://{LAKE_BUCKET}/lake"


@pytest.fixture
def raw_on_s3(moto_server, tmp_path):
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (RAW_BUCKET, LAKE_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    changes = {
        "LOAD00000001.parquet": [{"Op": "I", "id": 1, "name": "a"}, {"Op": "I", "id": 2, "name": "b"}],
        "20240302-100000000.parquet": [{"Op": "U", "id": 1, "name": "a2"}, {"Op": "D", "id": 2, "name": "b"},
                                       {"Op": "I", "id": 3, "name": "c"}],
    }
    for name, rows in changes.items():
        s3.upload_file(write_dms_file(str(tmp_path / name), rows, SCHEMA), RAW_BUCKET, f"dms/sales/product/{name}")
    # The full load ran before the CDC file's time (a LOAD newer than a CDC file supersedes it).
    set_last_modified(RAW_BUCKET, "dms/sales/product/LOAD00000001.parquet", LOADED_AT)
    state = f"sqlite:///{tmp_path / 'state.sqlite'}"
    configured = run_cli("configure", "sales.product", "--raw", RAW, "--state", state, "--active", "--primary-key", "id")
    assert configured.returncode == 0, configured.stderr
    return state


def lake_rows(s3) -> list[tuple]:
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=LAKE_BUCKET, Prefix="lake/sales/product/")["Contents"]]
    tables = [pq.read_table(io.BytesIO(s3.get_object(Bucket=LAKE_BUCKET, Key=key)["Body"].read()))
              for key in keys if key.endswith(".parquet") and "/_" not in key]
    return sorted((row["id"], row["name"]) for table in tables for row in table.to_pylist())


@pytest.mark.skipif(cached_jars() is None, reason="the S3A jars are installed by `make setup`")
def test_local_engine_merges_an_s3_raw_into_an_s3_lake_through_s3a(raw_on_s3):
    completed = run_cli("run", "--engine", "local", "--raw", RAW, "--lake", LAKE, "--state", raw_on_s3)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert lake_rows(boto3.client("s3", region_name=REGION)) == [(1, "a2"), (3, "c")]


def test_local_engine_without_the_s3a_jars_fails_at_once_in_one_line_naming_the_install(
        raw_on_s3, tmp_path, monkeypatch):
    monkeypatch.setenv("DMSCDC_CACHE_DIR", str(tmp_path / "empty-cache"))

    completed = run_cli("run", "--engine", "local", "--raw", RAW, "--lake", LAKE, "--state", raw_on_s3)

    assert completed.returncode == 2
    message = [line for line in completed.stderr.splitlines() if line.startswith("dmscdc run:")]
    assert len(message) == 1, completed.stderr
    assert "make setup" in message[0] and S3A_JARS[0].file_name in message[0], message
    assert "run again" not in completed.stdout + completed.stderr
    assert "No FileSystem for scheme" not in completed.stdout + completed.stderr
