"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose file has
the official Airflow 3 shape plus the emulators, and the image installs exactly requirements.txt."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml

from audience_profiles.config import PROJECT_ROOT
from audience_profiles.dag_defaults import WAREHOUSE_POOL, WAREHOUSE_POOL_SLOTS

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
MOUNTS = {
    "./dags": "/opt/airflow/dags",
    "./include": "/opt/airflow/include",
    "./plugins": "/opt/airflow/plugins",
    "./config": "/opt/airflow/config",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    # PyYAML resolves the x-airflow-common anchor and the `<<` merges like docker compose does.
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (PROJECT_ROOT / "Dockerfile").read_text()


def pin(requirements: str, package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)$", requirements, re.MULTILINE)
    assert match, f"{package} is not pinned"
    return match.group(1)


def test_services_are_the_official_shape_plus_the_emulators(compose):
    assert "x-airflow-common" in compose
    assert set(compose["services"]) == {"postgres", "airflow-init", *AIRFLOW_SERVICES} | {
        "azurite",
        "moto",
    }
    commands = {name: compose["services"][name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }
    assert set(compose["volumes"]) >= {"postgres-db-volume", "data"}


def test_every_airflow_service_shares_the_common_settings(compose):
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        service = compose["services"][name]
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-apiserver:8080/execution/"
        )
        assert env["AUDIENCE_PROFILES_CONFIG"] == "/opt/airflow/include/config/pipeline.yml"
        mounts = dict(
            v.replace("${AIRFLOW_PROJ_DIR:-.}", ".").split(":", 1) for v in service["volumes"]
        )
        assert MOUNTS.items() <= mounts.items(), name
        assert mounts["data"] == "/opt/airflow/data"
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
        if name != "airflow-init":
            assert service["depends_on"]["airflow-init"] == {
                "condition": "service_completed_successfully"
            }
            assert service["healthcheck"]["test"], name
            assert service["restart"] == "always"
    ports = compose["services"]["airflow-apiserver"]["ports"]
    assert ports == ["8080:8080"]


def test_connections_point_at_the_emulators_and_secrets_come_from_the_environment(compose):
    env = compose["x-airflow-common"]["environment"]
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["extra"]["endpoint_url"] == "http://moto:5000"
    wasb = json.loads(env["AIRFLOW_CONN_WASB_DEFAULT"])
    assert (
        "BlobEndpoint=http://azurite:10000/devstoreaccount1" in wasb["extra"]["connection_string"]
    )
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"):
        assert env[key].startswith("${"), f"{key} must come from .env, not the file"
    assert env["AIRFLOW_CONN_AUDIENCE_PROFILES_ALERTS"].startswith("${")
    for name in ("postgres", "azurite", "moto"):
        assert compose["services"][name]["healthcheck"]["test"], name


def test_init_migrates_and_creates_the_warehouse_pool(compose):
    init = compose["services"]["airflow-init"]
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    script = init["command"][-1]
    assert f"airflow pools set {WAREHOUSE_POOL} {WAREHOUSE_POOL_SLOTS} " in script, (
        "the DuckDB warehouse pool must exist before any run"
    )
    # and `make ui`, which makes the same pool for a local scheduler
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert f"airflow pools set {WAREHOUSE_POOL} {WAREHOUSE_POOL_SLOTS} " in makefile


def test_emulator_images_match_the_versions_the_tests_use(compose):
    dev = (PROJECT_ROOT / "requirements-dev.txt").read_text()
    assert compose["services"]["moto"]["image"] == f"motoserver/moto:{pin(dev, 'moto')}"
    azurite = json.loads((PROJECT_ROOT / "package.json").read_text())["devDependencies"]["azurite"]
    assert compose["services"]["azurite"]["image"].endswith(f"/azurite:{azurite}")


def test_the_image_installs_the_pinned_requirements_on_the_matching_airflow(dockerfile):
    requirements = (PROJECT_ROOT / "requirements.txt").read_text()
    base = re.search(r"^FROM apache/airflow:(\S+)-python(\S+)$", dockerfile, re.MULTILINE)
    assert base, "the image must build FROM the official apache/airflow image"
    airflow, python = base.groups()
    assert airflow == pin(requirements, "apache-airflow")
    requires = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert f">={python}" in requires["requires-python"]
    assert re.search(r"^COPY .*requirements\.txt (\S+)$", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install --no-cache-dir -r \S+requirements\.txt$", dockerfile, re.M)
    assert "PYTHONPATH=/opt/airflow/include" in dockerfile
    # every pin is exact, so the image gets the versions the tests ran with
    packages = [
        line for line in requirements.splitlines() if line and not line.startswith(("#", " "))
    ]
    assert packages and all("==" in line for line in packages)
