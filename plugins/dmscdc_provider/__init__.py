"""dmscdc: keep a Parquet data lake in sync with relational databases through AWS DMS."""

__version__ = "0.1.0"
