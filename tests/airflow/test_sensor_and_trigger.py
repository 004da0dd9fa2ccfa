"""wait_for_changes: the sensor and its trigger (poke, reschedule and deferrable paths)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, AirflowSkipException
from airflow.sdk.exceptions import TaskDeferred

from airflow_env import utc
from dmscdc_provider.demo import prepare_demo_source, write_change_batch
from dmscdc_provider.planner import controller_path
from dmscdc_provider.sensors.raw_files import DmsCdcNewFilesSensor, RawFilesCheckError
from dmscdc_provider.state.base import open_store
from dmscdc_provider.triggers.raw_files import DmsCdcNewFilesTrigger
from fakes import make_context

ALL_DEMO_TABLES = ["sales.product", "sales.productorder", "sales.store"]
CHANGE_BATCH_NAMED = utc(2024, 3, 2, 10, 1, 1)


@pytest.fixture
def source(tmp_path) -> dict:
    """The demo source: LOAD files written and tables active, nothing loaded yet."""
    raw, state = str(tmp_path / "raw"), f"sqlite://{tmp_path / 'state.sqlite'}"
    prepare_demo_source(raw, state)
    return {"raw_root": raw, "state_uri": state}


def mark_loaded(source: dict) -> None:
    """As if a run had loaded the LOAD files: only CDC files are new from now on."""
    store = open_store(source["state_uri"])
    for name in ALL_DEMO_TABLES:
        store.update(controller_path(source["raw_root"], *name.split(".")), last_full_load_date="2024-03-01 09:00:00")
    store.close()


def sensor(source: dict, **kwargs) -> DmsCdcNewFilesSensor:
    return DmsCdcNewFilesSensor(task_id="wait_for_changes", aws_conn_id=None, **source, **kwargs)


class TestDmsCdcNewFilesSensor:
    def test_template_fields_render(self, source):
        op = DmsCdcNewFilesSensor(task_id="t", raw_root="{{ params.raw }}", state_uri="{{ params.state }}",
                                  tables="{{ params.tables }}", full_refresh="{{ params.refresh | join(',') }}")

        op.render_template_fields({"params": {"raw": "/r", "state": "sqlite:///s", "tables": "sales.*",
                                              "refresh": ["a.b", "c.*"]}})

        assert set(op.template_fields) >= {"raw_root", "state_uri", "tables", "cdc_before", "full_refresh",
                                           "aws_conn_id", "region_name"}
        assert (op.raw_root, op.state_uri, op.tables, op.full_refresh) == ("/r", "sqlite:///s", "sales.*", "a.b,c.*")

    def test_new_load_files_of_active_tables_are_work(self, source):
        result = sensor(source).poke(make_context(utc(2024, 3, 2)))

        assert result.is_done
        assert result.xcom_value == ALL_DEMO_TABLES

    def test_nothing_new_is_not_done(self, source):
        mark_loaded(source)

        assert not sensor(source).poke(make_context(utc(2024, 3, 2))).is_done

    def test_cdc_files_named_after_the_data_interval_end_wait_for_a_later_run(self, source):
        mark_loaded(source)
        write_change_batch(source["raw_root"])
        op = sensor(source)

        assert not op.poke(make_context(CHANGE_BATCH_NAMED)).is_done
        assert op.poke(make_context(CHANGE_BATCH_NAMED + timedelta(seconds=1))).xcom_value == ALL_DEMO_TABLES

    def test_a_requested_full_refresh_is_work(self, source):
        mark_loaded(source)

        result = sensor(source, full_refresh="sales.store").poke(make_context(utc(2024, 3, 2)))

        assert result.xcom_value == ["sales.store"]

    def test_an_unreadable_raw_location_fails_instead_of_skipping(self, source, tmp_path):
        op = sensor({**source, "raw_root": str(tmp_path / "missing")}, soft_fail=True)

        with pytest.raises(RawFilesCheckError, match="missing"):
            op.poke(make_context(utc(2024, 3, 2)))

    def test_poke_mode_timeout_with_soft_fail_skips(self, source):
        mark_loaded(source)
        op = sensor(source, soft_fail=True, timeout=0, poke_interval=0.01)

        with pytest.raises(AirflowSkipException):
            op.execute(make_context(utc(2024, 3, 2)))

    def test_deferrable_returns_at_once_when_work_is_there(self, source):
        assert sensor(source, deferrable=True).execute(make_context(utc(2024, 3, 2))) == ALL_DEMO_TABLES

    def test_deferrable_defers_with_the_run_bounds_when_nothing_is_new(self, source):
        mark_loaded(source)
        op = sensor(source, deferrable=True, timeout=600, poke_interval=30, tables="sales.*")
        before = datetime.now(timezone.utc)

        with pytest.raises(TaskDeferred) as deferred:
            op.execute(make_context(utc(2024, 3, 2)))

        trigger = deferred.value.trigger
        assert isinstance(trigger, DmsCdcNewFilesTrigger)
        assert deferred.value.method_name == "execute_complete"
        assert (trigger.raw_root, trigger.state_uri, trigger.tables) == (source["raw_root"], source["state_uri"], "sales.*")
        assert trigger.cdc_before == "2024-03-02T00:00:00+00:00"
        assert trigger.poke_interval == 30
        timeout_at = datetime.fromisoformat(trigger.timeout_at)
        assert before + timedelta(seconds=600) <= timeout_at <= datetime.now(timezone.utc) + timedelta(seconds=600)

    def test_execute_complete_returns_the_tables_found(self, source):
        event = {"status": "found", "tables": ["sales.store"]}

        assert sensor(source).execute_complete(make_context(), event) == ["sales.store"]

    def test_execute_complete_timeout_skips_with_soft_fail(self, source):
        with pytest.raises(AirflowSkipException, match="no new DMS files"):
            sensor(source, soft_fail=True).execute_complete(make_context(), {"status": "timeout", "timeout_at": "x"})

    def test_execute_complete_timeout_fails_without_soft_fail(self, source):
        with pytest.raises(AirflowSensorTimeout):
            sensor(source).execute_complete(make_context(), {"status": "timeout", "timeout_at": "x"})

    def test_execute_complete_error_fails_even_with_soft_fail(self, source):
        op = sensor(source, soft_fail=True)

        with pytest.raises(RawFilesCheckError, match="store down"):
            op.resume_execution("execute_complete", {"event": {"status": "error", "message": "store down"}},
                                make_context())


class TestDmsCdcNewFilesTrigger:
    def trigger(self, source, **kwargs) -> DmsCdcNewFilesTrigger:
        return DmsCdcNewFilesTrigger(aws_conn_id=None, poke_interval=0.05, **source, **kwargs)

    def first_event(self, trigger) -> dict:
        async def first():
            async for event in trigger.run():
                return event.payload

        return asyncio.run(asyncio.wait_for(first(), timeout=30))

    def test_serialize_round_trips(self, source):
        trigger = self.trigger(source, tables="sales.*", cdc_before="2024-03-02T00:00:00+00:00",
                               full_refresh=["sales.store"], timeout_at="2024-03-02T01:00:00+00:00")

        classpath, kwargs = trigger.serialize()

        assert classpath == "dmscdc_provider.triggers.raw_files.DmsCdcNewFilesTrigger"
        assert kwargs == {**source, "tables": "sales.*", "cdc_before": "2024-03-02T00:00:00+00:00",
                          "full_refresh": ["sales.store"], "poke_interval": 0.05,
                          "timeout_at": "2024-03-02T01:00:00+00:00", "aws_conn_id": None, "region_name": None}
        assert DmsCdcNewFilesTrigger(**kwargs).serialize() == (classpath, kwargs)

    def test_fires_found_with_the_tables_that_have_work(self, source):
        assert self.first_event(self.trigger(source)) == {"status": "found", "tables": ALL_DEMO_TABLES}

    def test_fires_found_once_files_arrive(self, source):
        mark_loaded(source)
        trigger = self.trigger(source, cdc_before="2024-03-03T00:00:00+00:00")

        async def arrive_later():
            await asyncio.sleep(0.2)
            write_change_batch(source["raw_root"])

        async def run():
            writer = asyncio.create_task(arrive_later())
            async for event in trigger.run():
                await writer
                return event.payload

        assert asyncio.run(asyncio.wait_for(run(), timeout=30)) == {"status": "found", "tables": ALL_DEMO_TABLES}

    def test_fires_timeout_when_nothing_arrives_in_time(self, source):
        mark_loaded(source)
        soon = (datetime.now(timezone.utc) + timedelta(seconds=0.2)).isoformat()

        assert self.first_event(self.trigger(source, timeout_at=soon)) == {"status": "timeout", "timeout_at": soon}

    def test_fires_error_when_the_raw_location_is_unreadable(self, source, tmp_path):
        event = self.first_event(self.trigger({**source, "raw_root": str(tmp_path / "missing")}))

        assert event["status"] == "error"
        assert "missing" in event["message"]
