"""The stream preload plugin: the scheduler imports the stream task's modules when its job starts
(before LocalExecutor forks the workers its task processes are forked from); other components
do not. Each case runs in a fresh interpreter, the way Airflow starts a component."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from audience_profiles.config import PROJECT_ROOT
from audience_profiles.preload import STREAM_TASK_MODULES, preload, stream_destination_modules

COMPONENT = """
import json, sys
sys.argv = ["airflow", sys.argv[1]]
heavy = ["audience_profiles.stream", "pyarrow.parquet", "duckdb", "botocore.client"]
before = [m for m in heavy if m in sys.modules]
from airflow.jobs.job import Job
Job()  # what every component's command does first: the listeners' on_starting
print(json.dumps({"before": before, "after": [m for m in heavy if m in sys.modules]}))
"""


def start_component(command: str, tmp_path) -> dict:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "include"), str(PROJECT_ROOT)]),
    }
    done = subprocess.run(
        [sys.executable, "-c", COMPONENT, command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_scheduler_preloads_the_stream_task_modules(tmp_path):
    modules = start_component("scheduler", tmp_path)
    assert modules["before"] == []
    assert modules["after"] == [
        "audience_profiles.stream",
        "pyarrow.parquet",
        "duckdb",
        "botocore.client",
    ]


def test_other_components_do_not(tmp_path):
    assert start_component("triggerer", tmp_path)["after"] == []


def test_a_module_that_fails_is_logged_not_raised(caplog):
    preload(("audience_profiles.no_such_module", *STREAM_TASK_MODULES[:1]))
    assert "preloading audience_profiles.no_such_module failed" in caplog.text


def test_every_stream_destination_kind_is_preloaded():
    # One missing paid its imports in every micro-batch's task process.
    assert stream_destination_modules() == tuple(
        f"audience_profiles.destinations.{kind}" for kind in ("firehose", "kafka", "kinesis")
    )
