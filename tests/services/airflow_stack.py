"""A real Airflow 3 deployment on loopback: PostgreSQL, api-server, scheduler, dag-processor and
triggerer with the LocalExecutor, each its own process, as in production (not ``airflow
standalone``, which binds 0.0.0.0 log servers and runs on SQLite).

Started only when a test asks for it (``airflow_stack`` is session-scoped), or from code with
:func:`start_airflow_stack`. The handle's small API is what scheduler tests and benchmarks use::

    stack.base_url                      # http://127.0.0.1:<port>
    stack.api("POST", "/api/v2/backfills", json={...})   # JSON body, with a JWT from /auth/token
    stack.cli("pools", "list")          # the airflow CLI against this deployment
    stack.env, stack.home, stack.root   # environment and folders (logs: stack.logs)
    stack.config_path                   # the pipeline.yml the DAGs read (AUDIENCE_PROFILES_CONFIG)
    stack.stop()                        # or: with start_airflow_stack(...) as stack: ...

PostgreSQL is Debian's (``/usr/lib/postgresql/15/bin``); as root it runs as the OS user
``postgres`` through ``runuser``, because the server refuses to run as root.

``retry_delay_seconds`` shortens every task's retry delay through a cluster policy
(``$AIRFLOW_HOME/config/airflow_local_settings.py``), the deployment-side way to override DAG
defaults: a test that makes a task fail waits seconds, not the production 20-40 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from audience_profiles.config import PROJECT_ROOT
from audience_profiles.dag_defaults import WAREHOUSE_POOL, WAREHOUSE_POOL_SLOTS
from tests.services._proc import background, free_port, wait_for_port
from tests.support import write_config

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
# Consumer DAGs the docs give as examples (docs/operations.md): the session's stack runs them too.
EXAMPLE_DAGS = PROJECT_ROOT / "docs" / "examples"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))

# Settings that make a loopback deployment react in a second instead of in tens of seconds.
# Scheduled runs are off: tests and benchmarks create their runs (backfills, triggers) explicitly,
# so a catch-up from start_date never competes with them. Override any of these per stack (the
# stream bench turns use_job_schedule back on: without it no asset-triggered run is made either).
FAST_SETTINGS = {
    "core": {
        "executor": "LocalExecutor",
        "parallelism": "4",
        "load_examples": "False",
        "dagbag_import_timeout": "120",
    },
    "scheduler": {
        "use_job_schedule": "False",
        "scheduler_idle_sleep_time": "0.1",
        "scheduler_heartbeat_sec": "1",
        "job_heartbeat_sec": "1",
        "pool_metrics_interval": "60",
    },
    "dag_processor": {
        "refresh_interval": "5",
        "min_file_process_interval": "60",
        "parsing_processes": "1",
    },
    "triggerer": {"job_heartbeat_sec": "1"},
    "api": {"workers": "1"},
    # A task's first call to the API server can take seconds on a busy machine; a 5 s timeout
    # would kill the task process at start-up and cost a retry.
    "workers": {"execution_api_timeout": "60"},
}


RETRY_POLICY = '''"""Written by tests/services/airflow_stack.py: retries wait {seconds} s here."""
import datetime


def task_policy(task):
    task.retry_delay = datetime.timedelta(seconds={seconds})
'''


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (requests.RequestException, KeyError, ValueError) as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f}s (last error: {last_error})")


class AirflowStack:
    """Handle on a running deployment; see the module docstring."""

    def __init__(self, root: Path, env: dict[str, str], base_url: str, stack: contextlib.ExitStack):
        self.root = root
        self.home = Path(env["AIRFLOW_HOME"])
        self.logs = root / "logs"
        self.env = env
        self.base_url = base_url
        self.config_path = Path(env["AUDIENCE_PROFILES_CONFIG"])
        self._stack = stack
        self._token: str | None = None
        self.http = requests.Session()
        self.processes: dict[str, subprocess.Popen] = {}

    def token(self) -> str:
        """A JWT for the admin user from the simple auth manager (``POST /auth/token``)."""
        if self._token is None:
            response = self.http.post(
                f"{self.base_url}/auth/token",
                json={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
                timeout=30,
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs) -> Any:
        """Call the REST API as admin; return the decoded JSON (None for an empty body)."""
        response = self.http.request(
            method,
            f"{self.base_url}{path}",
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=kwargs.pop("timeout", 30),
            **kwargs,
        )
        if response.status_code >= 400:
            raise requests.HTTPError(
                f"{method} {path}: {response.status_code} {response.text[:500]}", response=response
            )
        return response.json() if response.content else None

    def start_scheduler(self, name: str, **settings: str) -> subprocess.Popen:
        """One more scheduler (``logs/<name>.log``), with these ``[scheduler]`` settings over the
        stack's (schedulers share the work on PostgreSQL); stopped with the stack."""
        env = self.env | {f"AIRFLOW__SCHEDULER__{k.upper()}": v for k, v in settings.items()}
        command = [AIRFLOW, "scheduler", "--skip-serve-logs"]
        self.processes[name] = self._stack.enter_context(
            background(command, None, self.logs / f"{name}.log", env=env)
        )
        return self.processes[name]

    def cli(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run ``airflow <args>`` against this deployment's metadata database (``env`` over the
        stack's environment)."""
        result = subprocess.run(
            [AIRFLOW, *args],
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
            )
        return result

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        """Wait until the dag-processor has parsed ``dag_id``; fail at once on an import error."""

        def parsed():
            errors = self.api("GET", "/api/v2/importErrors")["import_errors"]
            if errors:
                raise AssertionError(f"DAG import errors: {errors}")
            try:
                return self.api("GET", f"/api/v2/dags/{dag_id}")
            except requests.HTTPError as exc:
                if exc.response is not None and exc.response.status_code == 404:
                    return None
                raise

        return wait_until(parsed, timeout, f"DAG {dag_id} parsed by the dag-processor")

    def stop(self, grace: float = 5) -> None:
        # Signal every component at once, give them ``grace`` seconds together, then kill.
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.1))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self._stack.close()

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _os_user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _ini(settings: dict[str, dict[str, str]]) -> dict[str, str]:
    return {
        f"AIRFLOW__{section.upper()}__{key.upper()}": value
        for section, values in settings.items()
        for key, value in values.items()
    }


