"""Glue catalog: direct table and partition updates from the lake on S3, and the crawler."""

from __future__ import annotations

import io

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmscdc_provider.aws.crawler import LAKE_EXCLUSIONS, lake_crawler_config, run_crawler
from dmscdc_provider.aws.glue_catalog import GlueCatalog, hive_type, merge_columns, partition_values

from tests.aws.conftest import LAKE_BUCKET, REGION

LAKE = f"s3://{LAKE_BUCKET}/lake"


def put_parquet(s3, key: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    s3.put_object(Bucket=LAKE_BUCKET, Key=key, Body=buffer.getvalue())


def orders(**extra) -> pa.Table:
    columns = {"Op": pa.array(["I"]), "id": pa.array([1], pa.int32()), "qty": pa.array([2], pa.int32()),
               "price": pa.array([1.5], pa.float64())}
    columns.update(extra)
    return pa.table(columns)


def glue_table(name: str = "productorder") -> dict:
    return boto3.client("glue", region_name=REGION).get_table(DatabaseName="lake", Name=name)["Table"]


def partitions(name: str = "productorder") -> list[list[str]]:
    found = boto3.client("glue", region_name=REGION).get_partitions(DatabaseName="lake", TableName=name)["Partitions"]
    return sorted(p["Values"] for p in found)


def test_arrow_types_map_to_the_types_athena_reads():
    assert hive_type(pa.int32()) == "int" and hive_type(pa.int64()) == "bigint"
    assert hive_type(pa.decimal128(10, 2)) == "decimal(10,2)"
    assert hive_type(pa.timestamp("us")) == "timestamp" and hive_type(pa.date32()) == "date"
    assert hive_type(pa.list_(pa.string())) == "array<string>"
    assert hive_type(pa.struct([("a", pa.int16())])) == "struct<a:smallint>"


def test_columns_are_never_dropped_and_integers_only_widen():
    existing = [{"Name": "id", "Type": "bigint"}, {"Name": "legacy", "Type": "string"}]
    merged = merge_columns(existing, [{"Name": "id", "Type": "int"}, {"Name": "added", "Type": "date"}])
    assert merged == [{"Name": "id", "Type": "bigint"}, {"Name": "legacy", "Type": "string"},
                      {"Name": "added", "Type": "date"}]


def test_partition_values_are_read_from_hive_folders_and_unescaped():
    assert partition_values("orderdate=2024-03-01/part-0.parquet", ["orderdate"]) == ("2024-03-01",)
    assert partition_values("ts=2024-03-01 10%3A00%3A00/part-0.parquet", ["ts"]) == ("2024-03-01 10:00:00",)
    assert partition_values("part-0.parquet", ["orderdate"]) is None


def test_first_refresh_creates_database_table_and_partitions(s3):
    put_parquet(s3, "lake/sales/productorder/orderdate=2024-03-01/part-0.parquet", orders())
    put_parquet(s3, "lake/sales/productorder/orderdate=2024-03-02/part-0.parquet", orders())
    s3.put_object(Bucket=LAKE_BUCKET, Key="lake/_dmscdc_staging/sales/productorder/a/part-9.parquet", Body=b"x")

    (update,) = GlueCatalog("lake", aws_conn_id=None).refresh(LAKE, [("sales", "productorder", ["orderdate"])])

    assert update.created and update.partitions_added == 2
    table = glue_table()
    assert [c["Name"] for c in table["StorageDescriptor"]["Columns"]] == ["op", "id", "qty", "price"]
    assert table["PartitionKeys"] == [{"Name": "orderdate", "Type": "string"}]
    assert table["StorageDescriptor"]["Location"] == f"{LAKE}/sales/productorder/"
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
    assert partitions() == [["2024-03-01"], ["2024-03-02"]]


def test_refresh_adds_new_columns_widens_types_and_syncs_partitions(s3):
    catalog = GlueCatalog("lake", aws_conn_id=None)
    put_parquet(s3, "lake/sales/productorder/orderdate=2024-03-01/part-0.parquet", orders())
    catalog.refresh(LAKE, [("sales", "productorder", ["orderdate"])])
    # the next merge rewrote 03-01 away (all its rows deleted) and wrote 03-03 with a new column
    s3.delete_object(Bucket=LAKE_BUCKET, Key="lake/sales/productorder/orderdate=2024-03-01/part-0.parquet")
    put_parquet(s3, "lake/sales/productorder/orderdate=2024-03-03/part-0.parquet",
                orders(qty=pa.array([2], pa.int64()), channel=pa.array(["web"])))

    (update,) = catalog.refresh(LAKE, [("sales", "productorder", ["orderdate"])])

    columns = {c["Name"]: c["Type"] for c in glue_table()["StorageDescriptor"]["Columns"]}
    assert columns["qty"] == "bigint" and columns["channel"] == "string" and "price" in columns
    assert update.columns_added == ["channel"]
    assert partitions() == [["2024-03-03"]]
    assert (update.partitions_added, update.partitions_removed) == (1, 1)


def test_table_without_files_is_skipped_and_table_names_can_carry_the_schema(s3):
    put_parquet(s3, "lake/sales/product/part-0.parquet", orders())
    catalog = GlueCatalog("lake", table_name_format="{schema}_{table}", aws_conn_id=None)
    updates = catalog.refresh(LAKE, [("sales", "product", []), ("sales", "store", [])])
    assert [u.skipped for u in updates] == [None, "no data files yet"]
    assert glue_table("sales_product")["PartitionKeys"] == []


def test_crawler_config_excludes_staging_and_job_folders():
    config = lake_crawler_config("dmscdc-lake", "arn:aws:iam::123456789012:role/r", "lake", LAKE,
                                 tables=["sales.product"])
    (target,) = config["Targets"]["S3Targets"]
    assert target["Path"] == f"{LAKE}/sales/product/"
    assert "_dmscdc_staging/**" in LAKE_EXCLUSIONS and target["Exclusions"] == LAKE_EXCLUSIONS


@pytest.fixture
def crawls_take_a_second():
    from moto.moto_api import state_manager

    state_manager.set_transition(model_name="glue::crawl", transition={"progression": "time", "seconds": 1})
    yield
    state_manager.unset_transition(model_name="glue::crawl")


def test_running_crawler_is_waited_for_then_crawled_again(s3, crawls_take_a_second):
    glue = boto3.client("glue", region_name=REGION)
    glue.create_crawler(**lake_crawler_config("dmscdc-lake", "arn:aws:iam::123456789012:role/r", "lake", LAKE))
    glue.start_crawler(Name="dmscdc-lake")  # e.g. its own schedule, started before the merge published

    status = run_crawler("dmscdc-lake", poll_interval=1)

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.glue.models import glue_backends

    assert status == "COMPLETED"
    assert len(glue_backends[DEFAULT_ACCOUNT_ID][REGION].crawlers["dmscdc-lake"].crawls) == 2


def test_other_crawler_errors_are_raised(s3):
    with pytest.raises(Exception, match="EntityNotFoundException"):
        run_crawler("missing-crawler", poll_interval=0)


def test_glue_tables_mode_infers_partitions_and_skips_tables_without_files(s3):
    from dmscdc_provider.catalog import catalog_refresher

    put_parquet(s3, "lake/sales/productorder/orderdate=2024-03-01/part-0.parquet", orders())
    refreshed = catalog_refresher("glue_tables")(LAKE, ["sales.productorder", "sales.store"], database="lake")
    assert refreshed == ["sales.productorder"]
    assert [k["Name"] for k in glue_table()["PartitionKeys"]] == ["orderdate"]
    assert partitions() == [["2024-03-01"]]


def test_glue_crawler_mode_runs_the_crawler_and_reports_its_tables(s3, crawls_take_a_second):
    from dmscdc_provider.catalog import catalog_refresher

    glue = boto3.client("glue", region_name=REGION)
    glue.create_crawler(**lake_crawler_config("dmscdc-lake", "arn:aws:iam::123456789012:role/r", "lake", LAKE))
    refreshed = catalog_refresher("glue_crawler")(LAKE, ["sales.product"], crawler_name="dmscdc-lake", poll_interval=1)
    assert refreshed == ["sales.product"]
    assert glue.get_crawler(Name="dmscdc-lake")["Crawler"]["LastCrawl"]["Status"] not in ("FAILED", "CANCELLED")
