"""File access for the provider side: listing raw DMS folders and publishing staged lake files.

The Spark engine does its own I/O through Hadoop; this module serves the planner (listing)
and the commit protocol (moving staged files into the table, deleting replaced ones).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class StoredObject:
    """A file in storage: full path (or URI), size in bytes, last-modified time in UTC."""

    path: str
    size: int
    modified: datetime


class Storage(Protocol):
    """What the planner and the commit protocol need from a file store."""

    def list_files(self, root: str) -> list[StoredObject]:
        """Files under ``root`` at any depth, skipping names that start with ``_`` or ``.``."""

    def list_folders(self, root: str) -> list[str]:
        """Names of the folders directly under ``root`` (hidden ones skipped)."""

    def move(self, source: str, target: str) -> None:
        """Move a file; idempotent: a source that is gone with the target present is done."""

    def delete(self, path: str) -> None:
        """Delete a file; a missing file is fine."""

    def delete_tree(self, root: str) -> None:
        """Delete a folder and everything under it; a missing folder is fine."""

    def exists(self, path: str) -> bool: ...

    def read_bytes(self, path: str) -> bytes:
        """A small document's content (plans passed by reference, job results)."""

    def write_bytes(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write a small document whole; readers see the old content or the new, never a part."""


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts if p]])


def local_path(uri: str) -> str:
    """``file:///x/y`` or ``file:/x/y`` -> ``/x/y``; a plain path is made absolute."""
    if uri.startswith("file:"):
        return unquote(urlparse(uri).path)
    return os.path.abspath(uri)


def is_hidden(relative_path: str) -> bool:
    """A ``_`` or ``.`` name anywhere in the path: readers and crawlers skip it, so does dmscdc."""
    return any(part.startswith(("_", ".")) for part in relative_path.split("/"))


class LocalStorage:
    """Storage on a local or mounted file system; takes plain paths and ``file://`` URIs alike
    (a commit recorded with either form finishes with either)."""

    def list_files(self, root: str) -> list[StoredObject]:
        root = local_path(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"folder {root} does not exist or is not readable")
        found = []
        for folder, subfolders, names in os.walk(root, onerror=_raise):
            subfolders[:] = sorted(d for d in subfolders if not is_hidden(d))
            for name in sorted(names):
                if is_hidden(name):
                    continue
                path = os.path.join(folder, name)
                stat = os.stat(path)
                found.append(
                    StoredObject(path, stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc))
                )
        return found

    def list_folders(self, root: str) -> list[str]:
        root = local_path(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"folder {root} does not exist or is not readable")
        return sorted(
            entry.name for entry in os.scandir(root) if entry.is_dir() and not is_hidden(entry.name)
        )

    def move(self, source: str, target: str) -> None:
        source, target = local_path(source), local_path(target)
        if not os.path.exists(source):
            if os.path.exists(target):
                return
            raise FileNotFoundError(f"neither {source} nor {target} exists")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(source, target)

    def delete(self, path: str) -> None:
        try:
            os.remove(local_path(path))
        except FileNotFoundError:
            pass

    def delete_tree(self, root: str) -> None:
        shutil.rmtree(local_path(root), ignore_errors=True)

    def exists(self, path: str) -> bool:
        return os.path.exists(local_path(path))

    def read_bytes(self, path: str) -> bytes:
        with open(local_path(path), "rb") as handle:
            return handle.read()

    def write_bytes(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = local_path(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)


def _raise(error: OSError) -> None:
    raise error


def open_storage(uri: str, aws_conn_id: str | None = None, region_name: str | None = None) -> Storage:
    """The storage for a raw or lake location: a local path, ``file://`` or ``s3://``.

    :param aws_conn_id: Airflow AWS connection for S3 (None: boto3's default chain).
    :param region_name: AWS region for S3.
    """
    if uri.startswith("s3://"):
        from dmscdc_provider.aws.s3_storage import S3Storage

        return S3Storage(aws_conn_id=aws_conn_id, region_name=region_name)
    return LocalStorage()