def _start_postgres(stack: contextlib.ExitStack, logs: Path) -> str:
    """A throw-away PostgreSQL cluster; returns the SQLAlchemy URL of a fresh ``airflow`` DB."""
    import psycopg2

    if not (POSTGRES_BIN / "postgres").exists():
        raise FileNotFoundError(f"{POSTGRES_BIN}/postgres is missing: apt-get install postgresql")
    # Not under pytest's tmp folder: that is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="ap-pg-"))
    stack.callback(shutil.rmtree, base, ignore_errors=True)
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, str(POSTGRES_BIN / "initdb"), "-D", str(base / "data"), "-U", "postgres"]
        + ["--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    # Durability is worthless for a test database; fsync off keeps migrations fast.
    cmd = [*as_user, str(POSTGRES_BIN / "postgres"), "-D", str(base / "data")]
    cmd += ["-h", "127.0.0.1", "-p", str(port), "-k", str(base)]
    cmd += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    cmd += ["-c", "max_connections=200"]
    stack.enter_context(background(cmd, port, logs / "postgres.log"))

    def accepting():  # the port opens before the server accepts sessions
        try:
            return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        except psycopg2.OperationalError:
            return None

    con = wait_until(accepting, 60, "PostgreSQL accepting connections", 0.1)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute("CREATE DATABASE airflow")
    con.close()
    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/airflow"


def start_airflow_stack(
    root: Path,
    *,
    config_path: Path,
    settings: dict[str, dict[str, str]] | None = None,
    extra_env: dict[str, str] | None = None,
    dags_folder: Path = PROJECT_ROOT / "dags",
    retry_delay_seconds: float | None = None,
) -> AirflowStack:
    """Start PostgreSQL and the Airflow components under ``root``; the DAGs read ``config_path``.

    ``settings`` override :data:`FAST_SETTINGS` per section; ``extra_env`` adds variables (an
    ``AIRFLOW_CONN_*`` for a destination, say) to every component. Call ``stop()`` at the end, or
    use the handle in a ``with`` block.
    """
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    home = root / "airflow"
    home.mkdir(exist_ok=True)
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}))
    if retry_delay_seconds is not None:
        (home / "config").mkdir(exist_ok=True)
        (home / "config" / "airflow_local_settings.py").write_text(
            RETRY_POLICY.format(seconds=retry_delay_seconds)
        )
    api_port = free_port()
    base_url = f"http://127.0.0.1:{api_port}"

    merged = {section: dict(values) for section, values in FAST_SETTINGS.items()}
    for section, values in (settings or {}).items():
        merged.setdefault(section, {}).update(values)
    stack = contextlib.ExitStack()
    try:
        sql_alchemy_conn = _start_postgres(stack, logs)
        merged["database"] = {"sql_alchemy_conn": sql_alchemy_conn}
        merged["core"] |= {
            "dags_folder": str(dags_folder),
            "plugins_folder": str(PROJECT_ROOT / "plugins"),
            "execution_api_server_url": f"{base_url}/execution/",
            "simple_auth_manager_users": f"{ADMIN_USER}:admin",
            "simple_auth_manager_passwords_file": str(passwords),
        }
        merged["api"] = merged.get("api", {}) | {
            "base_url": base_url,
            "secret_key": secrets.token_hex(16),
        }
        merged["api_auth"] = {"jwt_secret": secrets.token_hex(32)}
        # Strip the test session's own Airflow settings (SQLite home): this stack has its own.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        env |= _ini(merged) | {
            "AIRFLOW_HOME": str(home),
            "AUDIENCE_PROFILES_CONFIG": str(config_path),
            # The worktree's package first, whatever is installed in the venv.
            "PYTHONPATH": os.pathsep.join(
                [str(PROJECT_ROOT / "include"), str(PROJECT_ROOT), env.get("PYTHONPATH", "")]
            ).rstrip(os.pathsep),
            **(extra_env or {}),
        }
        handle = AirflowStack(root, env, base_url, stack)
        with (logs / "db-migrate.log").open("w") as out:
            subprocess.run(
                [AIRFLOW, "db", "migrate"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )
        # Each component spends seconds importing Airflow: start them all at once.
        pool = subprocess.Popen(
            [AIRFLOW, "pools", "set", WAREHOUSE_POOL, str(WAREHOUSE_POOL_SLOTS)]
            + ["DuckDB allows one writer: warehouse tasks take turns"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, cmd in (
            ("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(api_port)]),
            ("scheduler", [AIRFLOW, "scheduler", "--skip-serve-logs"]),
            ("dag-processor", [AIRFLOW, "dag-processor"]),
            ("triggerer", [AIRFLOW, "triggerer", "--skip-serve-logs"]),
        ):
            handle.processes[name] = stack.enter_context(
                background(cmd, None, logs / f"{name}.log", env=env)
            )
        output, _ = pool.communicate(timeout=180)
        if pool.returncode != 0:
            raise RuntimeError(f"airflow pools set failed:\n{output[-3000:]}")
        wait_for_port(api_port, 180, handle.processes["api-server"])
        # The task execution API is built on its first request (~15 s here, blocking the
        # server): pay that now rather than in the first tasks' start-up calls.
        requests.get(f"{base_url}/execution/health", timeout=180).raise_for_status()

        def healthy():
            health = requests.get(f"{base_url}/api/v2/monitor/health", timeout=5).json()
            return all(
                health.get(part, {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            )

        wait_until(healthy, 120, "Airflow components healthy")
    except BaseException:
        stack.close()
        raise
    return handle


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory) -> AirflowStack:
    """One deployment for the session. Its DAGs read ``stack.config_path``: a pipeline.yml with
    everything under ``stack.root / "data"``; tests may rewrite it (keep its start_date).
    Retries wait about a second."""
    missing = [] if (POSTGRES_BIN / "postgres").exists() else [f"{POSTGRES_BIN}/postgres"]
    if os.geteuid() == 0 and not _os_user_exists("postgres"):
        missing.append("the OS user postgres (useradd --system postgres)")
    if missing:
        message = f"the Airflow stack needs {' and '.join(missing)}: apt-get install -y postgresql"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("airflow-stack")
    (root / "data").mkdir()
    config = write_config(root / "data")
    # The project's DAGs and the documented consumer DAG(s) of its assets, run as users would.
    dags = root / "dags"
    dags.mkdir()
    for dag_file in [*(PROJECT_ROOT / "dags").glob("*.py"), *EXAMPLE_DAGS.glob("*.py")]:
        (dags / dag_file.name).symlink_to(dag_file)
    stack = start_airflow_stack(
        root, config_path=Path(config.source_file), dags_folder=dags, retry_delay_seconds=1
    )
    try:
        yield stack
    finally:
        stack.stop()
