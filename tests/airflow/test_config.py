"""Source YAML configs: defaults, environment variables, and errors that name the file and key."""

from __future__ import annotations

import re
import textwrap
from datetime import datetime, timezone

import pytest
from airflow.sdk.definitions.timetables.simple import NullTimetable

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_env import DAGS_FOLDER
from dmscdc_provider.dag_factory import SourceConfigError, build_source_dag, dags_from_folder, load_source_config
from dmscdc_provider.dag_factory.builder import CONFIG_ERROR_TAG
from dmscdc_provider.engines import ENGINE_CLASSES

DEMO_CONFIG = DAGS_FOLDER / "sources" / "demo.yaml"

MINIMAL = """
source: sales
raw: s3://dms-bucket/raw/
lake: s3://lake-bucket/lake
state: dynamodb://DMSCDC_Controller
"""


def write(folder, name: str, text: str):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_minimal_config_gets_defaults_and_trailing_slashes_are_dropped(tmp_path):
    config = load_source_config(write(tmp_path, "sales.yaml", MINIMAL))

    assert config.dag_id == "dmscdc_sales"
    assert config.raw == "s3://dms-bucket/raw"
    # An omitted schedule means manual runs only (docs/airflow.md); an S3 lake's catalog is Glue.
    assert (config.engine, config.catalog_mode, config.schedule) == ("auto", "glue_tables", None)
    assert config.engine_config.engines == ("duckdb", "local")
    assert config.inprocess_max_bytes == 2**30
    assert config.wait_for_changes.mode == "reschedule"
    assert config.merge.retries == 2
    assert config.aws_conn_id == "aws_default"


def test_an_s3_lake_defaults_to_glue_tables_in_a_database_named_after_the_source(tmp_path):
    config = load_source_config(write(tmp_path, "sales.yaml", MINIMAL.replace("source: sales", "source: Sales")))

    assert (config.catalog_mode, config.catalog_settings) == ("glue_tables", {"database": "dmscdc_sales"})


def test_a_local_lake_defaults_to_a_duckdb_catalog(tmp_path):
    config = load_source_config(write(tmp_path, "demo.yaml", """
        source: demo
        raw: /data/raw
        lake: /data/lake
        state: sqlite:////data/state.sqlite
    """))

    assert (config.catalog_mode, config.catalog_settings) == ("duckdb", {})


def test_a_duckdb_catalog_over_an_s3_lake_fails_the_check_naming_the_file_and_key(tmp_path):
    path = write(tmp_path, "sales.yaml", MINIMAL + "catalog: {mode: duckdb, settings: {path: /tmp/c.duckdb}}\n")

    with pytest.raises(SourceConfigError, match=r"sales\.yaml: catalog\.mode duckdb .* s3://lake-bucket/lake"):
        load_source_config(path)


