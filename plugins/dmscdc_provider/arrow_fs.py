"""Arrow file systems for the provider side: footers, the in-process engine, S3 without downloads.

``pyarrow.fs`` ships its S3 client inside the pyarrow wheel, so reading and writing ``s3://``
needs nothing installed at run time (MWAA workers often have no internet). The task's AWS
connection gives the credentials, region and endpoint, as it does for every boto3 client.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pyarrow.fs as pafs

from dmscdc_provider.storage import is_hidden, local_path
from dmscdc_provider.table_formats import LakeFile


def arrow_filesystem(
    uri: str, aws_conn_id: str | None = None, region_name: str | None = None
) -> tuple[pafs.FileSystem, str]:
    """The Arrow file system for ``uri`` and the path to use on it.

    :param uri: a local path, ``file://`` URI or ``s3://bucket/key``.
    :param aws_conn_id: Airflow AWS connection (None: boto3's default chain, as the CLI uses).
    :param region_name: AWS region; None takes the connection's or the environment's.
    :return: ``(filesystem, path)``; for S3 the path is ``bucket/key``.
    """
    if uri.startswith("s3://"):
        return s3_filesystem(aws_conn_id, region_name), uri[len("s3://"):].rstrip("/")
    return pafs.LocalFileSystem(), local_path(uri)


def s3_filesystem(aws_conn_id: str | None = None, region_name: str | None = None) -> pafs.S3FileSystem:
    """An Arrow S3 file system with the credentials, region and endpoint boto3 would use."""
    session, endpoint_url = boto3_session(aws_conn_id, region_name)
    credentials = session.get_credentials()
    options: dict = {"region": session.region_name or region_name or "us-east-1"}
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options.update(access_key=frozen.access_key, secret_key=frozen.secret_key,
                       session_token=frozen.token)
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint_url:
        parsed = urlparse(endpoint_url)
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**options)


def boto3_session(aws_conn_id: str | None, region_name: str | None):
    """The boto3 session (and the connection's S3 endpoint, if it sets one) for the connection."""
    if aws_conn_id:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3", region_name=region_name)
        return hook.get_session(region_name=region_name), hook.conn_config.get_service_endpoint_url("s3")
    import boto3

    return boto3.session.Session(region_name=region_name), None


class ArrowFiles:
    """Paths (local, ``file://``, ``s3://``) to Arrow file systems, one S3 client per merge or check.

    :param aws_conn_id: Airflow AWS connection for ``s3://`` (None: boto3's chain).
    :param region_name: AWS region for S3.
    """

    def __init__(self, aws_conn_id: str | None = None, region_name: str | None = None):
        self.aws_conn_id, self.region_name = aws_conn_id, region_name
        self._s3: pafs.FileSystem | None = None

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        if uri.startswith("s3://"):
            if self._s3 is None:
                self._s3, _ = arrow_filesystem(uri, self.aws_conn_id, self.region_name)
            return self._s3, uri[len("s3://"):].rstrip("/")
        return arrow_filesystem(uri)

    def open_input(self, uri: str):
        fs, path = self.resolve(uri)
        return fs.open_input_file(path)

    def open_stream(self, uri: str):
        fs, path = self.resolve(uri)
        return fs.open_input_stream(path, compression="detect")

    def open_output(self, uri: str):
        fs, path = self.resolve(uri)
        if isinstance(fs, pafs.LocalFileSystem):  # object stores have no folders to make
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        return fs.open_output_stream(path)

    def list_data_files(self, root: str) -> list[LakeFile]:
        """Parquet files under ``root`` that readers see (no ``_`` or ``.`` in any name)."""
        fs, path = self.resolve(root)
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        prefix = path.rstrip("/") + "/"
        found = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.startswith(prefix):
                continue
            relative = info.path[len(prefix):]
            if relative.endswith(".parquet") and not is_hidden(relative):
                found.append(LakeFile(relative, info.size))
        return sorted(found, key=lambda f: f.relative_path)

    def delete_tree(self, uri: str) -> None:
        fs, path = self.resolve(uri)
        try:
            fs.delete_dir(path)
        except FileNotFoundError:  # nothing was staged
            pass
