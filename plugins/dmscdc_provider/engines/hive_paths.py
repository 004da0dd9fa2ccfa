"""Hive partition folder names exactly as Spark writes and reads them.

Both engines write the same table, so a partition value must map to the same folder whichever
engine wrote it (``dept=a%2Fb``, ``day=2024-03-01``, ``__HIVE_DEFAULT_PARTITION__`` for null
and the empty string), and a folder written by either must read back as the same value.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pyarrow as pa

DEFAULT_PARTITION_NAME = "__HIVE_DEFAULT_PARTITION__"

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


def value_text(value) -> str | None:
    """A partition value as Spark casts it to a string (None for null)."""
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
        return _java_double_text(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _java_double_text(value: float) -> str:
    """Java's ``Double.toString``: plain between 1e-3 and 1e7, else ``1.0E10`` style."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        text = repr(value)
        return text if "." in text else text + ".0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()  # repr: the shortest exact digits
    text = "".join(map(str, digits)).rstrip("0") or "0"
    scientific_exponent = len(digits) + exponent - 1
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{scientific_exponent}"


def folder(column: str, value) -> str:
    """``column=value`` for one partition level."""
    text = value_text(value)
    return f"{escape(column)}={DEFAULT_PARTITION_NAME if not text else escape(text)}"


def parse_folders(relative_path: str) -> dict[str, str | None]:
    """The ``column=value`` folders of a file's relative path, values as text (None for null)."""
    values = {}
    for part in relative_path.split("/")[:-1]:
        name, sep, text = part.partition("=")
        if sep:
            text = unescape(text)
            values[unescape(name)] = None if text == DEFAULT_PARTITION_NAME else text
    return values


def typed_value(text: str | None, data_type: pa.DataType):
    """A partition value read from its folder, cast to the column's type as Spark casts it."""
    if text is None:
        return None
    if pa.types.is_timestamp(data_type) and data_type.tz:
        # The folder holds the instant's UTC time without an offset (``value_text``), which
        # Arrow parses only as a timestamp without zone; read so, it is the same instant.
        return pa.scalar(text, pa.string()).cast(pa.timestamp(data_type.unit)).cast(data_type).as_py()
    return pa.scalar(text, pa.string()).cast(data_type).as_py()
