"""The snowflake destination against fakesnow in server mode, through the Airflow connection."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import uuid

import pytest

from audience_profiles.destinations import warehouse_erasure, warehouse_load
from audience_profiles.destinations.base import RunInfo
from audience_profiles.destinations.snowflake import SnowflakeDestination, SnowflakeSession
from audience_profiles.warehouse.snowflake import snowflake_hook
from tests.destinations.warehouse_exports import (
    DAVID,
    DAY1,
    DAY2,
    ESCAPED_LINES,
    ESCAPED_REQUEST,
    P1,
    P2,
    P3,
    S1,
    S2,
    S3,
    TABLES,
    check_erasure,
    deliver,
    escaped_quarantine_rows,
    warehouse_destination,
    write_exports,
)
from tests.services.fakesnow import SNOWFLAKE_CONN_ID, snowflake_connection_json

pytestmark = pytest.mark.services
SCHEMA = "AUDIENCE"


def destination(conn_id: str, database: str, tmp_path, **options):
    return warehouse_destination(
        tmp_path,
        name="snowflake",
        kind="snowflake",
        conn_id=conn_id,
        database=database,
        schema=SCHEMA,
        **options,
    )


def query(conn_id: str, database: str, sql: str) -> list[tuple]:
    with snowflake_hook(conn_id, database, SCHEMA).get_conn() as con:
        return con.cursor().execute(sql).fetchall()


def tables(conn_id: str, database: str) -> dict[str, list[tuple]]:
    """Every row of every loaded table, in a stable order."""
    with snowflake_hook(conn_id, database, SCHEMA).get_conn() as con:
        cur = con.cursor()
        return {
            t: sorted(cur.execute(f"SELECT * FROM {SCHEMA}.{t.upper()}").fetchall(), key=repr)
            for t in TABLES
        }


@pytest.fixture(scope="module")
def loaded(fakesnow_server, tmp_path_factory) -> tuple[str, str, dict]:
    """A database loaded with day 1 then day 2: (conn id, database, every row of every table).

    Tests may deliver into it again only what must leave it unchanged.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(
            f"AIRFLOW_CONN_{SNOWFLAKE_CONN_ID.upper()}", snowflake_connection_json(fakesnow_server)
        )
        database = "LOADED_" + uuid.uuid4().hex[:8].upper()
        tmp = tmp_path_factory.mktemp("snowflake-loaded")
        dest = destination(SNOWFLAKE_CONN_ID, database, tmp)
        deliver(dest, tmp, DAY1)
        deliver(dest, tmp, DAY2)
        yield SNOWFLAKE_CONN_ID, database, tables(SNOWFLAKE_CONN_ID, database)


def test_merged_away_profile_is_not_live_and_types_are_kept(loaded):
    conn_id, database, _ = loaded
    profiles = query(
        conn_id,
        database,
        f"SELECT profile_id, answers, optin_2, optin_1_at FROM {SCHEMA}.AUDIENCE_PROFILES "
        "ORDER BY profile_id",
    )
    assert [p[0] for p in profiles] == [P1, P3]  # P2 merged into P1 on day 2
    assert json.loads(profiles[0][1]) == {
        "Fan vote": "Tyneside Black",
        "Which team do you support?": "Manchester Blue",
    }
    assert profiles[1][2:] == (None, None)  # NULLs stay NULL, timestamps included
    identifiers = dict(
        query(
            conn_id,
            database,
            f"SELECT identifier_value, profile_id FROM {SCHEMA}.PROFILE_IDENTIFIERS",
        )
    )
    assert identifiers[S2] == P1
    interactions = query(
        conn_id,
        database,
        f"SELECT session_id, attribute, occurrence, profile_id FROM {SCHEMA}.AUDIENCE_PROFILE_INTERACTIONS "
        "ORDER BY session_id, attribute NULLS FIRST, occurrence",
    )
    assert [(s, a, o) for s, a, o, _ in interactions] == [
        ("session-1", None, 1),
        ("session-1", "Which team do you support?", 1),
        ("session-1", "Which team do you support?", 2),
        ("session-2", "Fan vote", 1),
    ]
    assert {p for *_, p in interactions} == {P1}
    # Partitioned tables keep each run date's rows.
    assert query(
        conn_id, database, f"SELECT dt, count(*) FROM {SCHEMA}.INTERACTIONS_ENRICHED GROUP BY dt"
    ) == [(dt.date(2022, 4, 30), 2)]
    assert query(
        conn_id,
        database,
        f"SELECT merged_profile_id, surviving_profile_id, dt FROM {SCHEMA}.PROFILE_MERGES",
    ) == [(P2, P1, dt.date(2022, 5, 1))]
    types = dict(
        query(
            conn_id,
            database,
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{SCHEMA}' AND table_name = 'AUDIENCE_PROFILES'",
        )
    )
    assert types["ANSWERS"] == "VARIANT"
    assert types["FIRST_SEEN"].startswith("TIMESTAMP")


