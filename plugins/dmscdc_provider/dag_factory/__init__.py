"""Build one dmscdc DAG per source from YAML configs (``dags/sources/*.yaml``)."""

from dmscdc_provider.dag_factory.builder import build_source_dag, dags_from_folder
from dmscdc_provider.dag_factory.config import SourceConfig, SourceConfigError, load_source_config

__all__ = ["SourceConfig", "SourceConfigError", "build_source_dag", "dags_from_folder", "load_source_config"]
