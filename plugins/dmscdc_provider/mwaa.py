"""``dmscdc mwaa-bundle``: what Amazon MWAA takes from its S3 bucket.

    <out>/dags/               the DAG file and its source YAML configs
    <out>/plugins.zip         the dmscdc_provider package (MWAA puts plugins/ on sys.path)
    <out>/requirements.txt    the provider's dependencies under Airflow's constraints file

MWAA workers run no Spark: the bundle leaves out the local engine's pyspark, and sources meant
for MWAA choose a remote engine (glue, emr, emr_serverless) in their YAML (docs/mwaa.md).
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import zipfile

import dmscdc_provider
from dmscdc_provider.dag_factory.config import load_source_config

log = logging.getLogger(__name__)

# MWAA's Airflow 3 environments run Python 3.11 (docs/mwaa.md).
MWAA_PYTHON = "3.11"
# What dmscdc_provider imports on an MWAA worker; MWAA brings Airflow and the Amazon provider,
# listing the provider here lets the constraints file pin the version MWAA was built with.
MWAA_REQUIREMENTS = ("apache-airflow-providers-amazon", "pyyaml")
# Airflow's plugin manager imports every .py under plugins/ looking for AirflowPlugin classes;
# dmscdc has none, and importing its CLI or demo modules there is wasted work on every parse.
PLUGINS_IGNORE = "dmscdc_provider/\n"


def constraints_url(airflow_version: str, python_version: str = MWAA_PYTHON) -> str:
    return (f"https://raw.githubusercontent.com/apache/airflow/constraints-{airflow_version}/"
            f"constraints-{python_version}.txt")


def default_dags_folder() -> str:
    """The repository's dags/ folder beside plugins/ (a source checkout or editable install)."""
    return os.path.normpath(os.path.join(os.path.dirname(dmscdc_provider.__file__), "..", "..", "dags"))


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def build_bundle(out: str, dags: str | None = None, airflow_version: str | None = None) -> list[str]:
    """Write the MWAA bundle into ``out``; returns the paths written.

    :param dags: the dags folder to ship (default: the repository's dags/).
    :param airflow_version: the MWAA environment's Airflow version (default: the installed one).
    """
    dags = dags or default_dags_folder()
    if not os.path.isdir(dags):
        raise FileNotFoundError(f"no dags folder at {dags}; pass --dags")
    airflow_version = airflow_version or _airflow_version()
    os.makedirs(out, exist_ok=True)

    dags_out = os.path.join(out, "dags")
    shutil.rmtree(dags_out, ignore_errors=True)
    shutil.copytree(dags, dags_out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for config_path in sorted(glob.glob(os.path.join(dags_out, "sources", "*.y*ml"))):
        if "local" in load_source_config(config_path).engine_config.engines:
            # MWAA workers have no Spark; such a source would fail there on every run.
            os.remove(config_path)
            log.warning("left out %s: it merges with local Spark; on MWAA use engine duckdb, or auto "
                        "with spark_engine glue, emr or emr_serverless", os.path.basename(config_path))

    plugins_zip = os.path.join(out, "plugins.zip")
    package_root = os.path.dirname(dmscdc_provider.__file__)
    with zipfile.ZipFile(plugins_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(".airflowignore", PLUGINS_IGNORE)
        for folder, subfolders, names in os.walk(package_root):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            for name in sorted(names):
                if name.endswith((".py", ".typed", ".json")):
                    path = os.path.join(folder, name)
                    archive.write(path, os.path.join("dmscdc_provider", os.path.relpath(path, package_root)))

    requirements = os.path.join(out, "requirements.txt")
    with open(requirements, "w", encoding="utf-8") as handle:
        handle.write(f'--constraint "{constraints_url(airflow_version)}"\n')
        handle.write("\n".join(MWAA_REQUIREMENTS) + "\n")
    return [dags_out, plugins_zip, requirements]


if __name__ == "__main__":
    print("\n".join(build_bundle(sys.argv[1])))