def test_loading_a_date_again_changes_nothing(loaded, tmp_path):
    conn_id, database, before = loaded
    report = deliver(destination(conn_id, database, tmp_path), tmp_path, DAY2)
    assert tables(conn_id, database) == before
    assert report["rows"]["audience_profiles"] == 2
    assert report["details"]["snapshots_kept_newer"] == []


def test_backfill_of_an_older_date_keeps_the_newer_snapshot(loaded, tmp_path):
    conn_id, database, before = loaded
    report = deliver(destination(conn_id, database, tmp_path), tmp_path, DAY1)
    assert sorted(report["details"]["snapshots_kept_newer"]) == [
        "audience_profile_interactions",
        "audience_profiles",
        "profile_identifiers",
    ]
    # Day 1's partitions are replaced by the same rows; the day 2 snapshot stays live.
    assert tables(conn_id, database) == before


def test_crash_between_copy_and_merge_is_repaired_by_retry(
    loaded, snowflake_conn, snowflake_database, tmp_path, monkeypatch
):
    dest = destination(snowflake_conn, snowflake_database, tmp_path)
    deliver(dest, tmp_path, DAY1)
    before = tables(snowflake_conn, snowflake_database)
    apply = SnowflakeDestination.apply

    def crash(self, db, plan):
        staged = db.query(f"SELECT count(*) FROM {plan.staged[0].staging}")
        assert staged[0][0] > 0  # COPY INTO the staging table has happened
        raise ConnectionError("worker lost between COPY and MERGE")

    monkeypatch.setattr(SnowflakeDestination, "apply", crash)
    with pytest.raises(ConnectionError):
        deliver(dest, tmp_path, DAY2)
    assert tables(snowflake_conn, snowflake_database) == before

    monkeypatch.setattr(SnowflakeDestination, "apply", apply)
    deliver(dest, tmp_path, DAY2)
    assert tables(snowflake_conn, snowflake_database) == loaded[2]


def check_plain_erasure(snowflake_conn, snowflake_database, tmp_path) -> None:
    """tests.destinations.warehouse_exports.check_erasure on a Snowflake load of plain PII."""
    dest = destination(snowflake_conn, snowflake_database, tmp_path)
    check_erasure(
        dest,
        lambda day: deliver(dest, tmp_path, day),
        lambda: tables(snowflake_conn, snowflake_database),
        pii="plain",
    )


def test_erasure_deletes_the_person_everywhere_and_no_load_brings_them_back(
    snowflake_conn, snowflake_database, tmp_path
):
    check_plain_erasure(snowflake_conn, snowflake_database, tmp_path)
    # Tombstones hold hashes only.
    tombstones = query(snowflake_conn, snowflake_database, f"SELECT * FROM {SCHEMA}.AP_ERASURES")
    assert len(tombstones) == 4  # the profile, the address, two sessions
    assert not {DAVID, P1, S1, S2} & {str(v) for row in tombstones for v in row}


def test_a_quarantined_json_line_naming_an_escaped_identifier_is_erased(
    snowflake_conn, snowflake_database, tmp_path
):
    """json.dumps escapes non-ASCII (ESCAPED_LINES): the line does not hold the value as it is,
    so narrowing the lines down by the plain value in the warehouse passed it over, and it
    stayed after the person's erasure."""
    dest = destination(snowflake_conn, snowflake_database, tmp_path)
    deliver(dest, tmp_path, DAY1)
    rows = escaped_quarantine_rows(dest.literal)
    query(snowflake_conn, snowflake_database, f"INSERT INTO {SCHEMA}.QUARANTINE {rows}")

    dest.erase([ESCAPED_REQUEST])

    left = f"SELECT raw FROM {SCHEMA}.QUARANTINE WHERE file = 'q.json'"
    assert query(snowflake_conn, snowflake_database, left) == [(ESCAPED_LINES[-1],)]


def most_values_listed(sql: str) -> int:
    """The most values one ``IN (...)`` list or one ``OR`` of POSITION() terms of ``sql`` holds."""
    unquoted = re.sub(r"'(?:[^']|'')*'", "v", sql)  # a literal's commas and brackets are not SQL
    lists = [len(items.split(",")) for items in re.findall(r"\bIN \(([^()]*)\)", unquoted)]
    return max([*lists, unquoted.count("POSITION(")])


