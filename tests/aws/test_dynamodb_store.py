"""DynamoDBControllerStore against moto: the blog's DMSCDC_Controller layout, read and written."""

from __future__ import annotations

import boto3
import pytest

from dmscdc_provider.state.base import ConcurrentCommitError, StateError, TableState, open_store
from dmscdc_provider.state.dynamodb import DynamoDBControllerStore

from tests.aws.conftest import REGION

TABLE = "DMSCDC_Controller"
PATH = "dms-raw/dms/sales/product/"


def raw_item(path: str = PATH) -> dict:
    return boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"path": {"S": path}}, ConsistentRead=True)["Item"]


def blog_item(path: str = PATH, **overrides) -> dict:
    """An item exactly as the blog's DMSCDC_Controller.py writes it (then edited by a person)."""
    bucket, rest = path.split("/", 1)
    schema_prefix, folder = rest.rstrip("/").rsplit("/", 1)
    item = {
        "path": path, "bucket": bucket, "prefix": schema_prefix + "/", "folder": folder + "/",
        "PrimaryKey": "null", "PartitionKey": "null", "LastFullLoadDate": "1900-01-01 00:00:00",
        "LastIncrementalFile": path + "0.parquet", "ActiveFlag": "false", "out_path": "dms-lake/lake",
    }
    item.update(overrides)
    return {key: {"S": value} for key, value in item.items()}


