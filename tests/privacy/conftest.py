"""The people of tests/privacy/people.py built for every day, once per module, copied per test."""

from __future__ import annotations

import shutil

import pytest

from audience_profiles.pipeline import RunWindow, run_all
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
