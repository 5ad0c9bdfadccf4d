"""Push-down: the build run inside Snowflake (fakesnow) gives the same tables as DuckDB.

Both engines run the same pipeline functions over the same generated landing data. Every date
loads its partitions (extract, validate, enrich); the last date then runs the whole build
(identity, profiles, checks, publish, cleanup), whose snapshot covers every earlier date. The
sample spans two days (plus the seed's form entry of 2022-01-11) so the test stays short, each
statement being a round trip to the emulator; profiles still merge on the last day, and some rows
are quarantined. The erasure DAG's steps run against such a build as well.

The generator's data is well-behaved, so the fixed landing of the rules' edge cases
(tests/edge_landings.py: a kiosk, limits, a cut, a late merge, ties, late rows, quarantined rows,
answers decided by landing date) is built on both engines too: the profiles SQL has its
Snowflake branches there (the latest answer's key, the answers object).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from snowflake.connector.errors import ProgrammingError

from audience_profiles import landing, report
from audience_profiles.config import PROJECT_ROOT, WarehouseConfig, load_config
from audience_profiles.generate import GenerateOptions, data_dates, generate
from audience_profiles.pipeline import (
    RunWindow,
    build_profiles,
    build_segments,
    check_quality,
    cleanup,
    enrich,
    extract_source,
    publish,
    resolve_identities,
    run_all,
    run_dir,
    validate,
)
from audience_profiles.privacy.erasure import clear_run_schemas, run_erasure
from audience_profiles.warehouse import open_warehouse
from audience_profiles.warehouse.duckdb import DuckDBWarehouse
from audience_profiles.warehouse.snowflake import (
    SnowflakeWarehouse,
    qualify_rename,
    split_script,
    statement_groups,
)
from tests.edge_landings import DATES, EDGE_CASE_LANDING, sql_build, write_landing
from tests.privacy.people import DAVID, file_request

COMPARED = (
    "audience_profiles",
    "audience_profile_interactions",
    "profile_identifiers",
    "profile_merges",
    "interactions_enriched",
    "quarantine",
    "identity_link_audit",
)


def write_config(folder: Path, landing_root: Path, warehouse: str) -> Path:
    path = folder / "pipeline.yml"
    path.write_text(
        f"start_date: 2022-04-29\n"
        f"landing_root: {landing_root}\n"
        f"work_dir: {folder / 'work'}\n"
        f"warehouse: {warehouse}\n"
        f"identity_config: {PROJECT_ROOT / 'include' / 'config' / 'identity.yml'}\n"
        "destinations: []\n"
    )
    return path


def snowflake_warehouse(conn_id: str, prefix: str) -> str:
    """pipeline.yml's `warehouse:` on fakesnow, in a database of the test's own."""
    database = f"{prefix}_{uuid.uuid4().hex[:8].upper()}"
    return f"{{engine: snowflake, conn_id: {conn_id}, database: {database}, schema: main}}"


def load(window: RunWindow, config) -> None:
    """A date's extract, validate and enrich."""
    staged = [extract_source(s, window, config) for s in landing.SOURCES]
    validate(window, staged, config)
    enrich(window, config)


def build(config_path: Path, dates: list[str]) -> Path:
    """Load every date, build the last one; return the run's export folder."""
    config = load_config(config_path)
    for ds in dates[:-1]:
        load(RunWindow.for_date(ds), config)
    last = RunWindow.for_date(dates[-1])
    result = run_all(last, config)
    assert result["checks"]["failed"] == 0
    return run_dir(config, last) / "export"


def exported(folder: Path) -> dict[str, list[dict]]:
    """The compared tables' rows, from a run's export folder."""
    return {t: pq.read_table(folder / f"{t}.parquet").to_pylist() for t in COMPARED}


def comparable(rows: list[dict]) -> list[str]:
    """Rows as sorted canonical text: answers compared as JSON (key order is not data)."""

    def canonical(row: dict) -> str:
        row = dict(row)
        if row.get("answers") is not None:
            row["answers"] = json.loads(row["answers"])
        return json.dumps(row, sort_keys=True, default=str)

    return sorted(map(canonical, rows))


