"""The embedded default: one DuckDB file.

DuckDB allows one writing process per file. Every task that opens the warehouse runs in the
``audience_profiles_warehouse`` Airflow pool (one slot), and ``connect`` also waits out a lock held
by anyone else (an analyst's shell, say) instead of failing the task at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from audience_profiles.config import WarehouseConfig
from audience_profiles.warehouse.base import Warehouse, sql_literal

log = logging.getLogger(__name__)
T = TypeVar("T")

# Snowflake spellings the shared SQL uses, defined for DuckDB so one file serves both engines.
COMPAT_MACROS = """
CREATE OR REPLACE TEMP MACRO regexp_like(s, p) AS regexp_full_match(s, p);
CREATE OR REPLACE TEMP MACRO try_to_date(s) AS try_cast(s AS DATE);
-- Snowflake's two-argument form: the instant in zone tz (DuckDB gives it as a naive TIMESTAMP).
CREATE OR REPLACE TEMP MACRO convert_timezone(tz, t) AS timezone(tz, t);
CREATE OR REPLACE TEMP MACRO sha2(s, bits) AS sha256(s);
"""
LOCK_WAIT_SECONDS = 300
# A line in the task log this often while the wait goes on: minutes of silence look like a hang.
LOCK_PROGRESS_SECONDS = 30
# Exported as BIGINT (Parquet int64), as the Snowflake engine exports every NUMBER(p,0) column:
# the files, and the manifests' schemas, are then the same whichever engine built them.
NARROW_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT", "UINTEGER"}


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back after a failed statement or COMMIT, never hiding why it failed. A COMMIT that
    failed (the disk under the WAL full: ``Failed to commit: Could not write file ...wal: No space
    left on device``) has ended the transaction already, and the ROLLBACK's own error (``cannot
    rollback - no transaction is active``) would be all the task log's last line and the alert
    said."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error as exc:
        log.debug("ROLLBACK after a failure: %s", exc)


def wait_for_lock(path: str, open_: Callable[[], T], then: str = "clear the task") -> T:
    """``open_()``, which opens the DuckDB file ``path``, tried again while another process holds
    the file's lock, for up to ``LOCK_WAIT_SECONDS``, logging the wait; then
    ``WarehouseLockedError``, which ends with what to do ``then``."""
    started = time.monotonic()
    next_progress = None  # set at the first lock conflict
    delay = 0.2
    while True:
        try:
            return open_()
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            now = time.monotonic()
            waited = now - started
            # DuckDB's message names the process holding the lock (its PID): the warning and the
            # error quote it, for the operator to find that process.
            if waited > LOCK_WAIT_SECONDS:
                raise WarehouseLockedError(
                    f"waited {waited:.0f} seconds for the lock on {path}: {exc}. Close that "
                    f"process's connection to the warehouse, then {then}"
                ) from exc
            if next_progress is None:
                log.warning(
                    "%s is locked by another process, waiting up to %d seconds for it: %s",
                    path,
                    LOCK_WAIT_SECONDS,
                    exc,
                )
                next_progress = now + LOCK_PROGRESS_SECONDS
            elif now >= next_progress:
                log.warning("still waiting for the lock on %s (%.0f seconds)", path, waited)
                next_progress = now + LOCK_PROGRESS_SECONDS
            time.sleep(delay)
            delay = min(delay * 2, 5)


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _connect_to_current(path: str) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect(path)`` on the file that has the name once its lock is held.

    `audience-profiles compact` renames a copy over the file while it holds the old one's lock
    (warehouse/compact.py). A connect that opened the old file just before the rename, and got
    its lock once compaction let go of it, wrote into the old file, no longer the warehouse: its
    rows were lost. Such a connection is closed, and the file now at ``path`` opened instead."""
    while True:
        before = _file_id(path)
        try:
            con = duckdb.connect(path)
        except duckdb.Error:
            # the old file's open met the log of the new one's writer: "WAL does not match"
            if before is None or _file_id(path) == before:
                raise
            continue
        if before is None or _file_id(path) == before:
            return con
        con.close()
        log.info("%s was replaced (compacted) while it was being opened: opening it again", path)


class WarehouseLockedError(RuntimeError):
    """The warehouse file stayed locked by another process for ``LOCK_WAIT_SECONDS``."""


class DuckDBWarehouse(Warehouse):
    engine = "duckdb"
    home_schema = "main"

    def __init__(self, config: WarehouseConfig):
        self.config = config
        Path(config.path).parent.mkdir(parents=True, exist_ok=True)
        self.con = self._connect(config.path)
        self.con.execute(f"SET memory_limit = {sql_literal(config.memory_limit)}")
        self.con.execute(f"SET threads = {int(config.threads)}")
        self.con.execute("SET preserve_insertion_order = false")
        # As the Snowflake session (TIMEZONE=UTC): a timestamp without an offset is UTC, never
        # the machine's local time.
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(COMPAT_MACROS)

    @staticmethod
    def _connect(path: str) -> duckdb.DuckDBPyConnection:
        return wait_for_lock(path, lambda: _connect_to_current(path))

    def execute_script(self, sql: str) -> None:
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute(sql)
            self.con.execute("COMMIT")
        except Exception:
            rollback(self.con)
            raise

    def execute_statements(self, sql: str) -> None:
        for statement in self.con.extract_statements(sql):
            self.con.execute(statement)  # auto-commit: one transaction each

    def query(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()

    def staged_relation(self, path: str) -> str:
        return f"read_parquet({sql_literal(path)})"

    def export_parquet(self, relation: str, path: str) -> int:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        source = (
            relation
            if relation.lstrip().lower().startswith("select")
            else f"SELECT * FROM {relation}"
        )
        source = self._export_columns(source)
        self.con.execute(
            f"COPY ({source}) TO {sql_literal(path)} (FORMAT parquet, COMPRESSION zstd)"
        )
        return self.con.execute(
            f"SELECT count(*) FROM read_parquet({sql_literal(path)})"
        ).fetchall()[0][0]

    def _export_columns(self, source: str) -> str:
        """``source`` with every column as the export writes it (binding it runs nothing):
        narrower integers cast to BIGINT, and every column nullable. DuckDB's Parquet writer marks
        a column ``required`` when the statistics of the table it reads show no NULL, and those
        cover every date of the table: a date's export would then change its schema when a later
        partition lands (and differ from the Snowflake engine's, where every column is optional).
        The CASE hides the statistics; it keeps an ordered source's order, and costs a few
        per cent of an export (2-18% of the export statement alone, measured in review)."""
        relation = self.con.sql(source)
        columns = []
        for name, column_type in zip(relation.columns, relation.types, strict=True):
            quoted = '"' + name.replace('"', '""') + '"'
            value = f"CAST({quoted} AS BIGINT)" if str(column_type) in NARROW_INTEGERS else quoted
            columns.append(f"CASE WHEN {quoted} IS NULL THEN NULL ELSE {value} END AS {quoted}")
        return f"SELECT {', '.join(columns)} FROM ({source})"

    def close(self) -> None:
        self.con.close()
