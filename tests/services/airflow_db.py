"""The Airflow metadata database of the test AIRFLOW_HOME (tests/conftest.py), for dag.test().

``airflow db migrate`` runs once per session, in a subprocess with this process's environment, so
it migrates exactly the SQLite file tests/conftest.py points Airflow at.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """The metadata DB URL, migrated (tables created) and ready for dag.test()."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )
    return os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
