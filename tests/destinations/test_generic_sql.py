"""The sql destination against a real PostgreSQL, through the Airflow connection and its hook."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import pytest

from audience_profiles.destinations.generic_sql import GenericSqlDestination
from tests.destinations.warehouse_exports import (
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
)

pytestmark = pytest.mark.services


def destination(conn_id: str, schema: str, tmp_path, **options):
    return warehouse_destination(
        tmp_path, name="postgres", kind="sql", conn_id=conn_id, schema=schema, **options
    )


def hook(conn_id: str):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=conn_id)


def tables(conn_id: str, schema: str) -> dict[str, list[tuple]]:
    """Every row of every loaded table, in a stable order."""
    pg = hook(conn_id)
    return {t: sorted(pg.get_records(f'SELECT * FROM "{schema}"."{t}"'), key=repr) for t in TABLES}


@pytest.fixture
def schema(pg_conn) -> str:
    """A schema of its own for one test (the destination does not create schemas)."""
    name = "t_" + uuid.uuid4().hex[:10]
    hook(pg_conn).run(f'CREATE SCHEMA "{name}"', autocommit=True)
    return name


def test_load_twice_gives_identical_tables_and_applies_merges(pg_conn, schema, tmp_path):
    dest = destination(pg_conn, schema, tmp_path)
    deliver(dest, tmp_path, DAY1)
    deliver(dest, tmp_path, DAY2)
    first = tables(pg_conn, schema)
    report = deliver(dest, tmp_path, DAY2)
    assert tables(pg_conn, schema) == first
    assert report["rows"]["audience_profiles"] == 2

    pg = hook(pg_conn)
    profiles = pg.get_records(
        f'SELECT profile_id, answers, optin_2 FROM "{schema}".audience_profiles ORDER BY 1'
    )
    assert [p[0] for p in profiles] == [P1, P3]  # P2 merged into P1 on day 2
    assert profiles[1][2] is None
    identifiers = dict(
        pg.get_records(f'SELECT identifier_value, profile_id FROM "{schema}".profile_identifiers')
    )
    assert identifiers[S2] == P1
    assert pg.get_records(
        f'SELECT session_id, attribute, occurrence FROM "{schema}".audience_profile_interactions '
        "ORDER BY 1, 2 NULLS FIRST, 3"
    ) == [
        ("session-1", None, 1),
        ("session-1", "Which team do you support?", 1),
        ("session-1", "Which team do you support?", 2),
        ("session-2", "Fan vote", 1),
    ]
    assert pg.get_records(
        f'SELECT merged_profile_id, surviving_profile_id, dt FROM "{schema}".profile_merges'
    ) == [(P2, P1, dt.date(2022, 5, 1))]
    types = dict(
        pg.get_records(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{schema}' AND table_name = 'audience_profiles'"
        )
    )
    assert types["first_seen"] == "timestamp without time zone"
    assert types["optin_1"] == "boolean"
    assert types["sessions"] == "bigint"


def test_crash_before_apply_is_repaired_by_retry_and_backfill_keeps_newer(
    pg_conn, schema, tmp_path, monkeypatch
):
    dest = destination(pg_conn, schema, tmp_path)
    deliver(dest, tmp_path, DAY1)
    before = tables(pg_conn, schema)
    apply = GenericSqlDestination.apply

    def crash(self, db, plan):
        staged = db.query(f"SELECT count(*) FROM {plan.staged[0].staging}")
        assert staged[0][0] > 0  # the staging table is loaded
        raise ConnectionError("worker lost between staging and apply")

    monkeypatch.setattr(GenericSqlDestination, "apply", crash)
    with pytest.raises(ConnectionError):
        deliver(dest, tmp_path, DAY2)
    assert tables(pg_conn, schema) == before

    monkeypatch.setattr(GenericSqlDestination, "apply", apply)
    deliver(dest, tmp_path, DAY2)
    after_day2 = tables(pg_conn, schema)
    assert [r[0] for r in after_day2["audience_profiles"]] == [P1, P3]

    report = deliver(dest, tmp_path, DAY1)  # a backfill of the older date
    assert "audience_profiles" in report["details"]["snapshots_kept_newer"]
    assert tables(pg_conn, schema) == after_day2
    leftovers = hook(pg_conn).get_records(
        "SELECT table_name FROM information_schema.tables "
        f"WHERE table_schema = '{schema}' AND table_name LIKE 'ap_stage%'"
    )
    assert leftovers == []


def test_pii_policy_applies_to_warehouse_loads(pg_conn, schema, tmp_path):
    deliver(destination(pg_conn, schema, tmp_path, pii="hashed"), tmp_path, DAY2)
    columns = {
        r[0]
        for r in hook(pg_conn).get_records(
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = '{schema}' AND table_name = 'audience_profiles'"
        )
    }
    assert "email_sha256" in columns
    assert not {"email", "first_name", "last_name"} & columns


def test_pii_omit_leaves_keyless_snapshot_rows_out_as_snowflake_does(pg_conn, schema, tmp_path):
    """Under ``omit`` an email identifier has no value, so no key: left out and counted, as the
    snowflake kind must (its MERGE could never find such a row again), so both kinds agree."""
    dest = destination(pg_conn, schema, tmp_path, pii="omit")
    reports = [deliver(dest, tmp_path, DAY2)]
    first = tables(pg_conn, schema)
    assert first["profile_identifiers"] == [
        ("session_id", S1, P1),
        ("session_id", S2, P1),
        ("session_id", S3, P3),
    ]
    for _ in range(2):
        reports.append(deliver(dest, tmp_path, DAY2))
        assert tables(pg_conn, schema) == first
    for report in reports:
        assert report["details"]["rows_without_key_left_out"] == {"profile_identifiers": 2}
        assert report["rows"]["profile_identifiers"] == 3


@pytest.mark.parametrize("pii", ["plain", "hashed"])
def test_erasure_deletes_the_person_everywhere_and_no_load_brings_them_back(
    pg_conn, schema, tmp_path, pii
):
    dest = destination(pg_conn, schema, tmp_path, pii=pii)
    check_erasure(
        dest, lambda day: deliver(dest, tmp_path, day), lambda: tables(pg_conn, schema), pii
    )


def test_a_quarantined_json_line_naming_an_escaped_identifier_is_erased(pg_conn, schema, tmp_path):
    """As test_snowflake.py's test of the same name, with PostgreSQL's literals."""
    dest = destination(pg_conn, schema, tmp_path)
    deliver(dest, tmp_path, DAY1)
    rows = escaped_quarantine_rows(dest.literal)
    hook(pg_conn).run(f'INSERT INTO "{schema}"."quarantine" {rows}', autocommit=True)

    dest.erase([ESCAPED_REQUEST])

    left = hook(pg_conn).get_records(
        f'SELECT raw FROM "{schema}"."quarantine" WHERE file = \'q.json\''
    )
    assert left == [(ESCAPED_LINES[-1],)]


def test_erasure_before_any_load_answers_done(pg_conn, schema, tmp_path):
    from tests.destinations.warehouse_exports import DAVID_REQUEST

    assert destination(pg_conn, schema, tmp_path).erase([DAVID_REQUEST]) == {
        "r-1": {"status": "done", "detail": "nothing loaded yet"}
    }


def test_an_erasure_that_may_not_read_the_tables_fails_rather_than_answering_done(
    pg_conn, schema, tmp_path, monkeypatch
):
    # A revoked grant (or a lost connection) is not "nothing loaded": answered done, the request
    # would never be tried again while David's rows stay in the tables.
    from tests.destinations.warehouse_exports import DAVID_REQUEST

    deliver(destination(pg_conn, schema, tmp_path), tmp_path, DAY1)
    role = "r_" + uuid.uuid4().hex[:10]
    hook(pg_conn).run(
        f'CREATE ROLE "{role}" LOGIN; GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
        autocommit=True,
    )
    conn = json.loads(os.environ[f"AIRFLOW_CONN_{pg_conn.upper()}"])
    monkeypatch.setenv("AIRFLOW_CONN_PG_NO_GRANT", json.dumps({**conn, "login": role}))
    try:
        with pytest.raises(Exception, match="permission denied for table"):
            destination("pg_no_grant", schema, tmp_path).erase([DAVID_REQUEST])
    finally:
        hook(pg_conn).run(
            f'REVOKE USAGE ON SCHEMA "{schema}" FROM "{role}"; DROP ROLE "{role}"',
            autocommit=True,
        )


def test_an_older_date_synced_while_a_newer_one_delivers_keeps_the_newer_snapshot(
    pg_conn, schema, tmp_path, monkeypatch
):
    """Day 2 delivers in full after day 1 has read the load log but before day 1's snapshot
    syncs (catch-up runs dates at once): day 1's sync re-checks the log in its transaction."""
    sync = GenericSqlDestination.sync_snapshot
    newer_delivered = []

    def newer_date_delivers_first(self, db, staged, ds):
        if not newer_delivered:
            newer_delivered.append(True)
            deliver(destination(pg_conn, schema, tmp_path / "day2"), tmp_path / "day2", DAY2)
        return sync(self, db, staged, ds)

    monkeypatch.setattr(GenericSqlDestination, "sync_snapshot", newer_date_delivers_first)
    report = deliver(destination(pg_conn, schema, tmp_path), tmp_path, DAY1)
    assert "audience_profiles" in report["details"]["snapshots_kept_newer"]
    assert [r[0] for r in tables(pg_conn, schema)["audience_profiles"]] == [P1, P3]  # day 2's


