"""Provider metadata, found by Airflow through the ``apache_airflow_provider`` entry point."""

from dmscdc_provider import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "dmscdc",
        "name": "dmscdc",
        "description": "Keeps a Parquet data lake in sync with relational databases through AWS DMS.",
        "versions": [__version__],
    }
