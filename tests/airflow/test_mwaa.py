"""``dmscdc mwaa-bundle``: dags/, plugins.zip and requirements.txt as MWAA takes them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

from airflow_env import DAGS_FOLDER
from dmscdc_provider import OLDEST_SUPPORTED_AIRFLOW
from dmscdc_provider.cli import main

GLUE_SOURCE = "source: sales\nraw: s3://dms/raw\nlake: s3://lake/lake\nstate: dynamodb://DMSCDC_Controller\nengine: glue\n"


def test_bundle_has_dags_both_packages_and_constrained_requirements(tmp_path):
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
        ignored = archive.read(".airflowignore").decode().split()
    assert {"dmscdc_provider/__init__.py", "dmscdc_provider/get_provider_info.py",
            "dmscdc_provider/operators/merge.py", "dmscdc_provider/sensors/raw_files.py",
            "dmscdc_provider/triggers/raw_files.py", "dmscdc_provider/hooks/dmscdc.py",
            "dmscdc_provider/dag_factory/builder.py", ".airflowignore",
            # The Spark job's package: the remote engines upload it from the plugins folder.
            "dmscdc_spark/__init__.py", "dmscdc_spark/job.py", "dmscdc_spark/submit.py",
            "dmscdc_spark/glue_entry.py"} <= names
    assert ignored == ["dmscdc_provider/", "dmscdc_spark/"]
    assert not any("__pycache__" in name for name in names)
    lines = (out / "requirements.txt").read_text().splitlines()
    # Without --airflow-version: the oldest Airflow the project supports, never the build machine's.
    assert lines[0] == (f'--constraint "https://raw.githubusercontent.com/apache/airflow/'
                        f'constraints-{OLDEST_SUPPORTED_AIRFLOW}/constraints-3.11.txt"')
    assert {"apache-airflow-providers-amazon", "pyyaml", "pyarrow", "duckdb"} <= set(lines)
    assert not any(line.startswith("pyspark") for line in lines)


def test_bundle_requires_pyiceberg_with_glue_in_the_range_the_project_installs(tmp_path):
    """Iceberg tables on MWAA: pyiceberg with its pyarrow and glue extras, in the version range
    pyproject.toml installs (not its sql-sqlite extra, which wants SQLAlchemy 2)."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    assert main(["mwaa-bundle", "--out", str(tmp_path)]) == 0

    lines = (tmp_path / "requirements.txt").read_text().splitlines()
    shipped = [Requirement(line) for line in lines[1:] if line.startswith("pyiceberg")]
    assert len(shipped) == 1 and shipped[0].extras == {"pyarrow", "glue"}
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    installed = next(Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("pyiceberg"))
    assert shipped[0].specifier == installed.specifier


def test_bundle_constraints_follow_the_environment_airflow_version(tmp_path):
    assert main(["mwaa-bundle", "--out", str(tmp_path), "--airflow-version", "3.3.2"]) == 0

    assert "constraints-3.3.2/constraints-3.11.txt" in (tmp_path / "requirements.txt").read_text()


def test_bundle_ships_the_users_sources_folder_and_leaves_out_local_engines(tmp_path):
    sources = tmp_path / "my-sources"
    sources.mkdir()
    (sources / "sales.yaml").write_text(GLUE_SOURCE)
    (sources / "hr.yml").write_text(GLUE_SOURCE.replace("sales", "hr").replace("glue", "emr_serverless"))
    (sources / "laptop.yaml").write_text(GLUE_SOURCE.replace("sales", "laptop").replace("glue", "local"))
    out = tmp_path / "bundle"

    assert main(["mwaa-bundle", "--out", str(out), "--sources", str(sources)]) == 0

    assert sorted(p.name for p in (out / "dags" / "sources").iterdir()) == ["hr.yml", "sales.yaml"]
    assert (out / "dags" / "dmscdc_sources.py").is_file()


def test_spark_job_files_come_from_the_bundle_without_pyspark(tmp_path):
    assert main(["mwaa-bundle", "--out", str(tmp_path), "--sources", str(tmp_path)]) == 0
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(tmp_path / "plugins.zip").extractall(plugins)
    # pyspark and the project checkout made unimportable: the worker MWAA builds has neither.
    script = (
        "import sys; sys.modules['pyspark'] = None; sys.modules['py4j'] = None; "
        f"sys.path = [{str(plugins)!r}] + [p for p in sys.path if 'include' not in p and 'plugins' not in p]; "
        "import dmscdc_spark; from dmscdc_provider.aws.artifacts import library_files; "
        "files = library_files(); "
        "print(dmscdc_spark.__file__); print(sorted(files)[:1]); print('pyspark' in sys.modules and sys.modules['pyspark'] is not None)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    module_file, first_file, pyspark_imported = done.stdout.splitlines()
    assert module_file.startswith(str(plugins))
    assert first_file == "['dmscdc_spark/__init__.py']"
    assert pyspark_imported == "False"


def test_airflow_finds_the_freshness_page_plugin_in_the_bundles_plugins_folder(tmp_path):
    from airflow_env import run_airflow

    assert main(["mwaa-bundle", "--out", str(tmp_path), "--sources", str(tmp_path)]) == 0
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(tmp_path / "plugins.zip").extractall(plugins)

    listed = run_airflow(["plugins", "--output", "json"], {"AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins)})

    assert listed.returncode == 0, listed.stderr[-3000:]
    [dmscdc] = [plugin for plugin in json.loads(listed.stdout) if plugin["name"] == "dmscdc"]
    assert "/dmscdc" in str(dmscdc["fastapi_apps"])
