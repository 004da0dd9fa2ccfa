"""DMS file names: classification and order."""

from datetime import datetime, timezone

import pytest

from dmscdc_provider.dms_files import cdc_name_time, classify, dms_sort_key
from dmscdc_provider.dms_writer import cdc_file_name, date_folder, load_file_name


def test_load_counter_is_hexadecimal():
    names = [load_file_name(n) for n in (0x10, 0x0A, 0x09, 0x01, 0x0F)]
    assert sorted(names, key=dms_sort_key) == [
        "LOAD00000001.parquet", "LOAD00000009.parquet", "LOAD0000000A.parquet",
        "LOAD0000000F.parquet", "LOAD00000010.parquet",
    ]


def test_parallel_load_segments_order_by_segment_then_counter():
    names = ["LOAD_2_0000000A.csv", "LOAD_1_00000002.csv", "LOAD_1_0000000B.csv"]
    assert sorted(names, key=dms_sort_key) == ["LOAD_1_00000002.csv", "LOAD_1_0000000B.csv", "LOAD_2_0000000A.csv"]


def test_load_files_come_before_cdc_files():
    assert dms_sort_key("LOAD00000001.csv") < dms_sort_key("19990101-000000000.csv")


@pytest.mark.parametrize("earlier,later", [
    ("20141029-1134010000.csv", "20141029-113401001.csv"),  # .0000 < .001
    ("20240301-100101.parquet", "20240301-1001010001.parquet"),
    ("20240301-1001015.parquet", "20240301-100101600.parquet"),  # .5 < .600
    ("20240301-235959999.parquet", "20240302-000000.parquet"),
])
def test_cdc_names_of_any_subsecond_precision_order_by_time(earlier, later):
    assert dms_sort_key(earlier) < dms_sort_key(later)
    assert cdc_name_time(earlier) <= cdc_name_time(later)


@pytest.mark.parametrize("name,kind", [
    ("LOAD00000001.parquet", "load"), ("LOAD0000000A.csv", "load"), ("LOAD00000001.csv.gz", "load"),
    ("20240301-100101856.parquet", "cdc"), ("20141029-1134010000.csv", "cdc"),
    ("_SUCCESS", None), ("notes.txt", None), ("LOAD00000001.json", None), ("2024-03-01.parquet", None),
])
def test_classify(name, kind):
    assert classify(name) == kind


def test_writer_names_match_what_dms_writes():
    moment = datetime(2024, 3, 1, 10, 1, 1, 856000, tzinfo=timezone.utc)
    assert cdc_file_name(moment) == "20240301-100101856.parquet"
    assert cdc_name_time(cdc_file_name(moment)) == moment
    assert date_folder(moment) == "2024/03/01"
    assert date_folder(moment, "DDMMYYYY", "-") == "01-03-2024"
