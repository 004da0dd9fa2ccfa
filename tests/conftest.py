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


# What a Spark session is given on a cluster that does not set them (Spark's own defaults), next
# to the zone of a host far from UTC: the merge must set what it relies on itself.
FOREIGN_ZONE = "America/Sao_Paulo"
CLUSTER_DEFAULTS = {
    "spark.sql.session.timeZone": FOREIGN_ZONE,
    "spark.sql.parquet.datetimeRebaseModeInRead": "EXCEPTION",
    "spark.sql.parquet.datetimeRebaseModeInWrite": "EXCEPTION",
    "spark.sql.parquet.int96RebaseModeInRead": "EXCEPTION",
    "spark.sql.parquet.int96RebaseModeInWrite": "EXCEPTION",
}


@pytest.fixture
def foreign_host(request):
    """The test runs on a host in America/Sao_Paulo (UTC-3): ``TZ`` and Python's zone for the
    in-process engine (DuckDB takes a new connection's zone from them) and, when the test uses
    Spark, the shared session set as a cluster leaves it (its zone, Spark's default rebase modes):
    the JVM's own zone is fixed when it starts, and the session's settings are what Spark's casts
    and Parquet reads follow. Everything is restored afterwards."""
    import os
    import time

    previous_tz = os.environ.get("TZ")
    os.environ["TZ"] = FOREIGN_ZONE
    time.tzset()
    spark = request.getfixturevalue("spark") if "spark" in request.fixturenames or (
        "engine_name" in request.fixturenames and request.getfixturevalue("engine_name") == "local") else None
    previous_conf = {}
    if spark is not None:
        previous_conf = {key: spark.conf.get(key, None) for key in CLUSTER_DEFAULTS}
        for key, value in CLUSTER_DEFAULTS.items():
            spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous_conf.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
        if previous_tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = previous_tz
        time.tzset()