def assert_same_exports(snow_folder: Path, duck_folder: Path) -> None:
    """The same files with the same Parquet column names, order and types (every integer column
    int64 on both engines), and the same rows in every compared table. Not nullability: DuckDB
    marks a NOT NULL table's columns required, the connector's results say nothing of it."""
    files = sorted(f.name for f in duck_folder.glob("*.parquet"))
    assert files == sorted(f.name for f in snow_folder.glob("*.parquet"))
    assert set(COMPARED) <= {Path(f).stem for f in files}
    for name in files:
        duck_types = [(f.name, f.type) for f in pq.read_schema(duck_folder / name)]
        snow_types = [(f.name, f.type) for f in pq.read_schema(snow_folder / name)]
        assert snow_types == duck_types, name
    snow, duck = exported(snow_folder), exported(duck_folder)
    for table in COMPARED:
        assert len(snow[table]) == len(duck[table]), table
        assert comparable(snow[table]) == comparable(duck[table]), table
        if duck[table]:
            assert list(snow[table][0]) == list(duck[table][0]), f"{table}: column names, order"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("pushdown-landing")
    generate(GenerateOptions(out=root, interactions=3000, days=2, start=dt.date(2022, 4, 29)))
    return root, data_dates(root)


@pytest.mark.services
def test_pushdown_build_matches_duckdb_row_for_row(sample, snowflake_conn, tmp_path):
    landing_root, dates = sample
    duck_dir, snow_dir = tmp_path / "duckdb", tmp_path / "snowflake"
    duck_dir.mkdir()
    snow_dir.mkdir()
    duck = build(
        write_config(duck_dir, landing_root, f"{{engine: duckdb, path: {duck_dir / 'wh.duckdb'}}}"),
        dates,
    )
    snow = build(
        write_config(
            snow_dir,
            landing_root,
            snowflake_warehouse(snowflake_conn, "PUSHDOWN"),
        ),
        dates,
    )
    assert exported(duck)["profile_merges"] and exported(duck)["quarantine"]  # both exercised
    assert_same_exports(snow, duck)


@pytest.mark.services
def test_two_deployments_sharing_a_database_keep_their_builds_apart(
    sample, snowflake_conn, tmp_path
):
    """Production and staging in one database, a home schema each, build the same date at
    once. Staging's whole run (its cleanup included) and its erasure's sweep of the schemas
    failed runs left must leave production's build alone, which then publishes what a DuckDB
    build does. Before, both built in the database's RUN_YYYYMMDD: staging's cleanup dropped
    production's build, and its sweep dropped any run schema of the database."""
    landing_root, dates = sample
    database = "SHARED_" + uuid.uuid4().hex[:8].upper()
    config_paths = {}
    for home in ("duckdb", "prod", "staging"):
        (tmp_path / home).mkdir()
        warehouse = (
            f"{{engine: duckdb, path: {tmp_path / home / 'wh.duckdb'}}}"
            if home == "duckdb"
            else f"{{engine: snowflake, conn_id: {snowflake_conn}, database: {database}, "
            f"schema: {home}}}"
        )
        config_paths[home] = write_config(tmp_path / home, landing_root, warehouse)
    prod, staging = load_config(config_paths["prod"]), load_config(config_paths["staging"])
    last = RunWindow.for_date(dates[-1])
    for ds in dates:
        load(RunWindow.for_date(ds), prod)
    resolve_identities(last, prod)
    with open_warehouse(prod) as wh:
        prod_build = last.run_schema_in(wh)
    assert prod_build == "PROD_" + last.run_schema.upper()

    build(config_paths["staging"], dates)  # the whole run: its cleanup drops its build
    with open_warehouse(staging) as wh:
        assert clear_run_schemas(wh, staging) == ([], [])  # production's is not staging's
    with open_warehouse(prod) as wh:  # but production's own sweep finds it, in flight
        assert clear_run_schemas(wh, prod) == ([], [prod_build.lower()])
    for step in (build_profiles, build_segments, check_quality, publish, cleanup):
        step(last, prod)
    assert_same_exports(run_dir(prod, last) / "export", build(config_paths["duckdb"], dates))


