"""Hive partition folder names exactly as Spark writes and reads them.

Both engines write the same table, so a partition value must map to the same folder whichever
engine wrote it (``dept=a%2Fb``, ``day=2024-03-01``, ``x=-0.0`` apart from ``x=0.0``,
``__HIVE_DEFAULT_PARTITION__`` for null and the empty string), and a folder written by either
must read back as the same value. A primary key is never null (the input check refuses one), so
the default folder of a primary-key column holds the empty string; elsewhere it reads as null,
as every reader of a Hive folder reads it (docs/merge-semantics.md, "Partition values").
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pyarrow as pa

DEFAULT_PARTITION_NAME = "__HIVE_DEFAULT_PARTITION__"
# The longest name a file system gives one folder (ext4, xfs, APFS, NTFS: 255 bytes). S3 keys
# allow longer ones, but a table must work wherever its lake is (a local lake, Hadoop's tools).
MAX_FOLDER_NAME_BYTES = 255

# Spark's ExternalCatalogUtils.charToEscape (the POSIX set; Windows adds a few more).
_ESCAPED = set(chr(code) for code in range(0x01, 0x20)) | set('"#%\'*/:=?\\\x7f{[]^')


def escape(text: str) -> str:
    return "".join(f"%{ord(char):02X}" if char in _ESCAPED else char for char in text)


def unescape(text: str) -> str:
    out, index = [], 0
    while index < len(text):
        char = text[index]
        if char == "%" and _is_hex(text[index + 1:index + 3]):
            out.append(chr(int(text[index + 1:index + 3], 16)))
            index += 3
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def value_text(value, data_type: pa.DataType | None = None) -> str | None:
    """A partition value as Spark casts it to a string (None for null).

    :param data_type: the column's type, where the value alone does not tell it (a ``float``
        column's values arrive as Python floats but print as Java prints a float).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        # Spark prints timestamps in the session time zone; the in-process engine's is UTC.
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}".rstrip("0")
        return text
    if isinstance(value, float):
        single = data_type is not None and pa.types.is_float32(data_type)
        return _java_floating_text(value, _shortest_float32(value) if single else repr(value))
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _shortest_float32(value: float) -> str:
    """The fewest decimal digits that read back as the same 32-bit float."""
    candidates = [f"{value:.{digits}g}" for digits in range(1, 10)]
    # Arrow rounds to the nearest 32-bit float as a reader does (up to the largest float too).
    singles = pa.array([float(text) for text in candidates], pa.float64()).cast(pa.float32(), safe=False)
    single = pa.array([value], pa.float64()).cast(pa.float32(), safe=False)[0]
    return next(text for text, parsed in zip(candidates, singles) if parsed == single)


def _java_floating_text(value: float, shortest: str) -> str:
    """Java's ``Double.toString`` / ``Float.toString`` of ``value`` from its shortest exact
    digits (``repr`` for a double): plain between 1e-3 and 1e7, else ``1.0E10`` style."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if len(Decimal(shortest).as_tuple().digits) == 1:
        # Java prints two digits at least, the pair closest to the value (``4.9E-324``, not 5).
        shortest = f"{value:.2g}"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        text = format(Decimal(shortest), "f")
        return text if "." in text else text + ".0"
    sign, digits, exponent = Decimal(shortest).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    scientific_exponent = len(digits) + exponent - 1
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{scientific_exponent}"


def folder(column: str, value, data_type: pa.DataType | None = None) -> str:
    """``column=value`` for one partition level (``data_type``: see ``value_text``)."""
    text = value_text(value, data_type)
    return f"{escape(column)}={DEFAULT_PARTITION_NAME if not text else escape(text)}"


def partition_folders(relative_path: str) -> str:
    """The ``column=value`` folders of a file's relative path, as they are named (escaped)."""
    return "/".join(part for part in relative_path.split("/")[:-1] if "=" in part)


def parse_folders(relative_path: str) -> dict[str, str | None]:
    """The ``column=value`` folders of a file's relative path, values as text (None for the
    default folder: see ``typed_value``)."""
    values = {}
    for part in relative_path.split("/")[:-1]:
        name, sep, text = part.partition("=")
        if sep:
            values[unescape(name)] = None if text == DEFAULT_PARTITION_NAME else unescape(text)
    return values


def typed_value(text: str | None, data_type: pa.DataType, *, in_primary_key: bool = False):
    """A partition value read from its folder, cast to the column's type as Spark casts it.

    :param in_primary_key: the column is part of the primary key: its default folder holds the
        empty string (a key is never null), which a merge must match and write back.
    """
    if text is None:
        text_type = pa.types.is_string(data_type) or pa.types.is_large_string(data_type)
        return "" if in_primary_key and text_type else None
    if pa.types.is_timestamp(data_type) and data_type.tz:
        # The folder holds the instant's UTC time without an offset (``value_text``), which
        # Arrow parses only as a timestamp without zone; read so, it is the same instant.
        return pa.scalar(text, pa.string()).cast(pa.timestamp(data_type.unit)).cast(data_type).as_py()
    return pa.scalar(text, pa.string()).cast(data_type).as_py()


def folder_problem(column: str, text: str) -> str | None:
    """Why the string ``text`` cannot be ``column``'s partition value, or None when it can: a
    folder name holds no NUL, is at most ``MAX_FOLDER_NAME_BYTES`` long, and the default
    folder's name stands for null."""
    if "\x00" in text:
        return "holds a NUL character, which no file system allows in a folder name"
    if text == DEFAULT_PARTITION_NAME:
        return "is the name of Hive's null partition folder, which every reader reads as null"
    size = len(folder(column, text).encode("utf-8"))
    if size > MAX_FOLDER_NAME_BYTES:
        return (f"would make a folder name of {size} bytes (escaped as Spark escapes it); a file system "
                f"allows {MAX_FOLDER_NAME_BYTES}")
    return None
