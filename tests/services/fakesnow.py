"""fakesnow in server mode on loopback: a Snowflake the connector reaches over http.

Tests reach it the way a user reaches Snowflake: through an Airflow Snowflake connection
(``AIRFLOW_CONN_SNOWFLAKE_TEST``) whose extra sets host, port and protocol, and the provider's
SnowflakeHook. The server keeps every database in memory for the session; each test uses its own
database name, so tests never see each other's tables.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from tests.services._proc import background, free_port

SNOWFLAKE_CONN_ID = "snowflake_test"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def snowflake_connection_json(port: int) -> str:
    return json.dumps(
        {
            "conn_type": "snowflake",
            "login": "fake",
            "password": "fakesnow",
            "extra": {
                "account": "fakesnow",
                "host": "127.0.0.1",
                "port": port,
                "protocol": "http",
                "network_timeout": 60,  # fail a test instead of retrying a server error for long
                "warehouse": "fakesnow",
            },
        }
    )


@pytest.fixture(scope="session")
def fakesnow_server(tmp_path_factory) -> int:
    """Port of a fakesnow server shared by the session."""
    port = free_port()
    log = tmp_path_factory.getbasetemp() / "logs" / "fakesnow.log"
    # As a module from the project root: run as a script from this folder, ``import fakesnow``
    # would find this file instead of the package.
    cmd = [sys.executable, "-m", "tests.services._fakesnow_server", "-s", "-p", str(port)]
    pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    # fakesnow makes a temp folder per stage upload and never removes it: keep them under
    # pytest's base temp, which pytest prunes, instead of /tmp
    tmpdir = tmp_path_factory.mktemp("fakesnow-tmp")
    with background(cmd, port, log, env={"PYTHONPATH": pythonpath, "TMPDIR": str(tmpdir)}):
        yield port


@pytest.fixture
def snowflake_conn(fakesnow_server, monkeypatch) -> str:
    """Point the Airflow connection ``snowflake_test`` at the fakesnow server."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{SNOWFLAKE_CONN_ID.upper()}", snowflake_connection_json(fakesnow_server)
    )
    return SNOWFLAKE_CONN_ID


@pytest.fixture
def snowflake_database() -> str:
    """A database name of its own for one test (fakesnow creates it on first connect)."""
    return "TEST_" + uuid.uuid4().hex[:12].upper()
