"""S3Storage against moto: listing raw DMS folders and publishing staged files."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from dmscdc_provider.aws.s3_storage import S3Storage
from dmscdc_provider.storage import open_storage

from tests.aws.conftest import LAKE_BUCKET, RAW_BUCKET, put_object, set_last_modified


def test_open_storage_makes_s3_storage_for_s3_uris(aws):
    assert isinstance(open_storage("s3://dms-raw/dms/"), S3Storage)


def test_list_files_pages_past_1000_objects(s3):
    names = [f"dms/sales/orders/2024/03/01/20240301-10{i // 60:02d}{i % 60:02d}000.parquet" for i in range(1005)]
    for name in names:
        put_object(s3, RAW_BUCKET, name)
    listed = S3Storage().list_files(f"s3://{RAW_BUCKET}/dms/sales/orders")
    assert len(listed) == 1005
    assert sorted(f.path for f in listed) == sorted(f"s3://{RAW_BUCKET}/{name}" for name in names)


def test_list_files_skips_hidden_names_at_any_depth_and_folder_markers(s3):
    for key in ("dms/sales/product/LOAD00000001.parquet", "dms/sales/product/_SUCCESS",
                "dms/sales/product/.hidden.parquet", "dms/sales/product/_tmp/20240301-100000000.parquet",
                "dms/sales/product/2024/"):
        put_object(s3, RAW_BUCKET, key)
    listed = S3Storage().list_files(f"s3://{RAW_BUCKET}/dms/sales/product/")
    assert [f.path for f in listed] == [f"s3://{RAW_BUCKET}/dms/sales/product/LOAD00000001.parquet"]


def test_list_files_reports_size_and_last_modified(s3):
    put_object(s3, RAW_BUCKET, "dms/sales/product/LOAD00000001.parquet", b"12345")
    loaded_at = datetime(2024, 3, 1, 9, 0, 0, tzinfo=timezone.utc)
    set_last_modified(RAW_BUCKET, "dms/sales/product/LOAD00000001.parquet", loaded_at)
    (stored,) = S3Storage().list_files(f"s3://{RAW_BUCKET}/dms/sales/product")
    assert stored.size == 5
    assert stored.modified == loaded_at


def test_list_folders_lists_schemas_and_tables_without_hidden_ones(s3):
    for key in ("dms/sales/product/LOAD00000001.parquet", "dms/sales/store/LOAD00000001.parquet",
                "dms/hr/employee/LOAD00000001.parquet", "dms/_dmscdc_staging/x/y.parquet"):
        put_object(s3, RAW_BUCKET, key)
    storage = S3Storage()
    assert storage.list_folders(f"s3://{RAW_BUCKET}/dms/") == ["hr", "sales"]
    assert storage.list_folders(f"s3://{RAW_BUCKET}/dms/sales") == ["product", "store"]


def test_bucket_root_works_as_raw_root(s3):
    put_object(s3, RAW_BUCKET, "sales/product/LOAD00000001.parquet")
    assert S3Storage().list_folders(f"s3://{RAW_BUCKET}") == ["sales"]


def test_missing_bucket_is_file_not_found(aws):
    with pytest.raises(FileNotFoundError, match="NoSuchBucket"):
        S3Storage().list_folders("s3://no-such-bucket/dms/")


def test_move_copies_then_deletes_and_repeating_it_is_harmless(s3):
    source = f"s3://{LAKE_BUCKET}/_dmscdc_staging/sales/product/a1/part-0.parquet"
    target = f"s3://{LAKE_BUCKET}/sales/product/part-0.parquet"
    put_object(s3, LAKE_BUCKET, "_dmscdc_staging/sales/product/a1/part-0.parquet", b"data")
    storage = S3Storage()
    storage.move(source, target)
    storage.move(source, target)  # a retry after a crash between the move and the state write
    assert not storage.exists(source)
    assert s3.get_object(Bucket=LAKE_BUCKET, Key="sales/product/part-0.parquet")["Body"].read() == b"data"


def test_move_with_neither_file_present_fails(s3):
    with pytest.raises(FileNotFoundError):
        S3Storage().move(f"s3://{LAKE_BUCKET}/a.parquet", f"s3://{LAKE_BUCKET}/b.parquet")


def test_delete_tree_removes_everything_under_the_folder_only(s3):
    for key in ("_dmscdc_staging/sales/product/a1/part-0.parquet", "_dmscdc_staging/sales/product/a1/_SUCCESS",
                "_dmscdc_staging/sales/product/a10/part-0.parquet"):
        put_object(s3, LAKE_BUCKET, key)
    S3Storage().delete_tree(f"s3://{LAKE_BUCKET}/_dmscdc_staging/sales/product/a1")
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=LAKE_BUCKET).get("Contents", [])]
    assert left == ["_dmscdc_staging/sales/product/a10/part-0.parquet"]


def test_delete_of_a_missing_file_is_fine_and_exists_sees_folders(s3):
    put_object(s3, LAKE_BUCKET, "sales/product/part-0.parquet")
    storage = S3Storage()
    storage.delete(f"s3://{LAKE_BUCKET}/sales/product/missing.parquet")
    assert storage.exists(f"s3://{LAKE_BUCKET}/sales/product")
    assert not storage.exists(f"s3://{LAKE_BUCKET}/sales/store")


def test_exists_tells_a_key_from_a_longer_key_that_starts_with_it(s3):
    put_object(s3, LAKE_BUCKET, "sales/product/part-0.parquet.bak")
    storage = S3Storage()
    assert not storage.exists(f"s3://{LAKE_BUCKET}/sales/product/part-0.parquet")
    put_object(s3, LAKE_BUCKET, "sales/product/part-0.parquet")
    assert storage.exists(f"s3://{LAKE_BUCKET}/sales/product/part-0.parquet")


def test_create_bytes_writes_a_missing_key_and_leaves_an_existing_one_untouched(s3):
    storage = S3Storage()
    target = f"s3://{LAKE_BUCKET}/dmscdc-artifacts/abc/submit.py"

    assert storage.create_bytes(target, b"first") is True
    assert storage.create_bytes(target, b"second") is False
    assert storage.read_bytes(target) == b"first"
