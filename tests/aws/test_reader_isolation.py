"""Reader isolation on an ``s3://`` lake (moto's server): what a query engine sees while merges
rewrite every file of a table.

The writer is ``dmscdc run`` in its own process, merge after merge, each batch updating every
id, so every data file of the table is replaced each time. Meanwhile the reader, in this
process, reads the table again and again the way a query engine does:

- Iceberg: load the table from the Glue catalog, scan the current snapshot (Athena reads the
  metadata the same way). Every read must hold each key once, no key missing, all rows from
  the same merge, and no read may fail.
- Parquet (for contrast): list the table folder, skip ``_``/``.`` names (as Athena does), read
  the files. A read can see a file listed and then deleted, or old and new files side by side;
  how often depends on timing, so the counts are reported, not asserted.

Both loops are bounded: the writer runs a fixed number of merges, the reader stops when the
writer has finished or after a fixed number of reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmscdc_provider.dms_writer import cdc_file_name, load_file_name, write_dms_file
from tests.aws.conftest import LAKE_BUCKET, RAW_BUCKET, REGION
from tests.aws.test_iceberg_on_aws import glue_reader

DATABASE = "isolation"
RAW = f"s3://{RAW_BUCKET}/dms"
LAKE = f"s3://{LAKE_BUCKET}/lake"
STATE = "dynamodb://IsolationController"
ROWS = 3000
BUCKETS = 4  # partitions: each merge replaces four files
MERGES = 5
MAX_READS = 400
SCHEMA = pa.schema([("id", pa.int64()), ("bucket", pa.int32()), ("version", pa.int32()), ("payload", pa.string())])
LOADED_AT = datetime(2024, 3, 1, 9, 0, 0, tzinfo=timezone.utc)


def batch(version: int) -> list[dict]:
    """Every id, at ``version``: one merge rewrites every file of the table."""
    return [{"Op": "U" if version else "I", "id": i, "bucket": i % BUCKETS, "version": version,
             "payload": f"row {i} v{version}"} for i in range(ROWS)]


def cdc_moment(version: int) -> datetime:
    return LOADED_AT + timedelta(hours=version)


@dataclass
class ReadCounts:
    """What the reader saw: every read, and the torn ones by kind."""

    reads: int = 0
    failed: int = 0
    duplicate_keys: int = 0
    missing_keys: int = 0
    mixed_versions: int = 0
    versions_seen: set = field(default_factory=set)
    first_problems: list = field(default_factory=list)

    @property
    def torn(self) -> int:
        return self.failed + self.duplicate_keys + self.missing_keys + self.mixed_versions

    def check(self, ids: list[int], versions: list[int]) -> None:
        self.reads += 1
        unique = set(ids)
        problem = None
        if len(unique) != len(ids):
            self.duplicate_keys += 1
            problem = f"read {self.reads}: {len(ids) - len(unique)} key(s) twice"
        elif len(unique) != ROWS:
            self.missing_keys += 1
            problem = f"read {self.reads}: {ROWS - len(unique)} key(s) missing"
        elif len(set(versions)) != 1:
            self.mixed_versions += 1
            problem = f"read {self.reads}: rows of merges {sorted(set(versions))} together"
        self.versions_seen.update(versions)
        if problem and len(self.first_problems) < 5:
            self.first_problems.append(problem)

    def fail(self, error: Exception) -> None:
        self.reads += 1
        self.failed += 1
        if len(self.first_problems) < 5:
            self.first_problems.append(f"read {self.reads}: {type(error).__name__}: {str(error)[:160]}")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmscdc_provider.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


def upload_dms_file(s3, tmp_path, key: str, rows: list[dict], modified: datetime | None = None) -> None:
    local = tmp_path / key.replace("/", "_")
    write_dms_file(str(local), rows, SCHEMA, modified=modified)
    s3.put_object(Bucket=RAW_BUCKET, Key=f"dms/{key}", Body=local.read_bytes())


def load_the_table(moto_server, tmp_path, table_format: str) -> tuple[object, list[str]]:
    """Buckets, the full load merged, every change batch in raw; returns the S3 client and the
    ``dmscdc run`` arguments that merge exactly the next batch (``--cdc-before``)."""
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (RAW_BUCKET, LAKE_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    upload_dms_file(s3, tmp_path, f"sales/orders/{load_file_name(1)}", batch(0), LOADED_AT)
    configured = run_cli("configure", "sales.orders", "--raw", RAW, "--state", STATE, "--active",
                         "--primary-key", "id", "--partition-key", "bucket", "--table-format", table_format)
    assert configured.returncode == 0, configured.stderr
    run_args = ["run", "--raw", RAW, "--state", STATE, "--lake", LAKE, "--engine", "duckdb",
                "--table-format", table_format, "--iceberg-catalog", f"glue://{DATABASE}"]
    loaded = run_cli(*run_args)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    for version in range(1, MERGES + 1):
        upload_dms_file(s3, tmp_path, f"sales/orders/{cdc_file_name(cdc_moment(version))}", batch(version))
    return s3, run_args


def merge_in_background(run_args: list[str]) -> tuple[threading.Thread, list]:
    """``MERGES`` runs of ``dmscdc run`` one after the other, each applying one batch."""
    results: list = []

    def merges():
        for version in range(1, MERGES + 1):
            before = (cdc_moment(version) + timedelta(minutes=30)).isoformat()
            results.append(run_cli(*run_args, "--cdc-before", before))

    writer = threading.Thread(target=merges, name="dmscdc-merges", daemon=True)
    writer.start()
    return writer, results


def read_while_merging(writer: threading.Thread, read) -> ReadCounts:
    counts = ReadCounts()
    while writer.is_alive() and counts.reads < MAX_READS:
        try:
            ids, versions = read()
        except Exception as error:  # a failed read is what this test counts
            counts.fail(error)
            continue
        counts.check(ids, versions)
    writer.join(timeout=600)
    return counts


def report(request, table_format: str, counts: ReadCounts, seconds: float) -> None:
    line = (f"reader isolation, {table_format} on s3 (moto): {counts.reads} reads during {MERGES} merges of "
            f"{ROWS} rows in {seconds:.0f}s; torn {counts.torn} (failed {counts.failed}, key twice "
            f"{counts.duplicate_keys}, key missing {counts.missing_keys}, merges mixed {counts.mixed_versions}); "
            f"versions seen {sorted(counts.versions_seen)}")
    print(line)
    for problem in counts.first_problems:
        print(f"  {problem}")
    request.node.user_properties.append((f"reader_isolation_{table_format}", line))


def test_iceberg_reader_on_s3_sees_whole_snapshots_while_merges_rewrite_every_file(moto_server, tmp_path, request):
    s3, run_args = load_the_table(moto_server, tmp_path, "iceberg")
    reader = glue_reader(moto_server)

    def read_current_snapshot():
        # A fresh load each time: the reader follows the Glue table's metadata_location.
        rows = reader.load_table((DATABASE, "orders")).scan(selected_fields=("id", "version")).to_arrow()
        return rows.column("id").to_pylist(), rows.column("version").to_pylist()

    started = time.monotonic()
    writer, results = merge_in_background(run_args)
    counts = read_while_merging(writer, read_current_snapshot)
    report(request, "iceberg", counts, time.monotonic() - started)

    assert [r.returncode for r in results] == [0] * MERGES, [r.stdout + r.stderr for r in results if r.returncode]
    assert counts.reads >= MERGES  # the reader really read while the merges ran
    assert counts.torn == 0, counts.first_problems
    assert len(counts.versions_seen) >= 2  # it saw the table change under it
    table = reader.load_table((DATABASE, "orders"))
    assert len(table.snapshots()) == MERGES + 1
    final = table.scan().to_arrow()
    assert sorted(final.column("id").to_pylist()) == list(range(ROWS))
    assert set(final.column("version").to_pylist()) == {MERGES}


def test_parquet_folder_reader_on_s3_counts_torn_reads_for_contrast(moto_server, tmp_path, request):
    s3, run_args = load_the_table(moto_server, tmp_path, "parquet")
    from dmscdc_provider.arrow_fs import s3_filesystem
    from dmscdc_provider.storage import is_hidden

    filesystem = s3_filesystem(region_name=REGION)
    prefix = "lake/sales/orders/"

    def list_and_read_folder():
        ids, versions = [], []
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=LAKE_BUCKET, Prefix=prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])
                if o["Key"].endswith(".parquet") and not is_hidden(o["Key"][len(prefix):])]
        for key in keys:
            with filesystem.open_input_file(f"{LAKE_BUCKET}/{key}") as handle:
                part = pq.read_table(handle, columns=["id", "version"])
            ids.extend(part.column("id").to_pylist())
            versions.extend(part.column("version").to_pylist())
        return ids, versions

    started = time.monotonic()
    writer, results = merge_in_background(run_args)
    counts = read_while_merging(writer, list_and_read_folder)
    report(request, "parquet", counts, time.monotonic() - started)

    assert [r.returncode for r in results] == [0] * MERGES, [r.stdout + r.stderr for r in results if r.returncode]
    assert counts.reads >= MERGES
    # Torn reads are timing-dependent here; once the merges are done the folder is whole.
    ids, versions = list_and_read_folder()
    assert sorted(ids) == list(range(ROWS)) and set(versions) == {MERGES}


@pytest.fixture(autouse=True)
def quiet_moto_server_log():
    """moto's server logs every request; thousands of reads would flood the captured output."""
    import logging

    logger = logging.getLogger("werkzeug")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)