@pytest.mark.services
def test_a_warehouse_without_a_database_says_which_key_to_set(snowflake_conn, tmp_path):
    """Snowflake's own words ("This session does not have a current database") named neither
    pipeline.yml's key nor the connection."""
    config = load_config(
        write_config(
            tmp_path, tmp_path / "landing", f"{{engine: snowflake, conn_id: {snowflake_conn}}}"
        )
    )
    with pytest.raises(RuntimeError) as error, open_warehouse(config):
        pass
    assert str(error.value).startswith(
        f"the snowflake warehouse (connection {snowflake_conn!r}) cannot create or use its "
        "schema MAIN in no database: "
    )
    assert "Set warehouse.database in pipeline.yml" in str(error.value)


@pytest.mark.services
def test_the_edge_case_landing_builds_alike_on_both_engines(snowflake_conn, tmp_path):
    write_landing(tmp_path / "landing", EDGE_CASE_LANDING)
    database = "EDGES_" + uuid.uuid4().hex[:8].upper()
    snowflake = {"engine": "snowflake", "conn_id": snowflake_conn, "database": database,
                 "schema": "main"}  # fmt: skip
    duck_folder = sql_build(tmp_path / "duckdb", tmp_path / "landing", DATES[-1])
    snow_folder = sql_build(tmp_path / "snowflake", tmp_path / "landing", DATES[-1], snowflake)
    duck = exported(duck_folder)
    # the landing exercises what it is for
    assert {r["rule"] for r in duck["identity_link_audit"]} >= {"profile_limit", "session_limit"}
    assert duck["profile_merges"] and len(duck["quarantine"]) == 2
    assert {json.loads(r["answers"]).get("MVP?") for r in duck["audience_profiles"]} == {"B", None}
    assert_same_exports(snow_folder, duck_folder)


# The engine-level dialect rules, which fakesnow (DuckDB underneath) cannot show going wrong.


def test_rename_keeps_the_table_in_its_schema():
    # Snowflake moves a table renamed to an unqualified name into the session's schema.
    assert (
        qualify_rename("ALTER TABLE run_20220430.id_parent_next RENAME TO id_parent")
        == "ALTER TABLE run_20220430.id_parent_next RENAME TO run_20220430.id_parent"
    )
    assert qualify_rename("ALTER TABLE t RENAME TO u") == "ALTER TABLE t RENAME TO u"


def test_ddl_runs_alone_and_dml_runs_together():
    # Snowflake commits an open transaction at every DDL statement.
    unconnected = SnowflakeWarehouse.__new__(SnowflakeWarehouse)  # rendering needs no session
    rendered = unconnected.render(
        "validate/interactions", ds="2022-04-30", staged="STAGED_INTERACTIONS", email_pattern="x"
    )
    groups = statement_groups(split_script(rendered))
    assert [len(g) for g in groups] == [1, 4]
    assert groups[0][0].startswith("CREATE OR REPLACE TEMP TABLE")
    assert [g.split()[0] for g in groups[1]] == ["DELETE", "INSERT", "DELETE", "INSERT"]
    # with the ledger of its files after it (pipeline.validate), still one transaction: a date
    # past retention deletes its rows in it, and they must never be committed on their own
    rendered += unconnected.render(
        "validate/landed_files",
        source="interactions",
        ds="2022-04-30",
        versions=[("a.csv", "1")],
        streamed=False,
        keep_days=31,
        aged_out=["interactions"],
    )
    groups = statement_groups(split_script(rendered))
    assert [len(g) for g in groups] == [1, 7]


def test_the_stream_switches_schema_with_each_engine_s_use():
    # Snowflake reads a bare USE <name> as USE DATABASE; DuckDB has no USE SCHEMA.
    snowflake = SnowflakeWarehouse.__new__(SnowflakeWarehouse)  # rendering needs no session
    duckdb = DuckDBWarehouse.__new__(DuckDBWarehouse)
    assert snowflake.render("stream/use", schema="MAIN_WORK").strip() == "USE SCHEMA MAIN_WORK"
    assert duckdb.render("stream/use", schema="main_work").strip() == "USE main_work"


