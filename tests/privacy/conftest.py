"""The people of tests/privacy/people.py built for every day, once per module, copied per test."""

from __future__ import annotations

import shutil
import uuid

import pytest

from audience_profiles.config import WarehouseConfig
from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.warehouse.duckdb import DuckDBWarehouse
from audience_profiles.warehouse.snowflake import SnowflakeWarehouse
from tests.privacy.people import DAYS, write_people
from tests.support import write_config


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    """Landing, warehouse, work folder and local drop after a daily run of every day."""
    root = tmp_path_factory.mktemp("built")
    config = write_config(root)
    write_people(root / "landing")
    for ds in DAYS:
        run_all(RunWindow.for_date(ds), config)
    return root


@pytest.fixture
def built(built_once, tmp_path):
    """A private copy of the built state for one test; its loaded configuration."""
    for name in ("landing", "work", "output", "warehouse.duckdb"):
        source = built_once / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, tmp_path / name)
    return write_config(tmp_path)


@pytest.fixture(params=["duckdb", pytest.param("snowflake", marks=pytest.mark.services)])
def wh(request, tmp_path):
    """An empty warehouse with the pipeline's tables, on each engine (Snowflake: fakesnow)."""
    if request.param == "duckdb":
        warehouse = DuckDBWarehouse(
            WarehouseConfig(path=str(tmp_path / "wh.duckdb"), memory_limit="256MB", threads=1)
        )
    else:
        conn_id = request.getfixturevalue("snowflake_conn")
        database = "PRIVACY_" + uuid.uuid4().hex[:8].upper()
        warehouse = SnowflakeWarehouse(
            WarehouseConfig(engine="snowflake", conn_id=conn_id, database=database, schema="main")
        )
    warehouse.run_sql("setup/tables")
    yield warehouse
    warehouse.close()
