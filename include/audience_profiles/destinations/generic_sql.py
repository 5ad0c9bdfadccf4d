"""``sql``: the run's tables loaded into any SQL warehouse with a DB-API hook (PostgreSQL,
Teradata, ...), with the same load contract as the ``snowflake`` destination.

pipeline.yml::

    - name: postgres
      kind: sql
      conn_id: warehouse_pg           # any Airflow connection whose hook is a DbApiHook
      schema: audience                # optional; must exist (created by your DBA, not here)
      column_types: {string: TEXT}    # optional: override the type used for an Arrow type
      tables: [audience_profiles, profile_identifiers, profile_merges]

Only portable SQL is used, so nothing here knows one database from another: tables are probed
with ``SELECT * ... WHERE 1 = 0`` (no ``IF NOT EXISTS``, which Teradata lacks), the staging
table is filled with the hook's ``insert_rows`` in batches (``execute_values`` on psycopg2), and a
snapshot table is synchronised by ``DELETE`` + ``INSERT ... SELECT`` in one transaction: for a
full snapshot that is the portable form of MERGE plus deleting the keys that disappeared. Snapshot
rows without a key are left out before staging (``warehouse_load.py``), as for Snowflake, so
both kinds load the same rows. The column types per connection type are the one thing that differs (a table
below); Teradata's entry follows Teradata's documentation but has no emulator to be tested
against (see docs/snowflake.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from audience_profiles.destinations.base import register
from audience_profiles.destinations.warehouse_load import (
    LOG_TABLE,
    OCCURRENCE_COLUMN,
    Session,
    SqlWarehouseDestination,
    Staged,
)
from audience_profiles.warehouse.base import sql_literal

BATCH_ROWS = 10_000
# Column type per kind of Arrow type; per connection type where the ANSI spelling fails.
ANSI_TYPES = {
    "string": "VARCHAR(32000)",
    "boolean": "BOOLEAN",
    "integer": "BIGINT",
    "float": "DOUBLE PRECISION",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}
CONN_TYPE_TYPES = {
    "postgres": {"string": "TEXT"},
    "teradata": {
        "string": "VARCHAR(32000) CHARACTER SET UNICODE",
        "boolean": "BYTEINT",  # Teradata has no BOOLEAN
        "timestamp": "TIMESTAMP(6)",
    },
}


def type_kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    return "string"


# SQLSTATEs of a table or schema that is not there: PostgreSQL's undefined table and invalid
# schema name, and the ODBC/ISO base table not found that MySQL and SQL Server drivers give.
MISSING_TABLE_STATES = frozenset({"42P01", "3F000", "42S02"})
# A driver giving no SQLSTATE attribute (MySQLdb, pyodbc, pymssql, teradatasql, sqlite3) is
# judged by its message: "not there" only when it says so and says nothing of rights, as
# Snowflake's "does not exist or not authorized" does.
MISSING_TABLE_WORDS = (
    "does not exist",
    "doesn't exist",
    "no such table",
    "invalid object name",
    "42s02",
    "42p01",
)
DENIED_WORDS = ("denied", "permission", "not authorized", "privilege")


class DbApiSession(Session):
    """One DB-API connection: autocommit outside ``transaction()``, one transaction inside."""

    def __init__(self, hook):
        self.hook = hook
        self.connection = hook.get_conn()
        hook.set_autocommit(self.connection, True)

    def execute(self, sql: str) -> int:
        with contextlib.closing(self.connection.cursor()) as cur:
            cur.execute(sql)
            return cur.rowcount

    def query(self, sql: str) -> list[tuple]:
        with contextlib.closing(self.connection.cursor()) as cur:
            cur.execute(sql)
            return cur.fetchall()

    def columns(self, table: str) -> list[str] | None:
        with contextlib.closing(self.connection.cursor()) as cur:
            try:
                cur.execute(f"SELECT * FROM {table} WHERE 1 = 0")
            except Exception as exc:  # noqa: BLE001 - DB-API drivers differ; _not_there decides
                if self._not_there(exc):
                    return None
                raise
            return [d[0].lower() for d in cur.description]

    def _not_there(self, error: Exception) -> bool:
        """Whether the probe failed because the table is not there. Anything else (a lost
        connection, a revoked grant) must fail the task: taken as "no table", an erasure would
        answer done with the person's rows still loaded."""
        state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if state:  # psycopg (sqlstate), psycopg2 (pgcode), mysql-connector (sqlstate)
            return state in MISSING_TABLE_STATES
        text = str(error).lower()
        if any(w in text for w in DENIED_WORDS) or not any(w in text for w in MISSING_TABLE_WORDS):
            return False
        try:  # and the connection still answers
            self.query("SELECT 1")
        except Exception:  # noqa: BLE001 - the probe's own error says more
            return False
        return True

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.hook.set_autocommit(self.connection, False)
        try:
            yield
            self.connection.commit()
        except BaseException:
            self.connection.rollback()
            raise
        finally:
            self.hook.set_autocommit(self.connection, True)