@pytest.mark.parametrize(
    ("most_values", "most_chars"), [(1, warehouse_erasure.LISTED_CHARS_MAX), (1000, 1)]
)
def test_a_backlog_of_requests_is_erased_in_statements_of_bounded_lists(
    snowflake_conn, snowflake_database, tmp_path, monkeypatch, most_values, most_chars
):
    """Snowflake takes at most 16,384 expressions in an IN list (error 001795), and a backlog of
    requests lists tens of thousands: each statement lists at most LISTED_MAX values, and at most
    LISTED_CHARS_MAX characters of them (quarantined lines are listed whole), one value here
    either way, and the same rows go as in one statement."""
    monkeypatch.setattr(warehouse_erasure, "LISTED_MAX", most_values)
    monkeypatch.setattr(warehouse_erasure, "LISTED_CHARS_MAX", most_chars)
    sent, erasing = [], []
    erase_loaded, execute, query = (
        warehouse_load.erase_loaded,
        SnowflakeSession.execute,
        SnowflakeSession.query,
    )

    def erase_recorded(*args):
        erasing.append(True)
        try:
            return erase_loaded(*args)
        finally:
            erasing.pop()

    def recorded(run):
        return lambda db, sql: (sent.append(sql) if erasing else None) or run(db, sql)

    monkeypatch.setattr(warehouse_load, "erase_loaded", erase_recorded)
    monkeypatch.setattr(SnowflakeSession, "execute", recorded(execute))
    monkeypatch.setattr(SnowflakeSession, "query", recorded(query))
    check_plain_erasure(snowflake_conn, snowflake_database, tmp_path)
    assert max(most_values_listed(s) for s in sent) == 1


def test_a_date_delivered_again_under_pii_omit_changes_nothing(
    snowflake_conn, snowflake_database, tmp_path
):
    """Under ``omit`` an email identifier's value is NULL, so its row has no key: the MERGE could
    never find it again and inserted it once more per delivery. It is left out, and counted."""
    dest = destination(snowflake_conn, snowflake_database, tmp_path, pii="omit")
    deliver(dest, tmp_path, DAY1)
    reports = [deliver(dest, tmp_path, DAY2)]
    first = tables(snowflake_conn, snowflake_database)
    assert sorted(first["profile_identifiers"]) == [
        ("session_id", S1, P1),
        ("session_id", S2, P1),
        ("session_id", S3, P3),
    ]
    for _ in range(2):
        reports.append(deliver(dest, tmp_path, DAY2))
        assert tables(snowflake_conn, snowflake_database) == first
    for report in reports:
        assert report["details"]["rows_without_key_left_out"] == {"profile_identifiers": 2}
        assert report["rows"]["profile_identifiers"] == 3  # the rows loaded
    loaded_rows = query(
        snowflake_conn,
        snowflake_database,
        f"SELECT row_count FROM {SCHEMA}.AP_LOADS WHERE table_name = 'profile_identifiers' "
        "ORDER BY dt",
    )
    assert loaded_rows == [(2,), (3,)]  # day 1 has one email row, day 2 two


def test_null_key_rows_left_by_an_older_load_are_removed_by_the_next_sync(
    snowflake_conn, snowflake_database, tmp_path
):
    """A warehouse loaded before keyless rows were left out holds one copy of them per delivery:
    they are missing from the snapshot, so the next sync deletes them (matched null-safely)."""
    dest = destination(snowflake_conn, snowflake_database, tmp_path, pii="omit")
    deliver(dest, tmp_path, DAY2)
    clean = tables(snowflake_conn, snowflake_database)
    query(
        snowflake_conn,
        snowflake_database,
        f"INSERT INTO {SCHEMA}.PROFILE_IDENTIFIERS VALUES "
        f"('email', NULL, '{P1}'), ('email', NULL, '{P1}'), ('email', NULL, '{P3}'), "
        f"('email', NULL, '{P3}')",
    )
    deliver(dest, tmp_path, DAY2)
    assert tables(snowflake_conn, snowflake_database) == clean


