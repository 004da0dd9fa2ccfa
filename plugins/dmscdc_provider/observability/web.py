"""The freshness page in the Airflow UI: an Airflow 3 plugin serving a FastAPI app under ``/dmscdc``.

For every source config (the YAML files the DAG file reads: ``$DMSCDC_SOURCES_DIR``, else
``<dags folder>/sources``) it lists each active table with how far it is behind raw, its backlog,
the lag of its last merge and its last result, and charts lag and rows changed per merge over the
last days from the lake's run history (``observability.runs``). The same data is served as JSON
under ``/dmscdc/api/``. The page is one HTML document with inline SVG: no script, no assets.

Registered through the ``airflow.plugins`` entry point of the dmscdc distribution, and on MWAA by
the ``dmscdc_plugin.py`` module ``dmscdc mwaa-bundle`` puts in plugins.zip.
"""

from __future__ import annotations

import glob
import html
import logging
import os
from datetime import datetime, timedelta, timezone

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

from dmscdc_provider.observability.freshness import FreshnessObjectives, format_duration
from dmscdc_provider.report import format_size

log = logging.getLogger(__name__)

URL_PREFIX = "/dmscdc"
PAGE_NAME = "Table freshness"
DEFAULT_DAYS = 7


def sources_folder() -> str:
    """Where the source YAML files are: ``$DMSCDC_SOURCES_DIR``, else ``<dags folder>/sources``."""
    configured = os.environ.get("DMSCDC_SOURCES_DIR")
    if configured:
        return configured
    from airflow.configuration import conf

    return os.path.join(os.path.expanduser(conf.get("core", "dags_folder")), "sources")


def _configs() -> list:
    from dmscdc_provider.dag_factory.config import load_source_config

    folder, configs = sources_folder(), []
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml")) + glob.glob(os.path.join(folder, "*.yml"))):
        try:
            configs.append(load_source_config(path))
        except Exception as error:  # a broken file shows on its stand-in DAG; the page shows the others
            log.warning("freshness page: skipping %s: %s", path, error)
    return configs


def _config(source: str):
    for config in _configs():
        if config.source == source:
            return config
    raise HTTPException(status_code=404, detail=f"no source {source!r} in {sources_folder()}")


def source_status(config, now: datetime) -> list[dict]:
    """``dmscdc status`` of the source's active tables (``observability.status.table_status``)."""
    from dmscdc_provider.observability.status import table_status
    from dmscdc_provider.planner import controller_path, table_matches
    from dmscdc_provider.state.base import open_store
    from dmscdc_provider.storage import open_storage

    store = open_store(config.state, aws_conn_id=config.aws_conn_id, region_name=config.region_name)
    try:
        states = [s for s in store.list() if s.active and s.path == controller_path(config.raw, s.schema, s.table)
                  and table_matches(s.name, config.tables)]
    finally:
        store.close()
    storage = open_storage(config.raw, aws_conn_id=config.aws_conn_id, region_name=config.region_name)
    objectives = FreshnessObjectives(tuple(config.freshness_slo.items()))
    return [table_status(state, config.raw, storage, now, objectives, config.table_format)
            for state in sorted(states, key=lambda s: s.name)]


def source_runs(config, days: int, now: datetime, table: str | None = None) -> list[dict]:
    from dmscdc_provider.observability.runs import read_runs

    since = (now - timedelta(days=days)).strftime("%Y-%m-%d")
    records = read_runs(config.lake, since, {table} if table else None,
                           aws_conn_id=config.aws_conn_id, region_name=config.region_name)
    return [{key: value.isoformat() if isinstance(value, datetime) else value for key, value in record.items()}
            for record in records]


