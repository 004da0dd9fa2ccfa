"""``dmscdc mwaa-bundle``: what Amazon MWAA takes from its S3 bucket.

    <out>/dags/               the DAG file and the source YAML configs (dags/sources/)
    <out>/plugins.zip         the dmscdc_provider package and the dmscdc_spark job package
                              (MWAA extracts it into the plugins folder, which is on sys.path)
    <out>/requirements.txt    what the provider imports, under Airflow's constraints file

MWAA workers run no Spark: sources meant for MWAA choose a remote engine (glue, emr,
emr_serverless) in their YAML (docs/mwaa.md); the remote engines upload the ``dmscdc_spark``
package from the plugins folder as the Spark job's files (importing it imports no pyspark).
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import zipfile

import dmscdc_provider
import dmscdc_spark
from dmscdc_provider import OLDEST_SUPPORTED_AIRFLOW
from dmscdc_provider.dag_factory.config import load_source_config

log = logging.getLogger(__name__)

# MWAA's Airflow 3 environments run Python 3.11 (docs/mwaa.md).
MWAA_PYTHON = "3.11"
# What the provider imports on an MWAA worker beyond Airflow itself: the Amazon provider (MWAA
# has it; listing it lets the constraints file pin MWAA's version), YAML configs, and the
# in-process pieces (pyarrow for Glue catalog schemas and S3 file systems, duckdb), and pyiceberg
# for Iceberg tables in the Glue Data Catalog. Not its sql-sqlite extra: MWAA's catalog is Glue,
# and that extra wants SQLAlchemy 2, which older Airflow constraints (1.4) cannot install.
ICEBERG_REQUIREMENT = "pyiceberg[pyarrow,glue]>=0.12,<0.13"
MWAA_REQUIREMENTS = ("apache-airflow-providers-amazon", "pyyaml", "pyarrow", "duckdb", ICEBERG_REQUIREMENT)
# The packages plugins.zip carries.
PLUGIN_PACKAGES = (dmscdc_provider, dmscdc_spark)
# Airflow's plugin manager imports every .py under plugins/ looking for AirflowPlugin classes;
# importing all of dmscdc's modules there is wasted work on every parse (and the Spark job's
# modules import pyspark, which MWAA has not), so the packages are ignored and one small module
# at the top of plugins.zip hands it dmscdc's plugin (the freshness page, docs/observability.md).
PLUGINS_IGNORE = "dmscdc_provider/\ndmscdc_spark/\n"
PLUGIN_MODULE = ("dmscdc_plugin.py", '"""dmscdc\'s Airflow plugin: the freshness page under /dmscdc."""\n\n'
                 "from dmscdc_provider.observability.web import DmsCdcFreshnessPlugin  # noqa: F401\n")
SOURCE_PATTERNS = ("*.yaml", "*.yml")
# The engine that needs Spark in the worker; every other engine runs remotely or in-process.
WORKER_SPARK_ENGINE = "local"


def constraints_url(airflow_version: str, python_version: str = MWAA_PYTHON) -> str:
    return (f"https://raw.githubusercontent.com/apache/airflow/constraints-{airflow_version}/"
            f"constraints-{python_version}.txt")


def default_dags_folder() -> str:
    """The repository's dags/ folder beside plugins/ (a source checkout or editable install)."""
    return os.path.normpath(os.path.join(os.path.dirname(dmscdc_provider.__file__), "..", "..", "dags"))


def build_bundle(out: str, dags: str | None = None, sources: str | None = None,
                 airflow_version: str = OLDEST_SUPPORTED_AIRFLOW) -> list[str]:
    """Write the MWAA bundle into ``out``; returns the paths written.

    :param dags: the dags folder to ship (default: the repository's dags/).
    :param sources: a folder of source YAML configs to ship as dags/sources/, instead of the
        dags folder's own.
    :param airflow_version: the MWAA environment's Airflow version, for the constraints line.
    """
    dags = dags or default_dags_folder()
    if not os.path.isdir(dags):
        raise FileNotFoundError(f"no dags folder at {dags}; pass --dags")
    if sources is not None and not os.path.isdir(sources):
        raise FileNotFoundError(f"no sources folder at {sources}")
    os.makedirs(out, exist_ok=True)

    dags_out = os.path.join(out, "dags")
    shutil.rmtree(dags_out, ignore_errors=True)
    shutil.copytree(dags, dags_out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    sources_out = os.path.join(dags_out, "sources")
    if sources is not None:
        shutil.rmtree(sources_out, ignore_errors=True)
        os.makedirs(sources_out)
        for path in _source_files(sources):
            shutil.copy2(path, sources_out)
    shipped = []
    for config_path in _source_files(sources_out):
        if WORKER_SPARK_ENGINE not in load_source_config(config_path).engine_config.engines:
            shipped.append(config_path)
            continue
        # MWAA workers have no Spark; such a source would fail there on every run.
        os.remove(config_path)
        log.warning("left out %s: it merges with local Spark; on MWAA use engine duckdb, or auto "
                    "with spark_engine glue, emr or emr_serverless", os.path.basename(config_path))
    if not shipped:
        log.warning("no source for MWAA in %s: the bundle's DAG file makes no DAG", sources or dags)

    plugins_zip = os.path.join(out, "plugins.zip")
    with zipfile.ZipFile(plugins_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(".airflowignore", PLUGINS_IGNORE)
        archive.writestr(*PLUGIN_MODULE)
        for package in PLUGIN_PACKAGES:
            _add_package(archive, package)

    requirements = os.path.join(out, "requirements.txt")
    with open(requirements, "w", encoding="utf-8") as handle:
        handle.write(f'--constraint "{constraints_url(airflow_version)}"\n')
        handle.write("\n".join(MWAA_REQUIREMENTS) + "\n")
    return [dags_out, plugins_zip, requirements]


def _source_files(folder: str) -> list[str]:
    return sorted(path for pattern in SOURCE_PATTERNS for path in glob.glob(os.path.join(folder, pattern)))


def _add_package(archive: zipfile.ZipFile, package) -> None:
    package_root = os.path.dirname(package.__file__)
    name = package.__name__
    for folder, subfolders, names in os.walk(package_root):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for file_name in sorted(names):
            if file_name.endswith((".py", ".typed", ".json", ".properties")):
                path = os.path.join(folder, file_name)
                archive.write(path, os.path.join(name, os.path.relpath(path, package_root)))


if __name__ == "__main__":
    print("\n".join(build_bundle(sys.argv[1])))
