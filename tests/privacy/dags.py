"""Load a DAG from its file (dags/ is not a package), as cli._load_dag does, for dag.test()."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DAGS = Path(__file__).parents[2] / "dags"


def load_dag(name: str):
    """The DAG object defined by ``dags/<name>.py`` (its DAG function is named like the file)."""
    spec = importlib.util.spec_from_file_location(f"dag_file_{name}", DAGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)()
