"""A throw-away PostgreSQL (Debian's packages) on loopback for the generic SQL destination.

``initdb`` into a temporary folder, then ``postgres`` on a free 127.0.0.1 port with its unix
socket in that folder. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` OS user (created if missing). Tests reach it through an Airflow connection
(``AIRFLOW_CONN_PG_TEST``) and the postgres provider's hook.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.services._proc import background, free_port

PG_CONN_ID = "pg_test"
PG_BIN = Path(os.environ.get("AP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


def _as_server_user() -> list[str]:
    """The command prefix that runs a program as the server's OS user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
        )
    return ["runuser", "-u", PG_USER, "--"]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> int:
    """Port of a PostgreSQL server shared by the session (trust auth, loopback only)."""
    if not (PG_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}")
    prefix = _as_server_user()
    # Not under pytest's basetemp: that folder is private to the user running the tests.
    root = Path(tempfile.mkdtemp(prefix="ap-postgres-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if prefix:
        shutil.chown(root, PG_USER)
        shutil.chown(sockets, PG_USER)
    subprocess.run(
        [
            *prefix,
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            PG_USER,
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    cmd = [
        *prefix,
        str(PG_BIN / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(sockets),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
    ]
    log = tmp_path_factory.getbasetemp() / "logs" / "postgres.log"

    def ready() -> None:
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"], check=False
        ).returncode:
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not become ready")
            time.sleep(0.1)

    try:
        with background(cmd, port, log, ready=ready):
            yield port
    finally:
        shutil.rmtree(root, ignore_errors=True)


def postgres_connection_json(port: int) -> str:
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": port,
            "login": PG_USER,
            "password": "unused-trust-auth",
            "schema": "postgres",
        }
    )


@pytest.fixture
def pg_conn(postgres_server, monkeypatch) -> str:
    """Point the Airflow connection ``pg_test`` at the PostgreSQL server."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{PG_CONN_ID.upper()}", postgres_connection_json(postgres_server)
    )
    return PG_CONN_ID
