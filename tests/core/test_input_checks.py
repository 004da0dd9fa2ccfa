"""The type rule of the pre-merge input check, and the Spark engine's copy of it agreeing."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyspark.sql import types as T

from dmscdc_provider.input_checks import wider_type
from dmscdc_spark.schema import wider_type as spark_wider_type

TS_MS_UTC = pa.timestamp("ms", tz="UTC")

# (existing, incoming, merged type or None)
RULES = [
    (pa.int32(), pa.int64(), pa.int64()),
    (pa.int64(), pa.int32(), pa.int64()),
    (pa.int64(), pa.float64(), pa.float64()),
    (pa.uint32(), pa.int64(), pa.int64()),
    (pa.decimal128(10, 2), pa.decimal128(12, 4), pa.decimal128(12, 4)),
    (pa.decimal128(38, 0), pa.decimal128(38, 10), None),
    (pa.decimal128(30, 0), pa.decimal128(10, 8), pa.decimal128(38, 8)),
    (pa.int64(), pa.string(), None),
    (pa.string(), pa.int64(), None),
    (pa.int64(), pa.decimal128(20, 0), None),
    (pa.string(), pa.large_string(), pa.string()),
    (pa.timestamp("us"), TS_MS_UTC, pa.timestamp("us")),
    (TS_MS_UTC, pa.date32(), TS_MS_UTC),
    (pa.date32(), TS_MS_UTC, None),
    (pa.null(), pa.string(), pa.string()),
    (pa.bool_(), pa.string(), None),
]


@pytest.mark.parametrize("existing, incoming, merged", RULES)
def test_type_rule(existing, incoming, merged):
    assert wider_type(existing, incoming) == merged


SPARK = {pa.int32(): T.IntegerType(), pa.int64(): T.LongType(), pa.float64(): T.DoubleType(),
         pa.string(): T.StringType(), pa.bool_(): T.BooleanType(), pa.date32(): T.DateType(),
         pa.null(): T.NullType(), pa.timestamp("us"): T.TimestampNTZType(), TS_MS_UTC: T.TimestampType()}


def as_spark(data_type: pa.DataType):
    if pa.types.is_decimal(data_type):
        return T.DecimalType(data_type.precision, data_type.scale)
    return SPARK[data_type]


@pytest.mark.parametrize("existing, incoming, merged",
                         [rule for rule in RULES if all(t in SPARK or pa.types.is_decimal(t) for t in rule[:2])])
def test_the_spark_engine_applies_the_same_type_rule(existing, incoming, merged):
    assert spark_wider_type(as_spark(existing), as_spark(incoming)) == (None if merged is None else as_spark(merged))
