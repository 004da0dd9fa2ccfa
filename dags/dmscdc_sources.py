"""One dmscdc DAG per source config in sources/ (see docs/airflow.md)."""

import os

from dmscdc_provider.dag_factory import dags_from_folder

SOURCES_FOLDER = os.environ.get("DMSCDC_SOURCES_DIR") or os.path.join(os.path.dirname(__file__), "sources")

globals().update(dags_from_folder(SOURCES_FOLDER))
