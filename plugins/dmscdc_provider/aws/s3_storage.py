"""Storage on Amazon S3: listing raw DMS folders and publishing staged lake files.

S3 has no folders and no rename: a folder is a key prefix, and a move is a copy followed by
a delete. Listings are paginated, so a table with tens of thousands of CDC files is listed
completely.
"""

from __future__ import annotations

import logging

from dmscdc_provider.aws.clients import aws_client, error_code, parse_s3_uri, s3_uri
from dmscdc_provider.storage import StoredObject, is_hidden

log = logging.getLogger(__name__)

_MISSING = {"404", "NoSuchKey", "NotFound"}
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


def _folder_prefix(key: str) -> str:
    key = key.strip("/")
    return f"{key}/" if key else ""


class S3Storage:
    """The ``Storage`` protocol on S3 (``s3://bucket/prefix`` paths).

    :param aws_conn_id: Airflow AWS connection; None uses boto3's default credential chain.
    :param region_name: AWS region; None takes the connection's or the environment's.
    :param client: a ready boto3 S3 client (overrides the two above).
    """

    def __init__(self, aws_conn_id: str | None = None, region_name: str | None = None, client=None):
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = aws_client("s3", self.aws_conn_id, self.region_name)
        return self._client

    def _pages(self, bucket: str, prefix: str, **extra):
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            yield from paginator.paginate(Bucket=bucket, Prefix=prefix, **extra)
        except Exception as error:
            mapped = _as_os_error(error, s3_uri(bucket, prefix))
            if mapped is None:
                raise
            raise mapped from error

    def list_files(self, root: str) -> list[StoredObject]:
        bucket, key = parse_s3_uri(root)
        prefix = _folder_prefix(key)
        found = []
        for page in self._pages(bucket, prefix):
            for entry in page.get("Contents", []):
                relative = entry["Key"][len(prefix):]
                if not relative or relative.endswith("/") or is_hidden(relative):
                    continue  # folder markers the console creates, staging, _SUCCESS, .crc
                found.append(StoredObject(s3_uri(bucket, entry["Key"]), entry["Size"], entry["LastModified"]))
        return sorted(found, key=lambda stored: stored.path)

    def list_folders(self, root: str) -> list[str]:
        bucket, key = parse_s3_uri(root)
        prefix = _folder_prefix(key)
        names = set()
        for page in self._pages(bucket, prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(prefix):].strip("/")
                if name and not is_hidden(name):
                    names.add(name)
        return sorted(names)

    def move(self, source: str, target: str) -> None:
        if not self.exists(source):
            if self.exists(target):
                return  # an earlier attempt moved it
            raise FileNotFoundError(f"neither {source} nor {target} exists")
        source_bucket, source_key = parse_s3_uri(source)
        target_bucket, target_key = parse_s3_uri(target)
        # The managed copy switches to multipart above 5 GB, where CopyObject stops working.
        self.client.copy({"Bucket": source_bucket, "Key": source_key}, target_bucket, target_key)
        self.client.delete_object(Bucket=source_bucket, Key=source_key)

    def delete(self, path: str) -> None:
        bucket, key = parse_s3_uri(path)
        self.client.delete_object(Bucket=bucket, Key=key)  # S3 deletes of missing keys succeed

    def delete_tree(self, root: str) -> None:
        bucket, key = parse_s3_uri(root)
        prefix = _folder_prefix(key)
        if not prefix:
            raise ValueError(f"refusing to delete the whole bucket {root}")
        keys = [entry["Key"] for page in self._pages(bucket, prefix) for entry in page.get("Contents", [])]
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start:start + _DELETE_BATCH]
            response = self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise OSError(
                    f"could not delete {len(response['Errors'])} object(s) under {root}, "
                    f"e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    def exists(self, path: str) -> bool:
        # Listing, not HEAD: S3 answers a HEAD of a missing key with 403 instead of 404 when the
        # role's s3:ListBucket is limited by an s3:prefix condition (docs/iam-policy.json).
        bucket, key = parse_s3_uri(path)
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        if any(entry["Key"] == key for entry in listed.get("Contents", [])):
            return True
        # Not an object: a "folder" exists when any key lies under it.
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=_folder_prefix(key), MaxKeys=1)
        return bool(listed.get("KeyCount"))

    def read_bytes(self, path: str) -> bytes:
        bucket, key = parse_s3_uri(path)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as error:
            mapped = _as_os_error(error, path)
            if mapped is None:
                raise
            raise mapped from error

    def write_bytes(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        bucket, key = parse_s3_uri(path)
        self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def create_bytes(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write ``path`` unless it exists (a conditional PUT); returns whether this call wrote it."""
        bucket, key = parse_s3_uri(path)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*")
        except Exception as error:
            # 412: the key exists; 409: another writer's conditional PUT of it is in flight.
            if error_code(error) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise
        return True


def _as_os_error(error: Exception, where: str) -> OSError | None:
    """Missing buckets and keys become FileNotFoundError, denials PermissionError (both OSError,
    which the planner reports per table); None for anything else."""
    code = error_code(error)
    if code in ("NoSuchBucket", *_MISSING):
        return FileNotFoundError(f"{where}: {code}")
    if code in ("AccessDenied", "AllAccessDisabled", "403"):
        return PermissionError(f"{where}: access denied ({code}); check the role's S3 permissions")
    return None