def test_truncate_runs_with_the_dml_around_it():
    # Snowflake counts TRUNCATE as DML: it does not commit the open transaction.
    groups = statement_groups(
        ["CREATE TABLE t (n INT)", "TRUNCATE TABLE t", "INSERT INTO t VALUES (1)"]
    )
    assert groups == [["CREATE TABLE t (n INT)"], ["TRUNCATE TABLE t", "INSERT INTO t VALUES (1)"]]


@pytest.mark.services
def test_a_failed_script_takes_its_truncate_back(snowflake_conn):
    """A TRUNCATE + INSERT whose INSERT fails leaves the table's rows, as on DuckDB (which runs
    a script in one transaction): run as DDL, the TRUNCATE was committed on its own."""
    database = "TRUNCATE_" + uuid.uuid4().hex[:8].upper()
    config = WarehouseConfig(engine="snowflake", conn_id=snowflake_conn, database=database)
    with SnowflakeWarehouse(config) as wh:
        wh.execute_script("CREATE TABLE kept (n INTEGER); INSERT INTO kept VALUES (1), (2)")
        with pytest.raises(ProgrammingError):
            wh.execute_script("TRUNCATE TABLE kept; INSERT INTO kept SELECT CAST('x' AS INTEGER)")
        assert wh.query("SELECT n FROM kept ORDER BY n") == [(1,), (2,)]


@pytest.mark.services
def test_files_are_staged_through_the_home_schema_s_stage_whatever_schema_is_current(
    snowflake_conn, tmp_path
):
    """A stream batch stages its files while its batch schema is current: an unqualified
    AP_STAGE was created there, and once the stage was made in the home schema, a file staged
    from another schema went to a stage that did not exist."""
    database = "STAGE_" + uuid.uuid4().hex[:8].upper()
    config = WarehouseConfig(engine="snowflake", conn_id=snowflake_conn, database=database)
    files = []
    for name in ("one", "two"):
        files.append(tmp_path / f"{name}.parquet")
        pq.write_table(pa.table({"v": [name]}), files[-1])
    with SnowflakeWarehouse(config) as wh:
        first = wh.staged_relation(str(files[0]))
        wh.execute_script("CREATE SCHEMA MAIN_ELSEWHERE")
        wh.run_sql("stream/use", schema="MAIN_ELSEWHERE")
        second = wh.staged_relation(str(files[1]))
        assert wh.query(f"SELECT v FROM {first} UNION ALL SELECT v FROM {second} ORDER BY 1") == [
            ("one",),
            ("two",),
        ]
        for schema, stages in (("MAIN", ["AP_STAGE"]), ("MAIN_ELSEWHERE", [])):
            shown = wh.query(f"SHOW STAGES IN SCHEMA {schema}")
            assert [str(row[1]).upper() for row in shown] == stages, schema


@pytest.mark.services
def test_a_staged_table_whose_copy_failed_is_dropped_on_close(snowflake_conn, tmp_path):
    """The table is created before its COPY: recorded only after a COPY that succeeded, a failed
    one left it behind (empty, in the home schema) for good."""
    database = "STAGEFAIL_" + uuid.uuid4().hex[:8].upper()
    config = WarehouseConfig(engine="snowflake", conn_id=snowflake_conn, database=database)
    pq.write_table(pa.table({"v": ["one"]}), tmp_path / "one.parquet")
    with SnowflakeWarehouse(config) as wh:
        execute = wh.cur.execute

        def failing_copy(sql, *args, **kwargs):
            if sql.startswith("COPY INTO"):
                raise ProgrammingError("the COPY failed")
            return execute(sql, *args, **kwargs)

        wh.cur.execute = failing_copy
        with pytest.raises(ProgrammingError, match="the COPY failed"):
            wh.staged_relation(str(tmp_path / "one.parquet"))
        wh.cur.execute = execute
        assert [t for t in wh.table_names("MAIN") if t.startswith("staged_one_")]
    with SnowflakeWarehouse(config) as wh:
        assert not [t for t in wh.table_names("MAIN") if t.startswith("staged_")]


