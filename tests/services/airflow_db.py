"""An Airflow metadata database (SQLite, in the session's AIRFLOW_HOME) for dag.test() runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / "airflow.db").exists():
        airflow = Path(sys.executable).with_name("airflow")
        subprocess.run(
            [str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
        )
    return home
