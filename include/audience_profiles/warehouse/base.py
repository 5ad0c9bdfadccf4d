"""The warehouse interface: the only place that knows DuckDB from Snowflake.

Transforms are SQL files under ``include/sql/<stage>/<name>.sql`` rendered with Jinja (strict:
a missing parameter is an error, not an empty string). The SQL is written in a subset both engines
understand; where one engine lacks a function the other has, the DuckDB engine defines a macro
(see ``duckdb.py``), and where syntax really differs a variant sits beside its twin as
``<name>.<engine>.sql``.
"""

from __future__ import annotations

import abc
import datetime as dt
import re
from pathlib import Path
from typing import Any

import jinja2

from audience_profiles.errors import NotRetryable

SQL_ROOT = Path(__file__).resolve().parents[2] / "sql"
# The version of the warehouse's lasting tables (every CREATE TABLE IF NOT EXISTS and ALTER TABLE
# ... ADD COLUMN in include/sql, setup/tables.sql and the others): raise it with any change to
# them (a column added is one: an older release's INSERT then supplies a value too few), and
# the digest in tests/warehouse/test_setup.py with it.
SCHEMA_VERSION = 4
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(SQL_ROOT)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class WarehouseTooNewError(NotRetryable):
    """The warehouse was set up by a newer release than this one."""


def sql_literal(value: Any) -> str:
    """A SQL string literal (for the few values rendered into SQL text rather than bound)."""
    return "'" + str(value).replace("'", "''") + "'"


_ENV.filters["literal"] = sql_literal
# "{{ ds | days_after(2) }}": a date n days after a YYYY-MM-DD date (SQL date arithmetic differs
# between the engines; the bound is a literal instead)
_ENV.filters["days_after"] = lambda ds, n: (
    dt.date.fromisoformat(str(ds)[:10]) + dt.timedelta(days=n)
).isoformat()
_ENGINE_ENVS: dict[str, jinja2.Environment] = {}  # one template cache per engine's dialect


def sql_macro(template: str, macro: str, *args: Any) -> str:
    """One macro of an SQL file, rendered on its own (the privacy hash, used outside a transform)."""
    return str(getattr(_ENV.get_template(template).module, macro)(*args))


def check_ds(ds: str) -> str:
    if not _DATE.match(ds):
        raise ValueError(f"not a YYYY-MM-DD date: {ds!r}")
    return ds


class Warehouse(abc.ABC):
    engine: str
    home_schema: str  # where the pipeline's tables live (unqualified names)

    @staticmethod
    def literal(value: Any) -> str:
        """A string literal in this engine's dialect (the ``literal`` filter of the SQL files)."""
        return sql_literal(value)

    def scratch_schema(self, name: str) -> str:
        """The schema a run or a stream batch builds in (``run_YYYYMMDD``, ``stream_work``), as
        named in this warehouse. Here the name itself: the warehouse is one deployment's."""
        return name

    def render(self, name: str, **params: Any) -> str:
        """Render ``include/sql/<name>.sql``, preferring ``<name>.<engine>.sql`` if it exists."""
        variant = SQL_ROOT / f"{name}.{self.engine}.sql"
        template = f"{name}.{self.engine}.sql" if variant.exists() else f"{name}.sql"
        env = _ENGINE_ENVS.get(self.engine)
        if env is None:
            env = _ENGINE_ENVS[self.engine] = _ENV.overlay(cache_size=400)
            env.filters["literal"] = type(self).literal
        return env.get_template(template).render(engine=self.engine, **params)

    def setup(self) -> None:
        """Create the pipeline's tables and columns where missing (``setup/tables``), once no
        newer release has set this warehouse up: this one would fail on what it added."""
        if "warehouse_schema" in self.table_names(views=False):
            newest = self.query("SELECT max(version) FROM warehouse_schema")[0][0]
            if newest is not None and int(newest) > SCHEMA_VERSION:
                raise WarehouseTooNewError(
                    f"the warehouse was set up by a newer release of audience-profiles (schema "
                    f"version {newest}; this one knows up to {SCHEMA_VERSION}): run that release, "
                    "or restore the backup taken before upgrading (docs/operations.md, Upgrading)"
                )
        self.run_sql("setup/tables")
        self.run_sql("setup/version", version=SCHEMA_VERSION)

    def run_sql(self, name: str, **params: Any) -> None:
        """Run every statement of one SQL file, atomically."""
        self.execute_script(self.render(name, **params))

    def run_sql_steps(self, name: str, **params: Any) -> None:
        """Run one SQL file statement by statement, each committed on its own.

        For files that only build scratch tables in the run's schema: a failed task rebuilds
        them from the top, so one transaction around them buys nothing, and on DuckDB it holds
        every table of the file uncommitted in memory until the end (the profile tables of a
        10M-interaction build took twice as long that way; bench/README.md).
        """
        self.execute_statements(self.render(name, **params))

    def execute_statements(self, sql: str) -> None:
        """Execute ``;``-separated statements, each in its own transaction (default: one)."""
        self.execute_script(sql)

    def query_sql(self, name: str, **params: Any) -> list[tuple]:
        return self.query(self.render(name, **params))

    @abc.abstractmethod
    def execute_script(self, sql: str) -> None:
        """Execute several ``;``-separated statements in one transaction."""

    @abc.abstractmethod
    def query(self, sql: str) -> list[tuple]: ...

    def table_names(self, schema: str | None = None, views: bool = True) -> set[str]:
        """Names (lower case) of the tables in ``schema`` (default: the warehouse's own), views
        included unless ``views`` is false. Case-blind: Snowflake names are upper case."""
        schema = self.literal((schema or self.home_schema).upper())
        only_tables = "" if views else " AND table_type = 'BASE TABLE'"
        rows = self.query(
            "SELECT table_name FROM information_schema.tables "
            f"WHERE upper(table_schema) = {schema}{only_tables}"
        )
        return {r[0].lower() for r in rows}

    def column_types(self, schema: str, table: str) -> dict[str, str]:
        """``{column (lower case): data type}`` of a table, as information_schema names them
        (``VARCHAR`` and ``BIGINT`` on DuckDB, ``TEXT`` and ``NUMBER`` on Snowflake)."""
        rows = self.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE upper(table_schema) = {self.literal(schema.upper())} "
            f"AND upper(table_name) = {self.literal(table.upper())}"
        )
        return {str(name).lower(): str(data_type) for name, data_type in rows}

    @abc.abstractmethod
    def staged_relation(self, path: str) -> str:
        """A relation expression over a staged local Parquet file, for use in ``FROM``."""

    @abc.abstractmethod
    def export_parquet(self, relation: str, path: str) -> int:
        """Write a table or query to a local Parquet file; return its row count."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
