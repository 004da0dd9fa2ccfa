"""Differential check: every engine that runs here, in both table formats, merges the same seeded
random DMS input into a lake of its own; after every run the lakes of one table format agree value
for value and type for type (the Arrow schema a reader reads), and every lake equals the source
model of ``test_randomized``.

The input covers what DMS writes: integers of every width (unsigned ones too), float and double
with NaN, -0.0 and infinities, decimal(38,10), text with '' and unicode and quotes and line
breaks, binary, booleans, dates, timestamps with and without time zone; odd column names; integer,
composite and text primary keys; partition keys of several types (a timestamp, and one that is also
a key column); a column added later, one the source stops sending and an int that widens to
bigint; LOAD files with and without ``Op``; reloads; an ordering column with ties; a CSV table
(delimiter, null marker and gzip vary by seed). The in-process engine also runs in a process whose
time zone is not UTC.

More seeds: ``DMSCDC_DIFFERENTIAL_SEEDS=20 pytest tests/core/test_engine_differential.py``.
Inputs that meet defects not fixed yet stay off unless named in ``DMSCDC_DIFFERENTIAL_CASES``
(a comma list of ``KNOWN_DEFECT_CASES`` names, or ``all``).
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmscdc_provider.engines import hive_paths
from dmscdc_provider.engines.arrow_schema import spark_view

from tests.core.harness import START, LakeHarness
from tests.core.test_randomized import SourceModel

# Each seed costs a dozen Spark merges: one seed by default.
SEEDS = range(int(os.environ.get("DMSCDC_DIFFERENTIAL_SEEDS", "1")))
TABLE_FORMATS = ("parquet", "iceberg")

# Inputs the model does not follow yet: the generator makes them only when the case is named in
# DMSCDC_DIFFERENTIAL_CASES ("all": every one). The lake's rules for them are pinned by their own
# tests; what is left is teaching the model those rules.
KNOWN_DEFECT_CASES = {
    # '' outside a key is stored as null and NUL or over-long values are refused (docs/merge-semantics.md,
    # "Partition values"; tests/core/test_partition_values.py): the model keeps them as written.
    "partition_edge_values": "'' , -0.0, NUL and strings longer than a file name as partition values",
    # The lake reads the column without zone after DMS drops it where the model keeps the zone.
    "timestamp_losing_its_zone": "a timestamp column that DMS starts writing without time zone",
}
_requested = os.environ.get("DMSCDC_DIFFERENTIAL_CASES", "")
ENABLED_CASES = frozenset(KNOWN_DEFECT_CASES if _requested.strip() == "all" else
                          (name.strip() for name in _requested.split(",") if name.strip()))
unknown_cases = ENABLED_CASES - set(KNOWN_DEFECT_CASES)
assert not unknown_cases, f"DMSCDC_DIFFERENTIAL_CASES names unknown cases {sorted(unknown_cases)}"

ORDER_COLUMN = "AR_H_CHANGE_SEQ"


# -- values DMS writes ----------------------------------------------------------------------------
def _pick(*pool):
    return lambda rng: rng.choice(pool)


def _integers(low: int, high: int):
    return lambda rng: rng.choice([low, high, 0, rng.randint(low, high)])


def _moment(rng: random.Random, aware: bool) -> datetime:
    earliest = -600 * 365 * 86400 * 1000  # back to 1400: dates before the Gregorian reform too
    moment = datetime(2000, 1, 1) + timedelta(milliseconds=rng.randrange(earliest, 95 * 365 * 86400 * 1000))
    return moment.replace(tzinfo=timezone.utc) if aware else moment


def _day(rng: random.Random) -> date:
    earliest = date(1000, 1, 1)
    return earliest + timedelta(days=rng.randrange((date(2100, 1, 1) - earliest).days))


TEXTS = ("", "plain", "ünïcødé ✓", "日本語", "😀", 'quote"d', "comma,semi;pipe|", "line\nbreak", "cr\rtab\t",
         "back\\slash", "nul\x00byte", " padded ", "NULL", "%41=x/y", "x" * 300)
FLOAT32S = (0.0, -0.0, math.nan, math.inf, -math.inf, 1.5, -2.25, 3.4028234663852886e38, 1.401298464324817e-45)
FLOAT64S = (0.0, -0.0, math.nan, math.inf, -math.inf, 0.1, -1e308, 5e-324, 123456789.125)


def _decimal(rng: random.Random) -> Decimal:
    return Decimal(rng.choice([1, -1, 0]) * rng.randrange(10**28)).scaleb(-10) + Decimal("0E-10")


def _binary(rng: random.Random) -> bytes:
    return rng.choice([b"", b"\x00", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))])


@dataclass
class Column:
    """A source column: the type DMS writes it in and its values (None: a NULL now and then)."""

    name: str
    type: pa.DataType
    values: Callable[[random.Random], object]
    nullable: bool = True

    def value(self, rng: random.Random):
        return None if self.nullable and rng.random() < 0.1 else self.values(rng)


DATA_COLUMNS = [
    Column("tiny", pa.int8(), _integers(-128, 127)),
    Column("small", pa.int16(), _integers(-(2**15), 2**15 - 1)),
    Column("Int Col", pa.int32(), _integers(-(2**31), 2**31 - 1)),
    Column("big", pa.int64(), _integers(-(2**63), 2**63 - 1)),
    Column("u8", pa.uint8(), _integers(0, 255)),
    Column("u16", pa.uint16(), _integers(0, 2**16 - 1)),
    Column("u32", pa.uint32(), _integers(0, 2**32 - 1)),
    Column("u64", pa.uint64(), _integers(0, 2**64 - 1)),
    Column("f32", pa.float32(), _pick(*FLOAT32S)),
    Column("f64", pa.float64(), _pick(*FLOAT64S)),
    Column("amount", pa.decimal128(38, 10), _decimal),
    Column("note", pa.string(), _pick(*TEXTS)),
    Column("payload", pa.binary(), _binary),
    Column("flag", pa.bool_(), _pick(True, False)),
    Column("day", pa.date32(), _day),
    Column("at_utc", pa.timestamp("ms", tz="UTC"), lambda rng: _moment(rng, True)),
    Column("at_local", pa.timestamp("ms"), lambda rng: _moment(rng, False)),
    Column("ünï cöl", pa.string(), _pick("a", "ß")),
    Column("dash-name$", pa.int32(), _integers(-5, 5)),
    Column("dot.name", pa.string(), _pick("x", "y.z")),
]
# Schema drift the merge allows: a column that appears, one the source stops sending, an int that
# widens, a timestamp that loses its time zone (the lake keeps its type; Arrow writes an instant
# into a timestamp without zone as UTC).
ADDED_LATER = Column("added_later", pa.string(), _pick("new", ""))
DROPPED_LATER = Column("dropped_later", pa.int32(), _integers(-9, 9))
WIDENED = Column("widened", pa.int32(), _integers(-(2**31), 2**31 - 1))
WIDENED_TYPE, WIDENED_VALUES = pa.int64(), _integers(-(2**63), 2**63 - 1)
ZONE_DROPPED = Column("zone_dropped", pa.timestamp("ms", tz="UTC"), lambda rng: _moment(rng, True))
ZONE_DROPPED_TYPE = pa.timestamp("ms")

PARTITION_COLUMNS = [
    Column("dept", pa.string(), _pick("a", "b c", "ü/ß", "x=y%z:1")),
    Column("bucket", pa.int32(), _pick(-1, 0, 7)),
    Column("on_day", pa.date32(), _pick(date(2024, 1, 1), date(1999, 12, 31))),
    Column("is_eu", pa.bool_(), _pick(True, False)),
    Column("at_hour", pa.timestamp("ms", tz="UTC"), _pick(datetime(2024, 3, 1, 9, 30, tzinfo=timezone.utc),
                                                          datetime(1999, 12, 31, 23, 0, 0, 1000, tzinfo=timezone.utc))),
]
EDGE_PARTITION_COLUMNS = [
    Column("dept", pa.string(), _pick("a", "", "nul\x00", "long" * 80)),
    Column("ratio", pa.float64(), _pick(-0.0, 0.0, 1.5)),
]

# Key schemes: the model's integer key as the table's key columns.
KEY_SCHEMES = {
    "integer": [(Column("id", pa.int64(), None, nullable=False), lambda key: key)],
    "composite": [(Column("k_str", pa.string(), None, nullable=False), lambda key: f"ключ {key // 5}"),
                  (Column("k_int", pa.int16(), None, nullable=False), lambda key: key % 5)],
    "text": [(Column("k text", pa.string(), None, nullable=False), lambda key: f"k/{key:05d} ü")],
}


class TypedShape:
    """Rows of a table of the columns above for ``SourceModel``: the key columns from the model's
    integer key, every other column random; the columns sent change with the schema drift."""

    def __init__(self, rng: random.Random, keyed: bool):
        self.key_scheme = rng.choice(sorted(KEY_SCHEMES))
        self.keys = KEY_SCHEMES[self.key_scheme]
        partition_pool = EDGE_PARTITION_COLUMNS if "partition_edge_values" in ENABLED_CASES else PARTITION_COLUMNS
        self.partitions = rng.sample(partition_pool, rng.choice([0, 1, 2]))
        self.partition_key = [c.name for c in self.partitions]
        if keyed and self.key_scheme == "composite" and rng.random() < 0.5:
            self.partition_key.append("k_int")  # a key column that is also a partition column
        data = DATA_COLUMNS
        drifting = [DROPPED_LATER, WIDENED] + ([ZONE_DROPPED] if "timestamp_losing_its_zone" in ENABLED_CASES else [])
        self.data = [c for c in data if c.name not in self.partition_key] + drifting
        self.primary_key = [c.name for c, _ in self.keys] if keyed else []
        self.types = {c.name: c.type for c, _ in self.keys}
        self.types.update({c.name: c.type for c in self.partitions + self.data + [ADDED_LATER]})
        self.types[ORDER_COLUMN] = pa.string()
        self.sent = [c for c, _ in self.keys] + self.partitions + self.data
        self.written_types: dict[str, pa.DataType] = {}  # where the files' type is not the table's
        self.sequence = 0
        self.drifted = False

    def drift(self) -> None:
        """From now on the source sends ``added_later``, no longer ``dropped_later``, and
        ``widened`` as bigint, ``zone_dropped`` without time zone."""
        self.sent = [c for c in self.sent if c is not DROPPED_LATER] + [ADDED_LATER]
        self.types["widened"] = WIDENED_TYPE
        self.written_types = {ZONE_DROPPED.name: ZONE_DROPPED_TYPE}
        self.drifted = True

    def schema(self) -> pa.Schema:
        types = {**self.types, **self.written_types}
        return pa.schema([(c.name, types[c.name]) for c in self.sent] + [(ORDER_COLUMN, pa.string())])

    def as_sent(self, row: dict) -> dict:
        """The row as the source has it now: null in the columns it does not send."""
        sent = {c.name for c in self.sent}
        return {name: (value if name in sent or name == ORDER_COLUMN else None) for name, value in row.items()}

    def _stamp(self, rng: random.Random, row: dict) -> dict:
        self.sequence += rng.choice([0, 1])  # ties: file order and row position decide
        row[ORDER_COLUMN] = f"{self.sequence:035d}"
        return self.as_sent(row)

    def _value(self, rng: random.Random, column: Column):
        if column is WIDENED and self.drifted:
            return None if rng.random() < 0.1 else WIDENED_VALUES(rng)
        return column.value(rng)

    def new_row(self, rng: random.Random, key: int) -> dict:
        row = {column.name: to_key(key) for column, to_key in self.keys}
        row.update({c.name: self._value(rng, c) for c in self.partitions + self.data + [ADDED_LATER]})
        return self._stamp(rng, row)

    def changed_row(self, rng: random.Random, row: dict) -> dict:
        keys = {c.name for c, _ in self.keys}
        changed = {c.name: self._value(rng, c) for c in self.partitions + self.data + [ADDED_LATER]
                   if c.name not in keys and rng.random() < 0.5}
        return self._stamp(rng, {**row, **changed})

    def deleted_row(self, rng: random.Random, row: dict) -> dict:
        return self._stamp(rng, dict(row))  # a delete is a change with its own sequence number


class CsvShape:
    """A DMS CSV table: every column text (CSV carries no types)."""

    def __init__(self, rng: random.Random, null_value: str):
        self.texts = [t for t in TEXTS if t != null_value and "\x00" not in t]
        self.primary_key, self.partition_key = ["id"], ["grp"]
        self.types = {"id": pa.string(), "txt": pa.string(), "grp": pa.string()}

    def schema(self) -> pa.Schema:
        return pa.schema([(name, data_type) for name, data_type in self.types.items()])

    def new_row(self, rng: random.Random, key: int) -> dict:
        return {"id": f"{key}", "txt": rng.choice(self.texts + [None]), "grp": rng.choice(["g1", "g 2", "ü"])}

    def changed_row(self, rng: random.Random, row: dict) -> dict:
        return {**row, "txt": rng.choice(self.texts + [None]), "grp": rng.choice([row["grp"], "g1"])}

    def deleted_row(self, rng: random.Random, row: dict) -> dict:
        return row

    def as_sent(self, row: dict) -> dict:
        return row


# -- the source: what DMS writes, batch by batch ----------------------------------------------------
@dataclass
class Write:
    table: str
    kind: str  # load / cdc
    rows: list[dict]
    schema: pa.Schema
    moment: datetime
    options: dict = field(default_factory=dict)
    counter: int = 1


@dataclass
class Table:
    name: str
    model: SourceModel
    shape: object
    keyed: bool
    options: dict = field(default_factory=dict)  # how its files are written (CSV, LOAD without Op)
    load_files: int = 1

    def expected(self) -> list[dict]:
        return list(self.model.rows.values()) if self.keyed else [
            {k: v for k, v in row.items() if k != "Op"} for row in self.model.appended]


class DifferentialSource:
    """Three tables (typed keyed, typed keyless, CSV keyed) and the DMS files of each batch."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.clock = START
        delimiter = self.rng.choice([",", "|", "\t"])
        self.csv = {"csv_delimiter": delimiter, "csv_null_value": self.rng.choice(["NULL", "\\N"])}
        keyed_shape, keyless_shape = TypedShape(self.rng, True), TypedShape(self.rng, False)
        self.tables = [
            Table("src.keyed", SourceModel(random.Random(seed + 1), keyed_shape), keyed_shape, True,
                  {"with_op": self.rng.random() < 0.7}, load_files=self.rng.choice([1, 2])),
            Table("src.keyless", SourceModel(random.Random(seed + 2), keyless_shape), keyless_shape, False,
                  {"with_op": self.rng.random() < 0.7}),
            Table("src.text", SourceModel(random.Random(seed + 3), CsvShape(self.rng, self.csv["csv_null_value"])),
                  None, True, {"extension": self.rng.choice(["csv", "csv.gz"]), **self.csv}),
        ]
        self.tables[2].shape = self.tables[2].model.shape
        self.order_column = ORDER_COLUMN if self.rng.random() < 0.7 else None
        self.drift_at = 1
        self.reload_at = 1 if seed % 2 == 0 else None

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=self.rng.randrange(1, 90))
        return self.clock

    def _load(self, table: Table) -> list[Write]:
        """A (re)load: the source table as it is now, in ``load_files`` LOAD files."""
        table.model.rows = {key: table.shape.as_sent(row) for key, row in table.model.rows.items()}
        rows = [{"Op": "I", **row} for row in table.model.rows.values()]
        table.model.appended = [dict(row) for row in rows]
        moment, count = self.tick(), table.load_files
        extension = table.options.get("extension", "parquet")
        options = {k: v for k, v in table.options.items() if k != "extension"}
        return [Write(table.name, "load", rows[number::count], table.shape.schema(), moment,
                      dict(options, extension=extension), counter=number + 1) for number in range(count)]

    def _cdc(self, table: Table, size: int) -> Write:
        options = {k: v for k, v in table.options.items() if k != "with_op"}
        return Write(table.name, "cdc", table.model.change_file(size), table.shape.schema(), self.tick(), options)

    def batch(self, number: int) -> list[Write]:
        writes = []
        for table in self.tables:
            if number == 0:
                for _ in range(self.rng.randrange(0, 12)):
                    table.model.insert()
                writes += self._load(table)
            if number == self.drift_at and isinstance(table.shape, TypedShape):
                table.shape.drift()
            for _ in range(self.rng.randrange(1, 3)):
                writes.append(self._cdc(table, self.rng.randrange(1, 12)))
            if number == self.reload_at:
                writes += self._load(table)
                writes.append(self._cdc(table, self.rng.randrange(1, 6)))
        return writes