def test_an_older_dates_merges_leave_a_snapshot_a_newer_date_synced_meanwhile(
    pg_conn, schema, tmp_path, monkeypatch
):
    """Day 2 (P2 merges into P1) has synced its snapshots and checked for later claims when a
    newer date delivers in full, with P2 live again (an erasure split it off): day 2's merges
    must leave the newer snapshots alone. They took P2 out of them, and pointed S2 at P1."""
    from audience_profiles.destinations import RunInfo
    from tests.destinations.warehouse_exports import write_exports

    newer = "2022-05-02"
    apply_merges = GenericSqlDestination.apply_merges

    def newer_date_delivers_first(self, db, merges, stored, ds):
        if ds == DAY2:
            newer_dest = destination(pg_conn, schema, tmp_path / "newer")
            exports = write_exports(tmp_path / "newer", DAY1)  # P1 and P2, S2 -> P2
            newer_dest.deliver(RunInfo(newer, f"scheduled__{newer}"), exports)
        return apply_merges(self, db, merges, stored, ds)

    monkeypatch.setattr(GenericSqlDestination, "apply_merges", newer_date_delivers_first)
    deliver(destination(pg_conn, schema, tmp_path), tmp_path, DAY2)
    loaded = tables(pg_conn, schema)
    assert [r[0] for r in loaded["audience_profiles"]] == [P1, P2]  # the newer date's
    assert ("session_id", S2, P2) in loaded["profile_identifiers"]


