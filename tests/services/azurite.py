"""Azurite (the Azure Storage emulator) on loopback: Blob service for the azure destination tests.

Installed from package.json at the project root (``npm ci``). Tests reach it through the Airflow
connection ``azure_test`` (``AIRFLOW_CONN_AZURE_TEST``), a wasb connection string for the emulator's
well-known development account.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.services._proc import background, free_port

AZURE_CONN_ID = "azure_test"
AZURITE_BLOB = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "azurite-blob"
# Azurite's fixed development account (public, documented by Microsoft; not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"
    )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> str:
    """Connection string of an Azurite Blob service shared by the session."""
    if not AZURITE_BLOB.exists():
        message = f"{AZURITE_BLOB} is missing: run `npm ci` in the project root"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    base = tmp_path_factory.getbasetemp()
    location = base / "azurite"
    location.mkdir()
    cmd = [
        str(AZURITE_BLOB),
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--location", str(location),
        "--skipApiVersionCheck",
        "--silent",
        "--disableTelemetry",  # otherwise it reports usage to a Microsoft endpoint
    ]  # fmt: skip
    with background(cmd, port, base / "logs" / "azurite.log"):
        yield azurite_connection_string(port)


@pytest.fixture
def azure_conn(azurite, monkeypatch) -> str:
    """Point the Airflow connection ``azure_test`` at the Azurite Blob service."""
    conn = {"conn_type": "wasb", "extra": {"connection_string": azurite}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{AZURE_CONN_ID.upper()}", json.dumps(conn))
    return AZURE_CONN_ID
