"""Exported Parquet types: every integer column is int64, whichever engine built the table.

Snowflake sends each result chunk of a NUMBER(38,0) column at the narrowest integer width that holds
that chunk's values (int8, int16, int32 or int64; snowflake-connector-python passes it through,
issue #1133): the Snowflake engine takes the column's type from the cursor's description, not
from the first chunk. DuckDB keeps INTEGER (int32) and narrower types as such: its engine widens
them to BIGINT when exporting.
"""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audience_profiles.config import WarehouseConfig
from audience_profiles.warehouse.duckdb import DuckDBWarehouse
from audience_profiles.warehouse.snowflake import SnowflakeWarehouse

FIXED, TEXT, TIMESTAMP_NTZ = 0, 2, 8


def column(name: str, type_code: int, precision: int | None = None, scale: int | None = None):
    return SimpleNamespace(name=name, type_code=type_code, precision=precision, scale=scale)


class StubCursor:
    """The connector's cursor as export_parquet uses it: Arrow batches as Snowflake sends them."""

    def __init__(self, description: list, batches: list[pa.Table], empty: pa.Table | None = None):
        self.description = description
        self.batches = batches
        self.empty = empty

    def execute(self, sql: str) -> StubCursor:
        return self

    def fetch_arrow_batches(self, force_microsecond_precision: bool = False):
        yield from self.batches

    def fetch_arrow_all(self, force_return_table: bool = False) -> pa.Table:
        return self.empty


def snowflake_exporting(cursor: StubCursor) -> SnowflakeWarehouse:
    warehouse = SnowflakeWarehouse.__new__(SnowflakeWarehouse)  # exporting needs no session
    warehouse.cur = cursor
    return warehouse


DESCRIPTION = [
    column("PROFILE_ID", TEXT),
    column("SESSIONS", FIXED, 38, 0),
    column("LAST_SEEN", TIMESTAMP_NTZ, 0, 9),
]


def chunk(profile: str, sessions: int, width: pa.DataType) -> pa.Table:
    return pa.table(
        {
            "PROFILE_ID": [profile],
            "SESSIONS": pa.array([sessions], width),
            "LAST_SEEN": pa.array([1_000_000], pa.timestamp("us")),
        }
    )


def test_snowflake_chunks_of_growing_integer_widths_export_as_int64(tmp_path):
    path = tmp_path / "profiles.parquet"
    cursor = StubCursor(DESCRIPTION, [chunk("a", 3, pa.int8()), chunk("b", 300, pa.int16())])

    assert snowflake_exporting(cursor).export_parquet("audience_profiles", str(path)) == 2

    exported = pq.read_table(path)
    assert exported.schema == pa.schema(
        [("profile_id", pa.string()), ("sessions", pa.int64()), ("last_seen", pa.timestamp("us"))]
    )
    assert exported.column("sessions").to_pylist() == [3, 300]


def test_snowflake_single_narrow_chunk_exports_as_int64(tmp_path):
    path = tmp_path / "profiles.parquet"
    snowflake_exporting(StubCursor(DESCRIPTION, [chunk("a", 3, pa.int8())])).export_parquet(
        "audience_profiles", str(path)
    )
    assert pq.read_schema(path).field("sessions").type == pa.int64()


def test_snowflake_empty_result_exports_as_int64(tmp_path):
    path = tmp_path / "profiles.parquet"
    empty = chunk("a", 3, pa.int8()).slice(0, 0)

    assert (
        snowflake_exporting(StubCursor(DESCRIPTION, [], empty)).export_parquet(
            "audience_profiles", str(path)
        )
        == 0
    )

    assert pq.read_schema(path) == pa.schema(
        [("profile_id", pa.string()), ("sessions", pa.int64()), ("last_seen", pa.timestamp("us"))]
    )


def test_snowflake_wider_value_than_int64_fails_rather_than_wraps(tmp_path):
    big = pa.table(
        {
            "PROFILE_ID": ["a"],
            "SESSIONS": pa.array([2**70], pa.decimal128(38, 0)),
            "LAST_SEEN": pa.array([0], pa.timestamp("us")),
        }
    )
    with pytest.raises(pa.ArrowInvalid):
        snowflake_exporting(StubCursor(DESCRIPTION, [big])).export_parquet(
            "t", str(tmp_path / "t.parquet")
        )


