"""What a run leaves out is said: files that are not DMS names, LOAD counter gaps, ``--tables``
that select nothing, ``configure`` of a table raw does not have."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from dmscdc_provider.cli import main
from dmscdc_provider.dms_files import DmsFile
from dmscdc_provider.planner import load_counter_gaps

from tests.core.harness import START, LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])


@pytest.fixture
def lake(tmp_path):
    lake = LakeHarness(tmp_path, engine=None)  # planning only
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    return lake


def state_args(lake):
    return ["--raw", lake.raw, "--state", f"sqlite://{lake.store.path}"]


def test_files_with_names_dms_never_writes_are_reported_not_silently_skipped(lake, capsys):
    for name in ("foo.parquet", "LOAD0000000G.parquet", "notes.txt"):
        with open(os.path.join(lake.table_dir("s.t"), name), "w") as handle:
            handle.write("x")
    report = lake.planner().plan()
    warned = sorted(os.path.basename(w.problem.split(":")[0].split()[-1]) for w in report.warnings)
    assert warned == ["LOAD0000000G.parquet", "foo.parquet", "notes.txt"]
    assert all(w.table == "s.t" and "not a DMS file name" in w.problem for w in report.warnings)
    assert [len(p.files) for p in report.plans] == [1]  # the DMS file is still planned

    assert main(["plan", *state_args(lake)]) == 0
    assert "LOAD0000000G.parquet: not a DMS file name" in capsys.readouterr().out


def test_a_gap_in_the_load_counter_is_reported_with_the_missing_file(lake):
    lake.load("s.t", [{"Op": "I", "id": 3, "name": "three"}], ITEM, counter=3)
    report = lake.planner().plan()
    (warning,) = report.warnings
    assert "LOAD00000002.parquet" in warning.problem and "reload the table" in warning.problem


def test_load_counter_gaps_are_per_segment_and_hexadecimal():
    def load(name):
        return DmsFile(f"/raw/s/t/{name}", name, "load", 1, START)

    contiguous = [load(f"LOAD{n:08X}.csv") for n in range(1, 12)]
    assert load_counter_gaps(contiguous) == []
    assert load_counter_gaps([load("LOAD00000009.csv"), load("LOAD0000000B.csv")]) == [
        "LOAD00000001.csv", "LOAD00000002.csv", "LOAD00000003.csv", "LOAD00000004.csv", "LOAD00000005.csv",
        "LOAD00000006.csv", "LOAD00000007.csv", "LOAD00000008.csv", "LOAD0000000A.csv"]
    assert load_counter_gaps([load("LOAD_1_00000001.parquet"), load("LOAD_2_00000002.parquet")]) == [
        "LOAD_2_00000001.parquet"]


@pytest.mark.parametrize("command", ["run", "plan", "tables"])
def test_tables_pattern_that_matches_nothing_exits_2_naming_the_tables_there(lake, capsys, command):
    extra = ["--lake", lake.lake] if command == "run" else []
    assert main([command, *state_args(lake), *extra, "--tables", "s.nosuch*"]) == 2
    err = capsys.readouterr().err
    assert "--tables s.nosuch* matches no table" in err and "s.t" in err


def test_configure_of_a_table_not_in_raw_is_refused_unless_created_explicitly(lake, capsys):
    assert main(["configure", "s.nosuch", *state_args(lake), "--active", "--primary-key", "id"]) == 2
    assert "s.nosuch is not a table folder" in capsys.readouterr().err
    assert lake.store.get(lake.path_of("s.nosuch")) is None

    assert main(["configure", "s.nosuch", *state_args(lake), "--create", "--active", "--primary-key", "id"]) == 0
    assert lake.store.get(lake.path_of("s.nosuch")).active

    assert main(["configure", "s.t", *state_args(lake), "--partition-key", "name"]) == 0  # present in raw
