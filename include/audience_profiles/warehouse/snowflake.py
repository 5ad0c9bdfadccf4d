"""Push-down: the same transform SQL, run inside Snowflake through the provider's SnowflakeHook.

Files move in and out through a named internal stage (``AP_STAGE`` in the warehouse schema): a
local Parquet file is PUT there and loaded with ``COPY INTO ... MATCH_BY_COLUMN_NAME``; results
come back through the connector as Arrow and are written to Parquet locally, so the destinations
receive the same files whichever engine built them.

Dialect notes (details in docs/snowflake.md):
- Snowflake ends an open transaction at every DDL statement. A script therefore runs statement by
  statement, DDL on its own and every run of DML statements inside one BEGIN ... COMMIT, so a
  DELETE + INSERT of a partition is still atomic.
- Unquoted identifiers are upper case in Snowflake; names read back from the warehouse (columns,
  table lists, exported Parquet) are lower-cased so the rest of the pipeline sees the same names
  as with DuckDB.
- ``CREATE SCHEMA`` switches the session to the new schema: the engine switches back to the
  warehouse schema after it, so unqualified names keep meaning the pipeline's tables.
- ``ALTER TABLE s.a RENAME TO b`` moves the table into the session's current schema in Snowflake
  (DuckDB keeps it in ``s``): the engine qualifies the new name with the old one's schema.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook
from airflow.sdk.exceptions import AirflowFailException
from snowflake.connector.errors import DatabaseError, ProgrammingError
from snowflake.connector.sqlstate import SQLSTATE_AUTHORIZATION_FAILURE
from snowflake.connector.util_text import split_statements

from audience_profiles.config import WarehouseConfig
from audience_profiles.errors import NotRetryable
from audience_profiles.warehouse.base import Warehouse

STAGE = "AP_STAGE"
# Session settings the shared SQL relies on: UTC for current_timestamp, TIMESTAMP meaning
# TIMESTAMP_NTZ (the naive UTC timestamps the pipeline passes around). Set at login, so no
# ALTER SESSION round trips; the connection extra's session_parameters win over these.
# DATE_OUTPUT_FORMAT: the SQL sorts and compares dates cast to text (the answers' order key),
# which an account formatting dates as MM/DD/YYYY would turn out of date order.
# The input formats: validation's TRY_TO_DATE and TRY_CAST read landed text with them, so an
# account or user set to DD/MM/YYYY would have quarantined every row's ISO date.
# AUTOCOMMIT: a script's lone DML statement runs without BEGIN (setup's version row, a stream
# batch's aged-out DELETE); under an account or user set to FALSE it stayed in an open
# transaction that only a later DDL statement committed, and closing the connection rolled back.
# DEFAULT_NULL_ORDERING: an ascending ORDER BY puts NULLs last, as DuckDB does; an account set
# to FIRST reordered the ties the SQL breaks on nullable columns (profiles/audience_profiles.sql:
# the recency of a profile's facts, by file, line, email and names) and the exports' rows.
# ROWS_PER_RESULTSET: a user or account limit (set for BI tools) cut every result short without
# an error: an export of more profiles than that lost the rest, and a snapshot destination then
# deleted them. 0 is no limit.
SESSION_PARAMETERS = {
    "AUTOCOMMIT": True,
    "DEFAULT_NULL_ORDERING": "LAST",
    "ROWS_PER_RESULTSET": 0,
    "TIMEZONE": "UTC",
    "TIMESTAMP_TYPE_MAPPING": "TIMESTAMP_NTZ",
    "DATE_OUTPUT_FORMAT": "YYYY-MM-DD",
    "DATE_INPUT_FORMAT": "AUTO",
    "TIMESTAMP_INPUT_FORMAT": "AUTO",
    "TIME_INPUT_FORMAT": "AUTO",
}
FORWARDED_EXTRAS = ("protocol", "network_timeout")
# Not TRUNCATE: Snowflake counts it as DML, rolled back with the transaction it runs in (run
# alone, a TRUNCATE + INSERT whose INSERT failed left the table empty; DuckDB rolls both back).
_DDL = re.compile(r"^\s*(CREATE|DROP|ALTER|USE|GRANT|REVOKE|COMMENT|UNDROP)\b", re.I)
# CREATE SCHEMA makes the new schema the session's current one (DROP of it leaves none).
_SCHEMA_DDL = re.compile(r"^\s*(CREATE|DROP)\s+(OR\s+REPLACE\s+)?SCHEMA\b", re.I)
_RENAME = re.compile(
    r"^(\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?)((?:[\w$]+\.)+)([\w$]+)(\s+RENAME\s+TO\s+)([\w$]+)(\s*)$",
    re.I | re.S,
)


class ConnectorOptionsSnowflakeHook(SnowflakeHook):
    """The provider's hook, plus the pipeline's session parameters and two connector options.

    The hook forwards the extra's ``host`` and ``port`` but not ``protocol`` (an endpoint reached
    over plain http: a local emulator, a TLS-terminating proxy) nor ``network_timeout`` (without
    it the connector retries a failing request for a long time).
    """

    def _get_conn_params(self) -> dict[str, Any]:
        params = super()._get_conn_params()
        params["session_parameters"] = {
            **SESSION_PARAMETERS,
            **(params.get("session_parameters") or {}),
        }
        extra = self.get_connection(self.get_conn_id()).extra_dejson
        params.update({k: extra[k] for k in FORWARDED_EXTRAS if extra.get(k)})
        return params


def snowflake_hook(
    conn_id: str, database: str | None = None, schema: str | None = None
) -> SnowflakeHook:
    kwargs = {k: v for k, v in {"database": database, "schema": schema}.items() if v}
    return ConnectorOptionsSnowflakeHook(snowflake_conn_id=conn_id, **kwargs)


class CredentialsRejected(NotRetryable, AirflowFailException):
    """Snowflake refused the connection's credentials: every retry would be one more failed
    login, and Snowflake locks a user out after five in a row. An AirflowFailException, so it
    fails whichever task meets it without retries (teardowns such as cleanup too), not only
    those under ``dag_defaults.fails_fast``."""


class ConnectionFailed(RuntimeError):
    """No session through the connection (an unreachable host, say): retried as usual."""


def connect(hook: SnowflakeHook, conn_id: str) -> Any:
    """``hook.get_conn()``, its failures naming the connection: a rejected password or key as
    :class:`CredentialsRejected` (the connector marks a rejection with SQLSTATE 28000), any
    other as :class:`ConnectionFailed` (the connector's words name neither the connection nor,
    for some, the host)."""
    try:
        return hook.get_conn()
    except DatabaseError as error:
        said = str(error.raw_msg).rstrip(". ")
        if error.sqlstate != SQLSTATE_AUTHORIZATION_FAILURE:
            raise ConnectionFailed(
                f"could not connect to Snowflake through connection {conn_id!r}: {said}"
            ) from error
        raise CredentialsRejected(
            f"Snowflake rejected the credentials of connection {conn_id!r}: {said}. Not "
            "retried: each try is a failed login, and Snowflake locks the user after five. Fix "
            "the connection, then clear the task"
        ) from error


def snowflake_type(arrow_type: pa.DataType) -> str:
    """The Snowflake column type for an Arrow (Parquet) column type."""
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_integer(arrow_type):
        return "NUMBER(38,0)"
    if pa.types.is_floating(arrow_type):
        return "FLOAT"
    if pa.types.is_decimal(arrow_type):
        return f"NUMBER({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP_TZ" if arrow_type.tz else "TIMESTAMP_NTZ"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "BINARY"
    return "VARCHAR"


def split_script(sql: str) -> list[str]:
    """The statements of a script, comments removed, without their trailing semicolons."""
    statements = []
    for statement, _ in split_statements(io.StringIO(sql), remove_comments=True):
        statement = statement.strip().rstrip(";").strip()
        if statement:
            statements.append(statement)
    return statements


def qualify_rename(statement: str) -> str:
    """Keep ``ALTER TABLE s.a RENAME TO b`` in schema ``s`` (Snowflake would move it)."""
    match = _RENAME.match(statement)
    if not match:
        return statement
    head, prefix, name, rename, new_name, tail = match.groups()
    return f"{head}{prefix}{name}{rename}{prefix}{new_name}{tail}"


def statement_groups(statements: list[str]) -> list[list[str]]:
    """Every DDL statement alone; consecutive DML statements together (one transaction each)."""
    groups: list[list[str]] = []
    for statement in statements:
        if _DDL.match(statement) or not groups or _DDL.match(groups[-1][0]):
            groups.append([statement])
        else:
            groups[-1].append(statement)
    return groups


def export_type(arrow_type: pa.DataType) -> pa.DataType:
    """Microsecond timestamps and 64-bit integers, as the DuckDB engine exports them."""
    if pa.types.is_timestamp(arrow_type):
        return pa.timestamp("us", arrow_type.tz)
    if pa.types.is_integer(arrow_type):
        return pa.int64()
    return arrow_type


def description_type(column: Any) -> pa.DataType | None:
    """The Arrow type a result column exports as, when its metadata alone decides it.

    Snowflake sends each chunk of a NUMBER(p,0) column at the narrowest integer width that holds
    that chunk's values (int8 .. int64; the connector passes it through), so its export type comes
    from the column, not from a chunk. Other types arrive the same in every chunk.
    """
    if column.type_code == 0 and not column.scale:  # FIXED, scale 0
        return pa.int64()
    return None


def export_schema(description: Any, data: pa.Schema) -> pa.Schema:
    """An export's Parquet schema: lower-case names; types from the cursor's description where it
    decides them, otherwise ``export_type`` of the data's (timestamps, times, semi-structured)."""
    fields = [pa.field(f.name.lower(), export_type(f.type)) for f in data]
    if description and len(description) == len(fields):
        fields = [
            f.with_type(description_type(column) or f.type)
            for f, column in zip(fields, description, strict=True)
        ]
    return pa.schema(fields)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return table.rename_columns(schema.names).cast(schema)


