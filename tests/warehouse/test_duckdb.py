"""warehouse/duckdb.py: the embedded warehouse's own behaviour (the lock wait has its own file)."""

from __future__ import annotations

import duckdb
import pytest

from audience_profiles.config import WarehouseConfig
from audience_profiles.warehouse.duckdb import DuckDBWarehouse


class _CommitFailsConnection:
    """A DuckDB connection whose COMMIT fails as it does with the disk under the WAL full: the
    transaction is over, and the error says why."""

    def __init__(self, con):
        self.con = con

    def execute(self, sql, *args):
        if sql == "COMMIT":
            self.con.execute("ROLLBACK")
            raise duckdb.TransactionException(
                'TransactionContext Error: Failed to commit: Could not write file "w.duckdb.wal": '
                "No space left on device"
            )
        return self.con.execute(sql, *args)


def test_a_failed_commit_is_the_error_raised_not_the_rollback_after_it(tmp_path):
    wh = DuckDBWarehouse(WarehouseConfig(engine="duckdb", path=str(tmp_path / "w.duckdb")))
    real = wh.con
    wh.con = _CommitFailsConnection(real)
    try:
        with pytest.raises(duckdb.TransactionException, match="No space left on device"):
            wh.execute_script("CREATE TABLE t AS SELECT 1 AS x")
    finally:
        wh.con = real
        wh.close()
