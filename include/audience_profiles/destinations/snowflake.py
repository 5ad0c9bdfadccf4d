"""``snowflake``: the run's tables loaded into Snowflake idempotently, through the SnowflakeHook.

pipeline.yml::

    - name: snowflake
      kind: snowflake
      conn_id: snowflake_default      # an Airflow Snowflake connection
      database: ANALYTICS             # optional: else the connection's database
      schema: AUDIENCE                # optional: else the connection's schema; created if missing
      tables: [audience_profiles, audience_profile_interactions, profile_identifiers, profile_merges]

The load contract (staging, one transaction, snapshot vs partition, merges) is in
``warehouse_load.py``. Here: each export is PUT to the named internal stage ``AP_LOAD_STAGE`` of
the schema and loaded with ``COPY INTO`` a transient staging table (``MATCH_BY_COLUMN_NAME``,
``FORCE`` so a retry reloads the same file, ``PURGE`` so the stage does not grow); snapshot tables
are synchronised by one ``MERGE`` on their natural key that also deletes the keys the snapshot
lost (rows that did not change are not rewritten; snapshot rows without a key are left out before
staging, see ``warehouse_load.py``). ``answers`` lands as VARIANT.
Unquoted upper-case names, as Snowflake users query them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from audience_profiles.destinations.base import register
from audience_profiles.destinations.warehouse_load import (
    OCCURRENCE_COLUMN,
    Session,
    SqlWarehouseDestination,
    Staged,
)
from audience_profiles.warehouse.snowflake import (
    SnowflakeWarehouse,
    connect,
    load_parquet_file,
    snowflake_hook,
    snowflake_type,
)

STAGE = "AP_LOAD_STAGE"
VALUES_ROWS_MAX = 1000  # rows of literals per INSERT (insert_rows_sql)


class SnowflakeSession(Session):
    def __init__(self, connection):
        self.connection = connection
        self.cur = connection.cursor()
        self._columns: dict[str, dict[str, list[str]]] = {}  # schema -> table -> columns

    def execute(self, sql: str) -> int:
        if sql.lstrip()[:6].upper() in ("CREATE", "ALTER ", "DROP T"):
            self._columns.clear()
        self.cur.execute(sql)
        return self.cur.rowcount if self.cur.rowcount is not None else -1

    def query(self, sql: str) -> list[tuple]:
        return self.cur.execute(sql).fetchall()

    def columns(self, table: str) -> list[str] | None:
        """From one information_schema query per schema (a round trip per table adds up)."""
        schema, name = table.rsplit(".", 1)
        if schema not in self._columns:
            tables: dict[str, list[str]] = {}
            for table_name, column in self.query(
                "SELECT table_name, column_name FROM information_schema.columns "
                f"WHERE table_schema = '{schema}' ORDER BY table_name, ordinal_position"
            ):
                tables.setdefault(table_name, []).append(column.lower())
            self._columns[schema] = tables
        return self._columns[schema].get(name)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.cur.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.cur.execute("ROLLBACK")
            raise
        self.cur.execute("COMMIT")


@register("snowflake")
class SnowflakeDestination(SqlWarehouseDestination):
    OPTIONS = frozenset({"database", "schema"})
    PLAIN_NAME_OPTIONS = frozenset({"database", "schema"})  # unquoted in CREATE SCHEMA and literals
    NEEDS_CONN_ID = True
    schema = ""  # set per session: the option, else the connection's schema

    @contextlib.contextmanager
    def session(self) -> Iterator[SnowflakeSession]:
        if not self.config.conn_id:
            raise ValueError(f"destination {self.name!r}: conn_id is required")
        option = self.config.options.get("schema")
        hook = snowflake_hook(
            self.config.conn_id, self.config.options.get("database"), option and str(option)
        )
        connection = connect(hook, self.config.conn_id)
        try:
            db = SnowflakeSession(connection)
            # The option, else the connection's own: Snowflake logs a connection naming a schema
            # that does not exist yet in with none current (current_schema() is NULL), and the
            # schema the docs say is created if missing failed as "no schema". current_schema()
            # only when neither names one (a user's default namespace).
            named = option or hook._get_conn_params().get("schema")
            self.schema = str(named).upper() if named else db.query("SELECT current_schema()")[0][0]
            if not self.schema:
                raise ValueError(
                    f"destination {self.name!r}: no schema in its options or connection"
                )
            yield db
        finally:
            connection.close()

    def prepare(self, db: SnowflakeSession) -> None:
        # Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE SCHEMA privilege on the
        # database even when the schema is there, which a role given USAGE on a DBA's schema
        # lacks. The name as Snowflake stores it: the option upper-cased, else current_schema().
        if not db.query(
            "SELECT 1 FROM information_schema.schemata "
            f"WHERE schema_name = {self.literal(self.schema)}"
        ):
            db.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        # The same for the stage: CREATE STAGE IF NOT EXISTS needs CREATE STAGE on the schema even
        # when the stage is there (snowflake-cli #2627, #1903), which a role given READ and WRITE
        # on a DBA's stage lacks. SHOW lists only a stage the role has a privilege on: one it
        # cannot see, it tries to create. The name is SHOW's second column.
        shown = db.query(f"SHOW STAGES LIKE '{STAGE}' IN SCHEMA {self.schema}")
        if not any(str(row[1]).upper() == STAGE for row in shown):
            db.execute(f"CREATE STAGE IF NOT EXISTS {self.qualified(STAGE)}")

    def ident(self, name: str) -> str:
        return name.upper()

    def qualified(self, table: str) -> str:
        return f"{self.schema}.{table.upper()}"

    def column_type(self, arrow_type: pa.DataType, json: bool = False) -> str:
        return "VARIANT" if json else snowflake_type(arrow_type)

    def literal(self, value: Any) -> str:
        return SnowflakeWarehouse.literal(value)

    def json_value(self, expr: str) -> str:
        return f"PARSE_JSON({expr})"

    def insert_rows_sql(self, db: SnowflakeSession, table: str, rows: list[str]) -> None:
        # A thousand rows a statement: Snowflake takes at most 16,384 in an INSERT's VALUES (a
        # backlog of erasure requests, each with its tombstones, can hold more).
        for start in range(0, len(rows), VALUES_ROWS_MAX):
            db.execute(
                f"INSERT INTO {table} VALUES {', '.join(rows[start : start + VALUES_ROWS_MAX])}"
            )

    def null_safe_equal(self, a: str, b: str) -> str:
        return f"EQUAL_NULL({a}, {b})"

    def load_staging(self, db: SnowflakeSession, staged: Staged, path: str) -> None:
        folder = f"@{self.qualified(STAGE)}/{staged.staging.rsplit('.', 1)[-1].lower()}"
        load_parquet_file(db.cur, staged.staging, path, folder, "TRANSIENT TABLE")

    def sync_snapshot(self, db: SnowflakeSession, staged: Staged, ds: str) -> None:
        """One MERGE: update changed rows, insert new keys, delete keys the snapshot lost.

        The source is the staged snapshot plus, flagged ``AP_GONE``, the target's keys missing
        from it, so the whole synchronisation is a single atomic statement. Both halves are
        empty when a later date has claimed the table (``later_load``): the MERGE then changes
        nothing, checked in the same statement that would change the table.

        The snapshot has no row with an empty key (``with_key`` left them out), but the target
        may: a warehouse loaded before that rule holds one NULL-keyed row per delivery (e.g.
        ``pii: omit`` email identifiers). A NULL key equals nothing, so such rows are gone, and
        the ON clause compares every key column null-safely so that each gone key, listed once
        (DISTINCT), finds and deletes all its target rows. For the snapshot's rows, whose keys
        are never NULL outside ``nullable_key``, null-safe and plain equality agree.
        """
        target = self.qualified(staged.table)
        names = [self.ident(n) for n in staged.names]
        if staged.spec.ordinal_by:
            names.append(self.ident(OCCURRENCE_COLUMN))
        keys = [self.ident(k) for k in staged.key]
        values = [n for n in names if n not in keys]
        snapshot = self.staged_select(staged)
        no_newer = f"NOT EXISTS ({self.later_load(staged.table, ds)})"
        gone = ", ".join(f"t.{n}" if n in keys else f"NULL AS {n}" for n in names)
        source = (
            f"SELECT s.*, FALSE AS AP_GONE FROM ({snapshot}) s WHERE {no_newer} UNION ALL "
            f"SELECT DISTINCT {gone}, TRUE FROM {target} t WHERE NOT EXISTS "
            f"(SELECT 1 FROM ({snapshot}) s WHERE {self.key_match(staged, 't', 's')}) "
            f"AND {no_newer}"
        )
        on = self.key_match(staged, "t", "s", null_safe=True)
        changed = " OR ".join(f"NOT EQUAL_NULL(t.{n}, s.{n})" for n in values)
        update = ", ".join(f"{n} = s.{n}" for n in values)
        db.execute(
            f"MERGE INTO {target} t USING ({source}) s ON {on} "
            "WHEN MATCHED AND s.AP_GONE THEN DELETE "
            + (f"WHEN MATCHED AND ({changed}) THEN UPDATE SET {update} " if values else "")
            + f"WHEN NOT MATCHED AND NOT s.AP_GONE THEN INSERT ({', '.join(names)}) "
            f"VALUES ({', '.join('s.' + n for n in names)})"
        )
