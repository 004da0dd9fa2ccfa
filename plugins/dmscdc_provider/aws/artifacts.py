"""The Spark job's files on S3: entry points and the packaged merge library.

``dmscdc_spark.zip`` holds the ``dmscdc_spark`` package (Glue's ``--extra-py-files``,
spark-submit's ``--py-files``); the entry points are two of its modules uploaded as scripts:
``submit.py`` (spark-submit) and ``glue_entry.py`` (Glue). The zip is built reproducibly (sorted
entries, fixed timestamps), so its content hash names the S3 folder: an unchanged library is
never uploaded twice, and a changed one never overwrites the files a running job is using.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass

LIBRARY_PACKAGE = "dmscdc_spark"
LIBRARY_ZIP = "dmscdc_spark.zip"
JOB_SCRIPT = "submit.py"
GLUE_SCRIPT = "glue_entry.py"
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def library_files() -> dict[str, bytes]:
    """The ``dmscdc_spark`` package's Python sources, ``dmscdc_spark/...`` -> bytes.

    Read through ``importlib.resources``, so it works wherever the package is importable: a
    source checkout, site-packages, or MWAA's plugins folder. Importing the package imports
    no pyspark.
    """
    from importlib.resources import files

    entries = {}

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                if entry.name != "__pycache__":
                    walk(entry, f"{prefix}/{entry.name}")
            elif entry.name.endswith(".py"):
                entries[f"{prefix}/{entry.name}"] = entry.read_bytes()

    walk(files(LIBRARY_PACKAGE), LIBRARY_PACKAGE)
    return entries


def build_library_zip(entries: dict[str, bytes]) -> bytes:
    """The zip of the ``dmscdc_spark`` package (``library_files()``), byte-for-byte reproducible."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])
    return buffer.getvalue()


@dataclass(frozen=True)
class SparkArtifacts:
    """S3 URIs of the uploaded job files.

    :param library_zip: ``dmscdc_spark.zip`` (``--extra-py-files`` / ``--py-files``).
    :param job_script: ``submit.py``, the spark-submit entry point (EMR, EMR Serverless).
    :param glue_script: ``glue_entry.py``, the Glue job's script.
    """

    library_zip: str
    job_script: str
    glue_script: str


def publish_artifacts(storage, artifacts_uri: str) -> SparkArtifacts:
    """Upload the job files under ``<artifacts_uri>/<content hash>/`` unless already there.

    :param storage: an ``S3Storage`` (``create_bytes``).
    :param artifacts_uri: ``s3://bucket/prefix`` for dmscdc's job files.
    """
    library = library_files()
    files = {
        LIBRARY_ZIP: build_library_zip(library),
        JOB_SCRIPT: library[f"{LIBRARY_PACKAGE}/{JOB_SCRIPT}"],
        GLUE_SCRIPT: library[f"{LIBRARY_PACKAGE}/{GLUE_SCRIPT}"],
    }
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name])
    folder = f"{artifacts_uri.rstrip('/')}/{digest.hexdigest()[:16]}"
    for name, data in files.items():
        # The folder is named by the content, so an existing key already holds these bytes; a
        # conditional PUT needs no HEAD (which a prefix-limited role gets 403 for when missing).
        storage.create_bytes(f"{folder}/{name}", data)
    return SparkArtifacts(
        library_zip=f"{folder}/{LIBRARY_ZIP}",
        job_script=f"{folder}/{JOB_SCRIPT}",
        glue_script=f"{folder}/{GLUE_SCRIPT}",
    )
