"""moto in server mode on loopback: S3, Kinesis, Firehose and SQS for the tests.

Tests reach it the way a user reaches real AWS: through an Airflow connection whose extra sets
``endpoint_url`` (``AIRFLOW_CONN_AWS_TEST``), never through a patched client.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.services._proc import background, free_port

AWS_CONN_ID = "aws_test"


def aws_connection_json(endpoint_url: str) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint_url, "region_name": "us-east-1"},
        }
    )


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> str:
    """URL of a moto server shared by the session (``moto_server -H 127.0.0.1 -p PORT``)."""
    port = free_port()
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    log = tmp_path_factory.getbasetemp() / "logs" / "moto.log"
    with background([exe, "-H", "127.0.0.1", "-p", str(port)], port, log):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def aws_conn(moto_server, monkeypatch) -> str:
    """Point the Airflow connection ``aws_test`` (and boto's defaults) at the moto server."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}", aws_connection_json(moto_server))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.pop("AWS_PROFILE", None)
    return AWS_CONN_ID
