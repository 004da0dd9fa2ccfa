"""Source YAML configs: defaults, environment variables, and errors that name the file and key."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone

import pytest

from airflow_env import DAGS_FOLDER
from dmscdc_provider.dag_factory import SourceConfigError, dags_from_folder, load_source_config

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
    assert (config.engine, config.catalog_mode, config.schedule) == ("auto", "glue_tables", "@hourly")
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


@pytest.mark.parametrize(("extra", "message"), [
    ("shedule: '@daily'", "unknown key(s) shedule"),
    ("merge: {retrys: 3}", "merge.retrys"),
    ("wait_for_changes: {mode: sleep}", "wait_for_changes.mode"),
    ("merge: {retries: many}", "merge.retries"),
    ("start_date: yesterday", "start_date"),
    ("tables: ${NO_SUCH_VARIABLE_SET}", "NO_SUCH_VARIABLE_SET"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path, extra, message):
    path = write(tmp_path, "sales.yaml", MINIMAL + extra + "\n")

    with pytest.raises(SourceConfigError, match="sales.yaml") as raised:
        load_source_config(path)

    assert message in str(raised.value)


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
    ("engine: {name: auto, spark: glue}", "engine must be a name or a mapping"),
    ("engine: spark", "unknown engine 'spark'"),
])
def test_engine_config_errors_name_the_file(tmp_path, engine, message):
    with pytest.raises(SourceConfigError, match="sales.yaml") as raised:
        load_source_config(write(tmp_path, "sales.yaml", MINIMAL + engine + "\n"))

    assert message in str(raised.value)


def test_a_missing_required_location_is_an_error(tmp_path):
    with pytest.raises(SourceConfigError, match="lake is required"):
        load_source_config(write(tmp_path, "x.yaml", "source: x\nraw: /r\nstate: /s.sqlite\n"))


def test_one_dag_per_source_file_and_a_source_defined_twice_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", MINIMAL)
    write(tmp_path, "b.yml", MINIMAL.replace("source: sales", "source: hr"))
    assert sorted(dags_from_folder(str(tmp_path))) == ["dmscdc_hr", "dmscdc_sales"]

    write(tmp_path, "c.yaml", MINIMAL)
    with pytest.raises(ValueError, match="defined twice"):
        dags_from_folder(str(tmp_path))


@pytest.mark.parametrize("poke_interval", [None, "2"])
def test_the_demo_sensor_defers_instead_of_rescheduling_even_with_a_short_poke_interval(monkeypatch, poke_interval):
    """``reschedule`` with a short poke interval hits Airflow's reschedule race (apache/airflow#71172)."""
    if poke_interval is None:
        monkeypatch.delenv("DMSCDC_DEMO_POKE_INTERVAL", raising=False)
    else:
        monkeypatch.setenv("DMSCDC_DEMO_POKE_INTERVAL", poke_interval)

    config = load_source_config(str(DEMO_CONFIG))

    assert config.wait_for_changes.mode == "deferrable"
