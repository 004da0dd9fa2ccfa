"""Which engine merges a table: ``auto`` picks per table, at planning time, from the bytes the
merge must read (``read_estimate``).

The in-process engine (``duckdb``) starts in milliseconds and runs in the worker; a Spark
engine (``local``, ``glue``, ``emr``, ``emr_serverless``) pays seconds to minutes of start-up
but scales past one machine. docs/engines.md has the default threshold and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable

from dmscdc_provider.engines import ENGINE_CLASSES, MergeEngine, make_engine
from dmscdc_provider.plan import TablePlan

AUTO = "auto"
IN_PROCESS_ENGINE = "duckdb"
DEFAULT_SPARK_ENGINE = "local"
# Sized for Amazon MWAA's smallest worker (mw1.small: 1 vCPU, 2 GB, several tasks at once):
# the in-process full load wrote 320 MB of Parquet in 4.5 s on 2 vCPUs (make bench), so 1 GiB
# takes about half a minute on one, the order of a Glue or EMR Serverless job's start-up and
# less than its minimum billing; memory is bounded by the in-process engine's memory_limit
# and spilling, not by this threshold. docs/engines.md has the reasoning.
DEFAULT_INPROCESS_MAX_BYTES = 1 << 30


def spark_engine_names() -> list[str]:
    """The registered engines that run Spark (``local``, ``glue``, ``emr``, ``emr_serverless``)."""
    return sorted(name for name in ENGINE_CLASSES if name != IN_PROCESS_ENGINE)


def engine_names() -> list[str]:
    """What ``engine`` may be: ``auto``, the in-process engine, or a Spark engine."""
    return [AUTO, IN_PROCESS_ENGINE, *spark_engine_names()]


_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>(?:[KMGT]i?)?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


def parse_size(text: str | int) -> int:
    """Bytes from ``1073741824``, ``512MB``, ``1 GiB`` (KB/MB/GB are powers of 10, KiB/MiB/GiB of 2)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size in bytes (e.g. 1073741824, 512MB, 1GiB)")
    unit = (match.group("unit") or "").upper().removesuffix("B")
    return int(float(match.group("number")) * _UNITS[unit])


@dataclass(frozen=True)
class EngineConfig:
    """How a run picks and builds the engine of each table.

    :param engine: ``auto`` (per table: ``duckdb`` under ``inprocess_max_bytes``, else the Spark
        engine), or one engine for every table: ``duckdb`` or a Spark engine.
    :param spark_engine: the Spark engine ``auto`` uses for large tables (default ``local``);
        with ``engine`` naming a Spark engine, leave it unset.
    :param inprocess_max_bytes: ``auto``'s threshold on the bytes a merge reads.
    :param spark_settings: the Spark engine's settings (``role_arn``, ``spark_conf`` ...).
    :param duckdb_settings: the in-process engine's settings (``memory_limit``, ``temp_directory`` ...).
    """

    engine: str = AUTO
    spark_engine: str | None = None
    inprocess_max_bytes: int = DEFAULT_INPROCESS_MAX_BYTES
    spark_settings: dict = field(default_factory=dict)
    duckdb_settings: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.engine not in engine_names():
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(engine_names())}")
        if self.spark_engine is not None:
            if self.spark_engine not in spark_engine_names():
                raise ValueError(f"unknown Spark engine {self.spark_engine!r}; "
                                 f"choose one of {', '.join(spark_engine_names())}")
            if self.engine != AUTO and self.spark_engine != self.engine:
                raise ValueError(f"spark_engine {self.spark_engine!r} is for engine auto; engine "
                                 f"{self.engine!r} merges every table itself")
        if self.engine == IN_PROCESS_ENGINE and self.spark_settings:
            raise ValueError("Spark engine settings were given, but engine duckdb runs no Spark; "
                             "its own settings are the duckdb settings")
        if self.engine in spark_engine_names() and self.duckdb_settings:
            raise ValueError(f"duckdb settings were given, but engine {self.engine!r} never merges in-process")
        if self.inprocess_max_bytes < 0:
            raise ValueError("the in-process threshold cannot be negative")

    @property
    def spark(self) -> str:
        """The Spark engine of this config (``auto``'s engine for large tables)."""
        if self.engine not in (AUTO, IN_PROCESS_ENGINE):
            return self.engine
        return self.spark_engine or DEFAULT_SPARK_ENGINE

    @property
    def engines(self) -> tuple[str, ...]:
        """Every engine a run with this config may use."""
        if self.engine == AUTO:
            return IN_PROCESS_ENGINE, self.spark
        return (self.engine,)

    def settings_for(self, name: str) -> dict:
        return dict(self.duckdb_settings if name == IN_PROCESS_ENGINE else self.spark_settings)

    def choose(self, plan: TablePlan, aws_conn_id: str | None = None, region_name: str | None = None) -> TablePlan:
        """``plan`` with the engine that merges it and why (``TablePlan.engine``/``engine_reason``)."""
        if self.engine != AUTO:
            return replace(plan, engine=self.engine, engine_reason=f"engine {self.engine} configured")
        from dmscdc_provider.engines.read_estimate import estimate_read_bytes, format_size

        estimate = estimate_read_bytes(plan, aws_conn_id, region_name, stop_above=self.inprocess_max_bytes)
        limit = format_size(self.inprocess_max_bytes)
        if estimate.total < self.inprocess_max_bytes:
            return replace(plan, engine=IN_PROCESS_ENGINE,
                           engine_reason=f"auto: {estimate.describe(plan)}, under the in-process limit of {limit}")
        return replace(plan, engine=self.spark,
                       engine_reason=f"auto: {estimate.describe(plan)}, not under the in-process limit of {limit}")

    def engine_for(self, plan: TablePlan) -> str:
        """The engine name that merges ``plan``: the one its planning chose, else the configured one."""
        if plan.engine:
            return plan.engine
        if self.engine == AUTO:
            raise ValueError(f"{plan.table}: the plan names no engine; plan it with engine auto to choose one")
        return self.engine


class RunEngines:
    """The engines of one run, built up front (bad settings fail before any table merges) and
    reused for every table that names them.

    :param config: the run's engine config.
    :param make: builds an engine from its name and settings (the Airflow hook adds the
        task's AWS connection).
    """

    def __init__(self, config: EngineConfig, make: Callable[..., MergeEngine] = make_engine):
        self.config = config
        self._engines = {name: make(name, **config.settings_for(name)) for name in config.engines}

    def for_plan(self, plan: TablePlan) -> MergeEngine:
        return self._engines[self.config.engine_for(plan)]
