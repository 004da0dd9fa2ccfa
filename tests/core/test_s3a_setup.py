"""The S3A jars local Spark needs for ``s3://``: fetched once, checked, cached; and the settings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dmscdc_spark.s3a import MavenJar, S3AUnavailable, cached_jars, fetch_jars, require_s3, s3a_settings


def repository_with(tmp_path: Path, content: bytes) -> tuple[str, MavenJar]:
    """A Maven-layout folder holding one jar, and the jar pinned to ``content``."""
    folder = tmp_path / "repo" / "org" / "example" / "thing" / "1.0"
    folder.mkdir(parents=True)
    (folder / "thing-1.0.jar").write_bytes(content)
    jar = MavenJar("org.example", "thing", "1.0", hashlib.sha1(content).hexdigest(), len(content))
    return (tmp_path / "repo").as_uri(), jar


def test_fetch_downloads_a_missing_jar_once_and_keeps_it_in_the_cache(tmp_path):
    repository, jar = repository_with(tmp_path, b"jar bytes")
    cache = tmp_path / "cache"
    fetched = []

    first = fetch_jars(cache, (jar,), repository, log=fetched.append)
    second = fetch_jars(cache, (jar,), repository, log=fetched.append)

    assert first == second == [cache / "thing-1.0.jar"]
    assert (cache / "thing-1.0.jar").read_bytes() == b"jar bytes"
    assert len(fetched) == 1, fetched


def test_fetch_refuses_a_jar_whose_sha1_is_not_the_pinned_one_and_caches_nothing(tmp_path):
    repository, jar = repository_with(tmp_path, b"jar bytes")
    tampered = MavenJar(jar.group, jar.artifact, jar.version, "0" * 40, jar.size)
    cache = tmp_path / "cache"

    with pytest.raises(RuntimeError, match="SHA-1"):
        fetch_jars(cache, (tampered,), repository, log=lambda line: None)

    assert list(cache.iterdir()) == []


def test_an_incomplete_cached_jar_counts_as_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("DMSCDC_CACHE_DIR", str(tmp_path))
    (tmp_path / "jars").mkdir()
    (tmp_path / "jars" / "hadoop-aws-3.3.4.jar").write_bytes(b"cut short")

    assert cached_jars() is None


def test_settings_map_s3_to_s3a_with_the_emulator_endpoint_and_path_style_access():
    settings = s3a_settings([Path("/c/a.jar"), Path("/c/b.jar")], {
        "AWS_ENDPOINT_URL": "https://elsewhere", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:5000",
        "AWS_DEFAULT_REGION": "eu-west-1"})

    assert settings["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert settings["spark.driver.extraClassPath"].split(":") == ["/c/a.jar", "/c/b.jar"]
    assert settings["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:5000"
    assert settings["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert settings["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert "EnvironmentVariableCredentialsProvider" in settings["spark.hadoop.fs.s3a.aws.credentials.provider"]


def test_settings_without_an_endpoint_leave_s3a_on_aws_defaults():
    settings = s3a_settings([Path("/c/a.jar")], {})

    assert not {"spark.hadoop.fs.s3a.endpoint", "spark.hadoop.fs.s3a.path.style.access"} & set(settings)


@pytest.mark.skipif(cached_jars() is None, reason="the S3A jars are installed by `make setup`")
def test_the_local_session_reaches_s3_and_s3a_when_the_jars_are_cached(spark):
    require_s3(spark, "s3://bucket/lake")
    require_s3(spark, "s3a://bucket/lake")


def test_a_session_whose_s3_file_system_class_is_missing_fails_in_one_line_naming_the_install(spark):
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    configured = hadoop.get("fs.s3.impl")
    hadoop.set("fs.s3.impl", "org.apache.hadoop.fs.s3a.NotOnTheClassPath")  # as without hadoop-aws
    try:
        with pytest.raises(S3AUnavailable) as raised:
            require_s3(spark, "s3://bucket/lake")
    finally:
        if configured is None:
            hadoop.unset("fs.s3.impl")
        else:
            hadoop.set("fs.s3.impl", configured)

    assert "\n" not in str(raised.value) and "make setup" in str(raised.value)