def test_rejected_credentials_fail_at_once_and_other_connection_errors_name_the_connection():
    """A wrong password retried by every warehouse task is one failed login per try, and
    Snowflake locks the user after five: the connector marks a rejection with SQLSTATE 28000
    (fakesnow checks no credentials, so the connector's error is made here as it makes it)."""
    from airflow.sdk.exceptions import AirflowFailException
    from snowflake.connector.errors import DatabaseError

    from audience_profiles.errors import NotRetryable
    from audience_profiles.warehouse.snowflake import (
        ConnectionFailed,
        CredentialsRejected,
        connect,
    )

    class Refusing:
        def __init__(self, error):
            self.error = error

        def get_conn(self):
            raise self.error

    rejected = DatabaseError(
        msg="Failed to connect to DB: x.snowflakecomputing.com:443. Incorrect username or "
        "password was specified.",
        errno=390100,
        sqlstate="28000",
    )
    with pytest.raises(CredentialsRejected) as error:
        connect(Refusing(rejected), "snowflake_prod")
    assert isinstance(error.value, NotRetryable)  # alerts say so
    assert isinstance(error.value, AirflowFailException)  # no retry, in any task
    assert str(error.value).startswith(
        "Snowflake rejected the credentials of connection 'snowflake_prod': Failed to connect"
    )
    unreachable = DatabaseError(msg="Could not connect to Snowflake backend", errno=250001)
    with pytest.raises(ConnectionFailed) as error:
        connect(Refusing(unreachable), "snowflake_prod")
    assert not isinstance(error.value, NotRetryable | AirflowFailException)  # retried
    assert str(error.value) == (
        "could not connect to Snowflake through connection 'snowflake_prod': Could not "
        "connect to Snowflake backend"
    )


def test_the_session_settings_the_engine_relies_on_are_set_at_login(monkeypatch):
    """Account or user defaults must not reach the build: AUTOCOMMIT=FALSE left a lone DML
    statement (setup's version row) in a transaction the connection's close rolled back;
    DEFAULT_NULL_ORDERING=FIRST put NULLs first where DuckDB puts them last (the profile facts'
    tie-breaks); a user's ROWS_PER_RESULTSET cut the exports short. fakesnow ignores session
    parameters, so the login's parameters are checked."""
    from audience_profiles.warehouse.snowflake import SESSION_PARAMETERS, snowflake_hook

    extra = {"account": "a", "session_parameters": {"QUERY_TAG": "ap", "TIMEZONE": "UTC"}}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_LOGIN",
        json.dumps({"conn_type": "snowflake", "login": "u", "password": "p", "extra": extra}),
    )
    params = snowflake_hook("sf_login", "DB", "MAIN")._get_conn_params()["session_parameters"]
    assert params["AUTOCOMMIT"] is True
    assert params["DEFAULT_NULL_ORDERING"] == "LAST"
    assert params["ROWS_PER_RESULTSET"] == 0
    assert params == {**SESSION_PARAMETERS, "QUERY_TAG": "ap"}  # the extra's entries added


def test_literals_escape_backslashes_for_snowflake():
    assert SnowflakeWarehouse.literal("a\\.b'c") == "'a\\\\.b''c'"


