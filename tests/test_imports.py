"""The build's modules import no Airflow: the CLI and the benchmark run the build without it,
and importing ``airflow.sdk`` costs about 2 s and 100 MiB per process. (In stop 34, an asset
defined in ``dag_defaults``, which the report imports, made every CLI build and every benchmark
run pay it: the 1M daily build went from 6.4 to 9.3 s.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from audience_profiles.config import PROJECT_ROOT

BUILD_MODULES = [
    "audience_profiles.cli",
    "audience_profiles.dag_defaults",
    "audience_profiles.identity",
    "audience_profiles.landing",
    "audience_profiles.pipeline",
    "audience_profiles.report",
    "audience_profiles.privacy.erasure",
    "audience_profiles.warehouse.compact",
]


def test_the_build_s_modules_import_no_airflow():
    code = (
        "import importlib, json, sys\n"
        f"for name in {BUILD_MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "include")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == []
