"""DMS file names and their order (docs: shared DMS S3 target facts, docs/merge-semantics.md).

Full load: ``LOAD00000001.parquet`` ... with a hexadecimal counter (``LOAD00000009`` is
followed by ``LOAD0000000A``), or ``LOAD_<segment>_<counter>`` with parallel load.
CDC: ``YYYYMMDD-HHMMSS<fraction>.<ext>``, where the number of fraction digits varies, possibly
under date folders (``2024/03/01/``, ``20240301/``, ``2024-03-01/`` ...). Order is decided by
the name, never by the folder, the listing order or string comparison of whole paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

DATA_SUFFIXES = (".parquet", ".csv", ".csv.gz")

_LOAD_NAME = re.compile(r"^LOAD(?:_(?P<segment>[0-9A-Za-z]+)_)?(?P<counter>[0-9A-Fa-f]+)$")
_CDC_NAME = re.compile(r"^(?P<date>\d{8})-(?P<time>\d{6})(?P<fraction>\d*)$")
# Fractions are padded to this many digits so names of different precision compare as numbers.
_FRACTION_DIGITS = 12


@dataclass(frozen=True)
class DmsFile:
    """A raw file DMS wrote for a table.

    :param path: full path or URI of the file.
    :param name: file name without folders.
    :param kind: ``load`` (full load) or ``cdc`` (ongoing changes).
    :param size: size in bytes.
    :param modified: last-modified time (UTC); decides whether a LOAD file is a new full load.
    """

    path: str
    name: str
    kind: str
    size: int
    modified: datetime

    @property
    def sort_key(self) -> tuple:
        return dms_sort_key(self.name)

    @property
    def cdc_time(self) -> datetime | None:
        """The UTC time in a CDC file's name."""
        if self.kind != "cdc":
            return None
        return cdc_name_time(self.name)


def strip_suffix(name: str) -> str | None:
    for suffix in DATA_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def classify(name: str) -> str | None:
    """``load``, ``cdc`` or None (not a DMS data file: ignored)."""
    stem = strip_suffix(name)
    if stem is None:
        return None
    if _LOAD_NAME.match(stem):
        return "load"
    if _CDC_NAME.match(stem):
        return "cdc"
    return None


def dms_sort_key(name: str) -> tuple:
    """Sort key: LOAD files first by segment and hex counter, then CDC files by name time."""
    stem = strip_suffix(name) or name
    load = _LOAD_NAME.match(stem)
    if load:
        return (0, load.group("segment") or "", int(load.group("counter"), 16), name)
    cdc = _CDC_NAME.match(stem)
    if cdc:
        fraction = cdc.group("fraction").ljust(_FRACTION_DIGITS, "0")
        return (1, cdc.group("date") + cdc.group("time"), fraction, name)
    raise ValueError(f"{name} is not a DMS LOAD or CDC file name")


def cdc_name_time(name: str) -> datetime:
    stem = strip_suffix(name) or name
    match = _CDC_NAME.match(stem)
    if not match:
        raise ValueError(f"{name} is not a DMS CDC file name")
    fraction = match.group("fraction")[:6].ljust(6, "0")
    return datetime.strptime(
        match.group("date") + match.group("time") + fraction, "%Y%m%d%H%M%S%f"
    ).replace(tzinfo=timezone.utc)


def file_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
