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


@pytest.fixture(params=["local"])
def engine(request):
    """Each in-process merge engine in turn, for behaviour every engine must share."""
    if request.param == "local":
        return request.getfixturevalue("local_engine")
    raise ValueError(f"no test engine {request.param!r}")