def create_blog_table() -> None:
    client = boto3.client("dynamodb", region_name=REGION)
    client.create_table(
        TableName=TABLE, KeySchema=[{"AttributeName": "path", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "path", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")


def test_open_store_makes_a_dynamodb_store_for_the_uri(aws):
    store = open_store("dynamodb://DMSCDC_Controller")
    assert isinstance(store, DynamoDBControllerStore)
    assert store.table_name == TABLE


def test_first_use_creates_the_table_on_demand(aws):
    DynamoDBControllerStore(TABLE).list()
    description = boto3.client("dynamodb", region_name=REGION).describe_table(TableName=TABLE)["Table"]
    assert description["KeySchema"] == [{"AttributeName": "path", "KeyType": "HASH"}]
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_missing_table_is_an_error_when_creation_is_off(aws):
    with pytest.raises(StateError, match="does not exist"):
        DynamoDBControllerStore(TABLE, create_table=False).list()


def test_register_writes_an_inactive_item_in_the_blog_layout(aws):
    store = DynamoDBControllerStore(TABLE)
    assert store.register(TableState(path=PATH, schema="sales", table="product")) is True
    item = {key: next(iter(value.values())) for key, value in raw_item().items()}
    assert item["ActiveFlag"] == "false"
    assert item["PrimaryKey"] == "null" and item["PartitionKey"] == "null"
    assert item["LastFullLoadDate"] == "1900-01-01 00:00:00"
    assert item["LastIncrementalFile"] == PATH + "0.parquet"
    assert (item["bucket"], item["prefix"], item["folder"]) == ("dms-raw", "dms/sales/", "product/")
    blog_attributes = ("ActiveFlag", "PrimaryKey", "PartitionKey", "LastFullLoadDate", "LastIncrementalFile")
    assert all(set(raw_item()[name]) == {"S"} for name in blog_attributes)  # strings, as the blog has them


def test_register_leaves_an_existing_item_alone(aws):
    create_blog_table()
    boto3.client("dynamodb", region_name=REGION).put_item(TableName=TABLE, Item=blog_item(ActiveFlag="true"))
    store = DynamoDBControllerStore(TABLE)
    assert store.register(TableState(path=PATH, schema="sales", table="product")) is False
    assert raw_item()["ActiveFlag"] == {"S": "true"}


def test_blog_item_reads_as_version_zero_with_no_incremental_file_yet(aws):
    create_blog_table()
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=TABLE, Item=blog_item(ActiveFlag="true", PrimaryKey="id,region", PartitionKey="dept"))
    state = DynamoDBControllerStore(TABLE).get(PATH)
    assert (state.schema, state.table, state.active) == ("sales", "product", True)
    assert state.primary_key == ("id", "region") and state.partition_key == ("dept",)
    assert state.version == 0
    assert state.last_incremental_file is None  # the blog's "<path>0.parquet" placeholder


def test_blog_item_keeps_its_bucket_key_watermark(aws):
    create_blog_table()
    watermark = PATH + "20240302-100101856.parquet"
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=TABLE, Item=blog_item(LastIncrementalFile=watermark, LastFullLoadDate="2024-03-01 09:00:00"))
    state = DynamoDBControllerStore(TABLE).get(PATH)
    assert state.last_incremental_file == watermark
    assert state.last_full_load_date == "2024-03-01 09:00:00"


def test_first_commit_on_a_blog_item_keeps_the_blog_attributes(aws):
    create_blog_table()
    boto3.client("dynamodb", region_name=REGION).put_item(TableName=TABLE, Item=blog_item(ActiveFlag="true"))
    store = DynamoDBControllerStore(TABLE)
    new_file = PATH + "20240302-100101856.parquet"
    written = store.replace(store.get(PATH).evolve(last_incremental_file=new_file), expected_version=0)
    item = raw_item()
    assert written.version == 1 and item["StateVersion"] == {"N": "1"}
    assert item["LastIncrementalFile"] == {"S": new_file}
    assert item["out_path"] == {"S": "dms-lake/lake"} and item["folder"] == {"S": "product/"}


def test_stale_version_is_a_concurrent_commit(aws):
    store = DynamoDBControllerStore(TABLE)
    store.register(TableState(path=PATH, schema="sales", table="product"))
    first = store.replace(store.get(PATH).evolve(active=True), expected_version=0)
    with pytest.raises(ConcurrentCommitError):
        store.replace(first.evolve(active=False), expected_version=0)
    assert store.get(PATH).active is True and store.get(PATH).version == 1


def test_replace_never_creates_a_missing_item(aws):
    store = DynamoDBControllerStore(TABLE)
    with pytest.raises(ConcurrentCommitError):
        store.replace(TableState(path=PATH, schema="sales", table="product"), expected_version=0)
    assert store.get(PATH) is None


def test_clearing_extensions_removes_their_attributes(aws):
    store = DynamoDBControllerStore(TABLE)
    store.register(TableState(path=PATH, schema="sales", table="product"))
    pending = store.replace(store.get(PATH).evolve(pending_commit={"plan_id": "p"}, order_column="seq"), 0)
    assert "PendingCommit" in raw_item() and "OrderColumn" in raw_item()
    store.replace(pending.evolve(pending_commit=None, order_column=None), pending.version)
    assert "PendingCommit" not in raw_item() and "OrderColumn" not in raw_item()


def test_large_commit_record_is_stored_compressed_and_reads_back(aws):
    store = DynamoDBControllerStore(TABLE)
    store.register(TableState(path=PATH, schema="sales", table="product"))
    moves = [[f"s3://dms-lake/_dmscdc_staging/sales/product/a/part-{i:05d}.parquet",
              f"s3://dms-lake/sales/product/part-{i:05d}.parquet"] for i in range(3000)]
    record = {"plan_id": "p", "attempt_id": "p-1", "moves": moves}
    store.replace(store.get(PATH).evolve(pending_commit=record), 0)
    assert "B" in raw_item()["PendingCommit"]  # 300 KB of JSON would crowd the 400 KB item limit
    assert store.get(PATH).pending_commit == record


def test_list_returns_every_item_sorted_by_path(aws):
    store = DynamoDBControllerStore(TABLE)
    for table in ("store", "product", "productorder"):
        store.register(TableState(path=f"dms-raw/dms/sales/{table}/", schema="sales", table=table))
    assert [s.table for s in store.list()] == ["product", "productorder", "store"]


def test_unreachable_endpoint_is_a_clear_state_error(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StateError, match="DMSCDC_Controller.*AWS_ENDPOINT_URL"):
        DynamoDBControllerStore(TABLE).get(PATH)
