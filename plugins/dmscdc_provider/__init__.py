"""dmscdc: keep a Parquet data lake in sync with relational databases through AWS DMS."""

__version__ = "0.1.0"

# The oldest Airflow 3 that Amazon MWAA offers; dmscdc supports it through the newest
# (requirements.txt pins the newest for the project's own environment).
OLDEST_SUPPORTED_AIRFLOW = "3.0.6"
