"""The JSON schema of a source YAML, and the check that names the file and the key of each error.

As dag-factory does, every source file is validated before a DAG is built from it. The types of
the ``wait_for_changes`` and ``merge`` keys come from the defaults of their dataclasses, so a key
added there is validated without touching this module; engine and catalog names come from the
registries the tasks use (``ENGINE_CLASSES``, ``CATALOG_REFRESHERS``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jsonschema import Draft202012Validator

from dmscdc_provider.catalog import CATALOG_REFRESHERS
from dmscdc_provider.engines import ENGINE_CLASSES
from dmscdc_provider.engines.choice import AUTO, spark_engine_names

SENSOR_MODES = ("poke", "reschedule", "deferrable")
SOURCE_NAME_PATTERN = "^[A-Za-z0-9_]+$"
_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))
_TYPE_NAMES = {"boolean": "true or false", "integer": "an integer", "number": "a number",
               "string": "a string", "object": "a mapping", "array": "a list", "null": "empty"}


def engine_names() -> list[str]:
    """The registered engines, and ``auto`` (chosen per table at planning time; no class of its own)."""
    return sorted(set(ENGINE_CLASSES) | {AUTO})


def catalog_modes() -> list[str]:
    return sorted(CATALOG_REFRESHERS)


def _json_type(default: Any) -> list[str] | None:
    """The schema type of a dataclass field, from its default (None: nullable string)."""
    if default is None:
        return ["string", "null"]
    for python_type, name in _JSON_TYPES:
        if isinstance(default, python_type):
            return [name]
    return None


def _section_schema(section_class, overrides: dict | None = None) -> dict:
    properties = {}
    for item in dataclasses.fields(section_class):
        json_type = _json_type(item.default)
        properties[item.name] = {"type": json_type} if json_type else {}
    properties.update(overrides or {})
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _named_schema(name_key: str, names: list[str], extra_properties: dict | None = None) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name_key: {"type": "string", "enum": names}, "settings": {"type": ["object", "null"]},
                       **(extra_properties or {})},
    }


def source_schema(sensor_class, merge_class, extra_keys: set[str] = frozenset()) -> dict:
    """The schema of one source YAML (after ``engine: NAME`` became ``{name: NAME}``).

    :param extra_keys: further top-level keys the config accepts without a type of their own.
    """
    text, optional_text = {"type": "string", "minLength": 1}, {"type": ["string", "null"]}
    properties = {
        "source": {"type": "string", "pattern": SOURCE_NAME_PATTERN},
        "description": optional_text,
        "raw": text,
        "lake": text,
        "state": text,
        "tables": optional_text,
        "schedule": optional_text,
        "start_date": {},  # a YAML date, datetime or ISO string: checked where it is parsed
        "catchup": {"type": "boolean"},
        "owner": text,
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        "engine": _named_schema("name", engine_names(), {
            "spark_engine": {"type": ["string", "null"], "enum": [*spark_engine_names(), None]},
            # bytes, or a size such as 512MB or 1GiB (parsed with the engine choice's parse_size)
            "inprocess_max_bytes": {"type": ["integer", "string"]},
            "duckdb_settings": {"type": ["object", "null"]},
        }),
        "catalog": _named_schema("mode", catalog_modes()),
        "table_format": {"type": "string", "enum": ["parquet", "iceberg"]},
        "iceberg": {"type": ["object", "null"], "additionalProperties": False,
                    "properties": {"catalog": {"type": "string", "pattern": "^(sqlite:///.+|glue://[^/]+/?)$"}}},
        "wait_for_changes": _section_schema(sensor_class, {"mode": {"type": "string", "enum": list(SENSOR_MODES)}}),
        "merge": _section_schema(merge_class, {
            "pool": optional_text,
            "pool_slots": {"type": "integer", "minimum": 1},
            "max_parallel": {"type": "integer", "minimum": 1},
            "retries": {"type": "integer", "minimum": 0},
        }),
        "maintenance": {"type": ["object", "null"], "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"},
            "compact_below_bytes": {"type": ["integer", "string"]},
            "expire_after_days": {"type": "number", "minimum": 0},
            "orphan_age_hours": {"type": "number", "minimum": 1},
        }},
        "aws": {"type": ["object", "null"], "additionalProperties": False,
                "properties": {"conn_id": optional_text, "region_name": optional_text}},
        # one duration (900, 15m, 2h) for every table, or schema.table glob -> duration
        "freshness_slo": {"type": ["string", "number", "object", "null"],
                          "additionalProperties": {"type": ["string", "number"]}},
        "table_settings": {"type": ["object", "null"], "additionalProperties": {
            "type": ["object", "null"], "additionalProperties": False, "properties": {
                "commit_time_column": {"type": ["string", "null"]},
                "keep_on_null": {"type": ["array", "string", "null"], "items": {"type": "string"}},
                "history": {"type": "boolean"},
                "history_columns": {"type": ["array", "string", "null"], "items": {"type": "string"}},
                "history_except": {"type": ["array", "string", "null"], "items": {"type": "string"}},
            }}},
        "csv": {"type": ["object", "null"], "additionalProperties": False,
                "properties": {"delimiter": {"type": "string", "minLength": 1}, "null_value": {"type": "string"}}},
    }
    for key in extra_keys - set(properties):
        properties[key] = {}
    return {
        "type": "object",
        "required": ["source", "raw", "lake", "state"],
        "additionalProperties": False,
        "properties": properties,
    }


def coerce_types(value: Any, schema: dict) -> Any:
    """Values that came through ``${VAR}`` are strings: give them the type the schema asks for.

    A string that does not convert is left as it is, for the validator to report.
    """
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {key: coerce_types(item, properties.get(key, {})) for key, item in value.items()}
    wanted = schema.get("type") or []
    wanted = [wanted] if isinstance(wanted, str) else wanted
    if not isinstance(value, str) or "string" in wanted:
        return value
    text = value.strip()
    if "boolean" in wanted and text.lower() in ("true", "false"):
        return text.lower() == "true"
    for json_type, convert in (("integer", int), ("number", float)):
        if json_type in wanted:
            try:
                return convert(text)
            except ValueError:
                pass
    return value


def _where(path) -> str:
    return ".".join(str(part) for part in path)


def _describe(error) -> str:
    """One validation error as a person reads it: the key first, then what is wrong."""
    where = _where(error.absolute_path)
    prefix = f"{where}: " if where else ""
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - known)
        names = ", ".join(f"{where}.{key}" if where else key for key in unknown)
        return f"unknown key(s) {names}; known: {', '.join(sorted(known))}"
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return f"{where + '.' if where else ''}{missing} is required"
    if error.validator == "enum":
        return f"{prefix}{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"{prefix}{error.instance!r} is not {' or '.join(_TYPE_NAMES.get(t, t) for t in wanted)}"
    if error.validator == "pattern" and where == "source":
        return f"source {error.instance!r} may use letters, digits and _ only"
    return f"{prefix}{error.message}"


def schema_errors(document: dict, schema: dict) -> list[str]:
    """Every problem of ``document``, sorted by key."""
    errors = sorted(Draft202012Validator(schema).iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(error) for error in errors]
