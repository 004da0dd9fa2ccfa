"""The dmscdc command line and the demo, run in-process as a user would type them."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from dmscdc_provider.catalog import query, refresh_duckdb
from dmscdc_provider.cli import main
from dmscdc_provider.demo import run_demo

from tests.core.harness import LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])


def test_demo_shows_the_blogs_changes_in_the_lake(tmp_path, local_engine, capsys):
    assert run_demo(str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "Smart Speaker Pro" in out and "125 Technology Dr." in out
    catalog = str(tmp_path / "catalog.duckdb")
    _, products = query(catalog, "SELECT id, name, dept, category FROM sales.product WHERE id IN (1001, 1002)")
    assert products == [(1001, "Smart Speaker Pro", "Home", "Smart Home")]
    _, stores = query(catalog, "SELECT city, state, zip FROM sales.store WHERE id = 1009")
    assert stores == [("Irvine", "CA", "92618")]
    _, orders = query(catalog, "SELECT CAST(orderdate AS VARCHAR), count(*) FROM sales.productorder "
                               "GROUP BY 1 ORDER BY 1")
    assert orders[-2:] == [("2024-03-01", 3), ("2024-03-02", 3)]
    partitions = sorted(os.listdir(tmp_path / "lake" / "sales" / "productorder"))
    assert "orderdate=2024-03-01" in partitions and "orderdate=2024-03-02" in partitions


@pytest.mark.parametrize("views", [None, {"s.t": "SELECT 1 AS id"}], ids=["catalog_views", "as_of_views"])
def test_query_casts_and_shows_timestamps_in_utc_on_a_host_far_from_it(tmp_path, foreign_host, views, capsys):
    """`dmscdc query` sees a lake's naive 12:00 as 12:00Z, as the engines wrote and Athena reads
    it, on a host in America/Sao_Paulo (it used to cast in the host's zone: 15:00Z, shown 12:00-03)."""
    catalog = str(tmp_path / "catalog.duckdb")
    refresh_duckdb(str(tmp_path), [], catalog)
    sql = "SELECT CAST(TIMESTAMP '2024-03-01 12:00:00' AS TIMESTAMPTZ) AS at"
    assert query(catalog, sql, views)[1] == [(datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc),)]
    assert main(["query", "--catalog", catalog, sql]) == 0
    assert "2024-03-01 12:00:00+00:00" in capsys.readouterr().out


