"""Session-wide test set-up: an isolated AIRFLOW_HOME and the service fixtures in tests/services."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Airflow reads its configuration on first import: isolate it before any test imports Airflow.
# Each test process has its own: pytest-xdist's workers (gw0, gw1, ...) run side by side.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if os.environ.get("AP_TEST_AIRFLOW_HOME"):
    _AIRFLOW_HOME = Path(os.environ["AP_TEST_AIRFLOW_HOME"]) / _WORKER
    _AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
else:
    _AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix=f"ap-airflow-{_WORKER}"))
    # ours, so ours to remove: every test session used to leave one behind in /tmp
    atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).parents[1] / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(Path(__file__).parents[1] / "plugins"))
# Set, not defaulted: a worker inherits the environment of the process that started it, and
# with it that process's database; two processes on one SQLite file lock each other out.
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"

pytest_plugins = sorted(
    f"tests.services.{p.stem}"
    for p in (Path(__file__).parent / "services").glob("*.py")
    if not p.stem.startswith("_")
)


def pytest_sessionfinish(session, exitstatus):
    """fakesnow makes a stage folder in the system's temp folder when imported (the in-process
    tests import it) and never removes it: every test session left one in /tmp."""
    import sys

    stage = sys.modules.get("fakesnow.transforms.stage")
    if stage is not None:
        shutil.rmtree(stage.LOCAL_BUCKET_PATH, ignore_errors=True)