# -- the page -----------------------------------------------------------------------------------
CHART_WIDTH, CHART_HEIGHT = 260, 44

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #1f2328; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 6px; }
p.note { color: #57606a; margin: 0 0 12px; max-width: 70em; }
table { border-collapse: collapse; width: 100%; max-width: 1400px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #d0d7de; text-align: left; vertical-align: middle; }
th { background: #f6f8fa; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.over td { background: #ffebe9; } span.over { color: #cf222e; font-weight: 600; }
svg .lag { fill: none; stroke: #0969da; stroke-width: 1.5; } svg .rows { fill: #8c959f; }
@media (max-width: 900px) { td.chart, th.chart { display: none; } }
"""


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


def chart_svg(records: list[dict]) -> str:
    """Lag (line) and rows changed (bars) per merge, oldest left; empty without merges."""
    merged = [r for r in records if r.get("status") == "succeeded" and r.get("lag_seconds") is not None]
    if not merged:
        return ""
    lags = [r["lag_seconds"] for r in merged]
    rows = [(r.get("rows_inserted") or 0) + (r.get("rows_updated") or 0) + (r.get("rows_deleted") or 0)
            for r in merged]
    top_lag, top_rows, step = max(lags) or 1.0, max(rows) or 1, CHART_WIDTH / max(len(merged), 1)
    bars = "".join(
        f'<rect class="rows" x="{i * step:.1f}" y="{CHART_HEIGHT - count / top_rows * (CHART_HEIGHT - 2):.1f}" '
        f'width="{max(step - 1, 1):.1f}" height="{count / top_rows * (CHART_HEIGHT - 2):.1f}"/>'
        for i, count in enumerate(rows))
    points = " ".join(f"{i * step + step / 2:.1f},{CHART_HEIGHT - lag / top_lag * (CHART_HEIGHT - 4) - 2:.1f}"
                      for i, lag in enumerate(lags))
    title = (f"{len(merged)} merge(s): lag up to {format_duration(top_lag)} (line), "
             f"up to {top_rows} row(s) changed (bars)")
    return (f'<svg width="{CHART_WIDTH}" height="{CHART_HEIGHT}" role="img" aria-label="{_esc(title)}">'
            f"<title>{_esc(title)}</title>{bars}<polyline class=\"lag\" points=\"{points}\"/></svg>")


def table_rows_html(tables: list[dict], history: list[dict]) -> str:
    by_table: dict[str, list[dict]] = {}
    for record in history:
        by_table.setdefault(record["table"], []).append(record)
    rows = []
    for table in tables:
        last_result = table["problem"] or (
            f"{table['last_result']} {table['last_commit_at'] or ''}" if table["last_result"] else "never merged")
        failures = [r for r in by_table.get(table["table"], []) if r["status"] == "failed"]
        if failures and (not table["last_commit_at"] or failures[-1]["recorded_at"] > table["last_commit_at"]):
            last_result = f"failed {failures[-1]['recorded_at']}: {failures[-1]['problem'] or ''}"
        behind = format_duration(table["behind_seconds"])
        if table["over_slo"]:
            behind = f'<span class="over">{behind} (over {format_duration(table["freshness_slo_seconds"])})</span>'
        backlog = "-" if table["pending_files"] is None else f"{table['pending_files']} ({format_size(table['pending_bytes'])})"
        rows.append(
            f'<tr class="{"over" if table["over_slo"] else ""}"><td>{_esc(table["table"])}</td>'
            f'<td class="num">{behind}</td><td class="num">{_esc(backlog)}</td>'
            f'<td class="num">{format_duration(table["lag_seconds"])}</td><td>{_esc(table["engine"] or "-")}</td>'
            f'<td>{_esc(last_result)}</td><td class="chart">{chart_svg(by_table.get(table["table"], []))}</td></tr>')
    return "".join(rows)


def page_html(sections: list[tuple[object, list[dict], list[dict], str | None]], days: int) -> str:
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>dmscdc: {PAGE_NAME}</title><style>{STYLE}</style></head><body>",
             f"<h1>{PAGE_NAME}</h1><p class=\"note\">Behind: the age of the oldest DMS file a table has not "
             "applied (0 when raw holds nothing new). Backlog: files and bytes in raw beyond its watermark. "
             "Lag: commit time minus the newest applied file's time (the newest source commit time where the table "
             "has a commit-time column), at the last merge. Chart: lag (line) and "
             f"rows changed (bars) per merge over the last {days} day(s), from the lake's run history.</p>"]
    if not sections:
        parts.append(f"<p>No source config in {_esc(sources_folder())}.</p>")
    for config, tables, history, problem in sections:
        parts.append(f"<h2>{_esc(config.source)} <small>({_esc(config.raw)} &rarr; {_esc(config.lake)})</small></h2>")
        if problem:
            parts.append(f'<p class="note">cannot read this source: {_esc(problem)}</p>')
            continue
        parts.append("<table><thead><tr><th>table</th><th>behind</th><th>backlog</th><th>lag</th><th>engine</th>"
                     "<th>last result</th><th class=\"chart\">lag and rows, last days</th></tr></thead><tbody>"
                     f"{table_rows_html(tables, history)}</tbody></table>")
    return "".join(parts) + "</body></html>"


def create_app() -> FastAPI:
    app = FastAPI(title="dmscdc freshness", description="Freshness and backlog of dmscdc lake tables")

    @app.get("/", response_class=HTMLResponse)
    def freshness_page(days: int = Query(DEFAULT_DAYS, ge=1, le=90)) -> str:
        now, sections = datetime.now(timezone.utc), []
        for config in _configs():
            try:
                sections.append((config, source_status(config, now), source_runs(config, days, now), None))
            except Exception as error:  # one unreachable store or lake must not hide the other sources
                log.warning("freshness page: source %s: %s", config.source, error)
                sections.append((config, [], [], str(error)))
        return page_html(sections, days)

    @app.get("/api/sources")
    def sources() -> list[dict]:
        return [{"source": c.source, "raw": c.raw, "lake": c.lake, "freshness_slo": c.freshness_slo}
                for c in _configs()]

    @app.get("/api/sources/{source}/status")
    def status(source: str) -> list[dict]:
        return source_status(_config(source), datetime.now(timezone.utc))

    @app.get("/api/sources/{source}/history")
    def history(source: str, days: int = Query(DEFAULT_DAYS, ge=1, le=90), table: str | None = None) -> list[dict]:
        return source_runs(_config(source), days, datetime.now(timezone.utc), table)

    return app


def _plugin_class():
    from airflow.plugins_manager import AirflowPlugin

    class DmsCdcFreshnessPlugin(AirflowPlugin):
        """The freshness page: the FastAPI app under ``/dmscdc`` and a link to it in the UI's Browse menu."""

        name = "dmscdc"
        fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "dmscdc freshness"}]
        # Airflow 3.1+ shows external views in its menu; Airflow 3.0 serves the app without a link.
        external_views = [{"name": PAGE_NAME, "href": f"{URL_PREFIX}/", "destination": "nav",
                           "category": "browse", "url_route": "dmscdc-freshness"}]

    return DmsCdcFreshnessPlugin


DmsCdcFreshnessPlugin = _plugin_class()
