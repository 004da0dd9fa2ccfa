"""Shared fixtures: one local SparkSession for the whole suite (a JVM start costs seconds)."""

from __future__ import annotations

import logging

import pytest

# py4j logs at INFO while Python shuts down, after pytest has closed its output streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def spark():
    from dmscdc_spark.session import local_session

    session = local_session("local[2]", {
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.sql.adaptive.enabled": "false",
    })
    yield session
    session.stop()


@pytest.fixture
def local_engine(spark):
    from dmscdc_provider.engines.local import LocalSparkEngine

    return LocalSparkEngine(session=spark)


# Engines that run on this machine; the merge-semantics, bad-input, crash-safety and randomized
# suites run against each, so the engines cannot drift apart.
LOCAL_ENGINES = ["local", "duckdb"]


@pytest.fixture(params=LOCAL_ENGINES)
def engine_name(request):
    return request.param


@pytest.fixture
def engine(engine_name, request):
    """Each engine that runs here, in turn (Spark's on the shared session)."""
    if engine_name == "local":
        return request.getfixturevalue("local_engine")
    from dmscdc_provider.engines.duckdb import DuckDBMergeEngine

    return DuckDBMergeEngine(memory_limit="512MB", threads=2)


# Table formats: the conformance suites (merge semantics, crash safety, hostile input,
# randomized) run for each, on each engine.
TABLE_FORMATS = ["parquet", "iceberg"]


@pytest.fixture(params=TABLE_FORMATS)
def table_format(request):
    return request.param