def load_parquet_file(cur, table: str, path: str, folder: str, kind: str = "TABLE") -> None:
    """Replace ``table`` (typed from the file's schema) with a local Parquet file's rows.

    The file is PUT to the stage ``folder`` (overwriting what a failed attempt left there) and
    loaded with COPY INTO: FORCE, as a retry loads the same file again; PURGE, so the stage
    keeps no copy of the data; ``NULL_IF = ()``, as the default turns a text value of exactly
    ``\\N`` (a MySQL export's NULL, landed as text) into NULL, where DuckDB keeps it.
    """
    columns = ", ".join(f"{f.name.upper()} {snowflake_type(f.type)}" for f in pq.read_schema(path))
    cur.execute(f"CREATE OR REPLACE {kind} {table} ({columns})")
    cur.execute(
        f"PUT 'file://{Path(path).resolve()}' {folder}/ AUTO_COMPRESS = FALSE OVERWRITE = TRUE"
    )
    cur.execute(
        f"COPY INTO {table} FROM {folder}/{Path(path).name} "
        "FILE_FORMAT = (TYPE = PARQUET NULL_IF = ()) "
        "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE FORCE = TRUE PURGE = TRUE"
    )


class SnowflakeWarehouse(Warehouse):
    engine = "snowflake"

    def __init__(self, config: WarehouseConfig):
        if not config.conn_id:
            raise ValueError("the snowflake warehouse needs warehouse.conn_id")
        self.config = config
        self.home_schema = config.schema.upper()
        self.hook = snowflake_hook(config.conn_id, config.database, self.home_schema)
        self.con = connect(self.hook, config.conn_id)
        self.cur = self.con.cursor()
        # Also makes it the session's schema, whether it was just created or already there.
        try:
            self.cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.home_schema}")
        except ProgrammingError as error:  # no database, or one the role cannot use
            database = self.con.database  # pipeline.yml's, else the connection's
            self.con.close()
            raise RuntimeError(
                f"the snowflake warehouse (connection {config.conn_id!r}) cannot create or use "
                f"its schema {self.home_schema} in "
                + (f"database {database}" if database else "no database")
                + f": {error}. "
                + (
                    "Check the role's privileges on it (docs/snowflake.md)"
                    if database
                    else "Set warehouse.database in pipeline.yml (or the connection's database)"
                )
            ) from error
        self._stage_ready = False
        self._staged: set[str] = set()

    def scratch_schema(self, name: str) -> str:
        # Schemas are the database's: two deployments sharing a database (a home schema each)
        # would otherwise build a date in the same RUN_YYYYMMDD and publish each other's rows.
        return f"{self.home_schema}_{name}".upper()

    @staticmethod
    def literal(value: Any) -> str:
        # Snowflake string literals treat a backslash as an escape character.
        return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"

    def execute_script(self, sql: str) -> None:
        for group in statement_groups(split_script(sql)):
            if len(group) == 1:  # one statement is atomic by itself
                self._execute(group[0])
                continue
            self.cur.execute("BEGIN")
            try:
                for statement in group:
                    self.cur.execute(statement)
                self.cur.execute("COMMIT")
            except Exception:
                self.cur.execute("ROLLBACK")
                raise

    def _execute(self, statement: str) -> None:
        self.cur.execute(qualify_rename(statement))
        if _SCHEMA_DDL.match(statement):
            self.cur.execute(f"USE SCHEMA {self.home_schema}")

    def query(self, sql: str) -> list[tuple]:
        return self.cur.execute(sql).fetchall()

    def staged_relation(self, path: str) -> str:
        """A transient table loaded from the file, dropped when the warehouse closes.

        Not a temporary table: COPY INTO a temporary table fails on fakesnow, and a transient
        table costs no more (no fail-safe). Named after the file's path, so runs of two dates
        never share one, and a crashed attempt's table is replaced by its retry. In the home
        schema, whatever schema is current (a stream batch works in its own): ``close`` drops it
        there, also after a failed batch, so no copy of landed rows outlives the task.
        """
        digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:10].upper()
        stem = re.sub(r"\W", "_", Path(path).stem).upper()
        table = f"{self.home_schema}.STAGED_{stem}_{digest}"
        # Qualified too: unqualified, a stream batch made it in its batch schema, and a file
        # staged from another schema than the first one's went to a stage that did not exist.
        stage = f"{self.home_schema}.{STAGE}"
        if not self._stage_ready:
            self.cur.execute(f"CREATE STAGE IF NOT EXISTS {stage}")
            self._stage_ready = True
        # Recorded first: a COPY that fails leaves the table it created, which close() drops.
        self._staged.add(table)
        load_parquet_file(
            self.cur, table, path, f"@{stage}/load/{table.lower()}", "TRANSIENT TABLE"
        )
        return table

    def export_parquet(self, relation: str, path: str) -> int:
        """Stream the result as Arrow batches into one Parquet file (microsecond timestamps)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        source = (
            relation
            if relation.lstrip().lower().startswith("select")
            else f"SELECT * FROM {relation}"
        )
        self.cur.execute(source)
        description = getattr(self.cur, "description", None)
        writer: pq.ParquetWriter | None = None
        rows = 0
        try:
            for batch in self.cur.fetch_arrow_batches(force_microsecond_precision=True):
                if writer is None:
                    schema = export_schema(description, batch.schema)
                    writer = pq.ParquetWriter(path, schema, compression="zstd")
                writer.write_table(conform(batch, writer.schema))
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no rows, so no batch to take the remaining types from
            self.cur.execute(source)
            empty = self.cur.fetch_arrow_all(force_return_table=True)
            pq.write_table(
                conform(empty, export_schema(description, empty.schema)), path, compression="zstd"
            )
        return rows

    def close(self) -> None:
        try:
            for table in sorted(self._staged):
                self.cur.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            self.con.close()
