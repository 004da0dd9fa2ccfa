"""dmscdc_spark.submit (the spark-submit entry point): plan in through the Hadoop FS, result document out beside it."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from dmscdc_provider.dms_writer import write_dms_file

from dmscdc_spark import submit

SCHEMA = pa.schema([("id", pa.int32()), ("name", pa.string())])


def write_plan(tmp_path, files: list[str]) -> str:
    lake = tmp_path / "lake"
    plan = {
        "table": "sales.product", "plan_id": "0123456789abcdef", "attempt_id": "0123456789abcdef-a1", "mode": "full",
        "files": [{"path": path, "kind": "load", "size": 1} for path in files],
        "lake_table_path": str(lake / "sales" / "product"),
        "staging_path": str(lake / "_dmscdc_staging" / "sales" / "product" / "0123456789abcdef-a1"),
        "primary_key": ["id"], "partition_key": [], "order_column": None,
    }
    folder = lake / "_dmscdc_jobs" / "sales" / "product" / "0123456789abcdef-a1"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps(plan))
    return str(folder / "plan.json")


def test_job_merges_the_plan_and_writes_the_result_beside_it(spark, tmp_path):
    load = write_dms_file(str(tmp_path / "raw" / "LOAD00000001.parquet"),
                          [{"Op": "I", "id": 1, "name": "a"}, {"Op": "I", "id": 2, "name": "b"}], SCHEMA)
    plan_uri = write_plan(tmp_path, [load])

    assert submit.main(["--plan", plan_uri], spark=spark) == 0

    result = json.loads(open(submit.result_uri_for(plan_uri)).read())
    assert result["status"] == "succeeded" and result["rows_written"] == 2
    assert result["attempt_id"] == "0123456789abcdef-a1"


def test_bad_input_is_a_failed_result_not_a_failed_job(spark, tmp_path):
    broken = tmp_path / "raw" / "LOAD00000001.parquet"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not parquet")
    plan_uri = write_plan(tmp_path, [str(broken)])

    assert submit.main(["--plan", plan_uri], spark=spark) == 0

    result = json.loads(open(submit.result_uri_for(plan_uri)).read())
    assert result["status"] == "failed"
    assert result["error"]["file"] == str(broken)


def test_result_location_can_be_given(spark, tmp_path):
    load = write_dms_file(str(tmp_path / "raw" / "LOAD00000001.parquet"), [{"Op": "I", "id": 1, "name": "a"}], SCHEMA)
    plan_uri = write_plan(tmp_path, [load])
    target = tmp_path / "elsewhere" / "out.json"
    submit.main(["--plan", plan_uri, "--result", str(target)], spark=spark)
    assert json.loads(target.read_text())["status"] == "succeeded"


def test_plan_argument_is_required():
    with pytest.raises(SystemExit):
        submit.parse_args([])
