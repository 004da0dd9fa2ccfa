"""Schema reconciliation for the in-process engine, on Arrow types.

The same rules as the Spark engine's ``dmscdc_spark/schema.py`` (docs/merge-semantics.md,
"Columns and types"), so a table merged by either engine has the same column types:

- every file is first seen as Spark sees it (``spark_view``): unsigned integers one size up,
  timestamps in microseconds (millisecond DMS timestamps included), dictionaries decoded,
  large strings as strings;
- columns are matched by name in first-seen order; numeric types only widen (int -> bigint ->
  double; decimals to the precision that holds both); timestamps with and without time zone
  merge into the type seen first (the lake's); a date widens to a timestamp;
- anything else (text vs number) is a ``TypeConflict`` naming the source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

# Widening order of integral and floating types (Spark's ByteType ... DoubleType).
MAX_DECIMAL_PRECISION = 38
_NUMERIC_ORDER = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.float32(), pa.float64()]
_UNSIGNED_AS_SPARK_READS_THEM = {
    pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(), pa.uint64(): pa.decimal128(20, 0),
}


@dataclass(frozen=True)
class TypeConflict(Exception):
    """A column whose type in one source cannot be reconciled with the type seen so far."""

    source: str
    column: str
    existing: str
    incoming: str

    def __str__(self) -> str:
        return f"column {self.column!r} is {self.incoming} in {self.source} but {self.existing} elsewhere"


def spark_view(data_type: pa.DataType) -> pa.DataType:
    """The type a column has once read, as the Spark engine reads the same file."""
    if pa.types.is_dictionary(data_type):
        return spark_view(data_type.value_type)
    if data_type in _UNSIGNED_AS_SPARK_READS_THEM:
        return _UNSIGNED_AS_SPARK_READS_THEM[data_type]
    if pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return pa.string()
    if pa.types.is_large_binary(data_type) or pa.types.is_binary_view(data_type):
        return pa.binary()
    if pa.types.is_timestamp(data_type):
        # A zone means the instant is stored in UTC (Parquet's isAdjustedToUTC).
        return pa.timestamp("us", tz="UTC" if data_type.tz else None)
    if pa.types.is_date64(data_type):
        return pa.date32()
    if pa.types.is_float16(data_type):
        return pa.float32()
    return data_type


def spark_view_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, spark_view(f.type), True) for f in schema])


def type_name(data_type: pa.DataType) -> str:
    """The type's name as Spark prints it, so both engines word a conflict alike."""
    names = {
        pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint",
        pa.float32(): "float", pa.float64(): "double", pa.string(): "string", pa.bool_(): "boolean",
        pa.binary(): "binary", pa.date32(): "date", pa.null(): "void",
    }
    if data_type in names:
        return names[data_type]
    if pa.types.is_decimal(data_type):
        return f"decimal({data_type.precision},{data_type.scale})"
    if pa.types.is_timestamp(data_type):
        return "timestamp" if data_type.tz else "timestamp_ntz"
    return str(data_type)


_NAMED_TYPES = {
    "tinyint": pa.int8(), "smallint": pa.int16(), "int": pa.int32(), "bigint": pa.int64(),
    "float": pa.float32(), "double": pa.float64(), "string": pa.string(), "boolean": pa.bool_(),
    "binary": pa.binary(), "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC"),
    "timestamp_ntz": pa.timestamp("us"),
}


def named_type(name: str) -> pa.DataType | None:
    """The type ``type_name`` names (None for a type no DMS column has: a nested one, void)."""
    decimal = re.fullmatch(r"decimal\((\d+),(\d+)\)", name)
    if decimal:
        return pa.decimal128(int(decimal.group(1)), int(decimal.group(2)))
    return _NAMED_TYPES.get(name)


def table_schema(column_types: dict[str, str] | None) -> pa.Schema:
    """The table's columns from a plan's ``column_types`` (those of a type the engines write)."""
    named = [(column, named_type(name)) for column, name in (column_types or {}).items()]
    return pa.schema([pa.field(column, data_type, True) for column, data_type in named if data_type is not None])


