"""A stream batch on the Snowflake engine (fakesnow): the batch's validation read its staged
files with DuckDB's ``read_parquet``, which Snowflake does not have. fakesnow runs DuckDB on this
machine, so it read them anyway: the test also checks that no statement names it."""

from __future__ import annotations

import uuid

import pytest

from audience_profiles import stream
from audience_profiles.warehouse import open_warehouse
from audience_profiles.warehouse.snowflake import SnowflakeWarehouse
from tests.stream.support import daily_build, form_row, write_forms, write_interactions
from tests.stream.test_stream_batches import FakeStream, batch, make_config
from tests.support import write_seed_example

pytestmark = pytest.mark.services


def test_a_stream_batch_runs_on_the_snowflake_engine(tmp_path, snowflake_conn, monkeypatch):
    sent: list[dict] = []
    monkeypatch.setattr(stream, "destination_for", lambda d, config: FakeStream(d, sent))
    statements: list[str] = []
    execute = SnowflakeWarehouse._execute

    def recorded(self, statement: str) -> None:
        statements.append(statement)
        execute(self, statement)

    monkeypatch.setattr(SnowflakeWarehouse, "_execute", recorded)
    database = "STREAM_" + uuid.uuid4().hex[:8].upper()
    config = make_config(
        tmp_path,
        warehouse={"engine": "snowflake", "conn_id": snowflake_conn, "database": database},
    )
    landing = tmp_path / "landing"
    write_seed_example(landing)
    daily_build(config, ["2022-04-28", "2022-04-29"])
    batch(config, sent, "b0")
    ds = "2022-04-30"
    write_forms(landing, ds, "f.csv", [form_row(f"{ds}T10:00:00", "Ann", "ann@x.org", "s-ann")])
    write_interactions(landing, ds, "i.csv", [(ds, "s-ann", 2)])

    statements.clear()
    _, new = batch(config, sent, "b1")

    assert [s for s in statements if "read_parquet" in s.lower()] == []

    upserts = [r for r in new if r["event_type"] == "profile_upsert"]
    assert [r["payload"]["email"] for r in upserts] == ["ann@x.org"]
    [vote] = [r for r in new if r["event_type"] == "interaction"]
    assert vote["profile_id"] == upserts[0]["profile_id"]


def test_a_failed_batch_leaves_no_staged_copy_of_landed_rows(tmp_path, snowflake_conn, monkeypatch):
    # The staged tables were made in the batch's schema and dropped by their unqualified names
    # from the home schema: after a failed batch, copies of landed rows (PII) stayed behind.
    monkeypatch.setattr(stream, "destination_for", lambda d, config: FakeStream(d, []))
    database = "STREAM_" + uuid.uuid4().hex[:8].upper()
    config = make_config(
        tmp_path,
        warehouse={"engine": "snowflake", "conn_id": snowflake_conn, "database": database},
    )
    write_seed_example(tmp_path / "landing")

    def fail(*args, **kwargs):
        raise RuntimeError("resolve failed")

    monkeypatch.setattr(stream, "_resolve", fail)
    with pytest.raises(RuntimeError, match="resolve failed"):
        stream.run_batch(config, run_id="b-failed")

    with open_warehouse(config) as wh:
        staged = wh.query(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_name LIKE 'STAGED_%'"
        )
    assert staged == []