def test_environment_variables_fill_values_and_numbers_keep_their_type(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMO_HOME", "/data/demo")
    monkeypatch.setenv("WAIT", "7")
    monkeypatch.delenv("UNSET_MASTER", raising=False)
    config = load_source_config(write(tmp_path, "demo.yaml", """
        source: demo
        raw: ${DEMO_HOME}/raw
        lake: ${DEMO_HOME:-/elsewhere}/lake
        state: sqlite:///${DEMO_HOME}/state.sqlite
        start_date: 2024-03-01
        engine: {name: local, settings: {master: "${UNSET_MASTER:-local[2]}"}}
        wait_for_changes: {mode: deferrable, timeout: "${WAIT}"}
        merge: {deferrable: "true"}
    """))

    assert config.raw == "/data/demo/raw"
    assert config.lake == "/data/demo/lake"
    assert config.state == "sqlite:////data/demo/state.sqlite"
    assert config.engine_settings == {"master": "local[2]"}
    assert config.wait_for_changes.timeout == 7.0
    assert config.merge.deferrable is True
    assert config.start_date == datetime(2024, 3, 1, tzinfo=timezone.utc)


def test_an_omitted_schedule_means_manual_runs_only_as_the_docs_say(tmp_path):
    config = load_source_config(write(tmp_path, "sales.yaml", MINIMAL))

    assert config.schedule is None
    assert isinstance(build_source_dag(config).timetable, NullTimetable)


def test_the_example_config_in_the_docs_passes_the_schema(tmp_path):
    docs = (DAGS_FOLDER.parent / "docs" / "airflow.md").read_text()
    example = docs.split("## Source config", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]

    config = load_source_config(write(tmp_path, "sales.yaml", example))

    assert (config.dag_id, config.schedule, config.merge.pool) == ("dmscdc_sales", "@hourly", "dmscdc_merges")
    assert (config.csv_delimiter, config.aws_conn_id) == (",", "aws_default")


def test_merge_pool_and_pool_slots_apply_to_every_merge_instance(tmp_path):
    config = load_source_config(write(tmp_path, "sales.yaml", MINIMAL + "merge: {pool: dmscdc_merges, pool_slots: '2'}\n"))

    merge = build_source_dag(config).task_dict["merge"]

    assert (merge.partial_kwargs["pool"], merge.partial_kwargs["pool_slots"]) == ("dmscdc_merges", 2)


@pytest.mark.parametrize(("extra", "message"), [
    ("shedule: '@daily'", "unknown key(s) shedule"),
    ("engine: spark", "engine.name: 'spark' is not one of"),
    ("engine: {name: local, setings: {}}", "unknown key(s) engine.setings"),
    ("catalog: {mode: hive}", "catalog.mode: 'hive' is not one of"),
    ("engine: [local]", "engine: ['local'] is not a mapping"),
    ("aws: {conn: aws_default}", "unknown key(s) aws.conn"),
    ("aws: {region_name: 3}", "aws.region_name: 3 is not a string"),
    ("csv: {delimiter: ''}", "csv.delimiter"),
    ("csv: {nullvalue: NULL}", "unknown key(s) csv.nullvalue"),
    ("catchup: sometimes", "catchup: 'sometimes' is not true or false"),
    ("merge: {pool_slots: 0}", "merge.pool_slots"),
    ("tables: [sales.a]", "tables: ['sales.a'] is not a string or empty"),
    ("source: sales-db", "may use letters, digits and _ only"),
    ("merge: {retrys: 3}", "merge.retrys"),
    ("wait_for_changes: {mode: sleep}", "wait_for_changes.mode"),
    ("merge: {retries: many}", "merge.retries"),
    ("start_date: yesterday", "start_date"),
    ("tables: ${NO_SUCH_VARIABLE_SET}", "NO_SUCH_VARIABLE_SET"),
    ("freshness_slo: soon", "freshness_slo: 'soon' is not a duration"),
    ("freshness_slo: {sales.*: [1h]}", "freshness_slo.sales.*: ['1h'] is not a string or a number"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path, extra, message):
    path = write(tmp_path, "sales.yaml", MINIMAL + extra + "\n")

    with pytest.raises(SourceConfigError, match="sales.yaml") as raised:
        load_source_config(path)

    assert message in str(raised.value)


def test_every_bad_key_of_a_file_is_named_in_one_error(tmp_path):
    path = write(tmp_path, "sales.yaml", MINIMAL + "engine: spark\nmerge: {retries: many}\n")

    with pytest.raises(SourceConfigError) as raised:
        load_source_config(path)

    assert "engine.name" in str(raised.value) and "merge.retries" in str(raised.value)


@pytest.mark.parametrize("engine", sorted(set(ENGINE_CLASSES) | {"auto"}))
def test_every_registered_engine_name_is_accepted(tmp_path, engine):
    assert load_source_config(write(tmp_path, "sales.yaml", MINIMAL + f"engine: {engine}\n")).engine == engine


def test_engine_auto_takes_a_spark_engine_a_threshold_and_settings_for_each_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("INPROCESS_MAX", "256MiB")
    config = load_source_config(write(tmp_path, "sales.yaml", MINIMAL + """
engine:
  name: auto
  spark_engine: glue
  inprocess_max_bytes: ${INPROCESS_MAX}
  settings: {role_arn: "arn:aws:iam::123456789012:role/glue", artifacts_uri: s3://lake-bucket/artifacts}
  duckdb_settings: {memory_limit: 1GB, temp_directory: /tmp/dmscdc-spill}
"""))

    engines = config.engine_config
    assert (engines.engine, engines.spark, engines.inprocess_max_bytes) == ("auto", "glue", 256 * 2**20)
    assert engines.settings_for("glue") == {"role_arn": "arn:aws:iam::123456789012:role/glue",
                                            "artifacts_uri": "s3://lake-bucket/artifacts"}
    assert engines.settings_for("duckdb") == {"memory_limit": "1GB", "temp_directory": "/tmp/dmscdc-spill"}


def test_an_existing_single_engine_config_keeps_its_meaning(tmp_path):
    config = load_source_config(write(tmp_path, "sales.yaml", MINIMAL + """
engine: {name: glue, settings: {role_arn: r, artifacts_uri: s3://a}}
"""))

    assert config.engine_config.engines == ("glue",)
    assert config.engine_settings == {"role_arn": "r", "artifacts_uri": "s3://a"}


@pytest.mark.parametrize(("engine", "message"), [
    ("engine: {name: glue, spark_engine: emr}", "spark_engine 'emr' is for engine auto"),
    ("engine: {name: auto, inprocess_max_bytes: lots}", "not a size"),
    ("engine: {name: auto, spark: glue}", "unknown key(s) engine.spark"),
    ("engine: spark", "engine.name: 'spark' is not one of"),
])
def test_engine_config_errors_name_the_file(tmp_path, engine, message):
    with pytest.raises(SourceConfigError, match="sales.yaml") as raised:
        load_source_config(write(tmp_path, "sales.yaml", MINIMAL + engine + "\n"))

    assert message in str(raised.value)


def test_a_missing_required_location_is_an_error(tmp_path):
    with pytest.raises(SourceConfigError, match="lake is required"):
        load_source_config(write(tmp_path, "x.yaml", "source: x\nraw: /r\nstate: /s.sqlite\n"))


def test_one_dag_per_source_file_and_a_source_defined_twice_is_a_config_error_of_the_second_file(tmp_path):
    write(tmp_path, "a.yaml", MINIMAL)
    write(tmp_path, "b.yml", MINIMAL.replace("source: sales", "source: hr"))
    assert sorted(dags_from_folder(str(tmp_path))) == ["dmscdc_hr", "dmscdc_sales"]

    write(tmp_path, "c.yaml", MINIMAL)
    dags = dags_from_folder(str(tmp_path))

    assert sorted(dags) == ["dmscdc_config_error_c", "dmscdc_hr", "dmscdc_sales"]
    assert "defined twice" in dags["dmscdc_config_error_c"].task_dict["config_error"].message
    assert CONFIG_ERROR_TAG not in dags["dmscdc_sales"].tags


def test_one_invalid_source_file_fails_only_its_own_dag_and_the_other_sources_still_load(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    write(tmp_path, "hr.yaml", MINIMAL.replace("source: sales", "source: hr"))
    bad = write(tmp_path, "sales.yaml", MINIMAL + "engine: spark\n")
    monkeypatch.setenv("DMSCDC_SOURCES_DIR", str(tmp_path))

    bag = DagBag(dag_folder=str(DAGS_FOLDER / "dmscdc_sources.py"))

    assert bag.import_errors == {}
    assert CONFIG_ERROR_TAG not in bag.dags["dmscdc_hr"].tags
    broken = bag.dags["dmscdc_sales"]
    assert CONFIG_ERROR_TAG in broken.tags
    assert broken.description.startswith("CONFIG ERROR in sales.yaml")
    [task] = broken.tasks
    with pytest.raises(AirflowFailException, match=r"sales.yaml: engine.name: 'spark' is not one of"):
        task.execute({})
    assert bad in task.message
    # The dag-processor stores it like any DAG (serialized for the scheduler and the UI).
    from airflow.serialization.serialized_objects import DagSerialization

    assert DagSerialization.deserialize_dag(DagSerialization.serialize_dag(broken)).description == broken.description


def test_a_file_that_is_not_yaml_gets_a_config_error_dag_named_after_the_file(tmp_path):
    write(tmp_path, "sales db.yaml", "source: [unclosed\n")

    [(dag_id, dag)] = dags_from_folder(str(tmp_path)).items()

    assert dag_id == "dmscdc_config_error_sales_db"
    assert "not valid YAML" in dag.task_dict["config_error"].message


@pytest.mark.parametrize("poke_interval", [None, "2"])
def test_the_demo_sensor_defers_instead_of_rescheduling_even_with_a_short_poke_interval(monkeypatch, poke_interval):
    """``reschedule`` with a short poke interval hits Airflow's reschedule race (apache/airflow#71172)."""
    if poke_interval is None:
        monkeypatch.delenv("DMSCDC_DEMO_POKE_INTERVAL", raising=False)
    else:
        monkeypatch.setenv("DMSCDC_DEMO_POKE_INTERVAL", poke_interval)

    config = load_source_config(str(DEMO_CONFIG))

    assert config.wait_for_changes.mode == "deferrable"


def test_table_format_defaults_to_parquet_and_iceberg_tables_get_a_catalog_beside_the_lake(tmp_path):
    local = load_source_config(write(tmp_path, "demo.yaml", """
        source: demo
        raw: /data/raw
        lake: /data/lake
        state: sqlite:////data/state.sqlite
        table_format: iceberg
    """))
    s3 = load_source_config(write(tmp_path, "sales.yaml", MINIMAL))

    assert (local.table_format, local.iceberg_catalog) == ("iceberg", "sqlite:////data/lake/_dmscdc_iceberg.sqlite")
    # On S3 the Iceberg tables go to the Glue database the catalog refresh uses: Athena reads them at once.
    assert (s3.table_format, s3.iceberg_catalog) == ("parquet", "glue://dmscdc_sales")


def test_an_iceberg_catalog_that_is_neither_sqlite_nor_glue_fails_the_check(tmp_path):
    path = write(tmp_path, "sales.yaml", MINIMAL + "table_format: iceberg\niceberg: {catalog: hive://metastore}\n")

    with pytest.raises(SourceConfigError, match=r"sales\.yaml: iceberg\.catalog: 'hive://metastore'"):
        load_source_config(path)


def test_an_unknown_table_format_fails_the_check_naming_the_choices(tmp_path):
    path = write(tmp_path, "sales.yaml", MINIMAL + "table_format: delta\n")

    with pytest.raises(SourceConfigError, match=r"table_format: 'delta' is not one of parquet, iceberg"):
        load_source_config(path)


def test_maintenance_adds_a_maintain_task_between_the_catalog_refresh_and_the_summary(tmp_path):
    config = load_source_config(write(tmp_path, "sales.yaml", MINIMAL + textwrap.dedent("""
        table_format: iceberg
        maintenance: {enabled: true, compact_below_bytes: 16MiB, expire_after_days: 3}
    """)))
    dag = build_source_dag(config)

    maintain = dag.get_task("maintain")
    assert (maintain.compact_below_bytes, maintain.expire_after_days, maintain.orphan_age_hours) == (16 * 2**20, 3, 24)
    assert maintain.upstream_task_ids == {"refresh_catalog"} and maintain.downstream_task_ids == {"summary"}
    assert "maintain" not in build_source_dag(load_source_config(write(tmp_path, "plain.yaml", MINIMAL))).task_ids


def test_freshness_slo_is_one_duration_or_globs_in_file_order_and_reaches_the_summary_task(tmp_path):
    one = load_source_config(write(tmp_path, "a.yaml", MINIMAL + "freshness_slo: 2h\n"))
    by_glob = load_source_config(write(tmp_path, "b.yaml", MINIMAL.replace("sales", "hr") +
                                       "freshness_slo: {hr.payroll: 15m, 'hr.*': 1d, other: 90}\n"))

    assert one.freshness_slo == {"*": 7200.0}
    assert list(by_glob.freshness_slo.items()) == [("hr.payroll", 900.0), ("hr.*", 86400.0), ("other", 90.0)]
    assert load_source_config(write(tmp_path, "c.yaml", MINIMAL)).freshness_slo == {}

    def page(context):
        """A failure callback, as a user routes failed runs to a pager."""

    dag = build_source_dag(by_glob, on_failure_callback=page)
    assert dag.task_dict["summary"].freshness_slo == by_glob.freshness_slo
    assert dag.on_failure_callback == page or dag.on_failure_callback == [page]


def test_table_settings_set_change_semantics_per_table_glob(tmp_path):
    config = load_source_config(write(tmp_path, "sales.yaml", MINIMAL + """
table_settings:
  sales.orders:
    commit_time_column: commit_ts
    keep_on_null: [notes]
    history: true
    history_columns: [status, amount]
"""))
    assert config.table_settings == {"sales.orders": {
        "commit_time_column": "commit_ts", "keep_on_null": ["notes"], "history": True,
        "history_columns": ["status", "amount"]}}


@pytest.mark.parametrize("settings, message", [
    ("  sales.orders: {history_columns: [a], history_except: [b]}",
     "table_settings.sales.orders: a history table tracks either history_columns"),
    ("  sales.orders: {history_since: 2024}", "unknown key(s) table_settings.sales.orders.history_since"),
])
def test_table_settings_errors_name_the_file_and_the_key(tmp_path, settings, message):
    with pytest.raises(SourceConfigError, match=re.escape(message)):
        load_source_config(write(tmp_path, "sales.yaml", MINIMAL + "table_settings:\n" + settings + "\n"))
