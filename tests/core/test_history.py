"""History tables (docs/merge-semantics.md, "History tables"), on every engine that maintains them
and both table formats: every version of each row with ``__start_at`` and ``__end_at``."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from tests.core.harness import START, LakeHarness

ROW = pa.schema([("id", pa.int64()), ("name", pa.string()), ("dept", pa.string()), ("note", pa.string()),
                 ("ts", pa.timestamp("us"))])
T0 = datetime(2024, 3, 1, 10, 0, 0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def row(op, id_, name, minutes, dept="a", note="-"):
    return {"Op": op, "id": id_, "name": name, "dept": dept, "note": note, "ts": at(minutes)}


@pytest.fixture
def lake(tmp_path, engine, table_format):
    return LakeHarness(tmp_path, engine, table_format)


def versions(lake, table="s.t_history"):
    """(id, name, note, start minutes, end minutes or None), in key and time order."""
    def minutes(moment):
        return None if moment is None else (moment - T0).total_seconds() / 60

    return [(r["id"], r["name"], r["note"], minutes(r["__start_at"]), minutes(r["__end_at"]))
            for r in lake.rows(table, order_by="id, __start_at")]


def test_the_worked_example_of_the_docs(lake):
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"], commit_time_column="ts",
                   history={"except": ["note"]})
    lake.load("s.t", [row("I", 1, "Ann", 0), row("I", 2, "Bob", 0)], ROW)
    lake.run_ok()
    lake.cdc("s.t", [row("U", 1, "Ann B.", 5, dept="b"),      # a new version, in another partition
                     row("D", 2, "Bob", 6),                    # closes Bob's
                     row("I", 3, "Cy", 7),
                     row("U", 3, "Cy", 7.5, note="vip"),       # only an untracked column: in place
                     row("U", 1, "Ann C.", 8, dept="b"), row("U", 1, "Ann D.", 8, dept="b")],  # one time: the last
             ROW)
    lake.run_ok()
    lake.cdc("s.t", [row("I", 2, "Bob", 9)], ROW)              # a re-insert opens a new version
    lake.run_ok()
    assert versions(lake) == [
        (1, "Ann", "-", 0, 5), (1, "Ann B.", "-", 5, 8), (1, "Ann D.", "-", 8, None),
        (2, "Bob", "-", 0, 6), (2, "Bob", "-", 9, None),
        (3, "Cy", "vip", 7, None)]
    current = {(r["id"], r["name"], r["note"]) for r in lake.rows("s.t")}
    assert current == {(v[0], v[1], v[2]) for v in versions(lake) if v[4] is None}


def test_without_a_commit_time_column_versions_take_their_files_times(lake):
    lake.configure("s.t", primary_key=["id"], history={})
    lake.load("s.t", [row("I", 1, "Ann", 0)], ROW, modified=START)
    lake.run_ok()
    first = lake.cdc("s.t", [row("U", 1, "Ann B.", 0), row("U", 1, "Ann C.", 0)], ROW, at=START + timedelta(minutes=2))
    lake.run_ok()
    rows = lake.rows("s.t_history", order_by="__start_at")
    assert [(r["name"], r["__start_at"], r["__end_at"]) for r in rows] == [
        ("Ann", START.replace(tzinfo=None), START.replace(tzinfo=None) + timedelta(minutes=2)),
        ("Ann C.", START.replace(tzinfo=None) + timedelta(minutes=2), None)]
    assert first


def test_a_reload_closes_missing_keys_and_opens_versions_only_for_changed_rows(lake):
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", history={"columns": ["name"]})
    lake.load("s.t", [row("I", 1, "Ann", 0), row("I", 2, "Bob", 0), row("I", 3, "Cy", 0)], ROW)
    lake.run_ok()
    lake.cdc("s.t", [row("U", 1, "Ann B.", 5)], ROW)
    lake.run_ok()
    # DMS reloads the table: Bob is gone, Cy's untracked note changed, Dee is new.
    lake.load("s.t", [row("I", 1, "Ann B.", 10), row("I", 3, "Cy", 10, note="moved"), row("I", 4, "Dee", 10)], ROW,
              modified=lake.tick(3600))
    lake.run_ok()
    assert versions(lake) == [
        (1, "Ann", "-", 0, 5), (1, "Ann B.", "-", 5, None),
        (2, "Bob", "-", 0, 10),
        (3, "Cy", "moved", 0, None),
        (4, "Dee", "-", 10, None)]


def test_a_rerun_of_a_committed_plan_never_duplicates_a_version(lake):
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", history={})
    lake.load("s.t", [row("I", 1, "Ann", 0)], ROW)
    lake.run_ok()
    lake.cdc("s.t", [row("U", 1, "Ann B.", 5)], ROW)
    planned = lake.planner().plan().plans[0]
    from dmscdc_provider.runner import run_table

    assert run_table(planned, lake.engine, lake.store, lake.storage).succeeded
    assert run_table(planned, lake.engine, lake.store, lake.storage).succeeded
    lake.run_ok()
    assert versions(lake) == [(1, "Ann", "-", 0, 5), (1, "Ann B.", "-", 5, None)]


def test_only_history_files_holding_current_versions_of_changed_keys_are_rewritten(lake):
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"], commit_time_column="ts", history={})
    lake.load("s.t", [row("I", i, f"n{i}", 0, dept=d) for d, ids in (("a", range(1, 4)), ("b", range(4, 7)))
                      for i in ids], ROW)
    lake.run_ok()
    lake.cdc("s.t", [row("U", 2, "changed", 5, dept="a")], ROW)
    lake.run_ok()
    after_first = lake.data_files("s.t_history")
    lake.cdc("s.t", [row("U", 2, "again", 6, dept="a")], ROW)
    lake.run_ok()
    after_second = lake.data_files("s.t_history")
    untouched = {p: v for p, v in after_first.items() if "dept=b/" in p}
    assert untouched and all(after_second.get(p) == v for p, v in untouched.items())
    assert [v for v in versions(lake) if v[0] == 2] == [(2, "n2", "-", 0, 5), (2, "changed", "-", 5, 6),
                                                         (2, "again", "-", 6, None)]


def test_a_history_table_needs_a_primary_key(lake):
    lake.configure("s.t", history={})
    lake.load("s.t", [row("I", 1, "Ann", 0)], ROW)
    (outcome,) = lake.run().outcomes
    assert outcome.status == "failed" and "needs a primary key" in outcome.error["problem"]


AS_OF = """SELECT id, name FROM s.t_history
WHERE __start_at <= TIMESTAMP '{moment}' AND (__end_at IS NULL OR __end_at > TIMESTAMP '{moment}')
ORDER BY id"""


def test_dmscdc_run_catalogs_the_history_table_and_the_docs_as_of_query_reads_it(tmp_path, capsys):
    from dmscdc_provider.catalog import query
    from dmscdc_provider.cli import main

    lake = LakeHarness(tmp_path, None)
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", history={})
    lake.load("s.t", [row("I", 1, "Ann", 0), row("I", 2, "Bob", 0)], ROW)
    lake.cdc("s.t", [row("U", 1, "Ann B.", 5), row("D", 2, "Bob", 6)], ROW)
    catalog = str(tmp_path / "catalog.duckdb")
    assert main(["run", "--raw", lake.raw, "--lake", lake.lake, "--state", f"sqlite://{lake.store.path}",
                 "--catalog", catalog]) == 0
    assert "s.t_history" in capsys.readouterr().out
    assert query(catalog, AS_OF.format(moment=at(3)))[1] == [(1, "Ann"), (2, "Bob")]
    assert query(catalog, AS_OF.format(moment=at(5)))[1] == [(1, "Ann B."), (2, "Bob")]
    assert query(catalog, AS_OF.format(moment=at(6)))[1] == [(1, "Ann B.")]


def build_history_source(lake: LakeHarness) -> None:
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"], commit_time_column="ts", history={})
    lake.load("s.t", [row("I", i, f"n{i}", 0, dept="ab"[i % 2]) for i in range(10)], ROW)
    lake.run_ok()
    lake.cdc("s.t", [row("U", 0, "changed", 5, dept="a"), row("D", 3, "n3", 6, dept="b"),
                     row("I", 100, "new", 7), row("U", 5, "moved", 8, dept="z")], ROW)


# The history table is published first, then the table, then the controller clears the record.
HISTORY_CRASH_POINTS = {
    "parquet": [("commit_recorded", 1), ("file_published", 1), ("files_published", 1), ("files_removed", 1),
                ("files_published", 2), ("files_removed", 2), ("state_committed", 1)],
    "iceberg": [("commit_recorded", 1), ("snapshot_committed", 1), ("snapshot_committed", 2),
                ("state_committed", 1)],
}


@pytest.mark.parametrize("table_format,step,occurrence",
                         [(f, s, o) for f, points in HISTORY_CRASH_POINTS.items() for s, o in points])
def test_a_crash_while_publishing_table_and_history_then_a_rerun_equals_one_clean_run(
        tmp_path, tmp_path_factory, table_format, step, occurrence):
    from dmscdc_provider.engines.duckdb import DuckDBMergeEngine
    from dmscdc_provider.runner import run_table

    from tests.core.test_crash_safety import SimulatedCrash, crash_at

    engine = DuckDBMergeEngine(memory_limit="512MB", threads=2)
    clean = LakeHarness(tmp_path_factory.mktemp("clean"), engine, table_format)
    build_history_source(clean)
    clean.run_ok()
    lake = LakeHarness(tmp_path, engine, table_format)
    build_history_source(lake)
    (plan,) = lake.planner().plan().plans
    with pytest.raises(SimulatedCrash):
        run_table(plan, engine, lake.store, lake.storage, on_step=crash_at(step, occurrence))
    lake.run_ok()
    assert lake.rows("s.t") == clean.rows("s.t")
    assert versions(lake) == versions(clean)
    assert len(versions(lake)) == 10 + 3  # two updates and an insert open versions; none twice
    assert lake.planner().plan().plans == []


def test_a_column_added_later_appears_in_the_history_with_nulls_for_older_versions(lake):
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", history={})
    lake.load("s.t", [row("I", 1, "Ann", 0)], ROW)
    lake.run_ok()
    wider = ROW.append(pa.field("email", pa.string()))
    lake.cdc("s.t", [{**row("U", 1, "Ann", 5), "email": "ann@example.com"}], wider)
    lake.run_ok()
    rows = lake.rows("s.t_history", order_by="__start_at")
    assert [(r["email"], r["__end_at"] is None) for r in rows] == [(None, False), ("ann@example.com", True)]


def test_keep_on_null_fills_every_version_of_the_history(lake):
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", keep_on_null=["note"], history={})
    lake.load("s.t", [row("I", 1, "Ann", 0, note="lob")], ROW)
    lake.run_ok()
    lake.cdc("s.t", [row("U", 1, "Ann B.", 5, note=None), row("U", 1, "Ann C.", 6, note=None)], ROW)
    lake.run_ok()
    assert versions(lake) == [(1, "Ann", "lob", 0, 5), (1, "Ann B.", "lob", 5, 6), (1, "Ann C.", "lob", 6, None)]
    assert [r["note"] for r in lake.rows("s.t")] == ["lob"]


def test_a_full_refresh_with_changes_after_it_keeps_history_and_applies_them_in_order(lake):
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", history={})
    lake.load("s.t", [row("I", 1, "Ann", 0), row("I", 2, "Bob", 0)], ROW)
    lake.run_ok()
    lake.cdc("s.t", [row("U", 1, "Ann B.", 5)], ROW)
    lake.run_ok()
    lake.cdc("s.t", [row("D", 2, "Bob", 7)], ROW)
    lake.run_ok(full_refresh=("s.t",))  # the LOAD rows again (time 0), then every CDC file after them
    assert versions(lake) == [(1, "Ann", "-", 0, 5), (1, "Ann B.", "-", 5, None), (2, "Bob", "-", 0, 7)]


@pytest.mark.parametrize("order", [("duckdb", "local", "duckdb"), ("local", "duckdb", "local")])
def test_either_engine_continues_the_history_the_other_wrote(tmp_path, local_engine, order):
    from dmscdc_provider.engines.duckdb import DuckDBMergeEngine

    engines = {"local": local_engine, "duckdb": DuckDBMergeEngine(memory_limit="512MB", threads=2)}
    lake = LakeHarness(tmp_path, engines[order[0]])
    lake.configure("s.t", primary_key=["id"], partition_key=["dept"], commit_time_column="ts", history={})
    lake.load("s.t", [row("I", 1, "Ann", 0), row("I", 2, "Bob", 0, dept="b")], ROW)
    lake.run_ok()
    lake.engine = engines[order[1]]
    lake.cdc("s.t", [row("U", 1, "Ann B.", 5, dept="b"), row("D", 2, "Bob", 6, dept="b")], ROW)
    lake.run_ok()
    lake.engine = engines[order[2]]
    lake.cdc("s.t", [row("U", 1, "Ann C.", 8, dept="b"), row("I", 2, "Bob", 9)], ROW)
    lake.run_ok()
    assert versions(lake) == [(1, "Ann", "-", 0, 5), (1, "Ann B.", "-", 5, 8), (1, "Ann C.", "-", 8, None),
                              (2, "Bob", "-", 0, 6), (2, "Bob", "-", 9, None)]


def test_a_rollback_takes_the_history_back_with_the_table_and_the_rerun_equals_a_clean_run(tmp_path, engine):
    from dmscdc_provider.table_formats.iceberg import rollback_table

    lake = LakeHarness(tmp_path, engine, "iceberg")
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", history={})
    lake.load("s.t", [row("I", 1, "Ann", 0), row("I", 2, "Bob", 0)], ROW)
    lake.run_ok()
    lake.cdc("s.t", [row("U", 1, "Ann B.", 5)], ROW)
    lake.run_ok()
    after_first_change = lake.iceberg_table("s.t").current_snapshot()
    versions_then = versions(lake)
    lake.cdc("s.t", [row("U", 1, "Ann C.", 8), row("D", 2, "Bob", 9)], ROW)
    lake.run_ok()
    clean = versions(lake)

    restored = rollback_table(lake.iceberg_table("s.t"), lake.store, lake.state("s.t"),
                              str(after_first_change.snapshot_id), lake.iceberg_table("s.t_history"))

    history_snapshot = lake.iceberg_table("s.t_history").current_snapshot()
    assert history_snapshot.summary["dmscdc.attempt-id"] == after_first_change.summary["dmscdc.attempt-id"]
    assert restored.last_run["history_rolled_back_to"] == history_snapshot.snapshot_id
    assert versions(lake) == versions_then
    lake.run_ok()
    assert versions(lake) == clean == [(1, "Ann", "-", 0, 5), (1, "Ann B.", "-", 5, 8), (1, "Ann C.", "-", 8, None),
                                       (2, "Bob", "-", 0, 9)]


def test_a_rollback_to_before_the_history_was_switched_on_is_refused_and_moves_nothing(tmp_path, engine):
    from dmscdc_provider.table_formats import TableFormatError
    from dmscdc_provider.table_formats.iceberg import rollback_table

    lake = LakeHarness(tmp_path, engine, "iceberg")
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts")
    lake.load("s.t", [row("I", 1, "Ann", 0)], ROW)
    lake.run_ok()
    before_history = lake.iceberg_table("s.t").current_snapshot().snapshot_id
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", history={})
    lake.cdc("s.t", [row("U", 1, "Ann B.", 5)], ROW)
    lake.run_ok()
    state = lake.state("s.t")

    with pytest.raises(TableFormatError, match="history table has no snapshot at or before"):
        rollback_table(lake.iceberg_table("s.t"), lake.store, state, str(before_history),
                       lake.iceberg_table("s.t_history"))
    assert lake.state("s.t").last_incremental_file == state.last_incremental_file
    assert lake.iceberg_table("s.t").current_snapshot().snapshot_id != before_history


def test_maintain_expires_and_cleans_the_history_table_but_keeps_the_snapshot_each_kept_table_snapshot_needs(
        tmp_path, engine):
    from dmscdc_provider.table_formats.iceberg import rollback_table
    from dmscdc_provider.table_formats.maintenance import maintain_table

    lake = LakeHarness(tmp_path, engine, "iceberg")
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", history={})
    lake.load("s.t", [row("I", 1, "Ann", 0)], ROW)
    lake.run_ok()
    for step in range(1, 4):
        lake.cdc("s.t", [row("U", 1, f"Ann {step}", step)], ROW)
        lake.run_ok()
    before = versions(lake)
    stale = tmp_path / "lake" / "s" / "t_history" / "data" / "killed-attempt" / "part-0.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not referenced")
    os.utime(stale, (0, 0))
    table = lake.iceberg_table("s.t")
    # The table keeps its last two snapshots: expire the ones before them.
    second_newest = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)[-2]
    report = maintain_table(lake.state("s.t"), lake.lake, lake.iceberg_catalog, lake.store, lake.storage,
                            compact_below_bytes=0, expire_after=timedelta(0), orphan_age=timedelta(hours=1),
                            now=datetime.fromtimestamp(second_newest.timestamp_ms / 1000, timezone.utc))

    history = lake.iceberg_table("s.t_history")
    assert "history table: expired 2 snapshot(s), removed 1 unreferenced file(s), not compacted" in report.notes
    assert not stale.exists()
    assert len(history.snapshots()) == 2 and versions(lake) == before
    rollback_table(lake.iceberg_table("s.t"), lake.store, lake.state("s.t"), str(second_newest.snapshot_id),
                   history)
    assert versions(lake) == before[:-2] + [(1, "Ann 2", "-", 2, None)]


@pytest.mark.parametrize("setting, option", [
    ({"keep_on_null": ["nmae"], "history": {}}, "--keep-on-null"),
    ({"history": {"columns": ["name", "nmae"]}}, "--history-columns"),
    ({"history": {"except": ["nmae"]}}, "--history-except"),
])
def test_a_column_setting_naming_no_column_fails_the_table_before_anything_is_staged(lake, setting, option):
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", **setting)
    lake.load("s.t", [row("I", 1, "Ann", 0)], ROW)
    state = lake.state("s.t")

    (outcome,) = lake.run().outcomes

    error = outcome.error
    assert outcome.status == "failed" and error["column"] == "nmae" and error["file"] is None
    assert error["problem"] == (f"{option} names column(s) 'nmae' that neither the planned files nor the lake table "
                                "have (the files have Op, id, name, dept, note, ts)")
    assert f"dmscdc configure s.t {option}" in error["remedy"]
    assert lake.state("s.t") == state and not lake.data_files("s.t")
    assert not lake.unpublished_files("s.t")


def test_a_column_setting_naming_a_column_only_the_lake_table_has_is_accepted(lake):
    lake.configure("s.t", primary_key=["id"], commit_time_column="ts", keep_on_null=["note"],
                   history={"except": ["note"]})
    lake.load("s.t", [row("I", 1, "Ann", 0, note="kept")], ROW)
    lake.run_ok()
    lake.cdc("s.t", [{"Op": "U", "id": 1, "name": "Ann B.", "dept": "a", "ts": at(5)}],
             pa.schema([f for f in ROW if f.name != "note"]))
    lake.run_ok()
    assert [(name, start, end) for _, name, _, start, end in versions(lake)] == [("Ann", 0, 5), ("Ann B.", 5, None)]
