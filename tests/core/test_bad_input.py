"""Bad input gets a clear error naming table, file and remedy; the table's state stays where it
was; other tables still run; the command exits non-zero."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from dmscdc_provider.cli import main
from dmscdc_provider.storage import LocalStorage

from tests.core.harness import LakeHarness, bad_and_good_tables

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])


@pytest.fixture
def lake(tmp_path, engine):
    """Two loaded tables, s.bad and s.good."""
    return bad_and_good_tables(tmp_path, engine, ITEM)


def assert_failed_cleanly(lake: LakeHarness, result, file_name: str | None, words: str) -> dict:
    outcomes = {o.table: o for o in result.outcomes}
    bad = outcomes["s.bad"]
    assert bad.status == "failed"
    assert bad.error["table"] == "s.bad"
    if file_name:
        assert os.path.basename(bad.error["file"]) == file_name
    assert words in bad.error["problem"]
    assert bad.error["remedy"]
    assert bad.failure_kind == "input"  # the Airflow task fails without retries
    assert outcomes["s.good"].succeeded
    assert {r["name"] for r in lake.rows("s.good")} == {"good change"}
    return bad.error


def state_snapshot(lake):
    state = lake.state("s.bad")
    return state.version, state.last_incremental_file, state.last_full_load_date, state.pending_commit


def test_truncated_parquet_file(lake):
    good = lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "x"}], ITEM)
    with open(good, "rb") as handle:
        data = handle.read()
    with open(good, "wb") as handle:
        handle.write(data[: len(data) // 2])
    before = state_snapshot(lake)
    result = lake.run()
    assert_failed_cleanly(lake, result, os.path.basename(good), "cannot read")
    assert state_snapshot(lake) == before
    assert [r["name"] for r in lake.rows("s.bad")] == ["one"]


def test_unknown_op_value(lake):
    path = lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "x"}, {"Op": "X", "id": 2, "name": "y"}], ITEM)
    before = state_snapshot(lake)
    error = assert_failed_cleanly(lake, lake.run(), os.path.basename(path), "unknown Op value 'X'")
    assert "I, U and D" in error["remedy"]
    assert state_snapshot(lake) == before


def test_configured_key_column_that_does_not_exist(lake):
    lake.configure("s.bad", primary_key=["product_id"])
    path = lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "x"}], ITEM)
    before = state_snapshot(lake)
    error = assert_failed_cleanly(lake, lake.run(), os.path.basename(path), "'product_id' does not exist")
    assert "dmscdc configure s.bad" in error["remedy"]
    assert state_snapshot(lake) == before


def test_file_whose_column_type_disagrees_with_the_lake(lake):
    clashing = pa.schema([("id", pa.int64()), ("name", pa.float64())])
    lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": 1.5}], clashing)
    before = state_snapshot(lake)
    error = assert_failed_cleanly(lake, lake.run(), None, "column 'name'")
    assert "s/bad" in error["file"]
    assert state_snapshot(lake) == before


class UnreadableFolder(LocalStorage):
    def __init__(self, unreadable: str):
        self.unreadable = unreadable

    def list_files(self, root):
        if root.rstrip("/").endswith(self.unreadable):
            raise PermissionError(13, "Permission denied", root)
        return super().list_files(root)


def test_unreadable_raw_folder_is_reported_and_other_tables_still_run(lake):
    lake.cdc("s.bad", [{"Op": "U", "id": 1, "name": "x"}], ITEM)
    planner = lake.planner()
    planner.storage = UnreadableFolder("s/bad")
    from dmscdc_provider.runner import run_source

    result = run_source(planner, lake.engine, lake.storage)
    assert [p.table for p in result.report.problems] == ["s.bad"]
    assert "Permission denied" in result.report.problems[0].problem
    assert not result.succeeded
    assert [o.table for o in result.outcomes] == ["s.good"] and result.outcomes[0].succeeded


def test_cli_run_exits_nonzero_and_names_table_file_and_remedy(lake, engine_name, capsys):
    path = lake.cdc("s.bad", [{"Op": "Q", "id": 1, "name": "x"}], ITEM)
    code = main(["run", "--engine", engine_name, "--raw", lake.raw, "--lake", lake.lake, "--state", f"sqlite://{lake.store.path}",
                 "--catalog", os.path.join(lake.root, "catalog.duckdb")])
    captured = capsys.readouterr()
    assert code == 1
    assert "s.bad: merge failed" in captured.err
    assert path in captured.err and "remedy:" in captured.err
    assert "s.good" in captured.out and "succeeded" in captured.out


def test_cli_reports_an_unreachable_store(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    (tmp_path / "raw" / "s" / "t").mkdir(parents=True)
    code = main(["tables", "--raw", str(tmp_path / "raw"), "--state", f"sqlite://{blocker}/state.sqlite"])
    assert code == 2
    assert "cannot open the controller store" in capsys.readouterr().err


def test_cli_reports_a_missing_raw_folder(tmp_path, capsys):
    code = main(["plan", "--raw", str(tmp_path / "nowhere"), "--state", f"sqlite://{tmp_path}/s.sqlite"])
    assert code == 2
    assert "nowhere" in capsys.readouterr().err


def test_unknown_op_in_a_load_file_names_that_load_file(tmp_path, engine):
    lake = LakeHarness(tmp_path, engine)
    lake.configure("s.bad", primary_key=["id"])
    lake.load("s.bad", [{"Op": "I", "id": 1, "name": "one"}], ITEM, counter=1)
    bad = lake.load("s.bad", [{"Op": "I", "id": 2, "name": "two"}, {"Op": "Z", "id": 3, "name": "x"}], ITEM, counter=2)
    (outcome,) = lake.run().outcomes
    assert outcome.status == "failed"
    assert outcome.error["file"] == bad and "unknown Op value 'Z'" in outcome.error["problem"]
    assert lake.state("s.bad").last_full_load_date == "1900-01-01 00:00:00"
    assert lake.rows("s.bad") == []