def test_configure_tables_plan_and_query_commands(tmp_path, local_engine, capsys):
    lake = LakeHarness(tmp_path, local_engine)
    lake.load("sales.item", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    state = ["--raw", lake.raw, "--state", f"sqlite://{lake.store.path}"]

    assert main(["tables", *state]) == 0
    assert "sales.item" in capsys.readouterr().out and not lake.state("sales.item").active

    assert main(["configure", "sales.item", *state, "--active", "--primary-key", "id",
                 "--partition-key", "name", "--order-column", "AR_H_CHANGE_SEQ", "--json"]) == 0
    item = json.loads(capsys.readouterr().out)
    assert (item["ActiveFlag"], item["PrimaryKey"], item["PartitionKey"], item["OrderColumn"]) == (
        "true", "id", "name", "AR_H_CHANGE_SEQ")
    assert main(["configure", "sales.item", *state, "--no-partition-key", "--no-order-column"]) == 0
    assert capsys.readouterr().out.strip() == "sales.item: active, primary key id, partition key null"

    assert main(["configure", "sales.item", *state, "--commit-time-column", "ts", "--keep-on-null", "notes,doc",
                 "--history", "--history-except", "ts"]) == 0
    assert capsys.readouterr().out.strip() == (
        "sales.item: active, primary key id, partition key null, commit time in ts, keeps notes,doc on null, "
        "history in sales.item_history (tracking all but ts)")
    current = lake.state("sales.item")
    assert (current.commit_time_column, current.keep_on_null, current.history) == (
        "ts", ("notes", "doc"), {"except": ["ts"]})
    with pytest.raises(SystemExit):  # argparse: one or the other
        main(["configure", "sales.item", *state, "--history-columns", "a", "--history-except", "b"])
    assert "not allowed with argument --history-columns" in capsys.readouterr().err
    assert main(["configure", "sales.item", *state, "--no-commit-time-column", "--no-keep-on-null",
                 "--no-history"]) == 0
    assert capsys.readouterr().out.strip() == "sales.item: active, primary key id, partition key null"

    assert main(["plan", *state]) == 0
    plans = json.loads(capsys.readouterr().out)["plans"]
    assert [(p["table"], p["mode"], len(p["files"])) for p in plans] == [("sales.item", "full", 1)]

    catalog = str(tmp_path / "catalog.duckdb")
    assert main(["run", *state, "--lake", lake.lake, "--catalog", catalog]) == 0
    out = capsys.readouterr().out
    assert "[1/1] sales.item: ok" in out and "summary:" in out
    assert f"catalog duckdb {catalog}: 1 table(s) (sales.item)" in out
    assert main(["query", "--catalog", catalog, "select id, name from sales.item"]) == 0
    assert "one" in capsys.readouterr().out
    assert main(["query", "--catalog", catalog, "select * from sales.nothing"]) == 2
    assert "Table with name nothing does not exist" in capsys.readouterr().err

    assert main(["run", *state, "--lake", lake.lake, "--catalog", catalog]) == 0
    assert "sales.item: no new files" in capsys.readouterr().out


def test_plan_names_each_tables_engine_auto_by_default(tmp_path, capsys):
    lake = LakeHarness(tmp_path, engine=None)
    lake.configure("sales.item", primary_key=["id"])
    load = lake.load("sales.item", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    state = ["--raw", lake.raw, "--state", f"sqlite://{lake.store.path}"]

    assert main(["plan", *state]) == 0
    (plan,) = json.loads(capsys.readouterr().out)["plans"]
    assert plan["engine"] == "duckdb"
    assert plan["engine_reason"] == (f"auto: {os.path.getsize(load)} B of LOAD files to read, "
                                      "under the in-process limit of 1.0 GiB")

    assert main(["plan", *state, "--spark-engine", "glue", "--inprocess-max-bytes", "10B"]) == 0
    (plan,) = json.loads(capsys.readouterr().out)["plans"]
    assert plan["engine"] == "glue" and "not under the in-process limit of 10 B" in plan["engine_reason"]


def test_run_merges_in_process_by_default_and_shows_the_engine_in_progress_and_summary(tmp_path, capsys):
    lake = LakeHarness(tmp_path, engine=None)
    lake.configure("sales.item", primary_key=["id"])
    lake.load("sales.item", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    state = ["--raw", lake.raw, "--state", f"sqlite://{lake.store.path}", "--lake", lake.lake,
             "--catalog-mode", "none"]

    assert main(["run", *state]) == 0
    out = capsys.readouterr().out
    assert "[1/1] sales.item: full merge of 1 file(s) on duckdb (auto: " in out
    header, row = out.split("summary:\n", 1)[1].splitlines()[:2]
    assert header.split()[:3] == ["table", "engine", "status"]
    assert row.split()[:3] == ["sales.item", "duckdb", "succeeded"]
    assert lake.rows("sales.item") == [{"Op": "I", "id": 1, "name": "one"}]


@pytest.mark.parametrize(("flags", "message"), [
    (["--engine", "glue", "--inprocess-max-bytes", "1GB"], "--inprocess-max-bytes is for --engine auto"),
    (["--engine", "glue", "--spark-engine", "emr"], "spark_engine 'emr' is for engine auto"),
    (["--spark-engine", "glue", "--spark-conf", "spark.x=1"], "--spark-conf is for the local engine"),
    (["--engine", "local", "--duckdb-setting", "memory_limit=1GB"], "never merges in-process"),
])
def test_run_refuses_engine_flags_the_chosen_engines_would_not_use(tmp_path, capsys, flags, message):
    code = main(["run", "--raw", str(tmp_path), "--lake", str(tmp_path / "lake"),
                 "--state", f"sqlite://{tmp_path}/s.sqlite", *flags])
    assert code == 2 and message in capsys.readouterr().err


def test_run_rejects_spark_settings_for_a_remote_engine(tmp_path, capsys):
    code = main(["run", "--raw", str(tmp_path), "--lake", "s3://lake/x", "--state", f"sqlite://{tmp_path}/s.sqlite",
                 "--engine", "glue", "--spark-conf", "spark.x=1"])
    assert code == 2 and "--spark-conf is for the local engine" in capsys.readouterr().err


def test_state_and_catalog_default_to_files_in_the_current_folder(tmp_path, monkeypatch, local_engine, capsys):
    monkeypatch.delenv("DMSCDC_STATE", raising=False)
    monkeypatch.delenv("DMSCDC_CATALOG", raising=False)
    monkeypatch.chdir(tmp_path)
    lake = LakeHarness(tmp_path / "work", local_engine)
    lake.load("sales.item", [{"Op": "I", "id": 1, "name": "one"}], ITEM)
    assert main(["configure", "sales.item", "--raw", lake.raw, "--active", "--primary-key", "id"]) == 0
    assert main(["run", "--raw", lake.raw, "--lake", lake.lake]) == 0
    assert (tmp_path / "dmscdc_state.sqlite").exists()
    assert query(str(tmp_path / "dmscdc_catalog.duckdb"), "select count(*) from sales.item")[1] == [(1,)]
    monkeypatch.setenv("DMSCDC_STATE", f"sqlite://{tmp_path}/elsewhere.sqlite")
    assert main(["tables", "--raw", lake.raw]) == 0
    assert (tmp_path / "elsewhere.sqlite").exists()