def test_an_older_date_synced_while_a_newer_one_delivers_keeps_the_newer_snapshot(
    loaded, snowflake_conn, snowflake_database, tmp_path, monkeypatch
):
    """Catch-up runs several dates at once: day 2 delivers in full after day 1 has read the load
    log (and found no later date) but before day 1's snapshot syncs. Day 1's sync re-checks the
    log in its MERGE and leaves day 2's snapshot live."""
    sync = SnowflakeDestination.sync_snapshot
    newer_delivered = []

    def newer_date_delivers_first(self, db, staged, ds):
        if not newer_delivered:
            newer_delivered.append(True)
            day2 = destination(snowflake_conn, snowflake_database, tmp_path / "day2")
            deliver(day2, tmp_path / "day2", DAY2)
        return sync(self, db, staged, ds)

    monkeypatch.setattr(SnowflakeDestination, "sync_snapshot", newer_date_delivers_first)
    report = deliver(destination(snowflake_conn, snowflake_database, tmp_path), tmp_path, DAY1)
    assert sorted(report["details"]["snapshots_kept_newer"]) == [
        "audience_profile_interactions",
        "audience_profiles",
        "profile_identifiers",
    ]
    assert tables(snowflake_conn, snowflake_database) == loaded[2]


def test_switching_pii_from_plain_to_omit_leaves_no_plain_value_behind(
    snowflake_conn, snowflake_database, tmp_path
):
    """The MERGE writes only the export's columns: the email and name columns a plain load made
    would keep every unchanged row's plain values. They are dropped once the policy leaves them."""
    deliver(destination(snowflake_conn, snowflake_database, tmp_path), tmp_path, DAY1)
    assert DAVID in str(tables(snowflake_conn, snowflake_database))
    deliver(destination(snowflake_conn, snowflake_database, tmp_path, pii="omit"), tmp_path, DAY2)
    after = tables(snowflake_conn, snowflake_database)
    snapshots = ("audience_profiles", "profile_identifiers", "audience_profile_interactions")
    assert DAVID not in str([after[t] for t in snapshots])
    assert "David" not in str([after[t] for t in snapshots])
    columns = query(
        snowflake_conn,
        snowflake_database,
        "SELECT lower(column_name) FROM information_schema.columns "
        f"WHERE table_schema = '{SCHEMA}' AND table_name = 'AUDIENCE_PROFILES'",
    )
    assert not {"email", "first_name", "last_name"} & {c for (c,) in columns}


def test_an_older_dates_merges_leave_the_newer_snapshot_alone(
    snowflake_conn, snowflake_database, tmp_path
):
    """The latest date has P2 live (a later split, say); re-delivering an older date whose
    profile_merges say P2 -> P1 must not take P2 out of the snapshot it keeps."""
    dest = destination(snowflake_conn, snowflake_database, tmp_path)
    latest = "2022-05-02"
    dest.deliver(RunInfo(latest, f"scheduled__{latest}"), write_exports(tmp_path / "latest", DAY1))
    before = tables(snowflake_conn, snowflake_database)
    assert P2 in {row[0] for row in before["audience_profiles"]}

    report = deliver(dest, tmp_path / "older", DAY2)

    assert "audience_profiles" in report["details"]["snapshots_kept_newer"]
    after = tables(snowflake_conn, snowflake_database)
    for table in ("audience_profiles", "profile_identifiers", "audience_profile_interactions"):
        assert after[table] == before[table], table


def test_rows_of_literals_go_in_statements_of_a_thousand(fakesnow_server, monkeypatch, tmp_path):
    """Snowflake takes at most 16,384 rows in an INSERT's VALUES: a backlog of erasure requests'
    tombstones (or any literal rows) goes in INSERTs of a thousand, every row kept."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{SNOWFLAKE_CONN_ID.upper()}", snowflake_connection_json(fakesnow_server)
    )
    database = "VALUES_" + uuid.uuid4().hex[:8].upper()
    dest = destination(SNOWFLAKE_CONN_ID, database, tmp_path)
    with dest.session() as db:
        dest.prepare(db)
        table = dest.qualified("many_rows")
        db.execute(f"CREATE TABLE {table} (n INTEGER, label VARCHAR)")
        sent = []
        execute = db.execute
        monkeypatch.setattr(db, "execute", lambda sql: sent.append(sql) or execute(sql))
        dest.insert_rows_sql(db, table, [f"({n}, 'row {n}')" for n in range(2500)])
        assert [s.count("), (") + 1 for s in sent] == [1000, 1000, 500]
        assert db.query(f"SELECT count(*), count(DISTINCT n) FROM {table}") == [(2500, 2500)]
        dest.insert_rows_sql(db, table, [])  # nothing to insert: no statement
        assert len(sent) == 3


def record_statements(db: SnowflakeSession, monkeypatch) -> list[str]:
    """Every statement the session's cursor sends from now on, recorded as sent."""
    sent: list[str] = []
    execute = db.cur.execute
    monkeypatch.setattr(db.cur, "execute", lambda sql, *a, **k: sent.append(sql) or execute(sql))
    return sent


