"""No credential in configuration, logs or Airflow's database after a real run that uses it.

The daily DAG delivers to S3 (moto) through an Airflow connection (``AIRFLOW_CONN_*`` JSON) holding
a distinctive access key and secret key. Every task log line of the run (captured from the
process's stdout/stderr and Python logging, and any log file under AIRFLOW_HOME) and the metadata
database are then searched for them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import boto3
import pytest

from tests.privacy.dags import load_dag
from tests.privacy.people import ANN, write_people
from tests.support import write_config

pytestmark = pytest.mark.services

ACCESS_KEY = "AKIALOGCHECK7Q2W9E4R"
SECRET_KEY = "s3cr3t-Key/For+Log-Check-9f2c7d1e"
CONN_ID = "s3_secret_test"


def airflow_files() -> list[Path]:
    home = Path(os.environ["AIRFLOW_HOME"])
    return [p for p in home.rglob("*") if p.is_file()]


def test_runs_leave_no_credential_in_logs_config_or_metadata(
    airflow_db, moto_server, tmp_path, monkeypatch, capfd, caplog
):
    connection = {
        "conn_type": "aws",
        "login": ACCESS_KEY,
        "password": SECRET_KEY,
        "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)  # the connection is the only credential
    bucket = "secret-check"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    s3.create_bucket(Bucket=bucket)
    destination = {
        "name": "s3_drop",
        "kind": "s3",
        "conn_id": CONN_ID,
        "bucket": bucket,
        "formats": ["csv"],
        "tables": ["audience_profiles", "profile_identifiers"],
    }
    config = write_config(tmp_path, destinations=[destination])
    write_people(tmp_path / "landing")
    monkeypatch.setenv("AUDIENCE_PROFILES_CONFIG", config.source_file)

    run = load_dag("audience_profiles").test(logical_date=dt.datetime(2022, 4, 28, tzinfo=dt.UTC))

    assert "success" in str(run.state)
    body = s3.get_object(Bucket=bucket, Key="audience_profiles/dt=2022-04-28/part-00000.csv")
    assert ANN in body["Body"].read().decode()  # delivered through the connection
    captured = capfd.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert "delivered to s3_drop" in logs  # the capture sees the task logs
    stored = [(p, p.read_bytes()) for p in airflow_files()]
    assert any(p.name.startswith("airflow.db") for p, _ in stored)
    for secret in (SECRET_KEY, ACCESS_KEY):
        assert secret not in logs
        assert secret not in Path(config.source_file).read_text()
        assert not [p for p, data in stored if secret.encode() in data], secret
