"""Spark's S3A connector for local sessions: its jars (from Maven Central, cached) and settings.

Glue and EMR bring their own S3 connector; a local Spark (a laptop, CI, a self-hosted worker)
needs hadoop-aws of the Hadoop release pyspark ships (3.3.4 for pyspark 3.5.6) and the AWS SDK
bundle that release was built against. ``make setup`` runs ``python -m dmscdc_spark.s3a``, which
downloads them once into the cache folder and checks them against Maven Central's SHA-1.

Standard library only: this module is imported by ``session.py`` and by the setup, neither of
which may need boto3 or Airflow.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"


@dataclass(frozen=True)
class MavenJar:
    """One jar on Maven Central, pinned by its published SHA-1 and size."""

    group: str
    artifact: str
    version: str
    sha1: str
    size: int

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    def url(self, repository: str = MAVEN_CENTRAL) -> str:
        return f"{repository}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"


# hadoop-aws must be the Hadoop version of pyspark's own jars (pyspark 3.5.6: hadoop-client-api
# 3.3.4); aws-java-sdk-bundle is the version hadoop-aws 3.3.4 declares.
S3A_JARS = (
    MavenJar("org.apache.hadoop", "hadoop-aws", "3.3.4", "a65839fbf1869f81a1632e09f415e586922e4f80", 962_685),
    MavenJar("com.amazonaws", "aws-java-sdk-bundle", "1.12.262", "02deec3a0ad83d13d032b1812421b23d7a961eea", 280_645_251),
)
SETUP_COMMAND = "make setup (or: python -m dmscdc_spark.s3a)"


class S3AUnavailable(RuntimeError):
    """Local Spark cannot reach ``s3://``: the S3A jars are not installed in this session."""


def jar_cache_dir() -> Path:
    """Where the jars are kept: ``$DMSCDC_CACHE_DIR/jars``, by default ``~/.cache/dmscdc/jars``."""
    root = os.environ.get("DMSCDC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "dmscdc")
    return Path(root) / "jars"


def _is_cached(jar: MavenJar, folder: Path) -> bool:
    path = folder / jar.file_name
    return path.is_file() and path.stat().st_size == jar.size


def cached_jars(folder: Path | None = None) -> list[Path] | None:
    """The cached S3A jars, or None when any is missing or incomplete."""
    folder = folder or jar_cache_dir()
    if not all(_is_cached(jar, folder) for jar in S3A_JARS):
        return None
    return [folder / jar.file_name for jar in S3A_JARS]


def fetch_jars(folder: Path | None = None, jars: tuple[MavenJar, ...] = S3A_JARS,
               repository: str = MAVEN_CENTRAL, log=print) -> list[Path]:
    """Download the jars that are not cached yet (SHA-1 checked before they enter the cache).

    :raises RuntimeError: a download does not match its pinned SHA-1 (nothing enters the cache).
    """
    folder = folder or jar_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for jar in jars:
        if _is_cached(jar, folder):
            continue
        url = jar.url(repository)
        log(f"fetching {url}")
        partial = folder / f".{jar.file_name}.partial"
        digest = hashlib.sha1()
        with urllib.request.urlopen(url, timeout=600) as response, open(partial, "wb") as handle:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                handle.write(chunk)
        if digest.hexdigest() != jar.sha1:
            partial.unlink()
            raise RuntimeError(f"{url}: SHA-1 {digest.hexdigest()} is not the pinned {jar.sha1}")
        partial.replace(folder / jar.file_name)
    return [folder / jar.file_name for jar in jars]


def s3a_settings(jars: list[Path], environ=os.environ) -> dict:
    """Spark settings that put the jars on a local session's class path and map ``s3://`` to S3A.

    The endpoint comes from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (an emulator or a
    private endpoint; such endpoints want path-style addressing), the region from
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, the credentials from the environment, the
    profile or the instance role.
    """
    # In local mode the driver is the executor: its class path reaches every task, and the
    # 280 MB SDK bundle is not copied into each session's work folder as spark.jars would do.
    settings = {
        "spark.driver.extraClassPath": os.pathsep.join(str(path) for path in jars),
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        # Keep folder markers: deleting them touches keys above the staging folder (``lake/``),
        # which the Spark job's role may not write (docs/iam-policy-spark-job.json).
        "spark.hadoop.fs.s3a.directory.marker.retention": "keep",
        "spark.hadoop.fs.s3a.aws.credentials.provider": ",".join((
            "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider",
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
            "com.amazonaws.auth.EnvironmentVariableCredentialsProvider",
            "com.amazonaws.auth.profile.ProfileCredentialsProvider",
            "org.apache.hadoop.fs.s3a.auth.IAMInstanceCredentialsProvider",
        )),
    }
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        settings["spark.hadoop.fs.s3a.endpoint"] = endpoint
        settings["spark.hadoop.fs.s3a.path.style.access"] = "true"
        settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https:")).lower()
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        settings["spark.hadoop.fs.s3a.endpoint.region"] = region
    return settings


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def jars_missing_error(uri: str) -> S3AUnavailable:
    """The one-line error for local Spark without the S3A jars: what to install, and where."""
    scheme = uri.split("://", 1)[0]
    return S3AUnavailable(
        f"local Spark cannot read {scheme}:// without the S3A jars "
        f"({', '.join(jar.file_name for jar in S3A_JARS)} in {jar_cache_dir()}): "
        f"install them with `{SETUP_COMMAND}`")


def require_s3(spark, uri: str) -> None:
    """Fail at once, in one line, when ``spark`` has no file system for ``uri``'s scheme.

    :raises S3AUnavailable: naming what to install (instead of Hadoop's ``No FileSystem for
        scheme "s3"`` deep in the first read).
    """
    jvm = spark.sparkContext._jvm
    scheme = uri.split("://", 1)[0]
    try:
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, spark.sparkContext._jsc.hadoopConfiguration())
    except Exception as error:  # py4j's Py4JJavaError: UnsupportedFileSystemException or a missing class
        raise jars_missing_error(uri) from error


def main(argv: list[str] | None = None) -> int:
    """``python -m dmscdc_spark.s3a``: fetch the jars into the cache (no-op when cached)."""
    fetch_jars()
    print(f"S3A jars for local Spark: {jar_cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
