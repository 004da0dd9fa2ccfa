"""Schema reconciliation across DMS files and lake files.

Each source file is read on its own, so every file keeps its own schema; this module
decides the one schema the merged output has. Columns are matched by name, new columns
are appended (older rows get null), and numeric types only ever widen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dmscdc_spark.rules import column

# Integral and floating types in widening order; a wider type holds every value of a narrower one
# (LongType -> DoubleType loses precision past 2**53, the same trade-off Spark's own coercion makes).
MAX_DECIMAL_PRECISION = 38  # Spark's (and Parquet readers' common) decimal limit
_NUMERIC_ORDER = [T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType]


@dataclass(frozen=True)
class TypeConflict(Exception):
    """A column whose type in one source cannot be reconciled with the type seen so far."""

    source: str
    column: str
    existing: str
    incoming: str

    def __str__(self) -> str:
        return (
            f"column {self.column!r} is {self.incoming} in {self.source} "
            f"but {self.existing} elsewhere"
        )


_NAMED_TYPES = {
    "tinyint": T.ByteType, "smallint": T.ShortType, "int": T.IntegerType, "bigint": T.LongType,
    "float": T.FloatType, "double": T.DoubleType, "string": T.StringType, "boolean": T.BooleanType,
    "binary": T.BinaryType, "date": T.DateType, "timestamp": T.TimestampType,
    "timestamp_ntz": T.TimestampNTZType,
}


def named_type(name: str) -> T.DataType | None:
    """The type of a Spark ``simpleString`` name (None for a type no DMS column has)."""
    decimal = re.fullmatch(r"decimal\((\d+),(\d+)\)", name)
    if decimal:
        return T.DecimalType(int(decimal.group(1)), int(decimal.group(2)))
    named = _NAMED_TYPES.get(name)
    return named() if named is not None else None


def table_schema(column_types: dict[str, str] | None) -> T.StructType:
    """The table's columns from a plan's ``column_types`` (those of a type the engines write)."""
    named = [(column, named_type(name)) for column, name in (column_types or {}).items()]
    return T.StructType([T.StructField(column, data_type, True) for column, data_type in named if data_type is not None])


def _numeric_rank(data_type: T.DataType) -> int | None:
    for rank, numeric in enumerate(_NUMERIC_ORDER):
        if isinstance(data_type, numeric):
            return rank
    return None


def wider_type(existing: T.DataType, incoming: T.DataType) -> T.DataType | None:
    """The type that holds values of both, or None when they cannot be reconciled.

    The same rule as the provider's pre-merge check (``dmscdc_provider.input_checks.wider_type``),
    in Spark's types: a decimal widens to the precision that holds both or not at all.

    :param existing: the type the column has so far (lake files come first, so the lake wins
        ties such as timestamp with or without time zone).
    :param incoming: the type in the next source.
    """
    if existing == incoming:
        return existing
    if isinstance(incoming, T.NullType):
        return existing
    if isinstance(existing, T.NullType):
        return incoming
    existing_rank, incoming_rank = _numeric_rank(existing), _numeric_rank(incoming)
    if existing_rank is not None and incoming_rank is not None:
        return _NUMERIC_ORDER[max(existing_rank, incoming_rank)]()
    if isinstance(existing, T.DecimalType) and isinstance(incoming, T.DecimalType):
        scale = max(existing.scale, incoming.scale)
        integral = max(existing.precision - existing.scale, incoming.precision - incoming.scale)
        if integral + scale > MAX_DECIMAL_PRECISION:
            return None  # no decimal holds both: capping would turn the widest values into NULL
        return T.DecimalType(integral + scale, scale)
    timestamps = (T.TimestampType, T.TimestampNTZType)
    if isinstance(existing, timestamps) and isinstance(incoming, timestamps):
        return existing
    if isinstance(existing, timestamps) and isinstance(incoming, T.DateType):
        return existing
    return None


def unify_schemas(sources: list[tuple[str, T.StructType]]) -> T.StructType:
    """One schema for all sources: columns in first-seen order, types widened.

    :param sources: ``(label, schema)`` pairs in merge order; the label names the file in errors.
    :raises TypeConflict: a column's types cannot be reconciled.
    """
    fields: dict[str, T.StructField] = {}
    for label, schema in sources:
        for field in schema.fields:
            seen = fields.get(field.name)
            if seen is None:
                fields[field.name] = T.StructField(field.name, field.dataType, True)
                continue
            widened = wider_type(seen.dataType, field.dataType)
            if widened is None:
                raise TypeConflict(
                    label, field.name, seen.dataType.simpleString(), field.dataType.simpleString()
                )
            fields[field.name] = T.StructField(field.name, widened, True)
    return T.StructType(list(fields.values()))


def conform(frame: DataFrame, schema: T.StructType) -> DataFrame:
    """Select ``schema``'s columns from ``frame``: missing ones as typed nulls, others cast
    where their type differs (each expression costs a round trip to the JVM)."""
    present = {field.name: field.dataType for field in frame.schema.fields}
    columns = []
    for field in schema.fields:
        if field.name not in present:
            columns.append(F.lit(None).cast(field.dataType).alias(field.name))
        elif present[field.name] != field.dataType:
            columns.append(column(field.name).cast(field.dataType).alias(field.name))
        else:
            columns.append(column(field.name))
    return frame.select(*columns)


def union_conformed(frames: list[DataFrame], schema: T.StructType) -> DataFrame:
    """Union frames after conforming each to ``schema``."""
    conformed = [conform(frame, schema) for frame in frames]
    result = conformed[0]
    for frame in conformed[1:]:
        result = result.unionByName(frame)
    return result