def configure(lake: LakeHarness, source: DifferentialSource) -> None:
    for table in source.tables:
        lake.configure(table.name, primary_key=table.shape.primary_key, partition_key=table.shape.partition_key,
                       order_column=source.order_column if isinstance(table.shape, TypedShape) else None)


def replay(lake: LakeHarness, writes: list[Write]) -> None:
    for write in writes:
        if write.kind == "load":
            lake.load(write.table, write.rows, write.schema, counter=write.counter, modified=write.moment,
                      **write.options)
        else:
            lake.cdc(write.table, write.rows, write.schema, at=write.moment, **write.options)


# -- what a reader reads -----------------------------------------------------------------------------
def canonical(value):
    """A value in a form that compares exactly: -0.0 apart from 0.0, NaN equal to NaN, instants in
    UTC, decimals and integers by their number."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", str(value))
    if isinstance(value, int):
        return ("number", str(value))
    if isinstance(value, Decimal):
        return ("number", str(int(value)) if value == value.to_integral_value() else str(value.normalize()))
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else repr(value))
    if isinstance(value, bytes):
        return ("bytes", value.hex())
    if isinstance(value, datetime):
        return ("instant", value.astimezone(timezone.utc).isoformat()) if value.tzinfo else ("local", value.isoformat())
    if isinstance(value, (date, time)):
        return (type(value).__name__, value.isoformat())
    return ("text", str(value))


@dataclass
class LakeView:
    """A lake table as a reader reads it: each row's values by column (partition values of a
    Parquet folder as their folder text) and the Arrow schemas (of each data file for a Parquet
    folder, of the scan for an Iceberg table)."""

    rows: list[dict]
    schemas: list[str]

    def comparable(self) -> list[tuple]:
        return sorted(tuple(sorted((name, canonical(value)) for name, value in row.items())) for row in self.rows)


def _plain(schema: pa.Schema) -> str:
    return str(pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema]))


def read_view(lake: LakeHarness, table: str) -> LakeView:
    if lake.table_format == "iceberg":
        iceberg = lake.iceberg_table(table)
        if iceberg is None or iceberg.current_snapshot() is None:
            return LakeView([], [])
        arrow = iceberg.scan().to_arrow()
        return LakeView(arrow.to_pylist(), [_plain(arrow.schema)])
    rows, schemas = [], set()
    for relative in lake.data_files(table):
        data = pq.ParquetFile(os.path.join(lake.table_path(table), relative)).read()
        folders = hive_paths.parse_folders(relative)
        schemas.add(_plain(data.schema) + f" partitioned by {sorted(folders)}")
        rows += [{**row, **{f"{name} (folder)": text for name, text in folders.items()}} for row in data.to_pylist()]
    return LakeView(rows, sorted(schemas))


def as_model_rows(view: LakeView, types: dict[str, pa.DataType]) -> list[tuple]:
    """The view's rows over the model's columns (Op aside; a column not in the lake yet is null),
    folder texts cast to the column's type."""
    rows = []
    for row in view.rows:
        values = {}
        for name, value in row.items():
            if name.endswith(" (folder)"):
                name = name[: -len(" (folder)")]
                value = hive_paths.typed_value(value, spark_view(types[name]))
            values[name] = value
        unexpected = set(values) - set(types) - {"Op"}
        assert not unexpected, f"the lake has columns the source never sent: {sorted(unexpected)}"
        rows.append(tuple((name, canonical(values.get(name))) for name in sorted(types)))
    return sorted(rows)


