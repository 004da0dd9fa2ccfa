"""Example DAG / system test: dmscdc on a real AWS account (not run in CI).

Runs one pass over a raw DMS location with the Glue engine and the direct catalog update:
plan -> one mapped merge per table (Glue job run, then the conditional commit) -> catalog.
Set the environment variables below; the account needs the resources and roles of
docs/aws.md (docs/iam-policy.json for Airflow, docs/iam-policy-spark-job.json for the job).
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import dag, task

RAW = os.environ.get("DMSCDC_SYSTEM_TEST_RAW", "s3://my-dms-raw/dms/")
LAKE = os.environ.get("DMSCDC_SYSTEM_TEST_LAKE", "s3://my-dms-lake/lake")
STATE = os.environ.get("DMSCDC_SYSTEM_TEST_STATE", "dynamodb://DMSCDC_Controller")
ARTIFACTS = os.environ.get("DMSCDC_SYSTEM_TEST_ARTIFACTS", "s3://my-dms-lake/dmscdc-artifacts")
GLUE_ROLE = os.environ.get("DMSCDC_SYSTEM_TEST_GLUE_ROLE", "arn:aws:iam::123456789012:role/dmscdc-spark-job")
DATABASE = os.environ.get("DMSCDC_SYSTEM_TEST_DATABASE", "dmscdc_system_test")
AWS_CONN_ID = "aws_default"


@dag(dag_id="example_dmscdc_aws", schedule=None, start_date=datetime(2024, 1, 1), catchup=False,
     tags=["example", "dmscdc", "system-test"])
def example_dmscdc_aws():
    @task
    def plan() -> list[dict]:
        from dmscdc_provider.planner import Planner
        from dmscdc_provider.state.base import open_store
        from dmscdc_provider.storage import open_storage

        report = Planner(RAW, LAKE, open_store(STATE), open_storage(RAW)).plan()
        print({"registered": report.registered, "inactive": report.inactive, "up_to_date": report.up_to_date})
        if report.problems:
            raise RuntimeError(f"planning problems: {report.problems}")
        return [p.to_dict() for p in report.plans]

    @task(map_index_template="{{ task.op_kwargs['plan_document']['table'] }}", retries=2)
    def merge(plan_document: dict) -> dict:
        from dmscdc_provider.engines import make_engine
        from dmscdc_provider.plan import TablePlan
        from dmscdc_provider.runner import complete_attempt, start_attempt
        from dmscdc_provider.state.base import open_store
        from dmscdc_provider.storage import open_storage

        table_plan = TablePlan.from_dict(plan_document)
        store, lake = open_store(STATE), open_storage(LAKE)
        engine = make_engine("glue", role_arn=GLUE_ROLE, artifacts_uri=ARTIFACTS, aws_conn_id=AWS_CONN_ID,
                             poll_interval=30)
        start = start_attempt(table_plan, store, lake)
        if start.outcome is not None:
            return start.outcome.to_dict()
        engine_plan = table_plan.engine_plan(start.attempt_id)
        job_ref = engine.submit(engine_plan)  # reattaches when an earlier try's run still runs
        engine.wait(job_ref)
        result = engine.fetch_result(job_ref, engine_plan)
        outcome = complete_attempt(table_plan, result["attempt_id"], result, store, lake)
        if not outcome.succeeded:
            raise RuntimeError(f"{outcome.table}: {outcome.status} {outcome.error or outcome.note}")
        return outcome.to_dict()

    @task(trigger_rule="all_done")
    def refresh_catalog(outcomes: list[dict]) -> list[dict]:
        from dataclasses import asdict

        from dmscdc_provider.aws.glue_catalog import GlueCatalog
        from dmscdc_provider.state.base import open_store

        active = [s for s in open_store(STATE).list() if s.active]
        updates = GlueCatalog(DATABASE, aws_conn_id=AWS_CONN_ID).refresh(
            LAKE, [(s.schema, s.table, list(s.partition_key)) for s in active])
        return [asdict(u) for u in updates]

    refresh_catalog(merge.expand(plan_document=plan()))


example_dmscdc_aws()
