"""``dmscdc mwaa-bundle``: dags/, plugins.zip and requirements.txt as MWAA takes them."""

from __future__ import annotations

import shutil
import zipfile
from importlib.metadata import version

from airflow_env import DAGS_FOLDER
from dmscdc_provider.cli import main


def test_bundle_has_dags_the_provider_package_and_constrained_requirements(tmp_path):
    dags = tmp_path / "dags"
    shutil.copytree(DAGS_FOLDER, dags)
    source = "raw: s3://dms/raw\nlake: s3://lake/lake\nstate: dynamodb://DMSCDC_Controller\n"
    (dags / "sources" / "sales.yaml").write_text(f"source: sales\n{source}engine: glue\n")
    (dags / "sources" / "hr.yaml").write_text(f"source: hr\n{source}engine: {{name: auto, spark_engine: glue}}\n")
    (dags / "sources" / "crm.yaml").write_text(f"source: crm\n{source}")  # auto, large tables on local Spark
    out = tmp_path / "bundle"

    assert main(["mwaa-bundle", "--out", str(out), "--dags", str(dags)]) == 0

    assert (out / "dags" / "dmscdc_sources.py").is_file()
    assert (out / "dags" / "sources" / "sales.yaml").is_file()
    assert (out / "dags" / "sources" / "hr.yaml").is_file()
    assert not (out / "dags" / "sources" / "crm.yaml").exists()
    # The demo source runs Spark in the worker, which MWAA has not.
    assert not (out / "dags" / "sources" / "demo.yaml").exists()
    with zipfile.ZipFile(out / "plugins.zip") as archive:
        names = set(archive.namelist())
    assert {"dmscdc_provider/__init__.py", "dmscdc_provider/get_provider_info.py",
            "dmscdc_provider/operators/merge.py", "dmscdc_provider/sensors/raw_files.py",
            "dmscdc_provider/triggers/raw_files.py", "dmscdc_provider/hooks/dmscdc.py",
            "dmscdc_provider/dag_factory/builder.py", ".airflowignore"} <= names
    assert not any("__pycache__" in name or name.startswith("dmscdc_spark") for name in names)
    lines = (out / "requirements.txt").read_text().splitlines()
    assert lines[0] == (f'--constraint "https://raw.githubusercontent.com/apache/airflow/'
                        f'constraints-{version("apache-airflow")}/constraints-3.11.txt"')
    assert "apache-airflow-providers-amazon" in lines
    assert not any(line.startswith("pyspark") for line in lines)


def test_bundle_constraints_follow_the_environment_airflow_version(tmp_path):
    assert main(["mwaa-bundle", "--out", str(tmp_path), "--airflow-version", "3.0.6"]) == 0

    assert "constraints-3.0.6/constraints-3.11.txt" in (tmp_path / "requirements.txt").read_text()
