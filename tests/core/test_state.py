"""The SQLite controller store: the blog's item layout and conditional writes."""

import pytest

from dmscdc_provider.state import ConcurrentCommitError, TableState, open_store
from dmscdc_provider.state.sqlite import SqliteControllerStore


@pytest.fixture
def store(tmp_path):
    return SqliteControllerStore(str(tmp_path / "state.sqlite"))


def test_new_item_has_the_blogs_defaults(store):
    state = TableState(path="bucket/raw/sales/product/", schema="sales", table="product")
    assert store.register(state)
    item = store.get(state.path).to_item()
    assert {k: item[k] for k in ("path", "ActiveFlag", "PrimaryKey", "PartitionKey", "LastFullLoadDate",
                                 "LastIncrementalFile")} == {
        "path": "bucket/raw/sales/product/", "ActiveFlag": "false", "PrimaryKey": "null",
        "PartitionKey": "null", "LastFullLoadDate": "1900-01-01 00:00:00", "LastIncrementalFile": "null"}


def test_register_does_not_overwrite_an_existing_item(store):
    state = TableState(path="p/s/t/", schema="s", table="t")
    assert store.register(state)
    store.update(state.path, active=True)
    assert not store.register(state)
    assert store.get(state.path).active


def test_write_conditional_on_version_lets_only_one_writer_win(store):
    store.register(TableState(path="p/s/t/", schema="s", table="t"))
    read_by_both = store.get("p/s/t/")
    store.replace(read_by_both.evolve(active=True), read_by_both.version)
    with pytest.raises(ConcurrentCommitError):
        store.replace(read_by_both.evolve(primary_key=("id",)), read_by_both.version)
    assert store.get("p/s/t/").primary_key == ()


def test_item_written_by_the_blogs_controller_reads_right():
    state = TableState.from_item({
        "path": "dmslake-raw/dms/sales/product/", "ActiveFlag": "true", "PrimaryKey": "id,region",
        "PartitionKey": "null", "LastFullLoadDate": "2024-03-01 09:00:00",
        "LastIncrementalFile": "dmslake-raw/dms/sales/product/20240301-100101856.csv"})
    assert (state.schema, state.table, state.active, state.primary_key, state.partition_key, state.version) == (
        "sales", "product", True, ("id", "region"), (), 0)


def test_open_store_accepts_sqlite_uris_and_paths(tmp_path):
    assert open_store(f"sqlite://{tmp_path}/a.sqlite").path == f"{tmp_path}/a.sqlite"
    assert open_store(str(tmp_path / "b.sqlite")).path == f"{tmp_path}/b.sqlite"
    with pytest.raises(ValueError, match="unsupported state store"):
        open_store("postgres://db/x")


def test_change_semantics_settings_round_trip_through_the_item(store):
    state = TableState(path="p/s/t/", schema="s", table="t", commit_time_column="ts",
                       keep_on_null=("notes", "doc"), history={"columns": ["status"]})
    store.register(state)
    item = store.get(state.path).to_item()
    assert (item["CommitTimeColumn"], item["KeepOnNull"], item["History"]) == (
        "ts", "notes,doc", '{"columns": ["status"]}')
    assert TableState.from_item(item) == store.get(state.path)
    cleared = store.update(state.path, commit_time_column=None, keep_on_null=(), history=None).to_item()
    assert not {"CommitTimeColumn", "KeepOnNull", "History"} & set(cleared)