def test_an_existing_schema_is_used_without_create_schema(snowflake_conn, monkeypatch, tmp_path):
    """CREATE SCHEMA IF NOT EXISTS needs the CREATE SCHEMA privilege even when the schema is
    there: a role with only USAGE (plus CREATE TABLE, CREATE STAGE) on a DBA's schema failed.
    fakesnow grants everything, so the statements sent are what is checked."""
    database = "OWNSCHEMA_" + uuid.uuid4().hex[:8].upper()
    query(snowflake_conn, database, f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")  # the DBA's
    dest = destination(snowflake_conn, database, tmp_path)
    with dest.session() as db:
        sent = record_statements(db, monkeypatch)
        dest.prepare(db)
        assert not [s for s in sent if "CREATE SCHEMA" in s.upper()]
        assert any(s.startswith("CREATE STAGE IF NOT EXISTS") for s in sent)
    deliver(dest, tmp_path, DAY1)  # and the schema serves a delivery
    assert query(snowflake_conn, database, f"SELECT count(*) FROM {SCHEMA}.AUDIENCE_PROFILES")[0][0]


def test_an_existing_stage_is_used_without_create_stage(snowflake_conn, monkeypatch, tmp_path):
    """CREATE STAGE IF NOT EXISTS needs the CREATE STAGE privilege on the schema even when the
    stage is there (snowflake-cli #2627): a role with READ and WRITE on a DBA's stage failed
    every delivery. fakesnow grants everything, so the statements sent are what is checked."""
    database = "OWNSTAGE_" + uuid.uuid4().hex[:8].upper()
    query(snowflake_conn, database, f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    query(snowflake_conn, database, f"CREATE STAGE {SCHEMA}.AP_LOAD_STAGE")  # the DBA's
    query(snowflake_conn, database, f"CREATE STAGE {SCHEMA}.AP_LOAD_STAGE_OLD")  # not it
    dest = destination(snowflake_conn, database, tmp_path)
    with dest.session() as db:
        sent = record_statements(db, monkeypatch)
        dest.prepare(db)
        assert not [s for s in sent if s.upper().startswith("CREATE")]
    deliver(dest, tmp_path, DAY1)  # and the stage serves a delivery
    assert query(snowflake_conn, database, f"SELECT count(*) FROM {SCHEMA}.AUDIENCE_PROFILES")[0][0]


def test_a_missing_schema_is_created(snowflake_conn, monkeypatch, tmp_path):
    """Without the schema, the destination creates it (the role then needs CREATE SCHEMA)."""
    database = "NEWSCHEMA_" + uuid.uuid4().hex[:8].upper()
    dest = destination(snowflake_conn, database, tmp_path)
    with dest.session() as db:
        # fakesnow creates a connection's schema at login, where Snowflake would not
        db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}")
        sent = record_statements(db, monkeypatch)
        dest.prepare(db)
        assert f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}" in sent
        assert db.query(
            f"SELECT schema_name FROM information_schema.schemata WHERE schema_name = '{SCHEMA}'"
        ) == [(SCHEMA,)]


def test_a_connection_s_schema_that_does_not_exist_yet_is_created(
    snowflake_conn, monkeypatch, tmp_path
):
    """With no `schema` option, the connection's schema is the destination's. Snowflake logs a
    connection naming a missing schema in with none current: current_schema() is NULL, and the
    destination failed with "no schema in its options or connection". fakesnow creates it at
    login, so the NULL is Snowflake's answer, put in its place."""
    database = "CONNSCHEMA_" + uuid.uuid4().hex[:8].upper()
    extra = json.loads(os.environ[f"AIRFLOW_CONN_{snowflake_conn.upper()}"])
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{snowflake_conn.upper()}", json.dumps({**extra, "schema": "fan_exports"})
    )
    dest = warehouse_destination(
        tmp_path, name="snowflake", kind="snowflake", conn_id=snowflake_conn, database=database
    )
    query_ = SnowflakeSession.query
    monkeypatch.setattr(
        SnowflakeSession,
        "query",
        lambda db, sql: [(None,)] if "current_schema()" in sql else query_(db, sql),
    )
    with dest.session() as db:
        db.execute("DROP SCHEMA IF EXISTS FAN_EXPORTS")
        dest.prepare(db)
        assert dest.schema == "FAN_EXPORTS"
        assert db.query(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'FAN_EXPORTS'"
        ) == [("FAN_EXPORTS",)]
