"""AWS fixtures: every AWS API is moto's, in this process (``mock_aws``) or over HTTP."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

import pytest

REGION = "eu-west-1"
RAW_BUCKET = "dms-raw"
LAKE_BUCKET = "dms-lake"


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch):
    """Fake credentials and a region, and no endpoint or profile leaking in from the machine."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def aws():
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def s3(aws):
    import boto3

    client = boto3.client("s3", region_name=REGION)
    for bucket in (RAW_BUCKET, LAKE_BUCKET):
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return client


def put_object(client, bucket: str, key: str, body: bytes = b"x") -> None:
    client.put_object(Bucket=bucket, Key=key, Body=body)


def set_last_modified(bucket: str, key: str, moment: datetime) -> None:
    """Give a moto S3 object a chosen LastModified (DMS's LOAD time decides reloads).

    S3 has no API to set it, so the test reaches into moto's in-process backend.
    """
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    stored = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[bucket].keys[key]
    stored.last_modified = moment.astimezone(timezone.utc).replace(tzinfo=None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def moto_server(monkeypatch):
    """moto's server in this process, reached over HTTP through ``AWS_ENDPOINT_URL`` (by a CLI
    subprocess, or by Arrow's own S3 client, which ``mock_aws`` cannot intercept)."""
    import requests
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    yield url
    requests.post(f"{url}/moto-api/reset", timeout=30)  # the server keeps state in this process
    server.stop()
