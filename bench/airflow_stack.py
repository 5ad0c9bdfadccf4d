"""A minimal running Airflow for benchmarks: PostgreSQL, api-server, scheduler, triggerer and
dag-processor (LocalExecutor), each in its own process group, all stopped when the block ends.

A stand-in until the reusable fixture ``tests/services/airflow_stack.py`` (issue 8) is merged.
PostgreSQL comes from the Debian binaries; as root its commands run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.services._proc import background, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres(root: Path) -> Iterator[str]:
    """A throw-away PostgreSQL cluster on a free loopback port; yields the SQLAlchemy URL."""
    data, sockets = root / "pg" / "data", root / "pg" / "run"
    sockets.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(root / "pg", "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
        + ["--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    cmd = [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets)]
    # Durability is not what is measured: skip the fsyncs.
    for setting in ("listen_addresses=127.0.0.1", "fsync=off", "synchronous_commit=off"):
        cmd += ["-c", setting]

    def accepting() -> None:
        # The port opens before recovery ends ("the database system is starting up").
        deadline = time.monotonic() + 60
        isready = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        while subprocess.run(isready).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL on port {port} never accepted connections")
            time.sleep(0.2)

    with background(_as_postgres(cmd), port, root / "logs" / "postgres.log", ready=accepting):
        subprocess.run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
            + ["airflow"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/airflow"


@dataclass
class AirflowStack:
    api_url: str
    env: dict[str, str]

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """Call the public REST API (all users are admins: no token needed)."""
        request = urllib.request.Request(
            f"{self.api_url}/api/v2/{path.lstrip('/')}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def wait_for(self, path: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.api("GET", path)
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


@contextlib.contextmanager
def airflow_stack(root: Path, dags_folder: Path, env: dict[str, str]) -> Iterator[AirflowStack]:
    """Start the stack with ``env`` added to every process; yields once the API answers."""
    logs = root / "logs"
    with postgres(root) as db_url:
        api_port = free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",
            **env,
        }
        subprocess.run([AIRFLOW, "db", "migrate"], check=True, capture_output=True, env=env)
        with contextlib.ExitStack() as stack:
            api = [AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(api_port), "-w", "1"]
            stack.enter_context(background(api, api_port, logs / "api-server.log", env, None, 120))
            # These serve nothing; "ready" for them means the API they report to answers.
            for name, cmd in (
                ("scheduler", [AIRFLOW, "scheduler", "--skip-serve-logs"]),
                ("triggerer", [AIRFLOW, "triggerer", "--skip-serve-logs"]),
                ("dag-processor", [AIRFLOW, "dag-processor"]),
            ):
                stack.enter_context(background(cmd, api_port, logs / f"{name}.log", env))
            airflow = AirflowStack(api_url, env)
            airflow.wait_for("monitor/health", 60)
            yield airflow
