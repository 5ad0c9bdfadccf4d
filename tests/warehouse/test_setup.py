"""The warehouse's schema version: recorded by every set-up, and an older release refuses a
warehouse a newer one has set up instead of failing on what it added."""

from __future__ import annotations

import hashlib
import re

import pytest

from audience_profiles.pipeline import RunWindow, run_all
from audience_profiles.warehouse import open_warehouse
from audience_profiles.warehouse.base import SCHEMA_VERSION, SQL_ROOT, WarehouseTooNewError
from tests.support import write_config, write_seed_example

# Changed a lasting table (a CREATE TABLE IF NOT EXISTS or ALTER TABLE ... ADD COLUMN anywhere
# in include/sql but the identity scratch)? Raise SCHEMA_VERSION (warehouse/base.py) and set this
# to the new digest: an older release must refuse a warehouse with the new tables.
TABLES_DIGEST = (4, "ee6858e6f6c0fd95")
LASTING = re.compile(r"CREATE TABLE IF NOT EXISTS[^;]*;|ALTER TABLE[^;]*ADD COLUMN[^;]*;", re.I)


def test_the_schema_version_moves_with_the_tables():
    statements = []
    for path in sorted(SQL_ROOT.rglob("*.sql")):
        if path.parent.name == "identity":  # scratch tables of a run
            continue
        text = re.sub(r"--[^\n]*", " ", path.read_text())  # comments and layout aside
        statements += [" ".join(s.split()) for s in LASTING.findall(text)]
    digest = hashlib.sha256("\n".join(sorted(statements)).encode()).hexdigest()[:16]
    assert len(statements) > 30 and (SCHEMA_VERSION, digest) == TABLES_DIGEST


def test_a_set_up_records_its_version_once(tmp_path):
    config = write_config(tmp_path)
    with open_warehouse(config) as wh:
        wh.setup()
        wh.setup()
        assert wh.query("SELECT version FROM warehouse_schema") == [(SCHEMA_VERSION,)]


def test_a_warehouse_a_newer_release_set_up_is_refused_at_once(tmp_path):
    config = write_config(tmp_path)
    write_seed_example(tmp_path / "landing")
    with open_warehouse(config) as wh:
        wh.setup()
        wh.execute_script(
            f"INSERT INTO warehouse_schema VALUES ({SCHEMA_VERSION + 1}, current_timestamp)"
        )

    with pytest.raises(WarehouseTooNewError, match="set up by a newer release") as err:
        run_all(RunWindow.for_date("2022-04-29"), config)

    assert f"schema version {SCHEMA_VERSION + 1}; this one knows up to {SCHEMA_VERSION}" in str(
        err.value
    )
