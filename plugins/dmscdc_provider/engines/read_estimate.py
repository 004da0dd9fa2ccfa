"""What a merge must read, estimated from file sizes and Parquet footers (no data is read).

- A full load reads its planned files (the LOAD files, then the CDC files after them); it
  replaces the lake table without reading it. A table without a primary key only appends.
- An incremental merge reads its CDC files plus the lake files it rewrites: those whose key
  range, per the lake file's footer, overlaps the CDC files' key range, per their footers (the
  range pruning the Spark merge pushes into its Parquet reader). A CSV CDC file has no footer,
  so its keys may be anywhere and every lake file counts. A key column that is a partition
  column rules out folders by their values, as both engines do. The estimate never
  undercounts what that pruning keeps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from dmscdc_provider.engines import hive_paths
from dmscdc_provider.plan import TablePlan
from dmscdc_provider.report import format_size
from dmscdc_provider.storage import open_storage
from dmscdc_provider.table_formats import table_format_for_plan

if TYPE_CHECKING:
    from dmscdc_provider.arrow_fs import ArrowFiles
    from dmscdc_provider.table_formats import LakeFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadEstimate:
    """What a merge must read, from file sizes and Parquet footers.

    :param planned_bytes: the plan's files (LOAD and CDC).
    :param lake_bytes: the lake files the merge rewrites.
    :param lake_files_read: how many lake files that is.
    :param lake_files: how many files the lake table has (None: not looked at).
    :param stopped_early: the estimate stopped once it passed the threshold.
    """

    planned_bytes: int
    lake_bytes: int = 0
    lake_files_read: int = 0
    lake_files: int | None = None
    stopped_early: bool = False

    @property
    def total(self) -> int:
        return self.planned_bytes + self.lake_bytes

    def describe(self, plan: TablePlan) -> str:
        """``20.3 MiB to read (0.9 MiB of CDC files + 19.4 MiB in 2 of 40 lake files)``."""
        kinds = sorted({f["kind"].upper() for f in plan.files})  # CDC, LOAD
        files = f"{' and '.join(reversed(kinds))} files"
        more = "more than " if self.stopped_early else ""
        if self.lake_files is None:
            return f"{more}{format_size(self.total)} of {files} to read"
        return (f"{more}{format_size(self.total)} to read ({format_size(self.planned_bytes)} of {files} + "
                f"{format_size(self.lake_bytes)} in {self.lake_files_read} of {self.lake_files} lake files)")


KeyRange = tuple[object, object]


def _footer_ranges(metadata: pq.FileMetaData, columns: list[str]) -> dict[str, KeyRange]:
    """Per column, (min, max) over every row group, for the columns whose every row group has
    statistics; columns without them are left out (their values may be anything)."""
    positions = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    ranges: dict[str, KeyRange] = {}
    for column in columns:
        if column not in positions or metadata.num_row_groups == 0:
            continue
        lows, highs = [], []
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(positions[column]).statistics
            if statistics is None or not statistics.has_min_max:
                break
            lows.append(statistics.min)
            highs.append(statistics.max)
        else:
            try:
                ranges[column] = (min(lows), max(highs))
            except TypeError:
                continue
    return ranges


def _disjoint(a: KeyRange, b: KeyRange) -> bool:
    """True only when the two ranges certainly share no value (incomparable types: they may)."""
    try:
        return a[1] < b[0] or b[1] < a[0]
    except TypeError:
        return False


def _footer(files: "ArrowFiles", uri: str) -> pq.FileMetaData | None:
    try:
        with files.open_input(uri) as handle:
            return pq.read_metadata(handle)
    except (OSError, pa.ArrowException) as error:
        # The merge reads this file too and reports it with its remedy; the estimate only
        # cannot use its footer.
        log.info("cannot read the Parquet footer of %s (%s); counting it as unbounded", uri, error)
        return None


def changed_key_ranges(plan: TablePlan, files: "ArrowFiles") -> tuple[dict[str, KeyRange], dict[str, pa.DataType]]:
    """The range of each key column over the plan's CDC files, from their footers, and the key
    columns' types; a key column missing from the ranges is unbounded (a CSV file, or a footer
    without statistics)."""
    combined: dict[str, KeyRange] | None = None
    key_types: dict[str, pa.DataType] = {}
    for entry in plan.files:
        metadata = _footer(files, entry["path"]) if entry["path"].endswith(".parquet") else None
        ranges = {}
        if metadata is not None:
            ranges = _footer_ranges(metadata, plan.primary_key)
            schema = metadata.schema.to_arrow_schema()
            key_types.update({k: schema.field(k).type for k in plan.primary_key
                              if k in schema.names and k not in key_types})
        if combined is None:
            combined = ranges
            continue
        merged = {}
        for column, (low, high) in ranges.items():
            if column in combined:
                try:
                    merged[column] = (min(low, combined[column][0]), max(high, combined[column][1]))
                except TypeError:
                    pass
        combined = merged
    return combined or {}, key_types


def _outside_by_folder(lake_file: "LakeFile", changed: dict[str, KeyRange], key_types: dict[str, pa.DataType]) -> bool:
    """A key column that is a partition column: its folder value, outside the changed range,
    rules the file out without opening it."""
    for column, text in lake_file.partition_text.items():
        if column not in changed or column not in key_types:
            continue
        try:
            value = hive_paths.typed_value(text, key_types[column], in_primary_key=True)
        except pa.ArrowException:
            continue
        if value is None or _disjoint((value, value), changed[column]):
            return True
    return False


def estimate_read_bytes(
    plan: TablePlan,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
    stop_above: int | None = None,
) -> ReadEstimate:
    """The bytes ``plan``'s merge reads, from sizes and Parquet footers only.

    :param stop_above: stop reading lake footers once the total passes this many bytes.
    """
    from dmscdc_provider.arrow_fs import ArrowFiles

    planned = sum(int(f.get("size") or 0) for f in plan.files)
    if plan.mode == "full" or not plan.primary_key:
        # A full load replaces the table without reading it; a table without a key only appends.
        return ReadEstimate(planned)
    if stop_above is not None and planned > stop_above:
        return ReadEstimate(planned, stopped_early=True)
    files = ArrowFiles(aws_conn_id, region_name)
    changed, key_types = changed_key_ranges(plan, files)
    try:
        lake_files = table_format_for_plan(plan, open_storage(plan.lake_root, aws_conn_id, region_name),
                                           aws_conn_id=aws_conn_id, region_name=region_name).data_files(plan)
    except OSError as error:
        log.info("cannot list %s (%s); counting no lake files", plan.lake_table_path, error)
        lake_files = []
    root = plan.lake_table_path.rstrip("/")
    lake_bytes, read = 0, 0
    for lake_file in lake_files:
        if stop_above is not None and planned + lake_bytes > stop_above:
            return ReadEstimate(planned, lake_bytes, read, len(lake_files), stopped_early=True)
        if changed and _outside_by_folder(lake_file, changed, key_types):
            continue
        metadata = _footer(files, f"{root}/{lake_file.relative_path}") if changed else None
        if metadata is not None:
            ranges = _footer_ranges(metadata, list(changed))
            if any(_disjoint(ranges[c], changed[c]) for c in changed if c in ranges):
                continue
        lake_bytes += lake_file.size
        read += 1
    return ReadEstimate(planned, lake_bytes, read, len(lake_files))
