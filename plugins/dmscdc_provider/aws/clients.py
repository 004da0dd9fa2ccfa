"""boto3 clients and S3 URIs, shared by the AWS stores, engines and catalog helpers."""

from __future__ import annotations

from typing import Any


def aws_client(service: str, aws_conn_id: str | None = None, region_name: str | None = None) -> Any:
    """A boto3 client for ``service``.

    With ``aws_conn_id`` the client comes from the Amazon provider's ``AwsBaseHook`` (the
    Airflow connection's credentials, role and endpoint); without it from boto3's default
    chain (environment, profile, instance role), which is what the ``dmscdc`` CLI uses.
    boto3 honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` either way.

    :param service: boto3 service name, e.g. ``s3``, ``dynamodb``, ``glue``.
    :param aws_conn_id: Airflow AWS connection id, or None for the default chain.
    :param region_name: AWS region; None takes the connection's or the environment's.
    """
    if aws_conn_id:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=aws_conn_id, client_type=service, region_name=region_name).get_conn()
    import boto3

    return boto3.session.Session(region_name=region_name).client(service)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``.

    :raises ValueError: not an ``s3://`` URI with a bucket.
    """
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, key


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def error_code(error: Exception) -> str:
    """The AWS error code of a botocore ``ClientError`` ("" for other exceptions)."""
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