@register("sql")
class GenericSqlDestination(SqlWarehouseDestination):
    OPTIONS = frozenset({"schema", "column_types", "batch_rows"})
    NEEDS_CONN_ID = True

    @contextlib.contextmanager
    def session(self) -> Iterator[DbApiSession]:
        from airflow.providers.common.sql.hooks.sql import DbApiHook
        from airflow.sdk import BaseHook

        if not self.config.conn_id:
            raise ValueError(f"destination {self.name!r}: conn_id is required")
        connection = BaseHook.get_connection(self.config.conn_id)
        hook = connection.get_hook()
        if not isinstance(hook, DbApiHook):
            raise ValueError(
                f"destination {self.name!r}: connection {self.config.conn_id!r} has no SQL hook"
            )
        self.hook = hook
        self.types = {
            **ANSI_TYPES,
            **CONN_TYPE_TYPES.get(connection.conn_type, {}),
            **(self.config.options.get("column_types") or {}),
        }
        db = DbApiSession(hook)
        try:
            yield db
        finally:
            db.connection.close()

    def prepare(self, db: DbApiSession) -> None:
        """Nothing to create: the schema is the DBA's (CREATE SCHEMA is not portable)."""

    def ident(self, name: str) -> str:
        return '"' + name.lower().replace('"', '""') + '"'

    def qualified(self, table: str) -> str:
        schema = self.config.options.get("schema")
        name = self.ident(table) if table else ""
        return f"{self.ident(schema)}.{name}" if schema else name

    def column_type(self, arrow_type: pa.DataType, json: bool = False) -> str:
        return self.types[type_kind(arrow_type)]

    def literal(self, value: Any) -> str:
        return sql_literal(value)

    def load_staging(self, db: DbApiSession, staged: Staged, path: str) -> None:
        if db.columns(staged.staging) is not None:  # left by a crashed attempt
            db.execute(f"DROP TABLE {staged.staging}")
        columns = ", ".join(f"{self.ident(n)} {self.column_type(t)}" for n, t in staged.columns)
        db.execute(f"CREATE TABLE {staged.staging} ({columns})")
        batch_rows = int(self.config.options.get("batch_rows", BATCH_ROWS))
        self.hook.insert_rows(
            staged.staging,
            _rows(path, batch_rows),
            target_fields=[self.ident(n) for n in staged.names],
            commit_every=batch_rows,
            executemany=True,
            fast_executemany=True,
        )

    def sync_snapshot(self, db: DbApiSession, staged: Staged, ds: str) -> None:
        target = self.qualified(staged.table)
        names = [self.ident(n) for n in staged.names]
        if staged.spec.ordinal_by:
            names.append(self.ident(OCCURRENCE_COLUMN))
        log, row_count = self.qualified(LOG_TABLE), self.ident("row_count")
        with db.transaction():
            # One sync of a table at a time. Under READ COMMITTED (PostgreSQL's default), a
            # DELETE that waited for another date's sync to commit skips the rows that sync
            # inserted: both dates' rows stayed. So every sync first locks the table's rows in
            # the load log, its own claim among them (claims commit before any sync starts): a
            # sync that starts while another is open waits here, and its statements then see
            # that sync's rows. Standard SQL, unlike LOCK TABLE.
            db.execute(
                f"UPDATE {log} SET {row_count} = {row_count} "
                f"WHERE {self.ident('table_name')} = {self.literal(staged.table)}"
            )
            # Checked once, in the transaction: guarding DELETE and INSERT each could empty the
            # table, if a later date claimed it between the two statements.
            if db.query(self.later_load(staged.table, ds)):
                return
            db.execute(f"DELETE FROM {target}")
            db.execute(
                f"INSERT INTO {target} ({', '.join(names)}) "
                f"SELECT * FROM ({self.staged_select(staged)}) s"
            )


def _rows(path: str, batch_rows: int) -> Iterator[tuple]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        columns = [column.to_pylist() for column in batch.columns]
        yield from zip(*columns, strict=True)
