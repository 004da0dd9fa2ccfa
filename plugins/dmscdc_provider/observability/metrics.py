"""A merge's figures as Airflow metrics: gauges ``dmscdc.<figure>`` tagged ``source`` and ``table``.

They go through Airflow's own metrics client, so they reach StatsD, Datadog or OpenTelemetry as
the deployment's ``[metrics]`` section configures, and cost nothing when metrics are off (Airflow's
no-op logger). docs/observability.md lists the names.
"""

from __future__ import annotations

import logging

from dmscdc_provider.observability.figures import NUMERIC_FIGURES

log = logging.getLogger(__name__)

METRIC_PREFIX = "dmscdc"


def metric_name(figure: str) -> str:
    return f"{METRIC_PREFIX}.{figure}"


def emit_merge_metrics(source: str, table: str, figures: dict, stats=None) -> int:
    """Emit one gauge per numeric figure that is known; returns how many were emitted.

    :param stats: Airflow's metrics client (default: the running Airflow's ``Stats``).
    """
    if stats is None:
        from airflow.providers.common.compat.sdk import Stats as stats
    tags = {"source": source, "table": table}
    emitted = 0
    for figure in NUMERIC_FIGURES:
        value = figures.get(figure)
        if value is None:
            continue
        try:
            stats.gauge(metric_name(figure), value, tags=tags)
        except Exception as error:  # a metrics backend must never fail a committed merge
            log.warning("%s: could not emit metric %s: %s", table, metric_name(figure), error)
            return emitted
        emitted += 1
    return emitted
