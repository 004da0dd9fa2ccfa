"""The freshness page (an Airflow 3 plugin's FastAPI app): what it serves over HTTP for the demo
source after a load and a change batch, one table held back by a bad file."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from airflow_env import DAGS_FOLDER
from dmscdc_provider.cli import main
from dmscdc_provider.demo import prepare_demo_source
from dmscdc_provider.observability.web import URL_PREFIX, DmsCdcFreshnessPlugin, create_app


@pytest.fixture
def demo_home(tmp_path, monkeypatch):
    """The demo source loaded, then its change batch applied to every table but sales.store, whose CDC
    file is corrupt; the page reads the demo YAML of the repository's DAGs folder."""
    home = tmp_path / "demo"
    monkeypatch.setenv("DMSCDC_DEMO_HOME", str(home))
    monkeypatch.setenv("DMSCDC_SOURCES_DIR", str(DAGS_FOLDER / "sources"))
    raw, state = str(home / "raw"), f"sqlite:///{home}/state.sqlite"
    run = ["run", "--raw", raw, "--state", state, "--lake", str(home / "lake"), "--catalog", str(home / "c.duckdb")]
    prepare_demo_source(raw, state)
    assert main(run) == 0
    prepare_demo_source(raw, state, changes=True)
    [bad] = (home / "raw" / "sales" / "store").rglob("2024*.parquet")
    bad.write_bytes(b"not parquet")
    assert main(run) == 1
    return home


def test_the_page_lists_each_table_with_behind_backlog_lag_last_result_and_a_chart(demo_home):
    client = TestClient(create_app())

    page = client.get("/")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert '<meta name="viewport"' in text and "<h2>demo " in text
    for table in ("sales.product", "sales.productorder", "sales.store"):
        assert f"<td>{table}</td>" in text
    store_row = text.split("<td>sales.store</td>", 1)[1].split("</tr>", 1)[0]
    assert "failed " in store_row and "not a Parquet file" in store_row  # the failure after its last commit
    assert "1 (" in store_row  # the bad file is its backlog
    product_row = text.split("<td>sales.product</td>", 1)[1].split("</tr>", 1)[0]
    assert "succeeded " in product_row and "<svg" in product_row and product_row.count("<rect") == 2


def test_the_json_api_serves_sources_status_and_history(demo_home):
    client = TestClient(create_app())

    assert [s["source"] for s in client.get("/api/sources").json()] == ["demo"]
    status = {t["table"]: t for t in client.get("/api/sources/demo/status").json()}
    assert status["sales.store"]["pending_files"] == 1 and status["sales.product"]["pending_files"] == 0
    history = client.get("/api/sources/demo/history", params={"table": "sales.product"}).json()
    assert [(r["status"], r["mode"]) for r in history] == [("succeeded", "full"), ("succeeded", "incremental")]
    assert history[1]["rows_updated"] == 1 and history[1]["rows_deleted"] == 1
    assert client.get("/api/sources/nosuch/status").status_code == 404
    assert client.get("/", params={"days": 0}).status_code == 422


def test_the_plugin_serves_the_app_under_dmscdc_and_links_it_from_the_browse_menu():
    [app] = DmsCdcFreshnessPlugin.fastapi_apps
    [view] = DmsCdcFreshnessPlugin.external_views

    assert (app["url_prefix"], DmsCdcFreshnessPlugin.name) == (URL_PREFIX, "dmscdc")
    assert (view["href"], view["category"]) == (f"{URL_PREFIX}/", "browse")
    assert TestClient(app["app"]).get("/api/sources").status_code == 200
