"""A Python environment built the way Amazon MWAA builds one from a dmscdc bundle.

MWAA starts from its Airflow image (apache-airflow of the environment's version, no Spark)
and pip-installs the bundle's requirements.txt; plugins.zip is extracted into the plugins
folder, which Airflow puts on sys.path. This builds that environment as a venv:

    python tests/acceptance/mwaa_env.py [VERSION ...]    # `make test` runs it first, for both ends

Airflow's constraints file (the requirements' first line) lives on raw.githubusercontent.com,
which CI cannot reach; the stand-in is a pinned file per Airflow version: the project's own
requirements.txt for the version it pins, tests/acceptance/constraints-<version>.txt for others.

Venvs are cached under ``$DMSCDC_CACHE_DIR`` (default ``~/.cache/dmscdc``), named by a hash of
what goes into them, so a rerun takes a second and a changed requirement builds a new one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("DMSCDC_CACHE_DIR") or Path.home() / ".cache" / "dmscdc")
CONSTRAINT_LINE = re.compile(r'^--constraint\s+"?https://raw\.githubusercontent\.com/apache/airflow/constraints-([^/]+)/[^"]*"?\s*$')


def project_airflow_version() -> str:
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.startswith("apache-airflow=="):
            return line.split("==", 1)[1].strip()
    raise RuntimeError("requirements.txt pins no apache-airflow")


def constraints_file(airflow_version: str) -> Path:
    """The local stand-in for Airflow's published constraints of ``airflow_version``."""
    if airflow_version == project_airflow_version():
        return REPO / "requirements.txt"
    path = REPO / "tests" / "acceptance" / f"constraints-{airflow_version}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no pinned constraints for Airflow {airflow_version} at {path}")
    return path


def bundle_requirements(airflow_version: str) -> str:
    """The requirements.txt ``dmscdc mwaa-bundle --airflow-version`` writes."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "dmscdc_provider.cli", "mwaa-bundle", "--out", out,
                        "--sources", out, "--airflow-version", airflow_version],
                       check=True, capture_output=True, text=True)
        return (Path(out) / "requirements.txt").read_text()


def local_requirements(requirements: str) -> tuple[str, str]:
    """``requirements`` with its constraints URL replaced by the local stand-in; and the version."""
    lines, version = [], None
    for line in requirements.splitlines():
        match = CONSTRAINT_LINE.match(line.strip())
        if match:
            version = match.group(1)
            line = f'--constraint "{constraints_file(version)}"'
        lines.append(line)
    if version is None:
        raise ValueError("the bundle's requirements.txt has no Airflow constraints line")
    return "\n".join(lines) + "\n", version


def mwaa_venv(requirements: str) -> Path:
    """The venv MWAA would build for a bundle's ``requirements`` text (built once, then cached)."""
    local, airflow_version = local_requirements(requirements)
    digest = hashlib.sha256()
    for part in (sys.version, local, constraints_file(airflow_version).read_text()):
        digest.update(part.encode() + b"\0")
    venv = CACHE_DIR / f"mwaa-airflow-{airflow_version}-{digest.hexdigest()[:16]}"
    if (venv / ".complete").is_file():
        return venv
    # Scripts in a venv name its path, so it is built in place; the marker says it finished.
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / "requirements.txt").write_text(local)
    # MWAA's image: Airflow itself, under the same constraints; then the bundle's requirements.
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    f"apache-airflow=={airflow_version}", "-r", str(venv / "requirements.txt")], check=True)
    (venv / ".complete").write_text(local)
    return venv


def supported_airflow_range() -> list[str]:
    """The oldest supported Airflow and the newest (the project's pin): the acceptance test's two ends."""
    from dmscdc_provider import OLDEST_SUPPORTED_AIRFLOW

    return [OLDEST_SUPPORTED_AIRFLOW, project_airflow_version()]


def main(versions: list[str]) -> int:
    for version in versions or supported_airflow_range():
        print(f"MWAA environment for Airflow {version}: {mwaa_venv(bundle_requirements(version))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
