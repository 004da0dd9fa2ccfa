"""Fixtures of the Airflow tests; the environment itself is set up by airflow_env on import."""

from __future__ import annotations

import pytest

from airflow_env import AIRFLOW_HOME, run_airflow


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """The test AIRFLOW_HOME with its SQLite metadata DB migrated (once per session)."""
    completed = run_airflow(["db", "migrate"], {})
    assert completed.returncode == 0, completed.stderr[-3000:]
    return AIRFLOW_HOME


@pytest.fixture
def demo_env(tmp_path) -> dict:
    """Environment for the demo source DAG: its own folder, no retries, a sensor that gives up fast."""
    return {
        "DMSCDC_DEMO_HOME": str(tmp_path / "demo"),
        "DMSCDC_DEMO_MERGE_RETRIES": "0",
        "DMSCDC_DEMO_WAIT_TIMEOUT": "3",
        "DMSCDC_DEMO_POKE_INTERVAL": "1",
    }
