"""Every DAG file parses, and the demo source's DAG has the shape the docs describe."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_env import DAGS_FOLDER, REPO

DEMO_ENV = {"DMSCDC_DEMO_HOME": "/srv/dmscdc-demo", "DMSCDC_DEMO_MERGE_RETRIES": "3"}


@pytest.fixture
def dagbag(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)
    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "dmscdc_demo" in dagbag.dag_ids


def test_demo_dag_waits_plans_merges_per_table_then_refreshes_and_summarises(dagbag):
    from airflow.sdk import AssetAlias

    dag = dagbag.dags["dmscdc_demo"]

    assert dag.max_active_runs == 1
    assert dag.timetable.expression == "0 * * * *"
    assert tasks_of(dag)["wait_for_changes"].deferrable is True  # no reschedule race (apache/airflow#71172)
    tasks = dag.task_dict
    assert set(tasks) == {"wait_for_changes", "plan", "merge", "refresh_catalog", "summary"}
    assert tasks["wait_for_changes"].downstream_task_ids == {"plan", "summary"}
    assert tasks["plan"].downstream_task_ids == {"merge", "summary"}
    assert tasks["merge"].downstream_task_ids == {"refresh_catalog", "summary"}
    assert tasks["refresh_catalog"].downstream_task_ids == {"summary"}
    assert tasks["wait_for_changes"].soft_fail is True
    assert tasks["wait_for_changes"].raw_root == "/srv/dmscdc-demo/raw"

    merge = tasks["merge"]
    assert merge.is_mapped
    assert merge.partial_kwargs["map_index_template"] == "{{ task.plan['table'] }}"
    assert merge.partial_kwargs["retries"] == 3
    assert merge.partial_kwargs["state_uri"] == "sqlite:////srv/dmscdc-demo/state.sqlite"

    assert tasks["refresh_catalog"].trigger_rule == "all_done"
    assert tasks["refresh_catalog"].outlets == [AssetAlias("dmscdc_demo_lake")]
    assert tasks["refresh_catalog"].inlets == [AssetAlias("dmscdc_demo_lake")]  # reads what it announced
    assert tasks["summary"].trigger_rule == "all_done"


def tasks_of(dag):
    return dag.task_dict


def test_the_dag_list_shows_the_yaml_description_and_the_docs_explain_tables_cutoff_and_recovery(dagbag):
    dag = dagbag.dags["dmscdc_demo"]

    assert dag.description == "The AWS blog's sample sales database, written by DMS to local files."
    assert "`sales.*`" in dag.doc_md
    assert "named* before its data interval end" in dag.doc_md
    assert "A run without a logical date" in dag.doc_md and "no cutoff" in dag.doc_md
    assert "clear the failed `merge` instance" in dag.doc_md


def test_full_refresh_is_optional_in_the_trigger_form_and_has_a_title_and_description(dagbag):
    from jinja2 import Environment

    from dmscdc_provider.dag_factory.builder import FULL_REFRESH_TEMPLATE

    param = dagbag.dags["dmscdc_demo"].params.get_param("full_refresh")

    # The trigger form marks a param required unless its schema type allows null.
    assert "null" in param.schema["type"] and "array" in param.schema["type"]
    assert param.schema["title"] == "Full refresh" and param.description.startswith("Optional.")
    assert param.resolve(None) is None and param.resolve(["sales.store"]) == ["sales.store"]
    render = Environment().from_string(FULL_REFRESH_TEMPLATE).render
    assert render(params={"full_refresh": None}) == ""
    assert render(params={"full_refresh": ["sales.store", "sales.product"]}) == "sales.store,sales.product"


def test_runs_are_ordered_by_the_plan_task_waiting_not_by_depends_on_past(dagbag):
    """depends_on_past + wait_for_downstream left runs waiting forever after a cleared plan
    (removed merge instances) or a failed run; the plan task waits for the runs before it instead,
    for at most one sensor timeout (docs/scheduling.md)."""
    tasks = dagbag.dags["dmscdc_demo"].task_dict

    assert not any(task.depends_on_past or task.wait_for_downstream for task in tasks.values())
    assert tasks["plan"].wait_timeout == tasks["wait_for_changes"].timeout
    assert 30 <= tasks["plan"].wait_check_interval <= 60  # shorter resumes race the scheduler
    assert tasks["plan"].get_flat_relative_ids(upstream=False) == {"merge", "refresh_catalog", "summary"}
    assert tasks["summary"].upstream_task_ids == {"wait_for_changes", "plan", "merge", "refresh_catalog"}


def test_parsing_the_dags_imports_no_spark():
    script = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j', 'dmscdc_spark')))"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(DAGS_FOLDER / "dmscdc_sources.py")],
                               capture_output=True, text=True, cwd=REPO, timeout=120)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def test_the_provider_is_registered_through_its_entry_point():
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "dmscdc" in providers
    info = providers["dmscdc"].data
    assert "dmscdc_provider.triggers.raw_files" in info["triggers"][0]["python-modules"]


def test_provider_info_follows_airflow_schema():
    import json
    from importlib.resources import files

    import jsonschema

    from dmscdc_provider.get_provider_info import get_provider_info

    schema = json.loads((files("airflow") / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)
