"""docker-compose.yaml cannot be started here (no Docker engine); check that it is well formed
and refers only to files, images and commands that exist."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from airflow_env import REPO

COMPOSE = REPO / "docker-compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def airflow_subcommands() -> set[str]:
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    return set(next(a for a in parser._actions if a.dest == "subcommand").choices)


def dmscdc_subcommands() -> set[str]:
    from dmscdc_provider.cli import build_parser

    return set(next(a for a in build_parser()._actions if a.dest == "command").choices)


def test_the_stack_has_the_airflow_3_components_and_postgres(compose):
    services = compose["services"]
    commands = {name: service.get("command") for name, service in services.items()}

    assert commands["airflow-apiserver"] == ["airflow", "api-server"]
    assert commands["airflow-scheduler"] == ["airflow", "scheduler"]
    assert commands["airflow-dag-processor"] == ["airflow", "dag-processor"]
    assert commands["airflow-triggerer"] == ["airflow", "triggerer"]
    assert services["postgres"]["image"].startswith("postgres:")
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/dmscdc/dags"
    assert env["DMSCDC_DEMO_HOME"]


def test_every_service_command_exists(compose):
    known = {"airflow": airflow_subcommands(), "dmscdc": dmscdc_subcommands()}
    for name, service in compose["services"].items():
        command = service.get("command")
        if not command:
            continue
        if command[0].startswith("/opt/dmscdc/"):
            assert (REPO / command[0].removeprefix("/opt/dmscdc/")).is_file(), name
            continue
        assert command[1] in known[command[0]], f"{name}: {command}"


def test_the_init_script_runs_only_commands_that_exist():
    known = {"airflow": airflow_subcommands(), "dmscdc": dmscdc_subcommands()}
    script = REPO / "docker" / "init.sh"
    for line in script.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] in known:
            assert words[1] in known[words[0]], line


def test_mounted_folders_and_build_files_exist(compose):
    common = compose["x-airflow-common"]
    assert (REPO / common["build"]["context"] / common["build"]["dockerfile"]).is_file()
    named_volumes = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).is_dir(), f"{name}: {volume}"
            else:
                assert source in named_volumes, f"{name}: {volume}"


def test_the_image_matches_the_airflow_version_the_project_is_tested_with():
    from importlib.metadata import version

    dockerfile = (REPO / "docker" / "Dockerfile").read_text()

    assert f"ARG AIRFLOW_VERSION={version('apache-airflow')}" in dockerfile
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}-python\$\{PYTHON_VERSION\}$", dockerfile, re.M)
    assert "openjdk" in dockerfile and '"/opt/dmscdc[spark]"' in dockerfile