def test_two_dates_syncing_at_once_leave_only_the_newer_snapshot(
    pg_conn, schema, tmp_path, monkeypatch
):
    """Day 1's sync has emptied the table and is still inserting when day 2's sync starts
    (catch-up delivers dates at once): day 2 waits for day 1's commit, then replaces its rows.
    Without the wait, day 2's DELETE (under READ COMMITTED) kept day 1's rows beside its own."""
    import threading
    import time

    from audience_profiles.destinations.generic_sql import DbApiSession

    deliver(destination(pg_conn, schema, tmp_path / "first"), tmp_path / "first", DAY1)
    execute, sync = DbApiSession.execute, GenericSqlDestination.sync_snapshot
    older_emptied, newer_syncing = threading.Event(), threading.Event()

    def older_inserts_slowly(self, sql):
        rows = execute(self, sql)
        emptied = sql.startswith("DELETE FROM") and sql.endswith('"audience_profiles"')
        if threading.current_thread().name == DAY1 and emptied:
            older_emptied.set()
            if newer_syncing.wait(30):
                time.sleep(1.5)  # day 2's sync reaches the statement that waits
        return rows

    def sync_announced(self, db, staged, ds):
        if ds == DAY2 and staged.table == "audience_profiles":
            newer_syncing.set()
        return sync(self, db, staged, ds)

    monkeypatch.setattr(DbApiSession, "execute", older_inserts_slowly)
    monkeypatch.setattr(GenericSqlDestination, "sync_snapshot", sync_announced)
    reports = {}

    def run(day):
        if day == DAY2:
            assert older_emptied.wait(30)
        reports[day] = deliver(destination(pg_conn, schema, tmp_path / day), tmp_path / day, day)

    threads = [threading.Thread(target=run, args=(day,), name=day) for day in (DAY1, DAY2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(reports) == {DAY1, DAY2}
    profiles = hook(pg_conn).get_records(
        f'SELECT profile_id, sessions FROM "{schema}".audience_profiles ORDER BY 1'
    )
    assert profiles == [(P1, 2), (P3, 1)]  # day 2's, once each


class _Cursor:
    def __init__(self, probe_error: Exception | None):
        self.probe_error, self.description = probe_error, None

    def execute(self, sql):
        if "WHERE 1 = 0" in sql and self.probe_error:
            raise self.probe_error

    def fetchall(self):
        return [(1,)]

    def close(self):
        pass


class _Hook:
    """A DB-API connection whose table probe fails as a driver without SQLSTATEs says it."""

    def __init__(self, probe_error: Exception):
        self.probe_error = probe_error

    def get_conn(self):
        return self

    def cursor(self):
        return _Cursor(self.probe_error)

    def set_autocommit(self, conn, autocommit):
        pass


@pytest.mark.parametrize(
    ("error", "not_there"),
    [
        (Exception(1146, "Table 'audience.ap_load_log' doesn't exist"), True),  # MySQLdb
        (Exception("[42S02] [Microsoft][ODBC] Invalid object name 'ap_load_log'."), True),
        (Exception("[Error 3807] Object 'ap_load_log' does not exist."), True),  # teradatasql
        (Exception("no such table: ap_load_log"), True),  # sqlite3
        (Exception(1142, "SELECT command denied to user 'erasure'@'%' for table"), False),
        (Exception("[Error 3523] The user does not have SELECT access to ap_load_log."), False),
        (Exception("Object 'ap_load_log' does not exist or not authorized."), False),
        (Exception("Lost connection to MySQL server during query"), False),
    ],
)
def test_a_driver_without_sqlstates_is_judged_by_its_message(error, not_there):
    from audience_profiles.destinations.generic_sql import DbApiSession

    session = DbApiSession(_Hook(error))
    if not_there:
        assert session.columns('"ap_load_log"') is None
    else:
        with pytest.raises(Exception) as raised:
            session.columns('"ap_load_log"')
        assert raised.value is error  # the driver's own error fails the task


def test_two_destinations_loading_one_schema_at_once_keep_their_staging_apart(
    pg_conn, schema, tmp_path, monkeypatch
):
    """Both staged profile_merges (for its merges) as ap_stage_profile_merges_<date>: the
    second delivery replaced the first's staging table and dropped it when it finished, so the
    first's apply failed (relation does not exist), though each loads tables of its own."""
    profiles, identifiers = (
        warehouse_destination(
            tmp_path / name,
            name=name,
            kind="sql",
            conn_id=pg_conn,
            schema=schema,
            tables=[table],
        )
        for name, table in (("a", "audience_profiles"), ("b", "profile_identifiers"))
    )
    apply = GenericSqlDestination.apply

    def the_other_delivers_meanwhile(self, db, plan):
        if self is profiles:
            deliver(identifiers, tmp_path / "b", DAY1)
        return apply(self, db, plan)

    monkeypatch.setattr(GenericSqlDestination, "apply", the_other_delivers_meanwhile)
    deliver(profiles, tmp_path / "a", DAY1)

    loaded = hook(pg_conn).get_records(f'SELECT profile_id FROM "{schema}"."audience_profiles"')
    assert sorted(r[0] for r in loaded) == [P1, P2]