def wider_type(existing: pa.DataType, incoming: pa.DataType) -> pa.DataType | None:
    """The type that holds values of both, or None when they cannot be reconciled.

    :param existing: the type so far (lake files come first, so the lake wins ties).
    :param incoming: the type in the next source.
    """
    if existing == incoming:
        return existing
    if pa.types.is_null(incoming):
        return existing
    if pa.types.is_null(existing):
        return incoming
    if existing in _NUMERIC_ORDER and incoming in _NUMERIC_ORDER:
        return _NUMERIC_ORDER[max(_NUMERIC_ORDER.index(existing), _NUMERIC_ORDER.index(incoming))]
    if pa.types.is_decimal(existing) and pa.types.is_decimal(incoming):
        scale = max(existing.scale, incoming.scale)
        integral = max(existing.precision - existing.scale, incoming.precision - incoming.scale)
        if integral + scale > MAX_DECIMAL_PRECISION:
            return None  # no decimal holds both: capping would turn the widest values into NULL
        return pa.decimal128(integral + scale, scale)
    if pa.types.is_timestamp(existing) and (pa.types.is_timestamp(incoming) or pa.types.is_date32(incoming)):
        return existing
    return None


def unify_schemas(sources: list[tuple[str, pa.Schema]]) -> pa.Schema:
    """One schema for all sources: columns in first-seen order, types widened.

    :param sources: ``(label, schema)`` pairs in merge order; the label names the file in errors.
    :raises TypeConflict: a column's types cannot be reconciled.
    """
    fields: dict[str, pa.DataType] = {}
    for label, schema in sources:
        for field in schema:
            seen = fields.get(field.name)
            if seen is None:
                fields[field.name] = field.type
                continue
            widened = wider_type(seen, field.type)
            if widened is None:
                raise TypeConflict(label, field.name, type_name(seen), type_name(field.type))
            fields[field.name] = widened
    return pa.schema([pa.field(name, data_type, True) for name, data_type in fields.items()])


def cast_column(values: pa.Array | pa.ChunkedArray, data_type: pa.DataType):
    """Cast to a wider type; integers to floating point as Spark does (no overflow check)."""
    if values.type == data_type:
        return values
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    lossy = pa.types.is_floating(data_type) and not pa.types.is_floating(values.type)
    return pc.cast(values, data_type, safe=not lossy)


def conform_batch(rows: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch | pa.Table:
    """``schema``'s columns from a batch or table: missing ones as nulls, others cast where they differ."""
    present = set(rows.schema.names)
    columns = [
        cast_column(rows.column(field.name), field.type) if field.name in present
        else pa.nulls(rows.num_rows, field.type)
        for field in schema
    ]
    return type(rows).from_arrays(columns, schema=schema)


def duckdb_type(data_type: pa.DataType) -> str:
    """The DuckDB SQL type that holds ``data_type`` without loss (for casts inside queries)."""
    names = {
        pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
        pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR", pa.bool_(): "BOOLEAN",
        pa.binary(): "BLOB", pa.date32(): "DATE",
    }
    if data_type in names:
        return names[data_type]
    if pa.types.is_decimal(data_type):
        return f"DECIMAL({data_type.precision},{data_type.scale})"
    if pa.types.is_timestamp(data_type):
        return "TIMESTAMPTZ" if data_type.tz else "TIMESTAMP"
    raise TypeError(f"no DuckDB type for {data_type}")


def hive_type(arrow_type) -> str:
    """The Glue (Hive) type Athena reads a Parquet column of ``arrow_type`` as."""
    import pyarrow as pa
    import pyarrow.types as t

    simple = [
        (t.is_boolean, "boolean"), (t.is_int8, "tinyint"), (t.is_int16, "smallint"),
        (t.is_int32, "int"), (t.is_int64, "bigint"), (t.is_uint8, "smallint"),
        (t.is_uint16, "int"), (t.is_uint32, "bigint"), (t.is_uint64, "decimal(20,0)"),
        (t.is_float16, "float"), (t.is_float32, "float"), (t.is_float64, "double"),
        (t.is_string, "string"), (t.is_large_string, "string"), (t.is_binary, "binary"),
        (t.is_large_binary, "binary"), (t.is_date, "date"), (t.is_timestamp, "timestamp"),
        (t.is_null, "string"),
    ]
    for check, name in simple:
        if check(arrow_type):
            return name
    if t.is_decimal(arrow_type):
        return f"decimal({arrow_type.precision},{arrow_type.scale})"
    if t.is_list(arrow_type) or t.is_large_list(arrow_type):
        return f"array<{hive_type(arrow_type.value_type)}>"
    if t.is_map(arrow_type):
        return f"map<{hive_type(arrow_type.key_type)},{hive_type(arrow_type.item_type)}>"
    if t.is_struct(arrow_type):
        fields = ",".join(f"{f.name}:{hive_type(f.type)}" for f in arrow_type)
        return f"struct<{fields}>"
    if isinstance(arrow_type, pa.DataType):
        return "string"
    raise TypeError(f"not an Arrow type: {arrow_type!r}")