@pytest.fixture
def duck(tmp_path):
    warehouse = DuckDBWarehouse(WarehouseConfig(path=str(tmp_path / "wh.duckdb"), threads=1))
    yield warehouse
    warehouse.close()


def test_duckdb_exports_every_integer_column_as_int64(duck, tmp_path):
    duck.execute_script(
        'CREATE TABLE t (a TINYINT, "b c" SMALLINT, votes INTEGER, n BIGINT, u UINTEGER, '
        "name VARCHAR, score DOUBLE);"
        "INSERT INTO t VALUES (1, 2, 3, 4, 5, 'x', 0.5)"
    )
    for relation in ("t", "SELECT votes, name FROM t", "SELECT count(*)::INTEGER AS c FROM t"):
        path = tmp_path / "t.parquet"
        assert duck.export_parquet(relation, str(path)) == 1
        schema = pq.read_schema(path)
        assert (
            schema.names
            == duck.con.sql(
                relation if relation.startswith("SELECT") else f"SELECT * FROM {relation}"
            ).columns
        )
        assert {f.name: f.type for f in schema if pa.types.is_integer(f.type)} == {
            f.name: pa.int64() for f in schema if pa.types.is_integer(f.type)
        }
    exported = pq.read_table(tmp_path / "t.parquet")
    assert exported.schema == pa.schema([("c", pa.int64())])

    duck.export_parquet("t", str(tmp_path / "all.parquet"))
    assert pq.read_table(tmp_path / "all.parquet").to_pylist() == [
        {"a": 1, "b c": 2, "votes": 3, "n": 4, "u": 5, "name": "x", "score": 0.5}
    ]
    assert pq.read_schema(tmp_path / "all.parquet").field("score").type == pa.float64()


def test_duckdb_export_of_an_empty_table_keeps_int64(duck, tmp_path):
    duck.execute_script("CREATE TABLE e (votes INTEGER, name VARCHAR)")
    assert duck.export_parquet("e", str(tmp_path / "e.parquet")) == 0
    assert pq.read_schema(tmp_path / "e.parquet").field("votes").type == pa.int64()


def test_duckdb_export_of_a_date_does_not_change_when_a_later_date_lands(duck, tmp_path):
    """The Parquet writer marked a column required when the statistics of the whole table showed
    no NULL: 04-27's export was `title: not null` until 04-28 landed a NULL title."""
    duck.execute_script(
        "CREATE TABLE e (dt DATE, title VARCHAR, votes INTEGER, answers VARCHAR[]);"
        "INSERT INTO e VALUES ('2022-04-27', 'Who wins?', 3, ['a'])"
    )
    day = "SELECT * FROM e WHERE dt = DATE '2022-04-27'"
    duck.export_parquet(day, str(tmp_path / "before.parquet"))
    duck.execute_script("INSERT INTO e VALUES ('2022-04-28', NULL, NULL, NULL)")
    duck.export_parquet(day, str(tmp_path / "after.parquet"))
    assert all(field.nullable for field in pq.read_schema(tmp_path / "before.parquet"))
    assert (tmp_path / "before.parquet").read_bytes() == (tmp_path / "after.parquet").read_bytes()


def test_duckdb_export_keeps_the_order_of_an_ordered_source(duck, tmp_path):
    # every column is wrapped for the export (nullable): the wrapping must not lose the ORDER BY
    # that makes a re-run write the same bytes, across many row groups, with the warehouse's
    # preserve_insertion_order = false
    duck.execute_script(
        "CREATE TABLE t AS SELECT hash(i) % 100000 AS k, i AS n, 'v' || i AS v FROM range(400000) r(i)"
    )
    path = tmp_path / "ordered.parquet"
    assert duck.export_parquet("SELECT k, v FROM t ORDER BY k, n", str(path)) == 400_000
    exported = pq.read_table(path).to_pylist()
    assert exported == duck.con.execute("SELECT k, v FROM t ORDER BY k, n").fetchdf().to_dict(
        "records"
    )