@pytest.mark.services
def test_erasure_runs_inside_snowflake(sample, snowflake_conn, tmp_path):
    """The erasure DAG's warehouse steps on the Snowflake engine: the seed's David (always in
    the generated sample) leaves every table; the request is recorded as completed."""
    landing_root, dates = sample
    landing_copy = tmp_path / "landing"  # the request must not reach the module's shared sample
    shutil.copytree(landing_root, landing_copy)
    config_path = write_config(
        tmp_path,
        landing_copy,
        snowflake_warehouse(snowflake_conn, "ERASURE"),
    )
    build(config_path, dates)
    config = load_config(config_path)
    file_request(landing_copy, "r-sf", "email", DAVID)

    def davids() -> dict[str, int]:
        counts = {}
        with open_warehouse(config) as wh:
            for table, column in (
                ("form_entries", "email"),
                ("audience_profiles", "email"),
                ("profile_identifiers", "identifier_value"),
            ):
                counts[table] = wh.query(
                    f"SELECT count(*) FROM {table} WHERE {column} = '{DAVID}'"
                )[0][0]
        return counts

    assert all(davids().values())
    result = run_erasure(dates[-1], config)

    assert result["record"] == {"completed": ["r-sf"], "pending": 0}
    assert set(davids().values()) == {0}


@pytest.mark.services
def test_the_run_report_is_stored_and_drawn_again_inside_snowflake(snowflake_conn, tmp_path):
    """A backfill reporting newest first, on Snowflake: each date's row in pipeline_runs, and
    index.html drawn again from the latest date's stored report as the older one reports."""
    config = load_config(
        write_config(
            tmp_path,
            tmp_path / "landing",
            snowflake_warehouse(snowflake_conn, "REPORT"),
        )
    )
    for ds, profiles in (("2022-04-30", 12), ("2022-04-29", 11)):
        outputs = {
            "validate": {"sources": {}, "quarantine_by_field": []},
            "build_profiles": {"profiles": profiles},
        }
        report.write_report(RunWindow.for_date(ds), outputs, {}, config)
    with open_warehouse(config) as wh:
        stored = wh.query("SELECT CAST(ds AS VARCHAR), profiles FROM pipeline_runs ORDER BY ds")
    assert stored == [("2022-04-29", 11), ("2022-04-30", 12)]
    index = (report.report_dir(config) / "index.html").read_text()
    assert "2022-04-30</h1>" in index
    chart = index[index.index('aria-label="Profiles"') :].split("</svg>")[0]
    assert ">2022-04-29</text>" in chart and ">2022-04-30</text>" in chart


@pytest.mark.services
def test_a_re_run_keeps_its_date_s_catalogue_inside_snowflake(snowflake_conn, tmp_path):
    """catalogue/record.sql and the dated enrich on the Snowflake engine: a re-run of the first
    date after a title changed keeps the title it had; the second date has the new one; the
    first restated takes the new one."""
    from tests.sql.catalogue.test_history import (
        FIRST,
        NEW_TITLE,
        OLD_TITLE,
        SECOND,
        landing_of_two_days,
        write_catalogue,
    )

    landing_root = landing_of_two_days(tmp_path)
    config = load_config(
        write_config(
            tmp_path,
            landing_root,
            snowflake_warehouse(snowflake_conn, "CATALOGUE"),
        )
    )
    load(RunWindow.for_date(FIRST), config)
    write_catalogue(landing_root, NEW_TITLE)
    load(RunWindow.for_date(SECOND), config)
    load(RunWindow.for_date(FIRST), config)
    with open_warehouse(config) as wh:
        titles = wh.query(
            "SELECT CAST(dt AS VARCHAR), poll_id, title FROM interactions_enriched ORDER BY 1, 2"
        )
        recorded = wh.query("SELECT CAST(dt AS VARCHAR), changed FROM element_history_dates")
    assert titles == [
        (FIRST, "54663", OLD_TITLE),
        (SECOND, "54663", NEW_TITLE),
        (SECOND, "777", "Man of the match?"),
    ]
    assert sorted(recorded) == [(FIRST, 3), (SECOND, 2)]
    window = RunWindow.for_date(FIRST)  # restated: the new title from the first date on
    validate(window, [extract_source(s, window, config) for s in landing.SOURCES], config, "fix")
    enrich(window, config)
    with open_warehouse(config) as wh:
        assert wh.query(f"SELECT title FROM interactions_enriched WHERE dt = DATE '{FIRST}'") == [
            (NEW_TITLE,)
        ]
        assert wh.query("SELECT CAST(dt AS VARCHAR) FROM element_history_dates") == [(FIRST,)]
