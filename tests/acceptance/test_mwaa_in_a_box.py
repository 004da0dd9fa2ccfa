"""MWAA in a box: the bundle deployed the way MWAA deploys it, run against moto's server.

What a user does (docs/mwaa.md), step by step:
  1. writes a source YAML with a remote engine, an ``s3://`` raw and lake, DynamoDB state and
     the ``glue_tables`` catalog;
  2. ``dmscdc mwaa-bundle --out BUNDLE --sources SOURCES --airflow-version V``;
  3. MWAA installs BUNDLE/requirements.txt into its Airflow image (no pyspark) and extracts
     plugins.zip into the plugins folder (here: a venv from tests/acceptance/mwaa_env.py, with
     neither the project checkout nor pyspark on its path);
  4. the DAG runs (``airflow dags test``): it plans from DynamoDB and S3, starts one Glue job run
     / EMR Serverless job run per table through boto3, waits in the triggerer, commits, and
     refreshes the Glue catalog.
``SparkJobService`` plays Glue and EMR Serverless: it runs the job files the engines uploaded on
local Spark against the same S3 through S3A. Both ends of the supported Airflow range run.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from contextlib import closing
from pathlib import Path

import boto3
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
import requests
import yaml

from dmscdc_provider.demo import sample_products, sample_stores

from tests.acceptance.mwaa_env import mwaa_venv, supported_airflow_range
from tests.acceptance.spark_service import SparkJobService

DOCS = Path(__file__).resolve().parents[2] / "docs" / "mwaa.md"
REGION = "eu-west-1"
LOGICAL_DATE = "2024-03-03T00:00:00+00:00"
AIRFLOW_VERSIONS = supported_airflow_range()


def walkthrough_source() -> dict:
    """The source YAML of docs/mwaa.md (its first yaml block): the test deploys what the page shows."""
    text = DOCS.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


def source_yaml(engine: str, application_id: str | None = None) -> str:
    document = walkthrough_source()
    if engine == "iceberg":
        # An Iceberg source: merges in the worker (no Spark job), Iceberg tables
        # in the catalog database (iceberg.catalog defaults to glue://<that database>).
        document["engine"] = {"name": "duckdb"}
        document["table_format"] = "iceberg"
    elif engine == "emr_serverless":
        document["engine"] = {"name": "emr_serverless", "settings": {
            "application_id": application_id, "execution_role_arn": ROLE,
            "artifacts_uri": document["engine"]["settings"]["artifacts_uri"]}}
    return yaml.safe_dump(document, sort_keys=False)


WALKTHROUGH = walkthrough_source()
RAW, LAKE = WALKTHROUGH["raw"], WALKTHROUGH["lake"]
STATE_TABLE = WALKTHROUGH["state"].removeprefix("dynamodb://")
DATABASE = WALKTHROUGH["catalog"]["settings"]["database"]
ROLE = WALKTHROUGH["engine"]["settings"]["role_arn"]
# Two of the demo's tables: each merge is a Spark process, and CI time is the budget.
TABLES = WALKTHROUGH["tables"].split(",")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def moto_endpoint(monkeypatch):
    from moto.server import ThreadedMotoServer

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for name, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    yield url
    requests.post(f"{url}/moto-api/reset", timeout=30)
    server.stop()


def aws_env(endpoint: str) -> dict:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION}


def dmscdc(*args: str, cwd: Path) -> str:
    """The ``dmscdc`` command of the project's venv (the machine a user builds the bundle on)."""
    done = subprocess.run([str(Path(sys.executable).parent / "dmscdc"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


class MwaaEnvironment:
    """An AIRFLOW_HOME over the bundle in the MWAA venv; ``airflow`` runs with only these variables."""

    def __init__(self, venv: Path, bundle: Path, home: Path, endpoint: str):
        self.venv, self.home = venv, home
        self.env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(home),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(bundle / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(bundle / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            **aws_env(endpoint),
        }

    def airflow(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv / "bin" / "airflow"), *args], env=self.env, cwd=self.home,
                              capture_output=True, text=True, timeout=timeout)

    def start_airflow(self, *args: str, log: Path) -> subprocess.Popen:
        """``airflow ARGS`` in its own process group, its output going to ``log``."""
        with open(log, "w") as handle:
            return subprocess.Popen([str(self.venv / "bin" / "airflow"), *args], env=self.env, cwd=self.home,
                                    stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)

    def task_states(self, dag_id: str) -> dict[str, str]:
        with closing(sqlite3.connect(self.home / "airflow.db")) as db:
            rows = db.execute("SELECT task_id, map_index, rendered_map_index, state FROM task_instance "
                              "WHERE dag_id = ?", (dag_id,)).fetchall()
        return {task if index < 0 else f"{task}[{rendered or index}]": state for task, index, rendered, state in rows}


def deploy(engine: str, airflow_version: str, endpoint: str, tmp_path: Path) -> MwaaEnvironment:
    """Steps 1-3 of the module docstring; returns the MWAA environment with its DB ready."""
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in ("dms-raw", "dms-lake"):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    application_id = None
    if engine == "emr_serverless":
        application_id = boto3.client("emr-serverless", region_name=REGION).create_application(
            name="dmscdc", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]
    # DMS's output: the full load of the blog's sample database, tables configured as the blog does.
    dmscdc("demo-source", "--raw", RAW, "--state", f"dynamodb://{STATE_TABLE}", cwd=tmp_path)

    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "sales.yaml").write_text(source_yaml(engine, application_id))
    bundle = tmp_path / "bundle"
    dmscdc("mwaa-bundle", "--out", str(bundle), "--sources", str(sources), "--airflow-version", airflow_version,
           cwd=tmp_path)
    zipfile.ZipFile(bundle / "plugins.zip").extractall(bundle / "plugins")

    venv = mwaa_venv((bundle / "requirements.txt").read_text())
    home = tmp_path / "airflow-home"
    home.mkdir()
    environment = MwaaEnvironment(venv, bundle, home, endpoint)
    migrated = environment.airflow("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return environment


def assert_lake_and_catalog_hold_the_load(endpoint: str) -> None:
    file_system = pafs.S3FileSystem(endpoint_override=endpoint, region=REGION, access_key="testing",
                                    secret_key="testing", scheme="http")
    products = ds.dataset("dms-lake/lake/sales/product", filesystem=file_system, format="parquet",
                          exclude_invalid_files=True).to_table().to_pylist()
    expected = {p["id"]: p["name"] for p in sample_products()}
    assert {row["id"]: row["name"] for row in products} == expected
    assert {row["Op"] for row in products} == {"I"}  # the Op column stays in the lake, as in the blog
    stores = ds.dataset("dms-lake/lake/sales/store", filesystem=file_system, format="parquet").to_table()
    assert sorted(stores.column("id").to_pylist()) == sorted(s["id"] for s in sample_stores())

    glue = boto3.client("glue", region_name=REGION)
    tables = {t["Name"]: t for t in glue.get_tables(DatabaseName=DATABASE)["TableList"]}
    assert sorted(tables) == ["product", "store"]
    assert tables["product"]["StorageDescriptor"]["Location"].rstrip("/") == f"{LAKE}/sales/product"
    assert "id" in {c["Name"] for c in tables["product"]["StorageDescriptor"]["Columns"]}


def wait_for(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.mark.parametrize("airflow_version", AIRFLOW_VERSIONS)
def test_glue_deployment_merges_the_lake_and_a_rerun_while_jobs_run_reattaches(
        airflow_version, moto_endpoint, tmp_path):
    environment = deploy("glue", airflow_version, moto_endpoint, tmp_path)
    with SparkJobService(moto_endpoint, REGION, tmp_path / "service") as service:
        service.hold_next_run()  # the first table's job is slow: the worker dies while it runs
        first = environment.start_airflow("dags", "test", "dmscdc_sales", LOGICAL_DATE, log=tmp_path / "first.log")
        wait_for(lambda: len(service.active_runs()) == 1, "the first table's Glue job run")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

        second_log = tmp_path / "second.log"
        # The run again, as a retry runs it.
        second = environment.start_airflow("dags", "test", "dmscdc_sales", LOGICAL_DATE, log=second_log)
        # The rerun plans the same plan, finds its job still running and waits on it.
        wait_for(lambda: "reattaching to the running job" in second_log.read_text(), "the rerun to reattach")
        service.release()
        second.wait(timeout=900)
    output = second_log.read_text()
    assert second.returncode == 0, output[-5000:]
    assert "reattaching" not in (tmp_path / "first.log").read_text()
    assert len(service.all_runs()) == len(TABLES), "a job was submitted twice"
    assert [r.returncode for r in service.ran] == [0] * len(TABLES), [r.output for r in service.ran]
    assert {r.script.rsplit("/", 1)[1] for r in service.ran} == {"glue_entry.py"}
    assert {r.py_files.rsplit("/", 1)[1] for r in service.ran} == {"dmscdc_spark.zip"}
    states = environment.task_states("dmscdc_sales")
    assert {states[f"merge[{table}]"] for table in TABLES} == {"success"}, states
    assert states["refresh_catalog"] == "success", states
    assert_lake_and_catalog_hold_the_load(moto_endpoint)


@pytest.mark.parametrize("airflow_version", AIRFLOW_VERSIONS)
def test_emr_serverless_deployment_merges_the_lake(airflow_version, moto_endpoint, tmp_path):
    environment = deploy("emr_serverless", airflow_version, moto_endpoint, tmp_path)
    with SparkJobService(moto_endpoint, REGION, tmp_path / "service") as service:
        done = environment.airflow("dags", "test", "dmscdc_sales", LOGICAL_DATE, timeout=900)

    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert [r.returncode for r in service.ran] == [0] * len(TABLES), [r.output for r in service.ran]
    assert {r.script.rsplit("/", 1)[1] for r in service.ran} == {"submit.py"}
    states = environment.task_states("dmscdc_sales")
    assert {states[f"merge[{table}]"] for table in TABLES} == {"success"}, states
    assert states["refresh_catalog"] == "success", states
    assert_lake_and_catalog_hold_the_load(moto_endpoint)


def test_iceberg_deployment_merges_in_the_worker_into_glue_iceberg_tables(moto_endpoint, tmp_path):
    """An Iceberg source on the oldest supported Airflow (its SQLAlchemy 1.4 beside pyiceberg):
    the DuckDB engine merges in the worker, pyiceberg commits to the Glue catalog, and the
    glue_tables refresh leaves the Iceberg tables as they are."""
    from pyiceberg.catalog.glue import GlueCatalog

    environment = deploy("iceberg", AIRFLOW_VERSIONS[0], moto_endpoint, tmp_path)
    done = environment.airflow("dags", "test", "dmscdc_sales", LOGICAL_DATE, timeout=900)

    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    states = environment.task_states("dmscdc_sales")
    assert {states[f"merge[{table}]"] for table in TABLES} == {"success"}, states
    assert states["refresh_catalog"] == "success", states
    glue = boto3.client("glue", region_name=REGION)
    tables = {t["Name"]: t for t in glue.get_tables(DatabaseName=DATABASE)["TableList"]}
    assert sorted(tables) == ["product", "store"]
    for name, table in tables.items():
        assert table["Parameters"]["table_type"] == "ICEBERG", table["Parameters"]
        assert table["Parameters"]["metadata_location"].startswith(f"{LAKE}/sales/{name}/metadata/")
    credentials = {"access-key-id": "testing", "secret-access-key": "testing"}
    reader = GlueCatalog("reader", **{
        "glue.region": REGION, "glue.endpoint": moto_endpoint, **{f"glue.{k}": v for k, v in credentials.items()},
        "s3.region": REGION, "s3.endpoint": moto_endpoint, **{f"s3.{k}": v for k, v in credentials.items()}})
    product = reader.load_table((DATABASE, "product"))
    assert len(product.snapshots()) == 1
    rows = product.scan().to_arrow().to_pylist()
    assert {row["id"]: row["name"] for row in rows} == {p["id"]: p["name"] for p in sample_products()}
    stores = reader.load_table((DATABASE, "store")).scan().to_arrow()
    assert sorted(stores.column("id").to_pylist()) == sorted(s["id"] for s in sample_stores())
