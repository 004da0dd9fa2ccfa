"""Iceberg tables on AWS as deployed: ``dmscdc run --table-format iceberg --iceberg-catalog
glue://DB`` with raw and lake on S3 and the controller in DynamoDB, the CLI a separate process
reaching moto's server through ``AWS_ENDPOINT_URL``; the tables read back by pyiceberg's own
GlueCatalog, configured from scratch as a reader outside dmscdc would configure it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
import os
import subprocess
import sys

import boto3
import pyarrow as pa
import pytest

from tests.aws.conftest import LAKE_BUCKET, RAW_BUCKET, REGION

DATABASE = "dms_lake"
RAW = f"s3://{RAW_BUCKET}/dms"
LAKE = f"s3://{LAKE_BUCKET}/lake"
STATE = "dynamodb://DMSCDC_Controller"
ICEBERG_RUN = ("--raw", RAW, "--state", STATE, "--lake", LAKE, "--table-format", "iceberg",
               "--iceberg-catalog", f"glue://{DATABASE}", "--engine", "duckdb")


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmscdc_provider.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), cwd=cwd, timeout=300)


def glue_reader(endpoint: str):
    """pyiceberg's GlueCatalog as an outside reader (Athena's stand-in) configures it."""
    from pyiceberg.catalog.glue import GlueCatalog

    credentials = {"access-key-id": "testing", "secret-access-key": "testing", "session-token": "testing"}
    return GlueCatalog("reader", **{
        "glue.region": REGION, "glue.endpoint": endpoint, **{f"glue.{k}": v for k, v in credentials.items()},
        "s3.region": REGION, "s3.endpoint": endpoint, **{f"s3.{k}": v for k, v in credentials.items()},
    })


def rows_by_id(catalog, table: str) -> dict[int, dict]:
    rows = catalog.load_table((DATABASE, table)).scan().to_arrow().to_pylist()
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows), f"{table}: a key twice"
    return by_id


@pytest.fixture
def buckets(moto_server):
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (RAW_BUCKET, LAKE_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return moto_server


def test_run_on_s3_commits_glue_iceberg_tables_that_pyiceberg_reads_one_snapshot_per_run(buckets, tmp_path):
    endpoint = buckets
    assert run_cli("demo-source", "--raw", RAW, "--state", STATE, cwd=tmp_path).returncode == 0

    first = run_cli("run", *ICEBERG_RUN, cwd=tmp_path)

    assert first.returncode == 0, first.stdout + first.stderr
    glue = boto3.client("glue", region_name=REGION)
    for name in ("product", "store", "productorder"):
        table = glue.get_table(DatabaseName=DATABASE, Name=name)["Table"]
        assert table["Parameters"]["table_type"] == "ICEBERG"
        assert table["Parameters"]["metadata_location"].startswith(f"{LAKE}/sales/{name}/metadata/")
        assert table["StorageDescriptor"]["Location"] == f"{LAKE}/sales/{name}"
    reader = glue_reader(endpoint)
    products = rows_by_id(reader, "product")
    assert len(products) == 10 and products[1002]["name"] is not None
    orders = reader.load_table((DATABASE, "productorder"))
    assert [f.name for f in orders.spec().fields] == ["orderdate"]
    assert len(orders.scan().to_arrow()) == 12
    assert len(reader.load_table((DATABASE, "product")).snapshots()) == 1
    # Data, metadata and catalog are on S3 and in Glue: nothing was written where the CLI ran
    # (no SQLite catalog, no DuckDB catalog file, no local "s3:" folder).
    assert list(tmp_path.iterdir()) == []

    assert run_cli("demo-source", "--raw", RAW, "--state", STATE, "--changes").returncode == 0
    # The change batch, with the Glue-table refresh asked for in the same database: the
    # Iceberg tables are committed in Glue already, the refresh must not turn them into
    # plain Parquet tables (whose folders hold every snapshot's files).
    second = run_cli("run", *ICEBERG_RUN, "--catalog-mode", "glue_tables", "--catalog-setting", f"database={DATABASE}",
                     cwd=tmp_path)

    assert second.returncode == 0, second.stdout + second.stderr
    assert f"catalog glue_tables {DATABASE}: 0 table(s)" in second.stdout
    assert list(tmp_path.iterdir()) == []
    product = reader.load_table((DATABASE, "product"))
    snapshots = product.snapshots()
    assert len(snapshots) == 2
    assert snapshots[-1].summary["dmscdc.last-incremental-file"].endswith("20240302-100101856.parquet")
    products = rows_by_id(reader, "product")
    assert 1002 not in products and products[1001]["name"] == "Smart Speaker Pro"
    assert set(rows_by_id(reader, "store")) >= {1009}
    assert len(reader.load_table((DATABASE, "productorder")).scan().to_arrow()) == 18
    for name in ("product", "store", "productorder"):
        table = glue.get_table(DatabaseName=DATABASE, Name=name)["Table"]
        assert table["Parameters"]["table_type"] == "ICEBERG"
        assert "classification" not in table["Parameters"]
    assert glue.get_partitions(DatabaseName=DATABASE, TableName="productorder")["Partitions"] == []
    # The first snapshot is still there to read (time travel), as Athena's FOR VERSION AS OF reads it.
    older = product.scan(snapshot_id=snapshots[0].snapshot_id).to_arrow()
    assert 1002 in older.column("id").to_pylist()

    listed = run_cli("snapshots", "sales.product", "--lake", LAKE, "--iceberg-catalog", f"glue://{DATABASE}", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["snapshot_id"] for row in json.loads(listed.stdout)] == [s.snapshot_id for s in snapshots]


def glue_iceberg_product_table():
    """A Glue database holding ``product`` as an Iceberg table; returns the client and its parameters."""
    glue = boto3.client("glue", region_name=REGION)
    glue.create_database(DatabaseInput={"Name": DATABASE})
    iceberg_parameters = {"table_type": "ICEBERG", "metadata_location": f"{LAKE}/sales/product/metadata/1.json"}
    glue.create_table(DatabaseName=DATABASE, TableInput={
        "Name": "product", "TableType": "EXTERNAL_TABLE", "Parameters": iceberg_parameters,
        "StorageDescriptor": {"Location": f"{LAKE}/sales/product", "Columns": [{"Name": "id", "Type": "int"}]}})
    return glue, iceberg_parameters


def test_glue_table_refresh_leaves_an_iceberg_table_as_it_is(s3):
    """A Parquet-format refresh named an Iceberg table (a table switched formats, a hand-written
    list): the Glue table keeps its Iceberg parameters, nothing is rewritten."""
    from dmscdc_provider.aws.glue_catalog import refresh_glue_tables

    glue, iceberg_parameters = glue_iceberg_product_table()
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": [1], "extra": ["x"]}), sink)
    s3.put_object(Bucket=LAKE_BUCKET, Key="lake/sales/product/data/a/part-0.parquet", Body=sink.getvalue().to_pybytes())

    refreshed = refresh_glue_tables(LAKE, ["sales.product"], DATABASE)

    assert refreshed == []
    table = glue.get_table(DatabaseName=DATABASE, Name="product")["Table"]
    assert table["Parameters"] == iceberg_parameters
    assert [c["Name"] for c in table["StorageDescriptor"]["Columns"]] == ["id"]


def test_merge_through_the_hook_takes_glue_and_s3_from_the_tasks_connection(buckets, monkeypatch, tmp_path):
    """A task's Iceberg merge (``DmsCdcHook``, as the merge operator runs it in the worker): the
    Glue catalog, pyiceberg's S3 file IO, the engine and the store all use the connection's
    endpoint, credentials and region; the environment has no endpoint and another region."""
    from dmscdc_provider.dms_writer import load_file_name, write_dms_file
    from dmscdc_provider.hooks.dmscdc import DmsCdcHook
    from dmscdc_provider.planner import controller_path
    from dmscdc_provider.runner import run_table
    from dmscdc_provider.state.base import TableState

    endpoint = buckets
    local = write_dms_file(str(tmp_path / "LOAD.parquet"), [{"Op": "I", "id": i, "name": f"n{i}"} for i in range(5)],
                           pa.schema([("id", pa.int32()), ("name", pa.string())]))
    boto3.client("s3", region_name=REGION).upload_file(local, RAW_BUCKET, f"dms/sales/product/{load_file_name(1)}")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AIRFLOW_CONN_DMSCDC_AWS", json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                                                              "extra": {"region_name": REGION, "endpoint_url": endpoint}}))
    hook = DmsCdcHook(aws_conn_id="dmscdc_aws")
    store = hook.open_store(STATE)
    path = controller_path(RAW, "sales", "product")
    store.register(TableState(path=path, schema="sales", table="product"))
    store.update(path, active=True, primary_key=("id",))
    plan, = hook.planner(RAW, LAKE, store, table_format="iceberg", iceberg_catalog=f"glue://{DATABASE}").plan().plans

    outcome = run_table(plan, hook.make_engine("duckdb"), store, hook.open_storage(LAKE),
                        aws_conn_id="dmscdc_aws", region_name=None)

    assert outcome.succeeded, outcome
    assert sorted(rows_by_id(glue_reader(endpoint), "product")) == list(range(5))
    other_region = boto3.client("glue", region_name="us-east-1", endpoint_url=endpoint)
    assert DATABASE not in [d["Name"] for d in other_region.get_databases()["DatabaseList"]]


@pytest.mark.parametrize("step,recovery", [("commit_recorded", "task_retry"), ("snapshot_committed", "task_retry"),
                                           ("snapshot_committed", "next_run")])
def test_crash_between_glue_commit_and_controller_commit_is_finished_once(buckets, tmp_path, step, recovery):
    """The window between the two stores, on AWS: the controller holds the commit record (and
    the Glue catalog perhaps the new snapshot) and the process dies. A retry of the task (the
    same plan) or the next run finishes it, recognising the snapshot by its summary: one
    snapshot per batch, the watermark moved, each batch applied once."""
    from dmscdc_provider.aws.s3_storage import S3Storage
    from dmscdc_provider.dms_writer import cdc_file_name, load_file_name, write_dms_file
    from dmscdc_provider.engines import make_engine
    from dmscdc_provider.planner import Planner, controller_path
    from dmscdc_provider.runner import run_source, run_table
    from dmscdc_provider.state.base import TableState, open_store
    from tests.core.test_crash_safety import SimulatedCrash, crash_at

    schema = pa.schema([("id", pa.int32()), ("name", pa.string())])
    s3 = boto3.client("s3", region_name=REGION)
    store, storage = open_store(STATE), S3Storage()
    path = controller_path(RAW, "sales", "product")
    store.register(TableState(path=path, schema="sales", table="product"))
    store.update(path, active=True, primary_key=("id",))
    batches = [(load_file_name(1), [{"Op": "I", "id": i, "name": "v0"} for i in range(4)]),
               ("2024/03/02/" + cdc_file_name(datetime(2024, 3, 2, 10, tzinfo=timezone.utc)),
                [{"Op": "U", "id": 1, "name": "v1"}, {"Op": "D", "id": 2, "name": "v0"}])]
    for number, (name, rows) in enumerate(batches, start=1):
        local = write_dms_file(str(tmp_path / f"{number}.parquet"), rows, schema)
        s3.upload_file(local, RAW_BUCKET, f"dms/sales/product/{name}")
        planner = Planner(RAW, LAKE, store, storage, table_format="iceberg", iceberg_catalog=f"glue://{DATABASE}")
        plan, = planner.plan().plans
        with pytest.raises(SimulatedCrash):
            run_table(plan, make_engine("duckdb"), store, storage, crash_at(step))

        if recovery == "task_retry":
            outcome = run_table(plan, make_engine("duckdb"), store, storage)
            assert outcome.succeeded, outcome
        else:
            next_run = run_source(planner, make_engine("duckdb"), storage)
            assert next_run.finished_commits == ["sales.product"] and next_run.outcomes == []
        assert store.get(path).pending_commit is None
        table = glue_reader(buckets).load_table((DATABASE, "product"))
        assert len(table.snapshots()) == number  # the crashed attempt's commit, not a second one
        assert table.current_snapshot().summary["dmscdc.last-full-load-date"] == store.get(path).last_full_load_date
    assert {i: row["name"] for i, row in rows_by_id(glue_reader(buckets), "product").items()} == {
        0: "v0", 1: "v1", 3: "v0"}
    assert store.get(path).last_incremental_file.endswith("20240302-100000000.parquet")


def test_task_catalog_refresh_updates_parquet_tables_and_leaves_iceberg_tables_to_their_commits(s3):
    """``refresh_catalog`` of a source with tables of both formats (``DmsCdcHook.refresh_lake_catalog``):
    glue_tables catalogs the Parquet-format table; the Iceberg table's Glue entry stays as its
    last commit left it; a crawler is not started for Iceberg tables alone."""
    import pyarrow.parquet as pq

    from dmscdc_provider.hooks.dmscdc import DmsCdcHook

    glue, iceberg_parameters = glue_iceberg_product_table()
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"Op": ["I"], "id": [1], "city": ["Seattle"]}), sink)
    for key in ("lake/sales/store/part-0.parquet", "lake/sales/product/data/a/part-0.parquet"):
        s3.put_object(Bucket=LAKE_BUCKET, Key=key, Body=sink.getvalue().to_pybytes())
    hook = DmsCdcHook(aws_conn_id=None, region_name=REGION)

    refreshed = hook.refresh_lake_catalog("glue_tables", LAKE, {"iceberg": ["sales.product"], "parquet": ["sales.store"]},
                                          {"database": DATABASE})
    crawled = hook.refresh_lake_catalog("glue_crawler", LAKE, {"iceberg": ["sales.product"]},
                                        {"crawler_name": "no-such-crawler"})

    assert refreshed == ["sales.store"] and crawled == []
    tables = {t["Name"]: t for t in glue.get_tables(DatabaseName=DATABASE)["TableList"]}
    assert tables["product"]["Parameters"] == iceberg_parameters
    assert tables["store"]["Parameters"]["classification"] == "parquet"
