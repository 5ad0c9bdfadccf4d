"""moto in this test process (``ThreadedMotoServer``), for tests that change a service's behaviour.

The shared ``moto_server`` runs in its own process; a test that injects failures into moto's
Kinesis or Firehose backend (a throttled shard, a failed entry) needs the server in its own
process, so the patched backend is the one that answers. Clients still reach it over HTTP through
an Airflow connection, as they reach AWS.
"""

from __future__ import annotations

import json

import pytest

from tests.services._proc import free_port
from tests.services.moto import aws_connection_json

AWS_IN_PROCESS_CONN_ID = "aws_in_process"


@pytest.fixture(scope="session")
def moto_in_process() -> str:
    """URL of a moto server running in a thread of the test process."""
    from moto.server import ThreadedMotoServer  # heavy: imported only by sessions that use it

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_conn_in_process(moto_in_process, monkeypatch) -> str:
    """Airflow connection ``aws_in_process`` to that server, with botocore's own retries off:
    the code under test must handle throttling itself, not be rescued by the SDK."""
    conn = json.loads(aws_connection_json(moto_in_process))
    conn["extra"]["config_kwargs"] = {"retries": {"mode": "standard", "total_max_attempts": 1}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{AWS_IN_PROCESS_CONN_ID.upper()}", json.dumps(conn))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return AWS_IN_PROCESS_CONN_ID
