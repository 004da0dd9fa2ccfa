"""OpenLineage from the merge task (apache-airflow-providers-openlineage): the table's DMS raw folder
in, the lake table out with its schema, identity column lineage and the Glue table as a symlink;
and the events the provider emits when a DAG run merges, through its file transport."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_env import utc
from dmscdc_provider.demo import prepare_demo_source
from dmscdc_provider.operators.merge import DmsCdcMergeOperator
from fakes import FakeTaskInstance, make_context
from test_operators import BEFORE_CHANGES, plans_by_table, scripted_engine, source  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("airflow_db")


def merged_store(source: dict, **merge_options) -> DmsCdcMergeOperator:
    plan = plans_by_table(source, utc(2024, 3, 2), engine="duckdb")["sales.store"]
    op = DmsCdcMergeOperator(task_id="merge", aws_conn_id=None, plan=plan, state_uri=source["state_uri"],
                             engine="duckdb", **merge_options)
    assert op.execute(make_context())["status"] == "succeeded"
    return op


def test_the_merge_reports_raw_in_and_the_lake_table_out_with_schema_and_identity_column_lineage(source):
    lineage = merged_store(source).get_openlineage_facets_on_complete(None)

    [raw] = lineage.inputs
    [lake] = lineage.outputs
    assert (raw.namespace, raw.name) == ("file", os.path.join(source["raw_root"], "sales", "store"))
    assert (lake.namespace, lake.name) == ("file", os.path.join(source["lake_root"], "sales", "store"))
    columns = {field.name: field.type for field in lake.facets["schema"].fields}
    assert {"id", "address", "city", "state", "zip", "Op"} <= set(columns) and columns["id"] == "int32"
    city = lake.facets["columnLineage"].fields["city"]
    assert [(f.namespace, f.name, f.field) for f in city.inputFields] == [("file", raw.name, "city")]
    assert city.transformationType == "IDENTITY"
    assert set(lake.facets["columnLineage"].fields) == set(columns)
    assert "symlinks" not in lake.facets  # a local lake has no Glue table


def test_a_table_the_glue_catalog_refresh_registers_is_linked_to_its_glue_table(source):
    op = merged_store(source, glue_catalog={"database": "sales_lake", "table_name_format": "{schema}_{table}"},
                      region_name="eu-west-1")
    op.hook.__dict__["account_id"] = "123456789012"  # the STS answer, as the hook caches it

    [lake] = op.get_openlineage_facets_on_complete(None).outputs

    [identifier] = lake.facets["symlinks"].identifiers
    assert (identifier.namespace, identifier.name, identifier.type) == (
        "arn:aws:glue:eu-west-1:123456789012", "table/sales_lake/sales_store", "TABLE")


def test_raw_and_lake_on_s3_are_s3_datasets_named_by_bucket_and_key():
    from dmscdc_provider.observability.lineage import dataset_address, raw_table_location
    from dmscdc_provider.plan import TablePlan

    plan = TablePlan(table="sales.orders", state_path="dms-raw/dms/sales/orders/", base_version=1,
                     mode="incremental", files=[{"path": "s3://dms-raw/dms/sales/orders/2024/03/01/x.parquet",
                                                 "kind": "cdc", "size": 1}],
                     lake_root="s3://lake/data", primary_key=["id"], partition_key=[],
                     new_last_full_load_date="2024-03-01 09:00:00", new_last_incremental_file=None)

    assert dataset_address(raw_table_location(plan)) == ("s3://dms-raw", "dms/sales/orders")
    assert dataset_address(plan.lake_table_path) == ("s3://lake", "data/sales/orders")


def test_a_dag_run_emits_openlineage_events_naming_raw_and_lake_through_the_file_transport(demo_env, tmp_path):
    from airflow_env import run_airflow

    events_file = tmp_path / "openlineage.jsonl"
    env = {**demo_env, "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
        {"type": "file", "log_file_path": str(events_file), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "dmscdc-test"}
    home = demo_env["DMSCDC_DEMO_HOME"]
    prepare_demo_source(os.path.join(home, "raw"), f"sqlite://{home}/state.sqlite")

    completed = run_airflow(["dags", "test", "dmscdc_demo", utc(2024, 3, 2).isoformat()], env)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    completes = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"].startswith("dmscdc_demo.merge")]
    outputs = {o["name"]: o for e in completes for o in e["outputs"]}
    lake_store = os.path.join(home, "lake", "sales", "store")
    assert set(outputs) == {os.path.join(home, "lake", "sales", table) for table in ("product", "productorder", "store")}
    assert "city" in outputs[lake_store]["facets"]["columnLineage"]["fields"]
    [store_event] = [e for e in completes if e["outputs"][0]["name"] == lake_store]
    assert [(i["namespace"], i["name"]) for i in store_event["inputs"]] == [
        ("file", os.path.join(home, "raw", "sales", "store"))]


class LineageTaskInstance(FakeTaskInstance):
    """A task instance with what the OpenLineage macros read: try, map index and the DAG run."""

    def __init__(self):
        super().__init__()
        self.task_id, self.try_number, self.map_index = "merge", 2, -1
        self.dag_run = SimpleNamespace(conf={}, clear_number=0, logical_date=datetime(2026, 3, 1, tzinfo=timezone.utc),
                                       run_after=datetime(2026, 3, 1, tzinfo=timezone.utc))

    def get_template_context(self) -> dict:
        return {"dag_run": self.dag_run}


@pytest.mark.parametrize("inject", [True, False])
def test_a_remote_spark_job_carries_the_merge_task_as_its_openlineage_parent_only_when_asked(
        source, scripted_engine, inject):
    from airflow.providers.openlineage.plugins.macros import lineage_root_run_id, lineage_run_id

    plan = plans_by_table(source, BEFORE_CHANGES, engine=scripted_engine)["sales.store"]
    op = DmsCdcMergeOperator(task_id="merge", aws_conn_id=None, plan=plan, state_uri=source["state_uri"],
                             engine=scripted_engine, deferrable=True, openlineage_inject_parent_job_info=inject)
    ti = LineageTaskInstance()
    with pytest.raises(TaskDeferred):
        op.execute(make_context(ti=ti))

    engine, _ = op._remote_job  # the engine that started the job
    assert getattr(engine, "spark_properties", {}) == ({
        "spark.openlineage.parentJobNamespace": "default",
        "spark.openlineage.parentJobName": "dmscdc_test.merge",
        "spark.openlineage.parentRunId": lineage_run_id(ti),
        "spark.openlineage.rootParentJobNamespace": "default",
        "spark.openlineage.rootParentJobName": "dmscdc_test",
        "spark.openlineage.rootParentRunId": lineage_root_run_id(ti),
    } if inject else {})
