"""Write files the way an AWS DMS S3 target does, for the demo, the benchmark and tests.

Parquet files follow the blog's endpoint settings (``includeOpForFullLoad=true``,
``parquetTimestampInMillisecond=true``); CSV files follow DMS's defaults: a header row
(``addColumnName=true``), ``,`` as delimiter, ``NULL`` for nulls (``csvNullValue``) unless told
otherwise, and ``Rfc4180=true`` quoting: a value holding a double quote, the delimiter or a line
break (``\n`` or ``\r``) is enclosed in double quotes with every inner quote doubled; every other
value, the empty string and the null marker included, is written as it is.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

Row = dict


def load_file_name(counter: int, extension: str = "parquet") -> str:
    """``LOAD00000001.parquet``: DMS counts full-load files in hexadecimal."""
    return f"LOAD{counter:08X}.{extension}"


def cdc_file_name(moment: datetime, fraction_digits: int = 3, extension: str = "parquet") -> str:
    """``20240301-100101856.parquet``: the batch time in UTC with ``fraction_digits`` sub-second digits."""
    moment = moment.astimezone(timezone.utc)
    fraction = f"{moment.microsecond:06d}".ljust(fraction_digits, "0")[:fraction_digits]
    return f"{moment:%Y%m%d-%H%M%S}{fraction}.{extension}"


def date_folder(moment: datetime, sequence: str = "YYYYMMDD", delimiter: str = "/") -> str:
    """The folder ``DatePartitionEnabled`` puts CDC files in (``2024/03/01`` by default)."""
    moment = moment.astimezone(timezone.utc)
    parts = {
        "YYYYMMDD": [f"{moment:%Y}", f"{moment:%m}", f"{moment:%d}"],
        "YYYYMMDDHH": [f"{moment:%Y}", f"{moment:%m}", f"{moment:%d}", f"{moment:%H}"],
        "YYYYMM": [f"{moment:%Y}", f"{moment:%m}"],
        "MMYYYYDD": [f"{moment:%m}", f"{moment:%Y}", f"{moment:%d}"],
        "DDMMYYYY": [f"{moment:%d}", f"{moment:%m}", f"{moment:%Y}"],
    }[sequence]
    return delimiter.join(parts)


def write_dms_file(
    path: str,
    rows: Sequence[Row],
    schema: pa.Schema,
    *,
    with_op: bool = True,
    csv_delimiter: str = ",",
    csv_null_value: str = "NULL",
    modified: datetime | None = None,
    row_group_size: int | None = None,
) -> str:
    """Write ``rows`` (dicts with ``Op`` when ``with_op``) as DMS would, Parquet or CSV by extension.

    :param schema: the source columns (without ``Op``).
    :param modified: the file's last-modified time (DMS's LOAD time matters for reloads).
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fields = ([pa.field("Op", pa.string())] if with_op else []) + list(schema)
    full_schema = pa.schema(fields)
    if path.endswith((".csv", ".csv.gz")):  # compressionType=GZIP adds .gz
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "wt", newline="", encoding="utf-8") as handle:
            handle.write(_csv_line(full_schema.names, csv_delimiter))
            for row in rows:
                handle.write(_csv_line([_csv_value(row.get(name), csv_null_value) for name in full_schema.names],
                                       csv_delimiter))
    else:
        table = pa.Table.from_pylist([{n: row.get(n) for n in full_schema.names} for row in rows], full_schema)
        pq.write_table(table, path, row_group_size=row_group_size)
    if modified is not None:
        stamp = modified.timestamp()
        os.utime(path, (stamp, stamp))
    return path


def _csv_line(values: Sequence[str], delimiter: str) -> str:
    # Not the csv module: it leaves a lone "\r" unquoted, where DMS quotes every line break.
    return delimiter.join(_rfc4180_field(value, delimiter) for value in values) + "\n"


def _rfc4180_field(value: str, delimiter: str) -> str:
    if any(special in value for special in ('"', delimiter, "\n", "\r")):
        return '"' + value.replace('"', '""') + '"'
    return value


def _csv_value(value, null_value: str) -> str:
    if value is None:
        return null_value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return str(value)