def model_rows(table: Table) -> list[tuple]:
    types = table.shape.types
    return sorted(tuple((name, canonical(row.get(name))) for name in sorted(types)) for row in table.expected())


def first_difference(left: list, right: list) -> str:
    only_left = [row for row in left if row not in right][:2]
    only_right = [row for row in right if row not in left][:2]
    return f"{len(left)} vs {len(right)} rows; only in the first: {only_left}; only in the second: {only_right}"


# -- the check -----------------------------------------------------------------------------------------
def check_seed(seed: int, root, engines: dict, batches: int = 2) -> None:
    """Feed one seed's source to every engine in both table formats; after each run compare the
    lakes of a format with each other and every lake with the model."""
    source = DifferentialSource(seed)
    lakes = {(name, table_format): LakeHarness(os.path.join(root, f"{name}-{table_format}"), engine, table_format)
             for name, engine in engines.items() for table_format in TABLE_FORMATS}
    for lake in lakes.values():
        configure(lake, source)
    for number in range(batches):
        writes = source.batch(number)
        for lake in lakes.values():
            replay(lake, writes)
            lake.run_ok(**source.csv)
        where = f"seed {seed} batch {number}"
        for table in source.tables:
            views = {key: read_view(lake, table.name) for key, lake in lakes.items()}
            expected = model_rows(table)
            for (engine, table_format), view in views.items():
                rows = as_model_rows(view, table.shape.types)
                assert rows == expected, (f"{where}: {table.name} in the {engine} engine's {table_format} lake differs "
                                          f"from the source: {first_difference(rows, expected)}")
            for table_format in TABLE_FORMATS:
                (first, reference), *others = [(k, v) for k, v in views.items() if k[1] == table_format]
                for other, view in others:
                    assert view.schemas == reference.schemas, (
                        f"{where}: {table.name} ({table_format}) is typed differently by the {first[0]} and "
                        f"{other[0]} engines:\n{reference.schemas}\n{view.schemas}")
                    assert view.comparable() == reference.comparable(), (
                        f"{where}: {table.name} ({table_format}) differs between the {first[0]} and {other[0]} "
                        f"engines: {first_difference(reference.comparable(), view.comparable())}")


def duckdb_engine():
    from dmscdc_provider.engines.duckdb import DuckDBMergeEngine

    return DuckDBMergeEngine(memory_limit="512MB", threads=2)


@pytest.mark.parametrize("seed", SEEDS)
def test_engines_and_table_formats_agree_with_each_other_and_the_source(tmp_path, local_engine, seed):
    check_seed(seed, tmp_path, {"duckdb": duckdb_engine(), "local": local_engine})


def test_the_in_process_engine_in_a_non_utc_time_zone_matches_the_source(tmp_path):
    """In a process whose local time zone is not UTC (read at start: a new process), with a
    fractional offset and daylight saving time."""
    program = ("import sys; from tests.core.test_engine_differential import check_seed, duckdb_engine; "
               "[check_seed(seed, f'{sys.argv[1]}/{seed}', {'duckdb': duckdb_engine()}) for seed in range(2)]")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    finished = subprocess.run([sys.executable, "-c", program, str(tmp_path)], cwd=root, capture_output=True, text=True,
                              env={**os.environ, "TZ": "America/St_Johns", "PYTHONPATH": path}, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
