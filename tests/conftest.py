"""Session-wide test set-up: an isolated AIRFLOW_HOME and the service fixtures in tests/services."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Airflow reads its configuration on first import: isolate it before any test imports Airflow.
_AIRFLOW_HOME = Path(
    os.environ.get("AP_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="ap-airflow-")
)
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).parents[1] / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(Path(__file__).parents[1] / "plugins"))
os.environ.setdefault(
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
)

pytest_plugins = sorted(
    f"tests.services.{p.stem}"
    for p in (Path(__file__).parent / "services").glob("*.py")
    if not p.stem.startswith("_")
)
